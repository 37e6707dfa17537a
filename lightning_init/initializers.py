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
``generator``, else as ``function(tensor, **kwargs)``. It should
fill ``tensor`` in place; if it returns a different tensor of the same shape instead, those
values are copied in. Example, in ``mypkg/inits.py``::

    def scaled_normal(tensor, scale=1.0, generator=None):
        return tensor.normal_(0.0, scale / tensor.shape[-1] ** 0.5, generator=generator)

and in the policy: ``weight: {init: "mypkg.inits:scaled_normal", scale: 2.0}``.

Note: ``sparse`` is re-implemented here (same distribution as ``torch.nn.init.sparse_``) because
the torch version draws the zero positions from the global RNG and ignores ``generator``.

Example:
    >>> import torch
    >>> init = resolve_initializer({"init": "kaiming_normal_", "nonlinearity": "relu"})
    >>> init.describe(), round(init.expected_std(torch.Size([256, 128])), 4)
    ('kaiming_normal(nonlinearity=relu)', 0.125)
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from lightning_init._text import did_you_mean, format_choices
from lightning_init.errors import PolicyError

__all__ = ["Initializer", "known_initializers", "resolve_initializer"]

# Std of a standard normal truncated to [-2, 2] (Flax/JAX ``variance_scaling``; timm).
_TRUNC_STD_2 = 0.87962566103423978

_NONLINEARITIES = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
)
_RESERVED_KEYS = ("init", "chunks")


class _Kwargs(dict):
    """An immutable, hashable, picklable dict of validated keyword arguments."""

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("initializer arguments are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]
    __ior__ = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted((key, _freeze(value)) for key, value in self.items())))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Kwargs, (dict(self),))


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(_freeze(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


# ---------------------------------------------------------------------------------------------
# Shapes and fans
# ---------------------------------------------------------------------------------------------


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """fan_in, fan_out as ``torch.nn.init._calculate_fan_in_and_fan_out`` computes them."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _gain(nonlinearity: str, a: float) -> float:
    return float(torch.nn.init.calculate_gain(nonlinearity, a))  # type: ignore[arg-type]


def _norm_pdf(x: float) -> float:
    return 0.0 if math.isinf(x) else math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _truncnorm_moments(mean: float, std: float, a: float, b: float) -> tuple[float, float]:
    """Mean and std of N(mean, std^2) truncated to [a, b] (Johnson, Kotz & Balakrishnan 1994)."""
    alpha, beta = (a - mean) / std, (b - mean) / std
    mass = _norm_cdf(beta) - _norm_cdf(alpha)
    if mass <= 0.0:
        return float("nan"), float("nan")
    pdf_a, pdf_b = _norm_pdf(alpha), _norm_pdf(beta)
    ratio = (pdf_a - pdf_b) / mass
    a_term = 0.0 if math.isinf(alpha) else alpha * pdf_a
    b_term = 0.0 if math.isinf(beta) else beta * pdf_b
    variance = std * std * (1.0 + (a_term - b_term) / mass - ratio * ratio)
    return mean + std * ratio, std * math.sqrt(max(variance, 0.0))


# ---------------------------------------------------------------------------------------------
# Fill functions of the initializers that torch.nn.init lacks (or gets wrong for generators)
# ---------------------------------------------------------------------------------------------


def _variance_scaling_(
    tensor: torch.Tensor,
    scale: float = 1.0,
    mode: str = "fan_in",
    distribution: str = "normal",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    std = _variance_scaling_std(tuple(tensor.shape), scale, mode)
    if distribution == "truncated_normal":
        raw = std / _TRUNC_STD_2
        return torch.nn.init.trunc_normal_(
            tensor, 0.0, raw, -2.0 * raw, 2.0 * raw, generator=generator
        )
    if distribution == "normal":
        return tensor.normal_(0.0, std, generator=generator)
    bound = math.sqrt(3.0) * std
    return tensor.uniform_(-bound, bound, generator=generator)


def _variance_scaling_std(shape: tuple[int, ...], scale: float, mode: str) -> float:
    fan_in, fan_out = _fans(shape)
    denominator = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    return math.sqrt(scale / denominator)


def _lecun_normal_(
    tensor: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    return _variance_scaling_(tensor, 1.0, "fan_in", "truncated_normal", generator=generator)


def _prior_logit(prob: float) -> float:
    """``-log((1 - prob) / prob)``, finite for every prob in (0, 1): below ~1e-308 the ratio
    overflows, and ``log(prob) - log1p(-prob)`` (the same logit) is used instead."""
    ratio = (1.0 - prob) / prob
    return -math.log(ratio) if math.isfinite(ratio) else math.log(prob) - math.log1p(-prob)


def _prior_bias_(tensor: torch.Tensor, prob: float = 0.01) -> torch.Tensor:
    return tensor.fill_(_prior_logit(prob))


def _orthogonal_(
    tensor: torch.Tensor, gain: float = 1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``torch.nn.init.orthogonal_`` (same draws), computed in float32 for half precision."""
    rows = tensor.size(0)
    cols = tensor.numel() // rows
    work_dtype = torch.float32 if tensor.dtype in (torch.float16, torch.bfloat16) else tensor.dtype
    flat = torch.empty((rows, cols), dtype=work_dtype, device=tensor.device)
    flat.normal_(0, 1, generator=generator)
    if rows < cols:
        flat.t_()
    q, r = torch.linalg.qr(flat)
    q *= torch.diag(r, 0).sign()  # Mezzadri 2007: makes Q Haar-distributed
    if rows < cols:
        q.t_()
    q.mul_(gain)
    return tensor.copy_(q.reshape(tensor.shape))


def _sparse_(
    tensor: torch.Tensor,
    sparsity: float,
    std: float = 0.01,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``torch.nn.init.sparse_``'s distribution, batched and honouring ``generator``."""
    rows, cols = tensor.shape
    num_zeros = math.ceil(sparsity * rows)
    tensor.normal_(0.0, std, generator=generator)
    if num_zeros:
        keys = torch.rand((rows, cols), generator=generator, device=tensor.device)
        zero_rows = keys.argsort(dim=0)[:num_zeros]
        tensor.scatter_(0, zero_rows, 0.0)
    return tensor


# ---------------------------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------------------------

_Check = Callable[[Any], str | None]


def _number(*, finite: bool = True, minimum: float | None = None, positive: bool = False,
            maximum: float | None = None, open_max: bool = False) -> _Check:
    def check(value: Any) -> str | None:
        if math.isnan(value):
            return "must not be NaN"
        if finite and math.isinf(value):
            return "must be finite"
        if positive and value <= 0:
            return "must be > 0"
        if minimum is not None and value < minimum:
            return f"must be >= {minimum:g}"
        if maximum is not None and (value >= maximum if open_max else value > maximum):
            return f"must be {'<' if open_max else '<='} {maximum:g}"
        return None

    return check


@dataclass(frozen=True)
class _Param:
    kind: Literal["number", "int", "choice"]
    check: _Check | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Entry:
    name: str
    fill: Callable[..., Any]
    signature_of: Callable[..., Any]
    params: Mapping[str, _Param]
    shape_rule: Literal["any", "fan", "2d+", "2d", "3-5d"] = "any"


_ANY_NUMBER = _Param("number", _number())
_NONNEG = _Param("number", _number(minimum=0.0))
_BOUND = _Param("number", _number(finite=False))
_MODE = _Param("choice", choices=("fan_in", "fan_out"))
_NONLIN = _Param("choice", choices=_NONLINEARITIES)

_CATALOGUE: dict[str, _Entry] = {
    entry.name: entry
    for entry in (
        _Entry("uniform", torch.nn.init.uniform_, torch.nn.init.uniform_,
               {"a": _ANY_NUMBER, "b": _ANY_NUMBER}),
        _Entry("normal", torch.nn.init.normal_, torch.nn.init.normal_,
               {"mean": _ANY_NUMBER, "std": _NONNEG}),
        _Entry("trunc_normal", torch.nn.init.trunc_normal_, torch.nn.init.trunc_normal_,
               {"mean": _ANY_NUMBER, "std": _Param("number", _number(positive=True)),
                "a": _BOUND, "b": _BOUND}),
        _Entry("constant", torch.nn.init.constant_, torch.nn.init.constant_,
               {"val": _ANY_NUMBER}),
        _Entry("ones", torch.nn.init.ones_, torch.nn.init.ones_, {}),
        _Entry("zeros", torch.nn.init.zeros_, torch.nn.init.zeros_, {}),
        _Entry("eye", torch.nn.init.eye_, torch.nn.init.eye_, {}, "2d"),
        _Entry("dirac", torch.nn.init.dirac_, torch.nn.init.dirac_,
               {"groups": _Param("int", _number(minimum=1))}, "3-5d"),
        _Entry("xavier_uniform", torch.nn.init.xavier_uniform_, torch.nn.init.xavier_uniform_,
               {"gain": _ANY_NUMBER}, "fan"),
        _Entry("xavier_normal", torch.nn.init.xavier_normal_, torch.nn.init.xavier_normal_,
               {"gain": _ANY_NUMBER}, "fan"),
        _Entry("kaiming_uniform", torch.nn.init.kaiming_uniform_, torch.nn.init.kaiming_uniform_,
               {"a": _ANY_NUMBER, "mode": _MODE, "nonlinearity": _NONLIN}, "fan"),
        _Entry("kaiming_normal", torch.nn.init.kaiming_normal_, torch.nn.init.kaiming_normal_,
               {"a": _ANY_NUMBER, "mode": _MODE, "nonlinearity": _NONLIN}, "fan"),
        _Entry("orthogonal", _orthogonal_, torch.nn.init.orthogonal_,
               {"gain": _ANY_NUMBER}, "2d+"),
        _Entry("sparse", _sparse_, torch.nn.init.sparse_,
               {"sparsity": _Param("number", _number(minimum=0.0, maximum=1.0)),
                "std": _NONNEG}, "2d"),
        _Entry("lecun_normal", _lecun_normal_, _lecun_normal_, {}, "fan"),
        _Entry("variance_scaling", _variance_scaling_, _variance_scaling_,
               {"scale": _Param("number", _number(positive=True)),
                "mode": _Param("choice", choices=("fan_in", "fan_out", "fan_avg")),
                "distribution": _Param("choice",
                                       choices=("truncated_normal", "normal", "uniform"))},
               "fan"),
        _Entry("prior_bias", _prior_bias_, _prior_bias_,
               {"prob": _Param("number", _number(positive=True, maximum=1.0, open_max=True))}),
    )
}
_SPECIAL = {"default": "reset", "keep": "keep"}
_DETERMINISTIC = frozenset({"constant", "ones", "zeros", "eye", "dirac", "prior_bias"})


def _signature_defaults(function: Callable[..., Any]) -> dict[str, Any]:
    """Keyword arguments of ``function`` (not tensor, not ``generator``) -> default/_REQUIRED."""
    parameters = list(inspect.signature(function).parameters.values())[1:]
    return {
        p.name: (p.default if p.default is not inspect.Parameter.empty else _REQUIRED)
        for p in parameters
        if p.name != "generator"
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }


_REQUIRED = object()
_DEFAULTS = {name: _signature_defaults(entry.signature_of) for name, entry in _CATALOGUE.items()}
_ACCEPTS_GENERATOR = {
    name: "generator" in inspect.signature(entry.fill).parameters
    for name, entry in _CATALOGUE.items()
}


def known_initializers() -> list[str]:
    """The canonical initializer names, sorted (custom ones go by ``"module:function"``).

    Example:
        >>> "kaiming_normal" in known_initializers(), "keep" in known_initializers()
        (True, True)
    """
    return sorted([*_CATALOGUE, *_SPECIAL])


# ---------------------------------------------------------------------------------------------
# Initializer
# ---------------------------------------------------------------------------------------------


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
        source: the policy file the spec came from (for error messages; not compared).
        line: the spec's line in ``source`` (for error messages; not compared).

    Example:
        >>> import torch
        >>> bias = resolve_initializer({"chunks": ["zeros", "ones", "zeros", "zeros"]})
        >>> b = torch.empty(8)
        >>> bias.fill_(b, None)
        >>> bias.describe(), b.tolist()
        ('chunks[zeros, ones, zeros, zeros]', [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=lambda: _Kwargs())
    kind: Literal["tensor", "reset", "keep"] = "tensor"
    chunks: int | None = None
    blocks: tuple[Initializer, ...] | None = None
    source: str | None = field(default=None, compare=False, repr=False)
    line: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kwargs, _Kwargs):
            object.__setattr__(self, "kwargs", _Kwargs(self.kwargs))

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
        return self.name not in _DETERMINISTIC

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
        problem = self._shape_problem(tuple(int(s) for s in shape))
        if problem is not None:
            raise PolicyError(problem, where=where, source=self.source, line=self.line)

    def _shape_problem(self, shape: tuple[int, ...]) -> str | None:
        if self.kind != "tensor":
            return None
        if self.chunks is not None:
            count = self.chunks
            if len(shape) == 0 or shape[0] % count:
                return (
                    f"{self.describe()} splits dim 0 into {count} equal blocks, but shape "
                    f"{_fmt_shape(shape)} has dim 0 not divisible by {count}"
                )
            block_shape = (shape[0] // count, *shape[1:])
            for index, block in enumerate(self._block_initializers()):
                problem = block._leaf_shape_problem(block_shape) if block.chunks is None \
                    else block._shape_problem(block_shape)
                if problem is not None:
                    return f"{problem} (block {index} of {count} of shape {_fmt_shape(shape)})"
            return None
        return self._leaf_shape_problem(shape)

    def _leaf_shape_problem(self, shape: tuple[int, ...]) -> str | None:
        entry = _CATALOGUE.get(self.name)
        if self.kind != "tensor" or entry is None:
            return None
        rule = entry.shape_rule
        dims = len(shape)
        got = f"got shape {_fmt_shape(shape)}"
        if rule in ("fan", "2d+") and dims < 2:
            why = " (fan_in/fan_out are defined for weights, not biases)" if rule == "fan" else ""
            return f"{self.name} needs a tensor with at least 2 dimensions{why}, {got}"
        if rule == "2d" and dims != 2:
            return f"{self.name} needs a tensor with exactly 2 dimensions, {got}"
        if rule == "3-5d":
            if not 3 <= dims <= 5:
                return f"{self.name} needs a tensor with 3, 4 or 5 dimensions (conv weight), {got}"
            groups = self.kwargs.get("groups", 1)
            if shape[0] % groups:
                return f"dirac with groups={groups} needs dim 0 divisible by {groups}, {got}"
        return None

    def _block_initializers(self) -> tuple[Initializer, ...]:
        if self.blocks is not None:
            return self.blocks
        leaf = Initializer(self.name, self.kwargs, self.kind, None, None, self.source, self.line)
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
        pattern; sparse: ``std * sqrt(nonzero fraction)``. Per block when chunked. ``None`` for
        keep/default, custom initializers and zero-element tensors.

        Example:
            >>> round(resolve_initializer("xavier_uniform").expected_std((300, 100)), 5)
            0.07071
        """
        moments = self._moments(tuple(int(s) for s in shape))
        return None if moments is None else moments[1]

    def expected_mean(self, shape: torch.Size | tuple[int, ...]) -> float | None:
        """The mean over the tensor's elements the formula promises (``None`` when unknown).

        Example:
            >>> resolve_initializer({"init": "uniform", "a": -1, "b": 3}).expected_mean((5,))
            1.0
        """
        moments = self._moments(tuple(int(s) for s in shape))
        return None if moments is None else moments[0]

    def _moments(self, shape: tuple[int, ...]) -> tuple[float, float] | None:
        if self.kind != "tensor" or math.prod(shape) == 0 or self._shape_problem(shape):
            return None
        if self.chunks is None:
            return self._leaf_moments(shape)
        block_shape = (shape[0] // self.chunks, *shape[1:])
        parts = [block._moments(block_shape) for block in self._block_initializers()]
        if any(part is None for part in parts):
            return None
        mean = sum(m for m, _ in parts) / len(parts)  # type: ignore[misc]
        second = sum(s * s + m * m for m, s in parts) / len(parts)  # type: ignore[misc]
        return mean, math.sqrt(max(second - mean * mean, 0.0))

    def _leaf_moments(self, shape: tuple[int, ...]) -> tuple[float, float] | None:
        entry = _CATALOGUE.get(self.name)
        if entry is None:
            return None
        args = {**_DEFAULTS[self.name], **self.kwargs}
        name = self.name
        numel = math.prod(shape)
        if name == "uniform":
            return (args["a"] + args["b"]) / 2, (args["b"] - args["a"]) / math.sqrt(12.0)
        if name == "normal":
            return float(args["mean"]), float(args["std"])
        if name == "trunc_normal":
            return _truncnorm_moments(args["mean"], args["std"], args["a"], args["b"])
        if name in ("constant", "ones", "zeros", "prior_bias"):
            value = {"ones": 1.0, "zeros": 0.0}.get(name)
            if name == "constant":
                value = float(args["val"])
            elif name == "prior_bias":
                value = _prior_logit(args["prob"])
            return value, 0.0  # type: ignore[return-value]
        if name in ("eye", "dirac"):
            if name == "eye":
                ones = min(shape)
            else:
                groups = args["groups"]
                ones = groups * min(shape[0] // groups, shape[1])
            fraction = ones / numel
            return fraction, math.sqrt(fraction * (1.0 - fraction))
        if name == "sparse":
            kept = (shape[0] - math.ceil(args["sparsity"] * shape[0])) / shape[0]
            return 0.0, args["std"] * math.sqrt(kept)
        if name == "orthogonal":
            cols = numel // shape[0]
            return 0.0, abs(args["gain"]) / math.sqrt(max(shape[0], cols))
        fan_in, fan_out = _fans(shape)
        if name in ("xavier_uniform", "xavier_normal"):
            return 0.0, abs(args["gain"]) * math.sqrt(2.0 / (fan_in + fan_out))
        if name in ("kaiming_uniform", "kaiming_normal"):
            fan = fan_in if args["mode"] == "fan_in" else fan_out
            return 0.0, _gain(args["nonlinearity"], args["a"]) / math.sqrt(fan)
        if name == "lecun_normal":
            return 0.0, 1.0 / math.sqrt(fan_in)
        if name == "variance_scaling":
            return 0.0, _variance_scaling_std(shape, args["scale"], args["mode"])
        return None  # pragma: no cover - every catalogue entry is handled above

    # -- filling ------------------------------------------------------------------------------

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
            raise PolicyError(
                "'default' calls the module's reset_parameters(); it cannot fill a tensor alone",
                source=self.source,
                line=self.line,
            )
        shape = tuple(tensor.shape)
        problem = self._shape_problem(shape)
        if problem is not None:
            raise PolicyError(problem, source=self.source, line=self.line)
        if tensor.numel() == 0 or tensor.is_meta:
            return
        with torch.no_grad():
            if self.chunks is None:
                self._fill_leaf(tensor, generator)
                return
            size = shape[0] // self.chunks
            for index, block in enumerate(self._block_initializers()):
                block.fill_(tensor.narrow(0, index * size, size), generator)

    def _fill_leaf(self, tensor: torch.Tensor, generator: torch.Generator | None) -> None:
        entry = _CATALOGUE.get(self.name)
        if entry is not None:
            function, accepts_generator = entry.fill, _ACCEPTS_GENERATOR[self.name]
        else:
            function = _load_custom(self.name, where="", source=self.source, line=self.line)
            accepts_generator = _accepts_generator(function)
        extra = {"generator": generator} if accepts_generator else {}
        try:
            result = function(tensor, **self.kwargs, **extra)
        except PolicyError:
            raise
        except Exception as err:
            raise PolicyError(
                f"{self.describe()} failed on a tensor of shape {_fmt_shape(tuple(tensor.shape))}"
                f" and dtype {tensor.dtype}: {err}",
                source=self.source,
                line=self.line,
            ) from err
        if isinstance(result, torch.Tensor) and result is not tensor:
            if result.shape != tensor.shape:
                raise PolicyError(
                    f"custom initializer {self.name} returned shape "
                    f"{_fmt_shape(tuple(result.shape))} for a tensor of shape "
                    f"{_fmt_shape(tuple(tensor.shape))}; fill the tensor in place",
                    source=self.source,
                    line=self.line,
                )
            if result.data_ptr() != tensor.data_ptr():
                tensor.copy_(result)

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
        if self.kwargs:
            text += "(" + ", ".join(f"{k}={_fmt_value(v)}" for k, v in self.kwargs.items()) + ")"
        if self.chunks is not None:
            text += f"×{self.chunks} chunks"
        return text

    def __str__(self) -> str:
        return self.describe()


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


# ---------------------------------------------------------------------------------------------
# Resolution and validation
# ---------------------------------------------------------------------------------------------


def resolve_initializer(
    spec: str | Mapping[str, Any] | Initializer,
    *,
    where: str = "",
    source: str | None = None,
    line: int | None = None,
) -> Initializer:
    """Turn a policy's initializer spec into a validated :class:`Initializer`.

    Args:
        spec: a name (``"zeros"``, ``"kaiming_normal_"``, ``"pkg.mod:fn"``), a mapping
            (``{init: name, chunks: N, **kwargs}`` or ``{chunks: [spec, ...]}``), or an
            :class:`Initializer` (returned as is).
        where: the location in the policy for error messages (``"rules[0].weight"``).
        source: the policy file, if any, for error messages.
        line: the 1-based line in ``source``, if known.

    Returns:
        The initializer.

    Raises:
        PolicyError: unknown name or argument (with the valid choices and a did-you-mean), a
            missing required argument, a value of the wrong type or range, a bad ``chunks``.

    Example:
        >>> try:
        ...     resolve_initializer({"init": "normal", "sdt": 0.02}, where="rules[0].weight")
        ... except PolicyError as err:
        ...     print(err)
        rules[0].weight: unknown argument 'sdt' for normal; valid: chunks, init, mean, std. \
Did you mean 'std'?
    """
    return _Resolver(where, source, line).resolve(spec)


class _Resolver:
    def __init__(self, where: str, source: str | None, line: int | None) -> None:
        self.where, self.source, self.line = where, source, line

    def error(self, message: str, where: str | None = None) -> PolicyError:
        return PolicyError(
            message, where=self.where if where is None else where, source=self.source,
            line=self.line,
        )

    def resolve(self, spec: Any, where: str | None = None) -> Initializer:
        where = self.where if where is None else where
        if isinstance(spec, Initializer):
            return spec
        if isinstance(spec, str):
            return self._named(spec, {}, None, where)
        if not isinstance(spec, Mapping):
            raise self.error(
                f"an initializer is a name (e.g. 'zeros') or a mapping with an 'init' key, "
                f"got {spec!r} ({type(spec).__name__})",
                where,
            )
        spec = dict(spec)
        for key in spec:
            if not isinstance(key, str):
                raise self.error(f"initializer keys must be strings, got {key!r}", where)
        chunks = spec.pop("chunks", None)
        if isinstance(chunks, list | tuple):
            if spec:
                raise self.error(
                    "'chunks' given as a list of per-block initializers takes no other keys, "
                    f"got {format_choices(spec)}",
                    where,
                )
            return self._blocks(chunks, where)
        if "init" not in spec:
            hint = "".join(did_you_mean(key, ["init"]) for key in spec)
            raise self.error(
                "an initializer mapping needs an 'init' key (or 'chunks' as a list), got keys "
                f"{format_choices(spec) or '(none)'}.{hint}".rstrip("."),
                where,
            )
        name = spec.pop("init")
        if not isinstance(name, str):
            raise self.error(f"'init' must be an initializer name, got {name!r}", where)
        return self._named(name, spec, chunks, where)

    def _blocks(self, specs: list[Any] | tuple[Any, ...], where: str) -> Initializer:
        if not specs:
            raise self.error("'chunks' as a list needs at least one initializer", where)
        blocks = []
        for index, block_spec in enumerate(specs):
            block_where = f"{where}.chunks[{index}]" if where else f"chunks[{index}]"
            block = self.resolve(block_spec, block_where)
            if block.kind == "reset":
                raise self.error(
                    "'default' (the module's reset_parameters) cannot initialize one block; "
                    "use 'keep' to leave a block alone",
                    block_where,
                )
            blocks.append(block)
        return Initializer("chunks", _Kwargs(), "tensor", len(blocks), tuple(blocks),
                           self.source, self.line)

    def _named(self, raw_name: str, kwargs: dict[str, Any], chunks: Any, where: str) -> Initializer:
        name = raw_name.strip()
        if ":" in name:
            return self._custom(name, kwargs, chunks, where)
        canonical = name.lower().rstrip("_")
        if canonical in _SPECIAL:
            if kwargs:
                raise self.error(f"'{canonical}' takes no arguments, got {format_choices(kwargs)}",
                                 where)
            if chunks is not None:
                raise self.error(f"'chunks' cannot be combined with '{canonical}'", where)
            return Initializer(canonical, _Kwargs(), _SPECIAL[canonical], None, None,  # type: ignore[arg-type]
                               self.source, self.line)
        if canonical not in _CATALOGUE:
            known = format_choices(known_initializers())
            message = f"unknown initializer {raw_name!r}; known: {known}"
            hint = did_you_mean(canonical, known_initializers())
            if not hint and "." in name:
                module, _, attribute = name.rpartition(".")
                hint = f" Did you mean '{module}:{attribute}'?"
            if not hint:
                hint = " A custom initializer needs an import path 'package.module:function'."
            raise self.error(message + "." + hint, where)
        validated = self._validate(canonical, kwargs, where)
        return Initializer(canonical, validated, "tensor", self._chunks(chunks, where), None,
                           self.source, self.line)

    def _chunks(self, chunks: Any, where: str) -> int | None:
        if chunks is None:
            return None
        if isinstance(chunks, bool) or not isinstance(chunks, numbers.Integral) or chunks < 1:
            raise self.error(
                f"'chunks' must be an integer >= 1 (equal blocks along dim 0) or a list of "
                f"initializers, got {chunks!r}",
                where,
            )
        return int(chunks)

    def _validate(self, name: str, kwargs: dict[str, Any], where: str) -> _Kwargs:
        defaults = _DEFAULTS[name]
        params = _CATALOGUE[name].params
        for key in kwargs:
            if key not in defaults:
                valid = [*defaults, *_RESERVED_KEYS]
                raise self.error(
                    f"unknown argument {key!r} for {name}; valid: {format_choices(valid)}."
                    f"{did_you_mean(key, valid)}".rstrip("."),
                    where,
                )
        missing = [key for key, default in defaults.items()
                   if default is _REQUIRED and key not in kwargs]
        if missing:
            raise self.error(
                f"{name} needs the argument {', '.join(repr(m) for m in missing)} "
                f"(e.g. {{init: {name}, {missing[0]}: ...}})",
                where,
            )
        validated: dict[str, Any] = {}
        for key in defaults:  # signature order, for stable descriptions
            if key in kwargs:
                validated[key] = self._value(name, key, kwargs[key], params[key], where)
        args = {**defaults, **validated}
        if name == "uniform" and args["a"] > args["b"]:
            raise self.error(f"uniform needs a <= b, got a={args['a']}, b={args['b']}", where)
        if name == "uniform" and math.isinf(args["b"] - args["a"]):
            raise self.error(f"uniform: b - a overflows, got a={args['a']}, b={args['b']}", where)
        if name == "trunc_normal":
            mean, std, low, high = args["mean"], args["std"], args["a"], args["b"]
            if low >= high:
                raise self.error(f"trunc_normal needs a < b, got a={low}, b={high}", where)
            if mean < low - 2 * std or mean > high + 2 * std:
                raise self.error(
                    f"trunc_normal: mean={mean} is more than 2 std from [a, b] = [{low}, {high}]; "
                    "the truncated distribution would be degenerate",
                    where,
                )
        return _Kwargs(validated)

    def _value(self, name: str, key: str, value: Any, param: _Param, where: str) -> Any:
        if param.kind == "choice":
            if not isinstance(value, str) or value not in param.choices:
                raise self.error(
                    f"{name}: {key}={value!r} is not one of {format_choices(param.choices)}."
                    f"{did_you_mean(str(value), param.choices)}".rstrip("."),
                    where,
                )
            return value
        wanted = "an integer" if param.kind == "int" else "a number"
        converted = value
        if isinstance(value, str) and param.kind == "number":
            try:  # YAML 1.1 reads `1e-2` as a string
                converted = float(value)
            except ValueError:
                converted = None
        if (
            converted is None
            or isinstance(converted, bool)
            or not isinstance(converted, numbers.Real)
            or (param.kind == "int" and not isinstance(converted, numbers.Integral))
        ):
            raise self.error(
                f"{name}: {key} must be {wanted}, got {value!r} ({type(value).__name__})", where
            )
        converted = int(converted) if param.kind == "int" else converted
        problem = param.check(converted) if param.check else None
        if problem:
            raise self.error(f"{name}: {key} {problem}, got {value!r}", where)
        return converted

    def _custom(self, path: str, kwargs: dict[str, Any], chunks: Any, where: str) -> Initializer:
        function = _load_custom(path, where=where, source=self.source, line=self.line)
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            signature = None
        if signature is not None:
            parameters = list(signature.parameters.values())
            if not parameters or parameters[0].kind not in (
                inspect.Parameter.POSITIONAL_ONLY,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                inspect.Parameter.VAR_POSITIONAL,
            ):
                raise self.error(
                    f"custom initializer {path} must take the tensor as its first positional "
                    "argument",
                    where,
                )
            rest = parameters[1:] if parameters[0].kind != inspect.Parameter.VAR_POSITIONAL \
                else parameters
            if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in rest):
                names = [p.name for p in rest if p.name != "generator" and p.kind in (
                    inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
                for key in kwargs:
                    if key not in names:
                        valid = [*names, *_RESERVED_KEYS]
                        raise self.error(
                            f"unknown argument {key!r} for {path}; valid: "
                            f"{format_choices(valid)}.{did_you_mean(key, valid)}".rstrip("."),
                            where,
                        )
            missing = [
                p.name for p in rest
                if p.default is inspect.Parameter.empty and p.name != "generator"
                and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                               inspect.Parameter.KEYWORD_ONLY)
                and p.name not in kwargs
            ]
            if missing:
                raise self.error(
                    f"custom initializer {path} needs the argument "
                    f"{', '.join(repr(m) for m in missing)}",
                    where,
                )
        return Initializer(path, _Kwargs(kwargs), "tensor", self._chunks(chunks, where), None,
                           self.source, self.line)


def _load_custom(
    path: str, *, where: str, source: str | None, line: int | None
) -> Callable[..., Any]:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute or ":" in attribute:
        raise PolicyError(
            f"a custom initializer is 'package.module:function', got {path!r}",
            where=where, source=source, line=line,
        )
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:
        raise PolicyError(
            f"cannot import module {module_name!r} of custom initializer {path!r}: "
            f"{type(err).__name__}: {err}",
            where=where, source=source, line=line,
        ) from err
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(target) if not n.startswith("_")]
            raise PolicyError(
                f"custom initializer {path!r}: {module_name!r} has no attribute {part!r}."
                f"{did_you_mean(part, names)}".rstrip("."),
                where=where, source=source, line=line,
            )
        target = getattr(target, part)
    if not callable(target):
        raise PolicyError(
            f"custom initializer {path!r} is not callable ({type(target).__name__})",
            where=where, source=source, line=line,
        )
    return target


def _accepts_generator(function: Callable[..., Any]) -> bool:
    try:
        return "generator" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
