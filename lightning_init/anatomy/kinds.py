"""One registry of layer kinds: what a module is (a weight layer, a norm, an embedding, an
activation and its gain, a pass-through), read by the anatomy, the automatic policy, the check
and LSUV.

A module's kind is looked up by its classes, nearest first (the class object, its path
``"package.module.Class"``, its bare name), the latest registration winning, like
:func:`~lightning_init.anatomy.layouts.register_layout`. A weight layer's fans come from its
layout (``anatomy.layouts``): a class registered with ``register_layout`` is a weight layer here
too. Where no class is registered, the *hint table* (class-name fragments such as ``"norm"``
or ``"gelu"``, user-extensible with :func:`register_hint`) gives a guess, which the anatomy's
probes confirm or overrule: a "norm" whose output is not scale-invariant is no norm.

Activation gains are ``1 / sqrt(E[f(z)^2])`` for ``z ~ N(0, 1)`` (the argument of He et al. 2015,
arXiv:1502.01852, section 2.2), written as the textbook's expression where there is one; an
activation the table does not know is measured (:func:`measured_gain`).

Example:
    >>> from torch import nn
    >>> kind_of(nn.Linear(2, 3)).role, kind_of(nn.GELU()).activation
    ('weight', 'gelu')
    >>> is_weight_layer(nn.ConvTranspose2d(4, 6, 3, groups=2)), layer_fans(
    ...     nn.ConvTranspose2d(4, 6, 3, groups=2))
    (True, (18, 27))
    >>> class Swish(nn.Module):
    ...     def forward(self, x):
    ...         return x * x.sigmoid()
    >>> kind_of(Swish()).activation  # by the hint table: a class name holding "swish"
    'silu'
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lightning_init.anatomy.layouts import fans, layout_for, register_layout
from lightning_init.errors import PolicyError

__all__ = ["ROLES", "ActivationGain", "LayerKind", "activation_for_function", "gain_of",
           "is_embedding", "is_norm", "is_weight_layer", "kind_of", "layer_fans",
           "measured_gain", "register_activation", "register_hint", "register_kind",
           "transforms"]

#: What a module can be.
ROLES = ("weight", "norm", "embedding", "activation", "pass", "recurrent", "attention")


@dataclass(frozen=True)
class LayerKind:
    """What a module is.

    Attributes:
        role: one of :data:`ROLES`.
        activation: for an activation, its name in the gain table (``"relu"``).
        source: ``"registry"`` (a registered class) or ``"hint"`` (a class-name fragment).
    """

    role: str
    activation: str | None = None
    source: str = "registry"


@dataclass(frozen=True)
class ActivationGain:
    """An activation's gain: the expression written into a policy and where it comes from."""

    expression: str
    source: str


_GAINS: dict[str, ActivationGain] = {}
_FUNCTIONS: dict[str, str] = {}  # functional name ("relu", "gelu", "sigmoid") -> activation
_REGISTRY: dict[type | str, tuple[int, LayerKind]] = {}
_HINTS: list[tuple[str, LayerKind]] = []  # class-name fragment -> kind, most specific first
_ORDER = itertools.count()


def register_activation(name: str, expression: str, source: str, *,
                        functions: tuple[str, ...] = ()) -> None:
    """Declare an activation's gain (``"sqrt(2)"``), its source and its functional names.

    Example:
        >>> register_activation("snake", "1.2", "measured", functions=("snake",))
        >>> gain_of("snake").expression, activation_for_function("snake")
        ('1.2', 'snake')
    """
    if not isinstance(name, str) or not name:
        raise PolicyError(f"register_activation: expected a name, got {name!r}")
    _GAINS[name] = ActivationGain(str(expression), source)
    for function in functions:
        _FUNCTIONS[function] = name


def register_kind(type_or_name: type | str, role: str, *, activation: str | None = None,
                  layout: Any = None, param: str = "weight") -> None:
    """Declare what a module class is; later registrations win.

    Args:
        type_or_name: the class, its path ``"package.module.Class"`` or its bare name.
        role: one of :data:`ROLES`.
        activation: for ``role="activation"``, the name in the gain table.
        layout: for a weight layer, its fan layout (``{in: 0, out: 1}``), passed to
            :func:`~lightning_init.anatomy.layouts.register_layout`.
        param: the weight's parameter name for ``layout``.

    Raises:
        PolicyError: an unknown role, an activation without a gain, or an invalid layout.

    Example:
        >>> class Scaled(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.kernel = nn.Parameter(torch.empty(3, 5))
        >>> register_kind(Scaled, "weight", layout={"in": 0, "out": 1}, param="kernel")
        >>> is_weight_layer(Scaled()), layer_fans(Scaled(), "kernel")
        (True, (3, 5))
    """
    if role not in ROLES:
        raise PolicyError(f"register_kind: unknown role {role!r}; valid roles: "
                          f"{', '.join(ROLES)}")
    if role == "activation" and activation not in _GAINS:
        raise PolicyError(f"register_kind: activation {activation!r} has no gain; declare it "
                          f"with register_activation first (known: {', '.join(sorted(_GAINS))})")
    key = _key(type_or_name)
    if layout is not None:
        register_layout(type_or_name, layout, param=param)
    _REGISTRY[key] = (next(_ORDER), LayerKind(role, activation))


def register_hint(fragment: str, role: str, *, activation: str | None = None) -> None:
    """Add a class-name fragment to the fallback hint table (checked before the built-in
    fragments). A hint never overrides a registered class, and the anatomy's probes overrule
    it where the data flow disagrees.

    Example:
        >>> register_hint("scalenorm", "norm")
        >>> class MyScaleNorm(nn.Module):
        ...     pass
        >>> kind_of(MyScaleNorm())
        LayerKind(role='norm', activation=None, source='hint')
    """
    if role not in ROLES:
        raise PolicyError(f"register_hint: unknown role {role!r}; valid roles: {', '.join(ROLES)}")
    if not isinstance(fragment, str) or not fragment.strip():
        raise PolicyError(f"register_hint: expected a class-name fragment, got {fragment!r}")
    _HINTS.insert(0, (fragment.strip().lower(), LayerKind(role, activation, "hint")))


def _key(type_or_name: type | str) -> type | str:
    if isinstance(type_or_name, str) and type_or_name.strip():
        return type_or_name.strip().replace(":", ".")
    if isinstance(type_or_name, type):
        return type_or_name
    raise PolicyError(f"expected a module class or its name, got {type_or_name!r}")


def _registered(module: nn.Module) -> LayerKind | None:
    for cls in type(module).__mro__:
        keys = (cls, f"{cls.__module__}.{cls.__qualname__}", cls.__name__)
        hits = [_REGISTRY[key] for key in keys if key in _REGISTRY]
        if hits:
            return max(hits, key=lambda hit: hit[0])[1]
    return None


def _own_weight(module: nn.Module) -> bool:
    return any(param.dim() >= 2 for param in module.parameters(recurse=False))


def _hinted(module: nn.Module) -> LayerKind | None:
    lowered = type(module).__name__.lower()
    if lowered.startswith(_NOT_ACTIVATIONS):
        return None
    return next((kind for fragment, kind in _HINTS if fragment in lowered), None)


def kind_of(module: nn.Module) -> LayerKind | None:
    """The module's kind: registered, a registered fan layout (a weight layer), the hint
    table's guess for a module without children, or a weight layer for a module without
    children that holds a 2-D weight; ``None`` for containers and other modules."""
    kind = _registered(module)
    if kind is not None:
        return kind
    if layout_for(module, "weight") is not None and _own_weight(module):
        return LayerKind("weight")
    hinted = _hinted(module)
    leaf = not any(True for _ in module.children())
    if hinted is not None and leaf and not (hinted.role == "activation" and _own_weight(module)):
        return hinted
    if _own_weight(module) and leaf:
        return LayerKind("weight", source="shape")
    return None


def is_weight_layer(module: nn.Module) -> bool:
    """A module that transforms its input with a matrix (``Linear``, convolutions, HF
    ``Conv1D``, a registered layout); embeddings are lookups, not weight layers."""
    kind = kind_of(module)
    return kind is not None and kind.role == "weight"


def transforms(module: nn.Module) -> bool:
    """A module that transforms its input with its own weight matrix: a weight layer, an
    attention or recurrent module, or a module the registry does not know that holds a
    parameter of 2+ dimensions itself; lookups (embeddings) and norms are not.

    Example:
        >>> transforms(nn.LSTM(2, 3)), transforms(nn.Embedding(4, 2)), transforms(nn.ReLU())
        (True, False, False)
    """
    kind = kind_of(module)
    if kind is not None:
        return kind.role in ("weight", "attention", "recurrent")
    return _own_weight(module)


def is_norm(module: nn.Module) -> bool:
    """A normalization layer (registered or hinted by a class name holding ``norm``)."""
    kind = kind_of(module)
    return kind is not None and kind.role == "norm"


def is_embedding(module: nn.Module) -> bool:
    """A lookup table (``Embedding``, ``EmbeddingBag``, a registered one)."""
    kind = kind_of(module)
    return kind is not None and kind.role == "embedding"


def layer_fans(module: nn.Module, param: str = "weight") -> tuple[int, int] | None:
    """``(fan_in, fan_out)`` of a weight layer's parameter through its layout; ``None`` for
    other modules or a parameter of fewer than 2 dimensions."""
    weight = getattr(module, param, None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2 or not is_weight_layer(module):
        return None
    return fans(module, param, weight)


def gain_of(activation: str | None) -> ActivationGain:
    """The gain of an activation by name (``None``: no activation, gain 1)."""
    return _GAINS.get(activation or "linear", _GAINS["linear"])


def activation_for_function(name: str) -> str | None:
    """The activation a functional call stands for (``"gelu"``, ``"relu_"`` -> relu)."""
    return _FUNCTIONS.get(name.rstrip("_"))


@torch.no_grad()
def measured_gain(function: Any) -> float | None:
    """``1 / sqrt(E[f(z)^2])`` for ``z ~ N(0, 1)``, measured on 65536 normal quantiles (a
    deterministic quadrature; ``None`` when it is not finite or f is 0).

    Example:
        >>> round(measured_gain(torch.relu), 2)
        1.41
    """
    count = 65536
    z = torch.special.ndtri((torch.arange(count, dtype=torch.float64) + 0.5) / count).float()
    try:
        out = function(z)
    except Exception:
        return None
    if not isinstance(out, torch.Tensor) or out.shape != z.shape:
        return None
    rms = float(out.float().square().mean().sqrt())
    return 1 / rms if math.isfinite(rms) and rms > 0 else None


_NOT_ACTIVATIONS = ("atanh", "arctanh", "tanhshrink")  # they hold "tanh"


def _register_builtins() -> None:
    _he = "the He et al. 2015 argument (arXiv:1502.01852), 1/sqrt(E[f(z)^2]), z ~ N(0,1), for "
    for name, expression, source, functions in (
        ("relu", "sqrt(2)", "He et al. 2015 (arXiv:1502.01852), gain sqrt(2) for ReLU",
         ("relu", "relu6")),
        ("leaky_relu", "sqrt(2 / 1.0001)", "He et al. 2015, gain sqrt(2 / (1 + a^2)) for leaky "
         "ReLU", ("leaky_relu",)),
        ("tanh", "5 / 3", "torch.nn.init.calculate_gain('tanh') = 5/3", ("tanh",)),
        ("sigmoid", "1", "torch.nn.init.calculate_gain('sigmoid') = 1", ("sigmoid",)),
        ("selu", "1", "LeCun normal for SELU, Klambauer et al. 2017 (arXiv:1706.02515)",
         ("selu",)),
        ("gelu", "1.533", _he + "GELU", ("gelu",)),
        ("silu", "1.676", _he + "SiLU", ("silu", "swish")),
        ("elu", "1.245", _he + "ELU", ("elu", "celu")),
        ("mish", "1.486", _he + "Mish", ("mish",)),
        ("softplus", "1.042", _he + "Softplus", ("softplus",)),
        ("relu_squared", "0.9036", "a squared ReLU (So et al. 2021, Primer, arXiv:2109.08668) "
         "is no homogeneous function of degree 1, so no gain 1/sqrt(E[f(z)^2]) keeps its scale "
         "at every input scale; relu(s z)^2 has rms s^2 sqrt(3/2), 1 at s = (2/3)^(1/4) = "
         "0.9036 for an input of unit rms", ()),
        ("linear", "1", "LeCun et al. 1998, gain 1 when no activation follows", ()),
    ):
        register_activation(name, expression, source, functions=functions)
    for cls in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
                nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Bilinear):
        register_kind(cls, "weight")
    register_kind("transformers.pytorch_utils.Conv1D", "weight")
    for cls in (nn.Embedding, nn.EmbeddingBag):
        register_kind(cls, "embedding")
    for cls in (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm,
                nn.LocalResponseNorm):
        register_kind(cls, "norm")
    for cls in (nn.Dropout, nn.modules.dropout._DropoutNd, nn.Identity, nn.Flatten,
                nn.Unflatten):
        register_kind(cls, "pass")
    for cls in (nn.LSTM, nn.GRU, nn.RNN, nn.LSTMCell, nn.GRUCell, nn.RNNCell):
        register_kind(cls, "recurrent")
    register_kind(nn.MultiheadAttention, "attention")
    for cls, name in ((nn.ReLU, "relu"), (nn.ReLU6, "relu"), (nn.LeakyReLU, "leaky_relu"),
                      (nn.PReLU, "leaky_relu"), (nn.RReLU, "leaky_relu"), (nn.Tanh, "tanh"),
                      (nn.Sigmoid, "sigmoid"), (nn.SELU, "selu"), (nn.GELU, "gelu"),
                      (nn.SiLU, "silu"), (nn.ELU, "elu"), (nn.CELU, "elu"), (nn.Mish, "mish"),
                      (nn.Softplus, "softplus"), (nn.Hardswish, "silu")):
        register_kind(cls, "activation", activation=name)
    register_kind("transformers.activations.ReLUSquaredActivation", "activation",
                  activation="relu_squared")  # hidden_act="relu2": Nemotron
    # The fallback hint table, least specific last ("selu" before "elu", "leakyrelu" before
    # "relu"); register_hint puts the user's before these.
    for fragment, role, activation in (
            ("dropout", "pass", None), ("droppath", "pass", None), ("identity", "pass", None),
            ("flatten", "pass", None),
            ("norm", "norm", None), ("gelu", "activation", "gelu"),
            ("silu", "activation", "silu"), ("swish", "activation", "silu"),
            ("selu", "activation", "selu"), ("leakyrelu", "activation", "leaky_relu"),
            ("leaky_relu", "activation", "leaky_relu"),
            ("relusquared", "activation", "relu_squared"),
            ("squaredrelu", "activation", "relu_squared"), ("relu", "activation", "relu"),
            ("tanh", "activation", "tanh"), ("sigmoid", "activation", "sigmoid"),
            ("mish", "activation", "mish"), ("softplus", "activation", "softplus"),
            ("elu", "activation", "elu")):
        _HINTS.append((fragment, LayerKind(role, activation, "hint")))


_register_builtins()
