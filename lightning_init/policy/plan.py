"""The plan: which rule and initializer each parameter of a model gets, checked before writing.

Building a plan walks the model once: it folds tied parameters into one target, lets the first
matching rule claim each, applies ``skip`` and ``default``, binds each initializer to its
parameter (the policy's variables and expressions evaluated, fans read by the layer type's
weight layout), checks every shape, and warns about what looks like a typo (a rule, a
parameter key or a ``skip`` glob that matches nothing; a tied parameter claimed by two rules).
Nothing is written.
"""

from __future__ import annotations

import fnmatch
import importlib
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightning_init._log import LOGGER
from lightning_init._text import did_you_mean
from lightning_init.anatomy.layouts import layout_of
from lightning_init.errors import PolicyError
from lightning_init.policy._catalogue import REGISTRY
from lightning_init.policy._fills import idle_bounds
from lightning_init.policy._model_vars import (
    DERIVED_VARIABLES,
    model_variables,
    parameter_variables,
)
from lightning_init.policy._plan_warnings import (
    TiedParameterWarning,
    UnusedRuleWarning,
    skip_globs,
    unknown_keys,
    unused_rules,
    warn,
)
from lightning_init.policy.initializers import Initializer
from lightning_init.policy.presets import preset_paths
from lightning_init.policy.schema import Rule, Schema
from lightning_init.policy.targets import Target, is_parametrization_container, module_targets

__all__ = [
    "Plan",
    "PlanItem",
    "TiedParameterWarning",
    "UnusedRuleWarning",
    "build_plan",
]


@dataclass
class PlanItem:
    """One parameter to initialize, and by what.

    Attributes:
        target: the parameter.
        rule_index: the rule's index in ``rules`` (``None``: no rule, a reset).
        rule: the rule's label, or ``"default: reset"`` / ``"meta: reset_parameters"``.
        initializer: the initializer bound to this parameter (expressions evaluated, its
            layout set), or ``None`` for the module's ``reset_parameters()``.
    """

    target: Target
    rule_index: int | None
    rule: str
    initializer: Initializer | None

    @property
    def resets(self) -> bool:
        """Whether the module's ``reset_parameters()`` sets this parameter."""
        return self.initializer is None or self.initializer.kind == "reset"

    def describe(self) -> str:
        """The initializer's description (``"reset_parameters()"`` for a reset)."""
        return "reset_parameters()" if self.initializer is None else self.initializer.describe()

    def expected_std(self) -> float | None:
        """The std the initializer's formula promises for this parameter's shape, if any."""
        return None if self.initializer is None else self.initializer.expected_std(
            self.target.shape)


@dataclass
class Plan:
    """What applying a policy to one model will do.

    Attributes:
        items: the parameters to initialize, in model order (tied ones once).
        left_alone: ``(qualified_name, reason)`` for the parameters not touched.
        unused_rules: labels of the non-optional rules that matched nothing.
        resets: the modules whose ``reset_parameters()`` runs.
        variables: the model-wide variables' values: the declared ones and the derived
            ones (``d_model``) that an expression uses.
    """

    items: list[PlanItem] = field(default_factory=list)
    left_alone: list[tuple[str, str]] = field(default_factory=list)
    unused_rules: list[str] = field(default_factory=list)
    resets: list[nn.Module] = field(default_factory=list)
    variables: dict[str, float] = field(default_factory=dict)


def build_plan(schema: Schema, model: nn.Module, *, recurse: bool = True, prefix: str = ""
               ) -> Plan:
    """The validated plan for ``model``; warns (or, with ``strict``, raises) about typos.

    Args:
        schema: the policy.
        model: the module.
        recurse: ``False`` plans only ``model``'s own parameters (``init_module``).
        prefix: prepended to qualified names.

    Raises:
        PolicyError: the policy does not fit the model (a bad ``type``, a shape an
            initializer cannot fill, a reset without ``reset_parameters()``, ...).

    Example:
        >>> from lightning_init.policy.schema import parse_policy
        >>> schema = parse_policy({"rules": [{"match": {"type": "Linear"}, "bias": "zeros"}]})
        >>> plan = build_plan(schema, nn.Linear(2, 2))
        >>> [(i.target.qualified_name, i.rule) for i in plan.items], plan.left_alone
        ([('bias', 'rules[0] (type=Linear)')], [('weight', 'no rule')])
    """
    if not isinstance(model, nn.Module):
        raise PolicyError(f"a policy applies to a torch.nn.Module, got {type(model).__name__}")
    return _Planner(schema, model, recurse=recurse, prefix=prefix).build()


# --------------------------------------------------------------------------- the walk


_Claim = tuple[str, Rule, Initializer]  # (qualified name, the rule, its initializer)


@dataclass(frozen=True)
class _Shape:
    """Stands for a tensor where only its shape is read (fans of a parametrized weight)."""

    shape: tuple[int, ...]


class _Planner:
    """One plan: the walk over the model collects claims, then each target is decided."""

    def __init__(self, schema: Schema, model: nn.Module, *, recurse: bool, prefix: str) -> None:
        self.schema = schema
        self.recurse = recurse
        self.types = _resolve_types(schema, model, whole_model=recurse)
        self.named = (list(model.named_modules(prefix=prefix, remove_duplicate=False))
                      if recurse else [(prefix, model)])
        self.order: list[Target] = []  # one per tensor, in model order
        self.claims: dict[int, list[_Claim]] = {}  # by id of the target's first tensor
        self.skipped: set[int] = set()  # ids of first tensors under a skipped module
        self.own_names: dict[int, set[str]] = {rule.index: set() for rule in schema.rules}
        self.absent_names: dict[int, set[str]] = {rule.index: set() for rule in schema.rules}
        self.plan = Plan()
        self.used: set[int] = set()
        self._resets: dict[int, nn.Module] = {}
        self._model = model
        self._values: dict[str, float] | None = None
        self.last: int | None = None  # id of the output layer (match.last)
        self.bounds_said: set[int] = set()  # rules whose idle trunc_normal bounds were said
        self.preset = _is_preset(schema.source)  # a shipped preset: bounds copied on purpose

    def build(self) -> Plan:
        self._walk()
        for target in self.order:
            self._decide(target)
        self._meta_buffers()
        if self.recurse:
            self.plan.variables = self._shown_variables()
        self.plan.resets = list(self._resets.values())
        self.plan.unused_rules = unused_rules(self)
        if self.recurse:
            unknown_keys(self)
            skip_globs(self, [name for name, _ in self.named if name])
        return self.plan

    # ---- matching

    def _skipped(self, module_name: str) -> bool:
        if not self.schema.skip:
            return False
        parts = module_name.split(".") if module_name else []
        candidates = [".".join(parts[:i]) for i in range(1, len(parts) + 1)] or [""]
        return any(fnmatch.fnmatchcase(c, pattern) for c in candidates
                   for pattern in self.schema.skip)

    def _matches(self, rule: Rule, module_name: str, module: nn.Module) -> bool:
        if rule.last and id(module) != self.last:
            return False
        types = self.types[rule.index]
        if rule.types and not (types and isinstance(module, types)):
            return False
        return not rule.names or any(fnmatch.fnmatchcase(module_name, g) for g in rule.names)

    def _claim(self, target: Target, module_name: str, module: nn.Module) -> _Claim | None:
        """The first rule that matches the module and names the parameter."""
        for rule in self.schema.rules:
            if not self._matches(rule, module_name, module):
                continue
            for key, initializer in rule.params:
                if fnmatch.fnmatchcase(target.local_name, key):
                    return target.qualified_name, rule, initializer
        return None

    def _walk(self) -> None:
        modules = dict(self.named)
        walked = [(module_name, module, list(module_targets(module_name, module)))
                  for module_name, module in self.named
                  if not (self.recurse and is_parametrization_container(module_name, modules))]
        if self.recurse:  # one module alone has no output layer
            self.last = next((id(module) for _, module, targets in reversed(walked)
                              if any(len(t.shape) >= 2 for t in targets)), None)
        by_tensor: dict[int, Target] = {}
        for module_name, module, targets in walked:
            skipped = self._skipped(module_name)
            if targets and not skipped:
                absent = {name for name, p in module._parameters.items() if p is None}
                for rule in self.schema.rules:
                    if self._matches(rule, module_name, module):
                        self.own_names[rule.index].update(t.local_name for t in targets)
                        self.absent_names[rule.index].update(absent)
            for target in targets:
                key = id(target.tensors[0])
                if key in by_tensor:  # tied: one target, written once
                    by_tensor[key].aliases.append(target.qualified_name)
                else:
                    by_tensor[key] = target
                    self.order.append(target)
                if skipped:
                    self.skipped.add(key)
                elif (claim := self._claim(target, module_name, module)) is not None:
                    self.claims.setdefault(key, []).append(claim)

    # ---- deciding each target

    def _decide(self, target: Target) -> None:
        key = id(target.tensors[0])
        if key in self.skipped:
            self.plan.left_alone.append((target.qualified_name, "skip"))
            return
        claims = sorted(self.claims.get(key, []), key=lambda claim: claim[1].index)
        if not claims:
            self._unruled(target)
            return
        name, rule, initializer = claims[0]
        # two rules that give the same initializer do not conflict
        others = [(other_name, other) for other_name, other, other_init in claims
                  if other is not rule and _described(other_init) != _described(initializer)]
        if others:
            other_name, other = others[0]
            warn(f"tied parameter {target.qualified_name!r} (also {', '.join(target.aliases)}) "
                  f"is claimed by {rule.label} as {name!r} and by {other.label} as "
                  f"{other_name!r}: it is initialized once, by {rule.label}", TiedParameterWarning)
        self.used.update(claim[1].index for claim in claims)
        self._ruled(target, rule, initializer)

    def _ruled(self, target: Target, rule: Rule, initializer: Initializer) -> None:
        if initializer.kind == "keep":
            self.plan.left_alone.append((target.qualified_name, f"keep by {rule.label}"))
            return
        if initializer.kind == "tensor":
            key = next((k for k, _ in rule.params if fnmatch.fnmatchcase(target.local_name, k)),
                       target.local_name)
            where = f"{rule.where}.{key} -> {target.qualified_name}"
            initializer = self._bind(initializer, rule, target, where)
            initializer.check_shape(target.shape, where=where)
            self._check_range(rule, initializer, target)
            self._idle_bounds(rule, initializer, target)
        elif not _can_reset(target.module):
            raise self.rule_error(
                f"'default' (reset_parameters) asked for {target.qualified_name!r}, but "
                f"{type(target.module).__name__} has no reset_parameters()", rule)
        else:
            self._resets[id(target.module)] = target.module
        self.plan.items.append(PlanItem(target, rule.index, rule.label, initializer))

    def _check_range(self, rule: Rule, initializer: Initializer, target: Target) -> None:
        """A ``PolicyError`` when the initializer would write values beyond the range of the
        parameter's dtype (Inf, then NaN): ``normal(std=1e300)`` on float32. Nothing is
        written yet."""
        dtype = target.tensors[0].dtype if target.tensors else None
        if dtype is None or not (dtype.is_floating_point or dtype.is_complex):
            return
        shape = tuple(int(size) for size in target.shape)
        reach = _reach(initializer, shape)
        largest = torch.finfo(dtype).max
        if reach is None or reach <= largest:
            return
        raise self.rule_error(
            f"{initializer.describe()} would write values of about {reach:.3g} into "
            f"{target.qualified_name!r}, beyond the range of its dtype {dtype} (largest finite "
            f"value {largest:.6g}): they would be Inf or NaN. Give it a smaller scale (std, "
            "gain, bounds) or the parameter a wider dtype", rule)

    def _idle_bounds(self, rule: Rule, initializer: Initializer, target: Target) -> None:
        """Log, once per rule, a ``trunc_normal`` whose bounds truncate nothing at its resolved
        std (:func:`~lightning_init.policy._fills.idle_bounds`): a warning, the policy stays
        valid. A shipped preset is not told: it reproduces its reference's bounds on purpose."""
        if rule.index in self.bounds_said or self.preset:
            return
        said = next((found for one in (initializer, *(initializer.blocks or ()))
                     if one.name == "trunc_normal" and (found := _idle(one)) is not None), None)
        if said is None:
            return
        self.bounds_said.add(rule.index)
        where = ("" if self.schema.source is None else f" ({self.schema.source}"
                 + (f", line {rule.line})" if rule.line else ")"))
        LOGGER.warning(f"{rule.label}{where}: trunc_normal for {target.qualified_name!r} (the "
                       f"rule's first such parameter): its {said}")

    def _bind(self, initializer: Initializer, rule: Rule, target: Target, where: str
              ) -> Initializer:
        """The initializer for this parameter: its layout, and its expressions evaluated."""
        layout, groups = layout_of(target.module, target.local_name, rule.fan_layout)
        values: dict[str, float] = {}
        if initializer.names:
            try:
                values = {**self._model_values(), **parameter_variables(
                    target.module, target.module_name, target.local_name,
                    _Shape(tuple(target.shape)), layout=layout)}
            except PolicyError as err:
                raise PolicyError(err.bare_message, where=err.where or where,
                                  source=self.schema.source, line=rule.line) from None
        return initializer.bind(values, layout=layout, groups=groups, where=where)

    def _model_values(self) -> dict[str, float]:
        """The model-wide variables, computed once, when a parameter first needs them (a
        ``count`` that matches nothing raises here)."""
        if self._values is None:
            needed = {name for rule in self.schema.rules for _, init in rule.params
                      for name in init.names}
            try:
                self._values = model_variables(self._model, self.schema.variables,
                                               needed=sorted(needed))
            except PolicyError as err:
                raise PolicyError(err.bare_message, where=err.where,
                                  source=self.schema.source) from None
        return self._values

    def _shown_variables(self) -> dict[str, float]:
        """The values for the plan's footer; none when a variable no parameter used cannot be
        computed for this model (a preset written for another family)."""
        try:
            values = self._model_values()
        except PolicyError:
            return {}
        used = {name for rule in self.schema.rules for _, init in rule.params
                for name in init.names}
        return {name: value for name, value in values.items()
                if name in self.schema.variables or (name in DERIVED_VARIABLES and name in used)}

    def _unruled(self, target: Target) -> None:
        can_reset = _can_reset(target.module)
        is_meta = target.tensors[0].is_meta
        if can_reset and (self.schema.default == "reset" or is_meta):
            self._resets[id(target.module)] = target.module
            label = "default: reset" if self.schema.default == "reset" else "meta: reset_parameters"
            self.plan.items.append(PlanItem(target, None, label, None))
        elif is_meta:
            raise PolicyError(
                f"{target.qualified_name!r} is on the meta device, no rule covers it and "
                f"{type(target.module).__name__} has no reset_parameters(): add a rule for "
                "it so that it is not left as uninitialized memory", source=self.schema.source)
        else:
            reason = ("no rule" if self.schema.default == "keep"
                      else "no rule, no reset_parameters")
            self.plan.left_alone.append((target.qualified_name, reason))

    def _meta_buffers(self) -> None:
        """Meta buffers: only the module's ``reset_parameters()`` sets them."""
        for module_name, module in self.named:
            if not module.__dict__.get("_buffers") or not any(
                    b is not None and b.is_meta for b in module._buffers.values()):
                continue
            if _can_reset(module):
                self._resets.setdefault(id(module), module)
            elif not self._skipped(module_name):
                warn(f"{module_name or type(module).__name__!r} has buffers on the meta "
                      "device and no reset_parameters(): they stay uninitialized memory",
                      UserWarning)
    def rule_error(self, message: str, rule: Rule, suffix: str = "") -> PolicyError:
        return PolicyError(message, where=rule.where + suffix, source=self.schema.source,
                           line=rule.line)


def _described(initializer: Initializer | None) -> str | None:
    return None if initializer is None else initializer.describe()


_UNIFORM = frozenset({"uniform", "xavier_uniform", "kaiming_uniform"})
# A normal draw beyond 6 std has a probability of about 2e-9: a tensor of a billion values
# reaches it.
_NORMAL_REACH = 6.0


def _reach(initializer: Initializer, shape: tuple[int, ...]) -> float | None:
    """The largest magnitude a built-in initializer writes into a tensor of ``shape`` (a uniform
    one's bound, a normal one's mean + 6 std, a truncated one's bounds at most), infinite when
    the number itself overflows; ``None`` when unknown (custom, keep, reset). Per block when
    chunked.

    Example:
        >>> from lightning_init.policy.initializers import resolve_initializer
        >>> _reach(resolve_initializer({"init": "uniform", "a": -3, "b": 1}), (4, 4))
        3.0
        >>> _reach(resolve_initializer({"init": "normal", "std": 1e300}), (4, 4))
        6e+300
    """
    if initializer.kind != "tensor":
        return None
    if initializer.chunks is not None:
        block = (shape[0] // initializer.chunks, *shape[1:])
        reaches = [_reach(one, block) for one in initializer._block_initializers()]
        return None if any(r is None for r in reaches) else max(reaches)  # type: ignore[type-var]
    entry = REGISTRY.get(initializer.name)
    mean, std = initializer.expected_mean(shape), initializer.expected_std(shape)
    if entry is None or mean is None or std is None:
        return None
    args = entry.args(initializer.kwargs)
    if initializer.name == "orthogonal":  # entries of a semi-orthogonal matrix are at most 1
        return abs(float(args["gain"]))
    uniform = initializer.name in _UNIFORM or args.get("distribution") == "uniform"
    reach = abs(mean) + (math.sqrt(3.0) if uniform else _NORMAL_REACH) * std
    if initializer.name == "trunc_normal":
        reach = min(reach, max(abs(float(args["a"])), abs(float(args["b"]))))
    return reach if not math.isnan(reach) else math.inf


def _idle(initializer: Initializer) -> str | None:
    args = REGISTRY["trunc_normal"].args(initializer.kwargs)
    return idle_bounds(*(float(args[key]) for key in ("mean", "std", "a", "b")))


def _is_preset(source: str | None) -> bool:
    return source is not None and source in {str(path) for path in preset_paths().values()}


def _can_reset(module: nn.Module) -> bool:
    return callable(getattr(module, "reset_parameters", None))


# --------------------------------------------------------------------------- match.type


def _resolve_types(schema: Schema, model: nn.Module, *, whole_model: bool
                   ) -> dict[int, tuple[type, ...]]:
    """Check every rule's ``type`` names a class; return the classes to match, by rule index.

    For one module (``init_module``) a bare name that is none of its classes matches nothing
    instead of raising: it may name a class elsewhere in the model.
    """
    model_classes = {cls for m in model.modules() for cls in type(m).__mro__
                     if issubclass(cls, nn.Module)}
    known = {n: getattr(nn, n) for n in dir(nn) if isinstance(getattr(nn, n, None), type)
             and issubclass(getattr(nn, n), nn.Module)}
    known.update({cls.__name__: cls for cls in model_classes})  # the model's own win
    resolved: dict[int, tuple[type, ...]] = {}
    for rule in schema.rules:
        classes = [_resolve_type(name, known, rule, schema.source, whole_model=whole_model)
                   for name in rule.types]
        resolved[rule.index] = tuple(cls for cls in classes if cls is not None)
    return resolved


def _resolve_type(type_name: str, known: dict[str, Any], rule: Rule, source: str | None, *,
                  whole_model: bool) -> type | None:
    def error(message: str) -> PolicyError:
        return PolicyError(message, where=rule.where + ".match.type", source=source,
                           line=rule.line)

    if ":" in type_name or "." in type_name:
        module_path, _, attr = type_name.replace(":", ".").rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_path), attr)
        except (ImportError, AttributeError, ValueError, TypeError):  # '..X': TypeError
            raise error(f"type {type_name!r} cannot be imported: give a class name (Linear) "
                        "or an absolute dotted path (mypkg.layers.MyBlock)") from None
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise error(f"type {type_name!r} is not a torch.nn.Module class")
        return cls
    if type_name in known:
        return known[type_name]
    if not whole_model:
        return None
    raise error(f"type {type_name!r} is no class of torch.nn nor of the model."
                f"{did_you_mean(type_name, sorted(known))} Give a class name "
                "(Linear) or a dotted import path (mypkg.layers.MyBlock)")
