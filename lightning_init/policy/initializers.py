"""The initializer catalogue: names and specs -> validated :class:`Initializer` objects.

A policy names an initializer per parameter. This module turns that name (or mapping) into an
:class:`Initializer`, validating every argument against the function it calls, and knows for
each one the shapes it accepts, the standard deviation its formula promises and how to fill a
tensor in place.

Names (with or without a trailing underscore, case-insensitive):

- every function of :mod:`torch.nn.init` with its own keyword arguments: ``uniform``
  (``a``, ``b``), ``normal`` (``mean``, ``std``), ``trunc_normal`` (``mean``, ``std``, ``a``,
  ``b``), ``constant`` (``val``, required), ``ones``, ``zeros``, ``eye``, ``dirac``
  (``groups``), ``xavier_uniform`` / ``xavier_normal`` (``gain``; Glorot & Bengio 2010),
  ``kaiming_uniform`` / ``kaiming_normal`` (``a``, ``mode``, ``nonlinearity``; He et al. 2015),
  ``orthogonal`` (``gain``; Saxe et al. 2014), ``sparse`` (``sparsity``, required, ``std``;
  Martens 2010);
- ``lecun_normal``: ``variance_scaling(scale=1, mode=fan_in, distribution=truncated_normal)``
  (LeCun et al. 1998; Klambauer et al. 2017), as in Flax and timm;
- ``variance_scaling`` (``scale=1.0``, ``mode`` in fan_in | fan_out | fan_avg, ``distribution``
  in truncated_normal | normal | uniform, default ``normal`` as timm's ``variance_scaling_``):
  variance ``scale / fan``; the truncated normal is cut at two standard deviations and its
  std corrected by 0.87962566103423978 (the std of a standard normal truncated to [-2, 2]) so
  the result has exactly the requested variance, as Flax/JAX and timm do;
- ``prior_bias`` (``prob=0.01``): fills ``-log((1 - prob) / prob)``, the classification-head
  prior of RetinaNet (Lin et al. 2017) and timm's head-bias init;
- ``default``: the module's own ``reset_parameters()`` (kind ``"reset"``, done by the policy);
- ``keep``: leave the values as they are (kind ``"keep"``).

Spec forms: ``"zeros"``, ``"zeros_"``, ``{init: kaiming_normal, mode: fan_in}``,
``{init: orthogonal, chunks: 4}`` (4 equal blocks along dim 0, each initialized separately, fans
computed per block: the gates of LSTM/GRU weights), ``{chunks: [zeros, ones, zeros, zeros]}``
(one initializer per block, e.g. the LSTM forget-gate bias; ``keep`` leaves a block alone).

Custom initializers are allowed only by an explicit import path ``"package.module:function"``
(a bare unknown name is always an error, never looked up). The function receives the tensor
(under ``torch.no_grad()``) and the spec's other keys as keyword arguments, which are checked
against its signature when the policy is resolved (the module is imported then). It is called
as ``function(tensor, generator=generator, **kwargs)`` when it has a parameter named
``generator``, else as ``function(tensor, **kwargs)``. It should fill ``tensor`` in place; if it
returns a different tensor of the same shape instead, those values are copied in. Example, in
``mypkg/inits.py``::

    def scaled_normal(tensor, scale=1.0, generator=None):
        return tensor.normal_(0.0, scale / tensor.shape[-1] ** 0.5, generator=generator)

and in the policy: ``weight: {init: "mypkg.inits:scaled_normal", scale: 2.0}``.

``sparse`` and ``orthogonal`` are re-implemented (same distributions as ``torch.nn.init``):
torch's ``sparse_`` draws the zero positions from the global RNG and ignores ``generator``, and
``orthogonal`` is computed in float32 for half-precision tensors.

Each initializer is one entry of a registry that holds its fill function, its arguments (with
their checks), the shapes it accepts and the mean and std its formula promises.

Example:
    >>> import torch
    >>> init = resolve_initializer({"init": "kaiming_normal_", "nonlinearity": "relu"})
    >>> init.describe(), round(init.expected_std(torch.Size([256, 128])), 4)
    ('kaiming_normal(nonlinearity=relu)', 0.125)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from lightning_init._text import format_choices
from lightning_init.anatomy.layouts import Layout
from lightning_init.errors import PolicyError
from lightning_init.policy import _custom, _fills
from lightning_init.policy._arguments import (
    ArgumentError,
    Formula,
    Kwargs,
)
from lightning_init.policy._catalogue import REGISTRY, Fans, fmt_shape, known_initializers
from lightning_init.policy._model_vars import DERIVED_VARIABLES, PARAMETER_VARIABLES
from lightning_init.policy._resolver import Resolver

__all__ = ["Initializer", "idle_bounds", "known_initializers", "resolve_initializer"]

idle_bounds = _fills.idle_bounds  # public here: the check's init notes use it


@dataclass(frozen=True)
class Initializer:
    """One validated initializer: what to write into a tensor, and what that promises.

    Build it with :func:`resolve_initializer`; it is immutable, hashable, comparable and
    picklable.

    Attributes:
        name: canonical name (``"kaiming_normal"``, no trailing ``_``), ``"chunks"`` for the
            per-block form, or ``"module:function"`` for a custom initializer.
        kwargs: the user's validated keyword arguments (read-only dict; defaults not added).
        kind: ``"tensor"`` (``fill_`` writes values), ``"reset"`` (the policy calls the module's
            ``reset_parameters()``) or ``"keep"`` (nothing is written).
        chunks: number of equal blocks along dim 0 (``chunks: N``, or the length of
            ``blocks``), else ``None``.
        blocks: one initializer per block (``chunks: [spec, ...]``), else ``None``.
        layout: the weight layout fans are read with (:mod:`lightning_init.anatomy.layouts`), set
            by :meth:`bind`; ``None`` reads the shape as ``torch.nn.init`` does.
        groups: the module's ``groups``, for a layout that divides a fan by them.
        source: the policy file the spec came from (for error messages; not compared).
        line: the spec's line in ``source`` (for error messages; not compared).
        formulas: ``(argument, expression)`` of the arguments :meth:`bind` evaluated (for
            :meth:`describe`; not compared).

    Example:
        >>> import torch
        >>> bias = resolve_initializer({"chunks": ["zeros", "ones", "zeros", "zeros"]})
        >>> b = torch.empty(8)
        >>> bias.fill_(b, None)
        >>> bias.describe(), b.tolist()
        ('chunks[zeros, ones, zeros, zeros]', [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=lambda: Kwargs())
    kind: Literal["tensor", "reset", "keep"] = "tensor"
    chunks: int | None = None
    blocks: tuple[Initializer, ...] | None = None
    source: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)
    layout: Layout | None = None
    groups: int = 1
    formulas: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kwargs, Kwargs):
            object.__setattr__(self, "kwargs", Kwargs(self.kwargs))

    @property
    def is_random(self) -> bool:
        """Whether ``fill_`` draws random numbers (so a generator matters); custom: ``True``.

        Example:
            >>> resolve_initializer("zeros").is_random, resolve_initializer("normal").is_random
            (False, True)
        """
        if self.kind != "tensor":
            return False
        if self.blocks is not None:
            return any(block.is_random for block in self.blocks)
        entry = REGISTRY.get(self.name)
        return entry is None or entry.random

    # -- values that depend on the model --------------------------------------------------------

    @property
    def names(self) -> frozenset[str]:
        """The variables its arguments' expressions use (empty once bound).

        Example:
            >>> sorted(resolve_initializer({"init": "normal", "std": "1 / sqrt(fan_in)"}).names)
            ['fan_in']
        """
        names = frozenset().union(*(value.names for value in self.kwargs.values()
                                    if isinstance(value, Formula)))
        return names.union(*(block.names for block in self.blocks or ()))

    def bind(self, values: Mapping[str, float], *, layout: Layout | None = None,
             groups: int = 1, where: str = "") -> Initializer:
        """This initializer for one parameter: expressions evaluated, fans read by ``layout``.

        Args:
            values: the variables' values (model-wide and the parameter's own).
            layout: the parameter's weight layout; ``None`` keeps torch's reading.
            groups: the module's ``groups``.
            where: the rule key and parameter, for messages (``"rules[0].weight -> fc.weight"``).

        Raises:
            PolicyError: an expression that cannot be evaluated (a variable without a value,
                a division by zero) or whose value is out of the argument's range.

        Example:
            >>> init = resolve_initializer({"init": "normal", "std": "0.02 / sqrt(2 * n)"},
            ...                            variables=["n"])
            >>> init.bind({"n": 8}).describe()
            'normal(std=0.02 / sqrt(2 * n) -> 0.005)'
        """
        if self.kind != "tensor":
            return self
        blocks = None if self.blocks is None else tuple(
            block.bind(values, layout=layout, groups=groups, where=where) for block in self.blocks)
        kwargs, formulas = _evaluate(self, values, where)
        return replace(self, kwargs=Kwargs(kwargs), blocks=blocks, layout=layout,
                       groups=groups, formulas=formulas)

    def _fans(self, shape: tuple[int, ...]) -> Fans | None:
        if len(shape) < 2:
            return None
        return self.layout.fans(shape, self.groups) if self.layout else _fills.fans(shape)

    # -- shapes --------------------------------------------------------------------------------

    def check_shape(self, shape: torch.Size | tuple[int, ...], *, where: str) -> None:
        """Raise :class:`PolicyError` if this initializer cannot fill a tensor of ``shape``.

        Orthogonal needs 2+ dims, eye exactly 2, dirac 3-5 (and dim 0 divisible by
        ``groups``), sparse 2, the fan-based ones (xavier, kaiming, lecun_normal,
        variance_scaling) 2+; ``chunks`` needs dim 0 divisible by the number of blocks.
        Zero-element tensors pass (filling them is a no-op).

        Args:
            shape: the tensor's shape.
            where: the parameter's location for the message (``"encoder.0.weight"``).

        Example:
            >>> try:
            ...     resolve_initializer("orthogonal").check_shape((10,), where="fc.bias")
            ... except PolicyError as err:
            ...     print(err)
            fc.bias: orthogonal needs a tensor with at least 2 dimensions, got shape (10,)
        """
        problem = _shape_problem(self, tuple(int(s) for s in shape))
        if problem is not None:
            raise PolicyError(problem, where=where, source=self.source, line=self.line)

    def _block_initializers(self) -> tuple[Initializer, ...]:
        if self.blocks is not None:
            return self.blocks
        leaf = replace(self, chunks=None, blocks=None)
        return (leaf,) * (self.chunks or 1)

    # -- promised statistics ----------------------------------------------------------------

    def expected_std(self, shape: torch.Size | tuple[int, ...]) -> float | None:
        """The standard deviation (over the tensor's elements) that the formula promises.

        Kaiming: ``gain / sqrt(fan)`` (He et al. 2015); xavier: ``gain * sqrt(2 / (fan_in +
        fan_out))`` (Glorot & Bengio 2010); uniform: ``(b - a) / sqrt(12)``; normal: ``std``;
        trunc_normal: the std of the truncated normal; orthogonal: ``gain / sqrt(max(rows,
        cols))`` since the squared entries of a semi-orthogonal matrix sum to ``min(rows, cols)``
        (Saxe et al. 2014); lecun_normal: ``1 / sqrt(fan_in)`` (LeCun et al. 1998);
        variance_scaling: ``sqrt(scale / fan)``; constants: 0; eye/dirac: the std of their 0/1
        pattern; sparse: ``std * sqrt(nonzero fraction)``. Per block when chunked. Fans are
        read by :attr:`layout`. ``None`` for keep/default, custom initializers, zero-element
        tensors and arguments that are expressions not yet bound.

        Example:
            >>> round(resolve_initializer("xavier_uniform").expected_std((300, 100)), 5)
            0.07071
        """
        moments = _moments(self, tuple(int(s) for s in shape))
        return None if moments is None else moments[1]

    def expected_mean(self, shape: torch.Size | tuple[int, ...]) -> float | None:
        """The mean over the tensor's elements the formula promises (``None`` when unknown).

        Example:
            >>> resolve_initializer({"init": "uniform", "a": -1, "b": 3}).expected_mean((5,))
            1.0
        """
        moments = _moments(self, tuple(int(s) for s in shape))
        return None if moments is None else moments[0]

    def fill_(self, tensor: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Write this initializer's values into ``tensor`` in place, under ``torch.no_grad()``.

        Works on the tensor's own device and dtype (half precision included); the tensor
        object is never replaced. ``keep`` writes nothing; ``default`` cannot fill a bare
        tensor (the policy resets the module) and raises :class:`PolicyError`.

        Args:
            tensor: the tensor (or Parameter) to fill.
            generator: random source for the draws, or ``None`` for the global RNG.

        Example:
            >>> import torch
            >>> w = torch.empty(3, 3)
            >>> resolve_initializer("eye").fill_(w, None)
            >>> w.diagonal().tolist()
            [1.0, 1.0, 1.0]
        """
        if self.kind == "keep":
            return
        if self.kind == "reset":
            raise self._error(
                "'default' calls the module's reset_parameters(); it cannot fill a tensor alone")
        if self.names:
            raise self._error(
                f"{self.describe()} uses {format_choices(self.names)}: a policy evaluates its "
                f"expressions for each parameter (Initializer.bind) before filling")
        shape = tuple(tensor.shape)
        problem = _shape_problem(self, shape)
        if problem is not None:
            raise self._error(problem)
        if tensor.numel() == 0 or tensor.is_meta:
            return
        with torch.no_grad():
            if self.chunks is None:
                _fill_leaf(self, tensor, generator)
                return
            size = shape[0] // self.chunks
            for index, block in enumerate(self._block_initializers()):
                block.fill_(tensor.narrow(0, index * size, size), generator)

    def _error(self, message: str) -> PolicyError:
        return PolicyError(message, source=self.source, line=self.line)

    # -- display ------------------------------------------------------------------------------

    def describe(self) -> str:
        """A short human description: ``"kaiming_normal(mode=fan_in, nonlinearity=relu)"``.

        Example:
            >>> resolve_initializer({"init": "orthogonal", "chunks": 4}).describe()
            'orthogonal×4 chunks'
        """
        if self.blocks is not None:
            return "chunks[" + ", ".join(block.describe() for block in self.blocks) + "]"
        text = self.name
        formulas = dict(self.formulas)
        if self.kwargs:
            text += "(" + ", ".join(f"{k}={_fmt_value(v, formulas.get(k))}"
                                    for k, v in self.kwargs.items()) + ")"
        if self.chunks is not None:
            text += f"×{self.chunks} chunks"
        return text

    def __str__(self) -> str:
        return self.describe()


def _moments(initializer: Initializer, shape: tuple[int, ...]) -> tuple[float, float] | None:
    if (initializer.kind != "tensor" or math.prod(shape) == 0 or initializer.names
            or _shape_problem(initializer, shape)):
        return None
    if initializer.chunks is None:
        entry = REGISTRY.get(initializer.name)
        return None if entry is None else entry.moments(entry.args(initializer.kwargs), shape,
                                                        initializer._fans(shape))
    block_shape = (shape[0] // initializer.chunks, *shape[1:])
    parts = [_moments(block, block_shape) for block in initializer._block_initializers()]
    if any(part is None for part in parts):
        return None
    mean = sum(m for m, _ in parts) / len(parts)  # type: ignore[misc]
    second = sum(s * s + m * m for m, s in parts) / len(parts)  # type: ignore[misc]
    return mean, math.sqrt(max(second - mean * mean, 0.0))

# -- filling ------------------------------------------------------------------------------


def _shape_problem(initializer: Initializer, shape: tuple[int, ...]) -> str | None:
    """What keeps ``initializer`` from filling a tensor of ``shape``, or ``None``."""
    if initializer.kind != "tensor":
        return None
    if initializer.chunks is None:
        entry = REGISTRY.get(initializer.name)
        if entry is None:
            return None
        problem = entry.shapes(initializer.name, entry.args(initializer.kwargs), shape)
        if problem is None and entry.fan_based and initializer.layout is not None:
            try:
                initializer._fans(shape)
            except PolicyError as err:
                return f"{initializer.describe()}: {err.bare_message}"
        return problem
    count = initializer.chunks
    if len(shape) == 0 or shape[0] % count:
        return (f"{initializer.describe()} splits dim 0 into {count} equal blocks, but shape "
                f"{fmt_shape(shape)} has dim 0 not divisible by {count}")
    block_shape = (shape[0] // count, *shape[1:])
    for index, block in enumerate(initializer._block_initializers()):
        problem = _shape_problem(block, block_shape)
        if problem is not None:
            return f"{problem} (block {index} of {count} of shape {fmt_shape(shape)})"
    return None


def _fill_leaf(initializer: Initializer, tensor: torch.Tensor, generator: torch.Generator | None
               ) -> None:
    """Call the fill function of a leaf (no blocks) on ``tensor``."""
    entry = REGISTRY.get(initializer.name)
    if entry is not None:
        function, accepts_generator = entry.fill, entry.accepts_generator
        accepts_fans = entry.fan_based
    else:
        function = _custom.load(initializer.name, where="", source=initializer.source,
                                line=initializer.line)
        accepts_generator = _custom.accepts_generator(function)
        accepts_fans = _custom.accepts_fans(function)
    extra: dict[str, Any] = {"generator": generator} if accepts_generator else {}
    if accepts_fans:
        extra["fans"] = initializer._fans(tuple(tensor.shape))
    try:
        result = function(tensor, **initializer.kwargs, **extra)
    except PolicyError:
        raise
    except Exception as err:
        raise initializer._error(
            f"{initializer.describe()} failed on a tensor of shape {fmt_shape(tuple(tensor.shape))}"
            f" and dtype {tensor.dtype}: {err}") from err
    if isinstance(result, torch.Tensor) and result is not tensor:
        if result.shape != tensor.shape:
            raise initializer._error(
                f"custom initializer {initializer.name} returned shape "
                f"{fmt_shape(tuple(result.shape))} for a tensor of shape "
                f"{fmt_shape(tuple(tensor.shape))}; fill the tensor in place")
        if result.data_ptr() != tensor.data_ptr():
            tensor.copy_(result)


def _fmt_value(value: Any, formula: str | None = None) -> str:
    if isinstance(value, Formula):
        return f'"{value.text}"'
    if formula is not None:
        return f"{formula} -> {value:.6g}"
    return repr(value) if isinstance(value, float) else str(value)


def _evaluate(initializer: Initializer, values: Mapping[str, float], where: str
              ) -> tuple[dict[str, Any], tuple[tuple[str, str], ...]]:
    """The initializer's arguments with each expression evaluated and checked."""
    formulas = {key: value for key, value in initializer.kwargs.items()
                if isinstance(value, Formula)}
    if not formulas:
        return dict(initializer.kwargs), initializer.formulas
    entry = REGISTRY[initializer.name]  # expressions are only accepted by built-in ones

    def error(message: str) -> PolicyError:
        return PolicyError(message, where=where or None, source=initializer.source,
                           line=initializer.line)

    kwargs = dict(initializer.kwargs)
    for key, formula in formulas.items():
        try:
            kwargs[key] = entry.params[key].convert(initializer.name, key,
                                                    formula.evaluate(values))
        except PolicyError as err:
            raise error(f"{key}: {err.bare_message}") from None
        except ArgumentError as err:
            raise error(f"{err} (from {formula.text!r})") from None
    problem = entry.check(entry.args(kwargs)) if entry.check else None
    if problem:
        raise error(f"{problem} (from {', '.join(repr(f.text) for f in formulas.values())})")
    return kwargs, tuple((key, formula.text) for key, formula in formulas.items())


# ---------------------------------------------------------------------------------------------
# Resolution and validation
# ---------------------------------------------------------------------------------------------


def resolve_initializer(
    spec: str | Mapping[str, Any] | Initializer,
    *,
    where: str = "",
    source: str | None = None,
    line: int | None = None,
    variables: Iterable[str] | None = None,
) -> Initializer:
    """Turn a policy's initializer spec into a validated :class:`Initializer`.

    Args:
        spec: a name (``"zeros"``, ``"kaiming_normal_"``, ``"pkg.mod:fn"``), a mapping
            (``{init: name, chunks: N, **kwargs}`` or ``{chunks: [spec, ...]}``), or an
            :class:`Initializer` (returned as is).
        where: the location in the policy for error messages (``"rules[0].weight"``).
        source: the policy file, if any, for error messages.
        line: the 1-based line in ``source``, if known.
        variables: the names a numeric argument's expression may use besides the
            per-parameter ones (``layer_id``, ``fan_in``, ``fan_out``) and ``d_model``: the
            policy's declared variables.

    Returns:
        The initializer.

    Raises:
        PolicyError: unknown name or argument (with the valid choices and a did-you-mean), a
            missing required argument, a value of the wrong type or range, a bad ``chunks``,
            an expression that does not parse or names an unknown variable; for a custom
            initializer, arguments that do not bind to its signature.

    Example:
        >>> try:
        ...     resolve_initializer({"init": "normal", "sdt": 0.02}, where="rules[0].weight")
        ... except PolicyError as err:
        ...     print(err)
        rules[0].weight: unknown argument 'sdt' for normal; valid: chunks, init, mean, std. \
Did you mean 'std'?
    """
    known = {*DERIVED_VARIABLES, *PARAMETER_VARIABLES, *(variables or ())}
    return Resolver(where, source, line, frozenset(known), Initializer).resolve(spec)
