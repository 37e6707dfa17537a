"""The built-in initializers: how each fills, its arguments, the shapes it accepts and the
(mean, std) its formula promises.

One :class:`Entry` per name of :mod:`lightning_init.policy.initializers`' catalogue; the
formulas are cited there and next to each moment function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from lightning_init.policy import _custom, _fills
from lightning_init.policy._arguments import Param, number, signature_defaults

__all__ = ["REGISTRY", "SPECIAL", "Entry", "Fans", "fmt_shape", "known_initializers"]

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

Args = Mapping[str, Any]  # an entry's arguments: its defaults updated by the user's values
#: (fan_in, fan_out) under the weight's layout.
Fans = tuple[int, int]


# ---------------------------------------------------------------------------------------------
# Shape rules: the problem with a shape, or None
# ---------------------------------------------------------------------------------------------


def fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _any_shape(name: str, args: Args, shape: tuple[int, ...]) -> str | None:
    return None


def _fan_shape(name: str, args: Args, shape: tuple[int, ...]) -> str | None:
    if len(shape) < 2:
        return (f"{name} needs a tensor with at least 2 dimensions (fan_in/fan_out are defined "
                f"for weights, not biases), got shape {fmt_shape(shape)}")
    return None


def _matrix_like(name: str, args: Args, shape: tuple[int, ...]) -> str | None:
    if len(shape) < 2:
        return f"{name} needs a tensor with at least 2 dimensions, got shape {fmt_shape(shape)}"
    return None


def _matrix(name: str, args: Args, shape: tuple[int, ...]) -> str | None:
    if len(shape) != 2:
        return f"{name} needs a tensor with exactly 2 dimensions, got shape {fmt_shape(shape)}"
    return None


def _conv_weight(name: str, args: Args, shape: tuple[int, ...]) -> str | None:
    got = f"got shape {fmt_shape(shape)}"
    if not 3 <= len(shape) <= 5:
        return f"{name} needs a tensor with 3, 4 or 5 dimensions (conv weight), {got}"
    groups = args["groups"]
    if shape[0] % groups:
        return f"dirac with groups={groups} needs dim 0 divisible by {groups}, {got}"
    return None


# ---------------------------------------------------------------------------------------------
# Moments: the (mean, std) over a tensor's elements that each formula promises
# ---------------------------------------------------------------------------------------------


_Moments = Callable[[Args, tuple[int, ...], "Fans | None"], tuple[float, float]]


def _constant(value: float) -> _Moments:
    return lambda args, shape, fans: (value, 0.0)


def _pattern_moments(ones: int, numel: int) -> tuple[float, float]:
    """A 0/1 pattern with ``ones`` ones among ``numel`` elements."""
    fraction = ones / numel
    return fraction, math.sqrt(fraction * (1.0 - fraction))


def _sparse_moments(args: Args, shape: tuple[int, ...], fans: Fans | None
                    ) -> tuple[float, float]:
    kept = (shape[0] - math.ceil(args["sparsity"] * shape[0])) / shape[0]
    return 0.0, args["std"] * math.sqrt(kept)


def _orthogonal_moments(args: Args, shape: tuple[int, ...], fans: Fans | None
                        ) -> tuple[float, float]:
    # The squared entries of a semi-orthogonal matrix sum to min(rows, cols) (Saxe et al. 2014).
    cols = math.prod(shape) // shape[0]
    return 0.0, abs(args["gain"]) / math.sqrt(max(shape[0], cols))


def _xavier_moments(args: Args, shape: tuple[int, ...], fans: Fans | None
                    ) -> tuple[float, float]:
    return 0.0, abs(_fills.xavier_std(fans or _fills.fans(shape), args["gain"]))


def _kaiming_moments(args: Args, shape: tuple[int, ...], fans: Fans | None
                     ) -> tuple[float, float]:
    return 0.0, _fills.kaiming_std(fans or _fills.fans(shape), args["a"], args["mode"],
                                   args["nonlinearity"])


def _lecun_moments(args: Args, shape: tuple[int, ...], fans: Fans | None
                   ) -> tuple[float, float]:
    return 0.0, 1.0 / math.sqrt((fans or _fills.fans(shape))[0])  # LeCun et al. 1998


def _variance_scaling_moments(args: Args, shape: tuple[int, ...], fans: Fans | None
                              ) -> tuple[float, float]:
    return 0.0, _fills.variance_scaling_std(fans or _fills.fans(shape), args["scale"],
                                            args["mode"])


# ---------------------------------------------------------------------------------------------
# Cross-argument checks: the problem with a combination of values, or None
# ---------------------------------------------------------------------------------------------


def _uniform_check(args: Args) -> str | None:
    if args["a"] > args["b"]:
        return f"uniform needs a <= b, got a={args['a']}, b={args['b']}"
    if math.isinf(args["b"] - args["a"]):
        return f"uniform: b - a overflows, got a={args['a']}, b={args['b']}"
    return None


def _trunc_normal_check(args: Args) -> str | None:
    mean, std, low, high = args["mean"], args["std"], args["a"], args["b"]
    if low >= high:
        return f"trunc_normal needs a < b, got a={low}, b={high}"
    if mean < low - 2 * std or mean > high + 2 * std:
        return (f"trunc_normal: mean={mean} is more than 2 std from [a, b] = [{low}, {high}]; "
                "the truncated distribution would be degenerate")
    return None


# ---------------------------------------------------------------------------------------------
# The registry: one entry per initializer
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One built-in initializer: how it fills, its arguments, the shapes it accepts and the
    (mean, std) it promises. Its defaults come from ``fill``'s signature."""

    name: str
    fill: Callable[..., Any]
    params: Mapping[str, Param]
    moments: _Moments
    shapes: Callable[[str, Args, tuple[int, ...]], str | None] = _any_shape
    random: bool = True
    check: Callable[[Args], str | None] | None = None
    defaults: dict[str, Any] = field(init=False, repr=False)
    accepts_generator: bool = field(init=False, repr=False)
    fan_based: bool = field(init=False, repr=False)  # its fill takes fans=(fan_in, fan_out)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", signature_defaults(self.fill))
        object.__setattr__(self, "accepts_generator", _custom.accepts_generator(self.fill))
        object.__setattr__(self, "fan_based", _custom.accepts_fans(self.fill))

    def args(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.defaults, **kwargs}


_ANY_NUMBER = Param("number", number())
_NONNEG = Param("number", number(minimum=0.0))
_POSITIVE = Param("number", number(positive=True))
_BOUND = Param("number", number(finite=False))
_MODE = Param("choice", choices=("fan_in", "fan_out"))
_NONLIN = Param("choice", choices=_NONLINEARITIES)
_KAIMING = {"a": _ANY_NUMBER, "mode": _MODE, "nonlinearity": _NONLIN}
_init = torch.nn.init

REGISTRY: dict[str, Entry] = {entry.name: entry for entry in (
    Entry("uniform", _init.uniform_, {"a": _ANY_NUMBER, "b": _ANY_NUMBER},
           lambda args, shape, fans: ((args["a"] + args["b"]) / 2,
                                (args["b"] - args["a"]) / math.sqrt(12.0)),
           check=_uniform_check),
    Entry("normal", _init.normal_, {"mean": _ANY_NUMBER, "std": _NONNEG},
           lambda args, shape, fans: (float(args["mean"]), float(args["std"]))),
    Entry("trunc_normal", _init.trunc_normal_,
           {"mean": _ANY_NUMBER, "std": _POSITIVE, "a": _BOUND, "b": _BOUND},
           lambda args, shape, fans: _fills.truncnorm_moments(args["mean"], args["std"],
                                                              args["a"], args["b"]),
           check=_trunc_normal_check),
    Entry("constant", _init.constant_, {"val": _ANY_NUMBER},
           lambda args, shape, fans: (float(args["val"]), 0.0), random=False),
    Entry("ones", _init.ones_, {}, _constant(1.0), random=False),
    Entry("zeros", _init.zeros_, {}, _constant(0.0), random=False),
    Entry("eye", _init.eye_, {},
           lambda args, shape, fans: _pattern_moments(min(shape), math.prod(shape)),
           _matrix, random=False),
    Entry("dirac", _init.dirac_, {"groups": Param("int", number(minimum=1))},
           lambda args, shape, fans: _pattern_moments(
               args["groups"] * min(shape[0] // args["groups"], shape[1]), math.prod(shape)),
           _conv_weight, random=False),
    Entry("xavier_uniform", _fills.xavier_uniform_, {"gain": _ANY_NUMBER}, _xavier_moments,
           _fan_shape),
    Entry("xavier_normal", _fills.xavier_normal_, {"gain": _ANY_NUMBER}, _xavier_moments,
           _fan_shape),
    Entry("kaiming_uniform", _fills.kaiming_uniform_, _KAIMING, _kaiming_moments, _fan_shape),
    Entry("kaiming_normal", _fills.kaiming_normal_, _KAIMING, _kaiming_moments, _fan_shape),
    Entry("orthogonal", _fills.orthogonal_, {"gain": _ANY_NUMBER}, _orthogonal_moments,
           _matrix_like),
    Entry("sparse", _fills.sparse_,
           {"sparsity": Param("number", number(minimum=0.0, maximum=1.0)), "std": _NONNEG},
           _sparse_moments, _matrix),
    Entry("lecun_normal", _fills.lecun_normal_, {}, _lecun_moments, _fan_shape),
    Entry("variance_scaling", _fills.variance_scaling_,
           {"scale": _POSITIVE,
            "mode": Param("choice", choices=("fan_in", "fan_out", "fan_avg")),
            "distribution": Param("choice", choices=("truncated_normal", "normal", "uniform"))},
           _variance_scaling_moments, _fan_shape),
    Entry("prior_bias", _fills.prior_bias_,
           {"prob": Param("number", number(positive=True, maximum=1.0, open_max=True))},
           lambda args, shape, fans: (_fills.prior_logit(args["prob"]), 0.0),
           random=False),
)}
SPECIAL = {"default": "reset", "keep": "keep"}


def known_initializers() -> list[str]:
    """The canonical initializer names, sorted (custom ones go by ``"module:function"``).

    Example:
        >>> "kaiming_normal" in known_initializers(), "keep" in known_initializers()
        (True, True)
    """
    return sorted([*REGISTRY, *SPECIAL])
