"""Custom initializers: a user's function named by its import path ``"package.module:function"``.

The function is imported when the policy is resolved, and the policy's arguments are bound to
its signature then (``inspect.signature(function).bind``), so a typo fails before any weight
is written. A parameter named ``generator`` receives the policy's generator, one named
``fans`` the weight's ``(fan_in, fan_out)`` under its layer type's layout (``None`` for a
tensor of fewer than 2 dimensions).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from lightning_init._text import did_you_mean, format_choices
from lightning_init.errors import PolicyError
from lightning_init.policy._arguments import PASSED_BY_POLICY, RESERVED_KEYS

__all__ = ["accepts_fans", "accepts_generator", "argument_problem", "load"]

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_BY_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_TENSOR = object()  # stands for the tensor when arguments are bound at resolve time


def load(path: str, *, where: str, source: str | None, line: int | None) -> Callable[..., Any]:
    """The function ``path`` (``"package.module:function"``, attributes may be dotted) names.

    Raises:
        PolicyError: a malformed path, a module that cannot be imported, a missing attribute
            (with a did-you-mean) or something that is not callable.

    Example:
        >>> load("math:sqrt", where="rules[0].weight", source=None, line=None)(4.0)
        2.0
    """
    def error(message: str) -> PolicyError:
        return PolicyError(message, where=where, source=source, line=line)

    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute or ":" in attribute:
        raise error(f"a custom initializer is 'package.module:function', got {path!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:
        raise error(f"cannot import module {module_name!r} of custom initializer {path!r}: "
                    f"{type(err).__name__}: {err}") from err
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(target) if not n.startswith("_")]
            raise error(f"custom initializer {path!r}: {module_name!r} has no attribute {part!r}."
                        f"{did_you_mean(part, names)}".rstrip("."))
        target = getattr(target, part)
    if not callable(target):
        raise error(f"custom initializer {path!r} is not callable ({type(target).__name__})")
    return target


def _accepts(function: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def accepts_generator(function: Callable[..., Any]) -> bool:
    """Whether ``function`` has a parameter named ``generator`` (it then gets the generator).

    Example:
        >>> import torch
        >>> accepts_generator(torch.nn.init.normal_), accepts_generator(torch.nn.init.zeros_)
        (True, False)
    """
    return _accepts(function, "generator")


def accepts_fans(function: Callable[..., Any]) -> bool:
    """Whether ``function`` has a parameter named ``fans`` (it then gets ``(fan_in, fan_out)``).

    Example:
        >>> def scaled(tensor, fans=None): ...
        >>> accepts_fans(scaled), accepts_fans(lambda tensor: None)
        (True, False)
    """
    return _accepts(function, "fans")


def argument_problem(function: Callable[..., Any], path: str,
                     kwargs: Mapping[str, Any]) -> str | None:
    """Why ``function(tensor, **kwargs)`` (plus ``generator=`` if it takes one) cannot be
    called, or ``None`` when the arguments bind. A function without a signature passes.

    Example:
        >>> def scaled(tensor, scale, generator=None): ...
        >>> argument_problem(scaled, "m:scaled", {"scale": 2.0}) is None
        True
        >>> argument_problem(scaled, "m:scaled", {"scael": 2.0})
        "unknown argument 'scael' for m:scaled; valid: chunks, init, scale. Did you mean 'scale'?"
        >>> argument_problem(scaled, "m:scaled", {})
        "custom initializer m:scaled needs the argument 'scale'"
    """
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (*_POSITIONAL,
                                                    inspect.Parameter.VAR_POSITIONAL):
        return f"custom initializer {path} must take the tensor as its first positional argument"
    rest = parameters if parameters[0].kind == inspect.Parameter.VAR_POSITIONAL else parameters[1:]
    arguments = dict(kwargs)
    for name in PASSED_BY_POLICY:
        if name not in signature.parameters:
            continue
        if name in kwargs:
            return _unknown(rest, path, kwargs) or (
                f"custom initializer {path}: {name!r} is passed by the policy, not set in it")
        arguments[name] = None
    try:
        signature.bind(_TENSOR, **arguments)
    except TypeError as err:
        return _unknown(rest, path, kwargs) or _missing(rest, path, kwargs) or (
            f"custom initializer {path} cannot be called with {format_choices(kwargs)}: {err}")
    return None


def _unknown(rest: list[inspect.Parameter], path: str, kwargs: Mapping[str, Any]) -> str | None:
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in rest):
        return None
    names = [p.name for p in rest if p.name not in PASSED_BY_POLICY and p.kind in _BY_KEYWORD]
    for key in kwargs:
        if key not in names:
            valid = [*names, *RESERVED_KEYS]
            return (f"unknown argument {key!r} for {path}; valid: {format_choices(valid)}."
                    f"{did_you_mean(key, valid)}".rstrip("."))
    return None


def _missing(rest: list[inspect.Parameter], path: str, kwargs: Mapping[str, Any]) -> str | None:
    missing = [p.name for p in rest
               if p.default is inspect.Parameter.empty and p.name not in PASSED_BY_POLICY
               and p.kind not in _VARIADIC and p.name not in kwargs]
    if not missing:
        return None
    return f"custom initializer {path} needs the argument {', '.join(repr(m) for m in missing)}"
