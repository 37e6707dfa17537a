"""Which dimension of a weight is its input and which its output: fan_in and fan_out per layer.

``torch.nn.init`` computes fans from the shape alone: ``fan_in = size(1) * receptive`` and
``fan_out = size(0) * receptive``, the receptive field being the product of the dimensions
past the second. That is right for the layers that store their weight output-first and wrong
for the others, and the shape cannot tell them apart. Here the layer type decides:

====================================  ============================  =======  =======
layer                                 weight shape                  in dim   out dim
====================================  ============================  =======  =======
``Linear``, ``Conv1d/2d/3d``          (out, in / groups, *kernel)   1        0
``ConvTranspose1d/2d/3d``             (in, out / groups, *kernel)   0 [1]_   1
HF ``transformers...Conv1D``          (in, out)                     0        1
``Embedding``, ``EmbeddingBag``       (num_embeddings, dim)         1        0
anything else                         torch's reading               1        0
====================================  ============================  =======  =======

.. [1] divided by the module's ``groups``: dimension 0 holds the channels of all groups.

- ``Linear`` and ``ConvNd``: torch is right for fan_in. For a grouped convolution each input
  channel reaches only ``out / groups`` output channels, so the exact fan_out is ``out /
  groups * receptive``; torch (and so torchvision's and timm's
  ``kaiming_normal_(mode="fan_out")`` on depthwise convolutions) counts all ``out`` channels,
  and so do we by default, so that the real models' inits are reproduced. The exact count is
  ``register_layout(nn.Conv2d, {"in": 1, "out": 0, "grouped": "out"})``.
- ``ConvTransposeNd``: torch takes ``out / groups * receptive`` as fan_in, which is the
  number of outputs one input feeds, i.e. the fan_out. Here fan_in is ``in / groups *
  receptive`` (the inputs that feed one output, stride aside) and fan_out ``out / groups *
  receptive``.
- Hugging Face's ``Conv1D`` (GPT-2, GPT): a ``Linear`` with the weight transposed, stored as
  (in, out). torch takes the output size as fan_in. It is matched by its class path, so
  ``transformers`` is never imported here.
- ``Embedding``: read as a linear map on one-hot inputs the weight is (in, out), but a lookup
  sums a single term, so no fan is a variance argument for it; with that reading
  ``kaiming_normal`` would draw ``1 / sqrt(num_embeddings)``, vanishing for a large
  vocabulary. torch takes ``embedding_dim`` as fan_in, and so does Flax (``nn.Embed``'s
  default init is ``variance_scaling(1, "fan_in", "normal", out_axis=0)``, whose fan_in is
  the feature size): ``1 / sqrt(embedding_dim)``. We keep that reading.

A layer type of the user's is registered with :func:`register_layout` (a class or its name),
or per rule in the YAML as ``fan_layout: {in: 0, out: 1}`` (parsed by :func:`parse_layout`).

Example:
    >>> from torch import nn
    >>> fans(nn.Linear(3, 5), "weight", nn.Linear(3, 5).weight)
    (3, 5)
    >>> convt = nn.ConvTranspose2d(4, 6, kernel_size=3, groups=2)
    >>> tuple(convt.weight.shape), fans(convt, "weight", convt.weight)
    ((4, 3, 3, 3), (18, 27))
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from lightning_init._text import did_you_mean
from lightning_init.errors import PolicyError

__all__ = ["TORCH_LAYOUT", "Layout", "fans", "layout_for", "layout_of", "parse_layout",
           "register_layout"]


@dataclass(frozen=True)
class Layout:
    """The dimensions of a weight that index its inputs and its outputs.

    The other dimensions form the receptive field, which multiplies both fans.

    Attributes:
        in_dim: the input dimension (negative counts from the end).
        out_dim: the output dimension.
        grouped: ``"in"`` or ``"out"`` when that dimension holds the channels of all groups
            and its fan counts one group's (divided by the module's ``groups``); else None.

    Example:
        >>> Layout(in_dim=0, out_dim=1).fans((768, 2304))
        (768, 2304)
        >>> Layout(in_dim=1, out_dim=0).fans((8, 4, 3, 3))
        (36, 72)
        >>> Layout(0, 1, grouped="in").fans((8, 3, 3, 3), groups=2)
        (36, 27)
        >>> str(Layout(0, 1))
        '{in: 0, out: 1}'
    """

    in_dim: int
    out_dim: int
    grouped: str | None = None

    def fans(self, shape: tuple[int, ...], groups: int = 1) -> tuple[int, int]:
        """``(fan_in, fan_out)`` of a weight of ``shape`` in a module of ``groups`` groups.

        Raises:
            PolicyError: the shape has fewer than 2 dimensions, or the layout names a
                dimension the shape lacks or the same one twice.
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2:
            raise PolicyError(f"fan_in and fan_out of a tensor of shape {_format_shape(shape)} are "
                              f"undefined: it needs 2 or more dimensions (a weight, not a "
                              f"bias)")
        dims = []
        for dim in (self.in_dim, self.out_dim):
            if not -len(shape) <= dim < len(shape):
                raise PolicyError(f"fan_layout {self} names dimension {dim}, but the shape "
                                  f"{_format_shape(shape)} has {len(shape)} dimensions")
            dims.append(dim % len(shape))
        if dims[0] == dims[1]:
            raise PolicyError(f"fan_layout {self} names dimension {dims[0]} of shape "
                              f"{_format_shape(shape)} as both the input and the output")
        receptive = math.prod(s for i, s in enumerate(shape) if i not in dims)
        fan_in, fan_out = shape[dims[0]] * receptive, shape[dims[1]] * receptive
        if self.grouped == "in":
            fan_in //= groups
        elif self.grouped == "out":
            fan_out //= groups
        return fan_in, fan_out

    def __str__(self) -> str:
        grouped = f", grouped: {self.grouped}" if self.grouped else ""
        return f"{{in: {self.in_dim}, out: {self.out_dim}{grouped}}}"


#: torch.nn.init's reading: output first, input second.
TORCH_LAYOUT = Layout(in_dim=1, out_dim=0)
_TRANSPOSED = Layout(in_dim=0, out_dim=1)
_CONV_TRANSPOSED = Layout(in_dim=0, out_dim=1, grouped="in")
_KEYS = ("in", "out", "grouped")

# (class, "module.QualName" or "Name", parameter name) -> (registration order, layout)
_REGISTRY: dict[tuple[type | str, str], tuple[int, Layout]] = {}
_ORDER = itertools.count()


def _format_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def parse_layout(spec: Any, *, where: str = "fan_layout") -> Layout:
    """A :class:`Layout` from its YAML form ``{in: 0, out: 1}`` (or a ``Layout``).

    Args:
        spec: a mapping with the integer keys ``in`` and ``out`` and optionally ``grouped``
            (``in`` or ``out``: see :class:`Layout`).
        where: the place in the policy, for the error message.

    Raises:
        PolicyError: not a mapping, a key missing or unknown (with a did-you-mean), a value
            that is not an integer, ``in`` equal to ``out``, or ``grouped`` not in/out.

    Example:
        >>> parse_layout({"in": 0, "out": 1})
        Layout(in_dim=0, out_dim=1, grouped=None)
        >>> parse_layout({"in": 0, "ouy": 1})
        Traceback (most recent call last):
        ...
        lightning_init.PolicyError: fan_layout: unknown key 'ouy'. Did you mean 'out'? ...
    """
    if isinstance(spec, Layout):
        return spec
    if not isinstance(spec, Mapping):
        raise PolicyError(f"expected a mapping such as {{in: 0, out: 1}}, got "
                          f"{type(spec).__name__} {spec!r}", where=where)
    for key in spec:
        if key not in _KEYS:
            raise PolicyError(f"unknown key {key!r}.{did_you_mean(str(key), _KEYS)} "
                              f"Valid keys: {', '.join(_KEYS)}.", where=where)
    dims = []
    for key in ("in", "out"):
        if key not in spec:
            raise PolicyError(f"key {key!r} is missing: give both, e.g. {{in: 0, out: 1}}",
                              where=where)
        value = spec[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise PolicyError(f"{key}: expected a dimension index (an integer), got "
                              f"{value!r}", where=where)
        dims.append(value)
    if dims[0] == dims[1]:
        raise PolicyError(f"'in' and 'out' are both dimension {dims[0]}", where=where)
    grouped = spec.get("grouped")
    if grouped not in (None, "in", "out"):
        raise PolicyError(f"grouped: expected 'in' or 'out' (the side whose dimension holds "
                          f"every group's channels), got {grouped!r}", where=where)
    return Layout(in_dim=dims[0], out_dim=dims[1], grouped=grouped)


def register_layout(type_or_name: type | str, layout: Layout | Mapping[str, int], *,
                    param: str = "weight") -> None:
    """Declare the weight layout of a layer type; later registrations win.

    Args:
        type_or_name: the module class, its path ``"package.module.Class"`` (matched without
            importing it) or its bare class name. Subclasses are covered too.
        layout: a :class:`Layout` or its YAML form ``{in: 0, out: 1}``.
        param: the parameter's name on the module.

    Raises:
        PolicyError: the type is neither a class nor a non-empty name, or the layout is
            invalid.

    Example:
        >>> import torch
        >>> class Transposed(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.kernel = nn.Parameter(torch.empty(3, 5))  # (in, out)
        >>> register_layout(Transposed, {"in": 0, "out": 1}, param="kernel")
        >>> layer = Transposed()
        >>> fans(layer, "kernel", layer.kernel)
        (3, 5)
    """
    if isinstance(type_or_name, str):
        if not type_or_name.strip():
            raise PolicyError("register_layout: the layer type name is empty")
        key: type | str = type_or_name.strip().replace(":", ".")
    elif isinstance(type_or_name, type):
        key = type_or_name
    else:
        raise PolicyError(f"register_layout: expected a module class or its name, got "
                          f"{type(type_or_name).__name__} {type_or_name!r}")
    if not isinstance(param, str) or not param:
        raise PolicyError(f"register_layout: param must be a parameter name, got {param!r}")
    _REGISTRY[(key, param)] = (next(_ORDER), parse_layout(layout, where="register_layout"))


def layout_for(module: nn.Module, param_name: str) -> Layout | None:
    """The registered layout of ``module``'s parameter ``param_name``, or ``None``.

    The module's classes are searched nearest first; for one class its object, its path
    ``"module.QualName"`` and its bare name are looked up, and the latest registration of
    the three wins.

    Example:
        >>> layout_for(nn.ConvTranspose1d(2, 3, 1), "weight")
        Layout(in_dim=0, out_dim=1, grouped='in')
        >>> layout_for(nn.LayerNorm(3), "weight") is None
        True
    """
    for cls in type(module).__mro__:
        keys = (cls, f"{cls.__module__}.{cls.__qualname__}", cls.__name__)
        hits = [_REGISTRY[(key, param_name)] for key in keys if (key, param_name) in _REGISTRY]
        if hits:
            return max(hits, key=lambda hit: hit[0])[1]
    return None


def fans(module: nn.Module, param_name: str, tensor: Any, *,
         layout: Layout | Mapping[str, int] | None = None) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of ``module``'s parameter ``param_name``, shaped as ``tensor``.

    Args:
        module: the module that owns the parameter; its type chooses the layout.
        param_name: the parameter's name on the module (``"weight"``).
        tensor: the parameter, or any tensor (a meta one, a chunk) of the shape to count.
        layout: a layout that overrides the registry (a rule's ``fan_layout``).

    Returns:
        The fans under the registered layout; torch.nn.init's reading where none is.

    Raises:
        PolicyError: the tensor has fewer than 2 dimensions, or the layout does not fit its
            shape; the message names the module type and the parameter.

    Example:
        >>> import torch
        >>> fans(nn.Embedding(100, 16), "weight", torch.empty(100, 16, device="meta"))
        (16, 100)
        >>> fans(nn.Linear(3, 5), "bias", torch.empty(5))
        Traceback (most recent call last):
        ...
        lightning_init.PolicyError: Linear.bias: fan_in and fan_out of a tensor of shape (5,) ...
    """
    chosen, groups = layout_of(module, param_name, layout)
    try:
        return chosen.fans(tuple(tensor.shape), groups=groups)
    except PolicyError as err:
        raise PolicyError(err.bare_message,
                          where=f"{type(module).__name__}.{param_name}") from None


def layout_of(module: nn.Module, param_name: str,
              layout: Layout | Mapping[str, int] | None = None) -> tuple[Layout, int]:
    """The layout :func:`fans` reads ``module``'s ``param_name`` with, and the module's groups.

    ``layout`` (a rule's ``fan_layout``) wins over the registry; torch's reading is the last
    resort. The pair fixes the fans of any shape, such as the blocks of a chunked weight.

    Example:
        >>> layout, groups = layout_of(nn.Conv2d(4, 8, 3, groups=2), "weight")
        >>> str(layout), groups, layout.fans((8, 2, 3, 3), groups)
        ('{in: 1, out: 0}', 2, (18, 72))
    """
    if layout is not None:
        return parse_layout(layout), _groups(module)
    return layout_for(module, param_name) or TORCH_LAYOUT, _groups(module)


def _groups(module: nn.Module) -> int:
    groups = getattr(module, "groups", 1)
    return groups if isinstance(groups, int) and not isinstance(groups, bool) and groups > 0 \
        else 1


def _register_builtins() -> None:
    for cls in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, nn.EmbeddingBag):
        register_layout(cls, TORCH_LAYOUT)
    for cls in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
        register_layout(cls, _CONV_TRANSPOSED)
    register_layout("transformers.pytorch_utils.Conv1D", _TRANSPOSED)


_register_builtins()
