"""InitCallback's arguments: the policy argument loaded and how ``repr`` shows the arguments
(the options arguments are read by the check's and the diagnostics' ``from_arg``)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from torch import nn

from lightning_init.policy import InitPolicy

__all__ = [
    "Policy",
    "argument_repr",
    "load_policy",
    "only_arguments",
    "policy_label",
]


class Policy(Protocol):
    """What the callback needs of a policy: its ``name`` (the label in logs and the
    checkpoint; ``None`` for the class name), its ``seed`` (``None``: the callback draws one
    for all ranks) and ``apply`` (``only`` is passed under ``only_missing``).

    :class:`~lightning_init.InitPolicy` and the auto policy are policies; :func:`load_policy`
    makes one of any other object with an ``apply``.
    """

    @property
    def name(self) -> str | None: ...

    @property
    def seed(self) -> int | None: ...

    def apply(
        self,
        model: nn.Module,
        *,
        seed: int | None = ...,
        prefix: str = ...,
        only: list[str] | None = ...,
    ) -> object: ...


class _Foreign:
    """A :class:`Policy` of an object that has ``apply`` but may lack ``name`` (then its class's
    name) or ``seed`` (then ``None``); everything else is the object's own.

    Example:
        >>> class Zeros:
        ...     def apply(self, model, **kwargs): return "applied"
        >>> policy = _Foreign(Zeros())
        >>> policy.name, policy.seed, policy.apply(nn.Linear(2, 2))
        ('Zeros', None, 'applied')
        >>> policy_label(policy)
        'Zeros'
    """

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    @property
    def name(self) -> str | None:
        return getattr(self.policy, "name", None) or type(self.policy).__name__

    @property
    def seed(self) -> int | None:
        return getattr(self.policy, "seed", None)

    def __getattr__(self, attribute: str) -> Any:  # apply, init_module, ...: the object's own
        if attribute == "policy":  # not set yet (while unpickling)
            raise AttributeError(attribute)
        return getattr(self.policy, attribute)


def load_policy(spec: object) -> Policy | None:
    """``None``; an ``InitPolicy`` as is; anything else with ``apply`` as a :class:`Policy`;
    else ``InitPolicy.load`` (``"auto"`` is the callback's: :class:`AutoPolicy`)."""
    if spec is None:
        return None
    if isinstance(spec, InitPolicy):
        return spec
    if callable(getattr(spec, "apply", None)):
        return _Foreign(spec)
    if not isinstance(spec, (str, os.PathLike, Mapping)):
        raise TypeError(
            "InitCallback(policy=...) takes a YAML path, a preset name, a mapping, an InitPolicy"
            f" or None, got {spec!r} of type {type(spec).__name__}"
        )
    return InitPolicy.load(spec)


def policy_label(policy: Policy | None) -> str | None:
    """The policy's name, else its class's; ``None`` without a policy."""
    if policy is None:
        return None
    return policy.name or type(policy).__name__


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
    pl_module: nn.Module, only_missing: bool | str | os.PathLike[str] | Mapping[str, Any],
    loaded: Collection[str] = (),
) -> dict[str, list[str]]:
    """``{"only": names}`` for ``apply`` under ``InitCallback(only_missing=...)`` or when parts
    of the module were loaded (every tensor but the ``loaded`` ones), else ``{}``."""
    if only_missing is False and not loaded:
        return {}
    from lightning_init.policy import missing_parameters

    if only_missing is not False:
        names = missing_parameters(pl_module, only_missing)
    else:
        names = [name for name, _ in pl_module.named_parameters()]
        names += [name for name, buffer in pl_module.named_buffers() if buffer is not None]
    return {"only": [name for name in names if name not in loaded]}
