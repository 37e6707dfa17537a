"""InitCallback's arguments: the policy argument loaded, the options arguments checked, and
how ``repr`` shows them."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar, cast

from torch import nn

from lightning_init.callback._auto_fit import AutoPolicy
from lightning_init.policy import InitPolicy

__all__ = [
    "Policy",
    "argument_repr",
    "load_policy",
    "only_arguments",
    "options_arg",
    "policy_label",
]

_O = TypeVar("_O")


class Policy(Protocol):
    """What the callback needs of a policy: :class:`~lightning_init.InitPolicy`, or any object
    with its ``apply`` (a ``name`` and a ``seed`` are read when present; ``only`` is passed
    under ``only_missing``)."""

    def apply(
        self,
        model: nn.Module,
        *,
        seed: int | None = ...,
        prefix: str = ...,
        only: list[str] | None = ...,
    ) -> object: ...


def load_policy(spec: object) -> Policy | None:
    """``None``, an ``InitPolicy`` (or anything with ``apply``) as is, else ``InitPolicy.load``."""
    if spec is None:
        return None
    if spec == "auto":
        return AutoPolicy()
    if callable(getattr(spec, "apply", None)):
        return cast(Policy, spec)
    if not isinstance(spec, (str, os.PathLike, Mapping)):
        raise TypeError(
            "InitCallback(policy=...) takes a YAML path, a preset name, a mapping, an InitPolicy"
            f" or None, got {spec!r} of type {type(spec).__name__}"
        )
    return InitPolicy.load(spec)


def policy_label(policy: Policy | None) -> str | None:
    if policy is None:
        return None
    return getattr(policy, "name", None) or type(policy).__name__


def options_arg(
    argument: str, value: bool | Mapping[str, Any] | _O, options_class: type[_O]
) -> bool | dict[str, Any] | _O:
    """``value`` for ``<options_class>.from_arg`` (a mapping copied to a ``dict``), or a
    ``TypeError`` in the user's words."""
    if not isinstance(value, (bool, Mapping, options_class)):
        raise TypeError(
            f"InitCallback({argument}=...) takes True, False or a mapping of options (or "
            f"{options_class.__name__}), got {value!r} of type {type(value).__name__}"
        )
    return dict(value) if isinstance(value, Mapping) else value


def argument_repr(value: object) -> str:
    """An argument as ``repr`` shows it; options objects with their non-default fields only."""
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return repr(value)
    defaults = type(value)()
    changed = [
        f"{option.name}={getattr(value, option.name)!r}"
        for option in dataclasses.fields(value)
        if getattr(value, option.name) != getattr(defaults, option.name)
    ]
    return f"{type(value).__name__}({', '.join(changed)})"


def only_arguments(
    pl_module: nn.Module, only_missing: bool | str | os.PathLike[str] | Mapping[str, Any]
) -> dict[str, list[str]]:
    """``{"only": names}`` for ``apply`` under ``InitCallback(only_missing=...)``, else ``{}``."""
    if only_missing is False:
        return {}
    from lightning_init.policy import missing_parameters

    return {"only": missing_parameters(pl_module, only_missing)}
