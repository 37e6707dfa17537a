"""The init policy: a YAML/dict schema mapping modules to initializers, applied atomically.

A policy is a list of rules, read top to bottom; the first rule that matches a parameter wins::

    name: kaiming-relu
    seed: 0
    rules:
      - match: {type: [Linear, Conv2d], name: "encoder.*"}
        optional: true     # no warning when this rule matches nothing (presets use it)
        weight: {init: kaiming_normal, mode: fan_in, nonlinearity: relu}
        bias: zeros
    default: keep          # or reset: module.reset_parameters() for unmatched parameters
    skip: ["backbone.*"]   # modules never touched
    strict: false          # true: a rule that matches nothing is an error

Rule keys other than ``match`` and ``optional`` are globs over the module's *own* parameter
names (``recurse=False``; ``"weight_hh_*"``); their values are initializer specs of
:mod:`lightning_init.initializers`. ``match.type`` is a class name (of ``torch.nn`` or of the
model's own classes; subclasses match) or a dotted import path, or a list; ``match.name`` is a
glob (or list) over the module's qualified name. ``skip`` globs cover a module and everything
under it.

``apply`` builds the whole plan (parameter -> rule -> initializer, shapes checked) before it
writes one value. Built-in initializers cannot fail once validated; custom initializers,
``reset_parameters()``, parametrizations and DTensors are snapshotted and run first, so a
failure restores every tensor it touched. Structure is respected: a tied parameter is written
once; an Embedding's ``padding_idx`` row stays zero; under ``weight_norm`` (both APIs) a
``weight`` rule sets the effective weight and g/v follow; under ``spectral_norm`` it sets the
weight before normalization. With a seed, each parameter's generator is seeded from
``blake2b(seed, qualified_name, shape)`` only.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from lightning_init._presets import preset_paths
from lightning_init._text import did_you_mean, format_choices
from lightning_init._yaml import LinedDict, line_of, load_yaml
from lightning_init.errors import PolicyError

__all__ = [
    "InitPolicy",
    "InitRecord",
    "InitReport",
    "PlanEntry",
    "PolicyPlan",
    "TiedParameterWarning",
    "UnusedRuleWarning",
    "list_presets",
]

_TOP_KEYS = ("name", "seed", "rules", "default", "skip", "strict")
_MATCH_KEYS = ("type", "name")
_RULE_KEYS = ("match", "optional")  # every other rule key is a parameter glob
_DEFAULTS = ("keep", "reset")


class UnusedRuleWarning(UserWarning):
    """A rule matched no parameter (usually a typo in ``type``, ``name`` or a parameter key)."""


class TiedParameterWarning(UserWarning):
    """A tied parameter (one tensor under two names) is claimed by two different rules."""


# --------------------------------------------------------------------------- presets


_preset_paths = preset_paths


def list_presets() -> list[str]:
    """Names of the shipped presets (``configs/*.yaml``), sorted.

    Example:
        >>> {"kaiming_relu", "gpt2", "pytorch_default"} <= set(list_presets())
        True
    """
    return sorted(_preset_paths())


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class _Rule:
    index: int
    label: str
    types: tuple[str, ...]
    names: tuple[str, ...]
    params: tuple[tuple[str, Any], ...]  # (glob over own parameter names, Initializer)
    where: str
    line: int | None
    optional: bool = False


def _resolve(spec: Any, *, where: str, source: str | None, line: int | None) -> Any:
    from lightning_init import initializers  # the catalogue

    return initializers.resolve_initializer(spec, where=where, source=source, line=line)


def _plain(value: Any) -> Any:
    """LinedDict/LinedList -> dict/list (for the catalogue, pickling and repr)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _str_list(value: Any, *, what: str, where: str, source: str | None, line: int | None
              ) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items or not all(
        isinstance(item, str) and item for item in items
    ):
        raise PolicyError(
            f"{what} must be a non-empty string or a list of strings, got {value!r}",
            where=where, source=source, line=line,
        )
    return tuple(items)


def _check_keys(mapping: Mapping, valid: Sequence[str], *, where: str, source: str | None,
                what: str) -> None:
    for key in mapping:
        if key not in valid:
            raise PolicyError(
                f"unknown {what} key {key!r}.{did_you_mean(str(key), valid)} "
                f"Valid keys: {format_choices(valid)}",
                where=where or None, source=source, line=line_of(mapping, key),
            )


def _rule_label(index: int, types: tuple[str, ...], names: tuple[str, ...]) -> str:
    parts = []
    if types:
        parts.append("type=" + ",".join(types))
    if names:
        parts.append("name=" + ",".join(names))
    return f"rules[{index}]" + (f" ({' '.join(parts)})" if parts else "")


def _parse_rule(index: int, raw: Any, line: int | None, source: str | None) -> _Rule:
    where = f"rules[{index}]"
    if not isinstance(raw, Mapping):
        raise PolicyError(
            f"a rule must be a mapping with 'match' and parameter keys, got {raw!r}",
            where=where, source=source, line=line,
        )
    if "match" not in raw:
        close = [k for k in raw if did_you_mean(str(k), ["match"])]
        hint = f" (found {close[0]!r}: did you mean 'match'?)" if close else ""
        raise PolicyError(f"rule has no 'match' key{hint}", where=where, source=source, line=line)
    match = raw["match"]
    match_line = line_of(raw, "match")
    if not isinstance(match, Mapping) or not match:
        raise PolicyError(
            f"'match' must be a mapping with 'type' and/or 'name', got {match!r}",
            where=f"{where}.match", source=source, line=match_line,
        )
    _check_keys(match, _MATCH_KEYS, where=f"{where}.match", source=source, what="match")
    types = names = ()
    if "type" in match:
        types = _str_list(match["type"], what="'type'", where=f"{where}.match.type",
                          source=source, line=line_of(match, "type"))
    if "name" in match:
        names = _str_list(match["name"], what="'name'", where=f"{where}.match.name",
                          source=source, line=line_of(match, "name"))
    optional = raw.get("optional", False)
    if not isinstance(optional, bool):
        raise PolicyError(f"'optional' must be true or false, got {optional!r}",
                          where=f"{where}.optional", source=source, line=line_of(raw, "optional"))
    params = []
    for key, spec in raw.items():
        if key in _RULE_KEYS:
            continue
        if not isinstance(key, str) or not key:
            raise PolicyError(
                f"a parameter key must be a name or glob such as 'weight' or 'bias', got {key!r}",
                where=where, source=source, line=line_of(raw, key),
            )
        params.append((key, _resolve(spec, where=f"{where}.{key}", source=source,
                                     line=line_of(raw, key))))
    if not params:
        raise PolicyError(
            "rule names no parameter: add keys such as 'weight: ...' or 'bias: zeros'",
            where=where, source=source, line=line,
        )
    return _Rule(index, _rule_label(index, types, names), types, names, tuple(params), where,
                 line, optional)


def _key_typos(rule: _Rule, names: set[str]) -> str:
    """``" (key 'wieght' names no parameter of its modules. Did you mean 'weight'?...)"`` for the
    keys of ``rule`` that match none of ``names``, its modules' own parameters; else ``""``."""
    typos = [f"key {key!r} names no parameter of its modules.{did_you_mean(key, names)}"
             for key, _ in rule.params if names and not fnmatch.filter(names, key)]
    if not typos:
        return ""
    return f" ({' '.join(typos)} Their parameters: {format_choices(names)})"


def _derive_seed(seed: int, qualified_name: str, shape: Sequence[int]) -> int:
    """A 63-bit seed from ``(seed, qualified_name, shape)`` only."""
    text = f"{seed}|{qualified_name}|{tuple(int(s) for s in shape)}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


# --------------------------------------------------------------------------- targets


@dataclass
class _Target:
    """One parameter as the user names it (a parametrized ``weight`` counts as one)."""

    qualified_name: str
    module_name: str
    module: nn.Module
    local_name: str
    shape: torch.Size
    kind: Literal["param", "parametrized", "old_weight_norm", "old_spectral_norm"]
    tensors: tuple[torch.Tensor, ...]  # the real Parameters written
    aliases: list[str] = field(default_factory=list)
    hook: Any = None  # old weight_norm / spectral_norm hook


def _old_norm_hooks(module: nn.Module) -> dict[str, tuple[str, Any]]:
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    found = {}
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm):
            found[hook.name] = ("old_weight_norm", hook)
        elif isinstance(hook, SpectralNorm):
            found[hook.name] = ("old_spectral_norm", hook)
    return found


def _module_targets(module_name: str, module: nn.Module) -> Iterator[_Target]:
    """The module's own parameters, parametrized tensors folded into their user-facing name."""
    from torch.nn.utils import parametrize

    def qualify(local: str) -> str:
        return f"{module_name}.{local}" if module_name else local

    claimed: set[str] = set()
    if parametrize.is_parametrized(module):
        for local, plist in module.parametrizations.items():
            originals = (plist.original,) if plist.is_tensor else tuple(
                getattr(plist, f"original{i}") for i in range(plist.ntensors)
            )
            with torch.no_grad():
                shape = getattr(module, local).shape if not any(
                    o.is_meta for o in originals) else _meta_param_shape(module, local)
            yield _Target(qualify(local), module_name, module, local, torch.Size(shape),
                          "parametrized", originals)
    for local, (kind, hook) in _old_norm_hooks(module).items():
        if kind == "old_weight_norm":
            g, v = module._parameters[local + "_g"], module._parameters[local + "_v"]
            claimed |= {local + "_g", local + "_v"}
            yield _Target(qualify(local), module_name, module, local, v.shape, kind, (g, v),
                          hook=hook)
        else:
            orig = module._parameters[local + "_orig"]
            claimed.add(local + "_orig")
            yield _Target(qualify(local), module_name, module, local, orig.shape, kind, (orig,),
                          hook=hook)
    for local, param in module._parameters.items():
        if param is None or local in claimed:
            continue
        yield _Target(qualify(local), module_name, module, local, param.shape, "param", (param,))


def _meta_param_shape(module: nn.Module, local: str) -> torch.Size:
    with torch.no_grad():
        return getattr(module, local).shape  # meta tensors compute shapes without data


def _is_parametrization_container(module_name: str, model_modules: dict[str, nn.Module]) -> bool:
    parts = module_name.split(".")
    for i, part in enumerate(parts):
        if part == "parametrizations":
            owner = model_modules.get(".".join(parts[:i]))
            if owner is not None and hasattr(owner, "parametrizations"):
                return True
    return False


# --------------------------------------------------------------------------- plan objects


@dataclass(frozen=True)
class PlanEntry:
    """One row of a plan: which rule initializes which parameter, and how.

    Attributes:
        qualified_name: the parameter's name in the model (``"encoder.0.weight"``).
        shape: its shape.
        rule_index: index of the rule in ``rules`` (``None`` for ``default: reset``).
        rule: the rule's label (``"rules[0] (type=Linear)"`` or ``"default: reset"``).
        initializer: the initializer's description.
        expected_std: the std the initializer's formula promises, if it has one.
    """

    qualified_name: str
    shape: tuple[int, ...]
    rule_index: int | None
    rule: str
    initializer: str
    expected_std: float | None


@dataclass
class _PlanItem:
    target: _Target
    rule_index: int | None
    rule: str
    initializer: Any  # Initializer, or None for default reset


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    return "\n".join(lines)


def _markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}"


class _PlanTable:
    """The text and Markdown rendering shared by :class:`PolicyPlan` and :class:`InitReport`."""

    policy_name: str | None
    left_alone: list[tuple[str, str]]
    unused_rules: list[str]

    def _sections(self) -> tuple[list[str], list[list[str]]]:
        raise NotImplementedError

    def _footer(self) -> list[str]:
        lines = []
        if self.left_alone:
            lines.append("left alone: " + ", ".join(f"{n} ({r})" for n, r in self.left_alone))
        if self.unused_rules:
            lines.append("unused rules: " + "; ".join(self.unused_rules))
        return lines

    def __str__(self) -> str:
        title = f"init policy {self.policy_name!r}" if self.policy_name else "init policy"
        return "\n".join([title, _table(*self._sections()), *self._footer()])

    def to_markdown(self) -> str:
        """The table as Markdown (for TensorBoard text)."""
        return "\n\n".join([_markdown(*self._sections()), *self._footer()])


@dataclass
class PolicyPlan(_PlanTable):
    """The dry-run result of :meth:`InitPolicy.explain`: nothing was changed.

    Attributes:
        policy_name: the policy's ``name``.
        entries: one :class:`PlanEntry` per parameter a rule (or ``default: reset``) covers.
        left_alone: ``(qualified_name, reason)`` for every parameter the policy does not touch.
        unused_rules: labels of rules that match no parameter.
    """

    policy_name: str | None
    entries: list[PlanEntry]
    left_alone: list[tuple[str, str]]
    unused_rules: list[str]

    def _sections(self) -> tuple[list[str], list[list[str]]]:
        headers = ["parameter", "shape", "rule", "initializer", "expected std"]
        rows = [[e.qualified_name, "x".join(map(str, e.shape)) or "scalar", e.rule,
                 e.initializer, _fmt(e.expected_std)] for e in self.entries]
        return headers, rows



@dataclass(frozen=True)
class InitRecord(PlanEntry):
    """One initialized parameter in an :class:`InitReport`: its plan row, and what was written.

    Attributes:
        measured_mean: the mean of the values written.
        measured_std: the (population) std of the values written.

    The other attributes are :class:`PlanEntry`'s.
    """

    measured_mean: float
    measured_std: float


class InitReport(_PlanTable):
    """What :meth:`InitPolicy.apply` did: per parameter the rule, initializer and statistics.

    Attributes:
        records: one :class:`InitRecord` per initialized parameter.
        left_alone: ``(qualified_name, reason)`` for parameters left as they were.
        unused_rules: labels of rules that matched nothing.
        policy_name: the policy's ``name``.
    """

    def __init__(self, policy_name: str | None, records: list[InitRecord],
                 left_alone: list[tuple[str, str]], unused_rules: list[str],
                 model: nn.Module | None = None) -> None:
        self.policy_name = policy_name
        self.records = records
        self.left_alone = left_alone
        self.unused_rules = unused_rules
        self._model = model
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str | None:
        """``weights_fingerprint`` of the model after apply (computed on first access)."""
        if self._fingerprint is None and self._model is not None:
            from lightning_init._fingerprint import weights_fingerprint

            self._fingerprint = weights_fingerprint(self._model)
            self._model = None
        return self._fingerprint

    def _sections(self) -> tuple[list[str], list[list[str]]]:
        headers = ["parameter", "shape", "rule", "initializer", "expected std", "mean", "std"]
        rows = [[r.qualified_name, "x".join(map(str, r.shape)) or "scalar", r.rule,
                 r.initializer, _fmt(r.expected_std), _fmt(r.measured_mean),
                 _fmt(r.measured_std)] for r in self.records]
        return headers, rows


    def __repr__(self) -> str:
        return (f"InitReport(policy_name={self.policy_name!r}, records={len(self.records)}, "
                f"left_alone={len(self.left_alone)}, unused_rules={self.unused_rules!r})")


# --------------------------------------------------------------------------- the policy


class InitPolicy:
    """A declarative init policy: rules from YAML or a mapping, applied atomically.

    Build one with :meth:`from_yaml`, :meth:`from_dict`, :meth:`from_preset` or :meth:`load`.

    Attributes:
        name: label for reports (``None`` if unset).
        seed: with a seed, every parameter's values depend only on ``(seed, qualified_name,
            shape)``; without one the global RNG is used.
        strict: a rule matching nothing is an error instead of a warning.
        default: ``"keep"`` leaves unmatched parameters alone, ``"reset"`` calls their module's
            ``reset_parameters()``.
        skip: globs over module qualified names that are never touched.

    Example:
        >>> policy = InitPolicy.from_dict({
        ...     "seed": 0,
        ...     "rules": [{"match": {"type": "Linear"}, "weight": "ones", "bias": "zeros"}],
        ... })
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU())
        >>> report = policy.apply(net)
        >>> net[0].weight.sum().item(), [r.qualified_name for r in report.records]
        (6.0, ['0.weight', '0.bias'])
    """

    def __init__(self, *, name: str | None = None, seed: int | None = None,
                 rules: Sequence[_Rule] = (), default: Literal["keep", "reset"] = "keep",
                 skip: Sequence[str] = (), strict: bool = False, source: str | None = None,
                 raw: Any = None) -> None:
        self.name = name
        self.seed = seed
        self.rules = tuple(rules)
        self.default = default
        self.skip = tuple(skip)
        self.strict = strict
        self.source = source
        self._raw = raw

    # ---- construction

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], *, source: str | None = None) -> InitPolicy:
        """Build a policy from a mapping with the YAML schema's keys.

        Raises:
            PolicyError: an unknown key, a bad value or an unknown initializer.

        Example:
            >>> InitPolicy.from_dict({"rulez": []})  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            lightning_init.PolicyError: unknown policy key 'rulez'. Did you mean 'rules'?...
        """
        if isinstance(mapping, InitPolicy):
            return mapping
        if not isinstance(mapping, Mapping):
            raise PolicyError(
                f"a policy must be a mapping with keys {format_choices(_TOP_KEYS)}, "
                f"got {type(mapping).__name__}", source=source, line=line_of(mapping),
            )
        _check_keys(mapping, _TOP_KEYS, where="", source=source, what="policy")

        def loc(key: str) -> dict[str, Any]:
            return {"where": key, "source": source, "line": line_of(mapping, key)}

        name = mapping.get("name")
        if name is not None and not isinstance(name, str):
            raise PolicyError(f"'name' must be a string, got {name!r}", **loc("name"))
        seed = mapping.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise PolicyError(f"'seed' must be an integer, got {seed!r}", **loc("seed"))
        default = mapping.get("default", "keep")
        if default not in _DEFAULTS:
            raise PolicyError(
                f"'default' must be one of {format_choices(_DEFAULTS)}, got {default!r}."
                + did_you_mean(str(default), _DEFAULTS), **loc("default"))
        strict = mapping.get("strict", False)
        if not isinstance(strict, bool):
            raise PolicyError(f"'strict' must be true or false, got {strict!r}", **loc("strict"))
        skip_raw = mapping.get("skip", [])
        skip = () if skip_raw in ([], None) else _str_list(
            skip_raw, what="'skip'", **loc("skip"))
        rules_raw = mapping.get("rules", [])
        if rules_raw is None:
            rules_raw = []
        if not isinstance(rules_raw, list | tuple):
            raise PolicyError(f"'rules' must be a list of rules, got {rules_raw!r}",
                              **loc("rules"))
        rules = [_parse_rule(i, raw, line_of(rules_raw, i) or line_of(mapping, "rules"), source)
                 for i, raw in enumerate(rules_raw)]
        return cls(name=name, seed=seed, rules=rules, default=default, skip=skip, strict=strict,
                   source=source, raw=_plain(mapping))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> InitPolicy:
        """Load a policy from a YAML file (safely; errors name the file and line).

        Example:
            >>> import tempfile, pathlib
            >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.yaml"
            >>> _ = path.write_text("rules:\\n  - match: {type: Linaer}\\n    bias: zeros\\n")
            >>> InitPolicy.from_yaml(path).rules[0].types
            ('Linaer',)
        """
        path = Path(path)
        try:
            data = path.read_bytes()  # decoded by load_yaml: UTF-8 or a clear PolicyError
        except OSError as err:
            raise PolicyError(f"cannot read policy file: {err.strerror or err}",
                              source=str(path)) from None
        document = load_yaml(data, source=str(path))
        if document is None:
            document = LinedDict()
        return cls.from_dict(document, source=str(path))

    @classmethod
    def from_preset(cls, name: str) -> InitPolicy:
        """Load a shipped preset by name (see :func:`list_presets`).

        Example:
            >>> InitPolicy.from_preset("kaiming_relu").name
            'kaiming_relu'
        """
        paths = _preset_paths()
        key = name[:-5] if name.endswith(".yaml") else name
        if key not in paths:
            raise PolicyError(f"unknown preset {name!r}.{did_you_mean(name, paths)} "
                              f"Presets: {format_choices(paths)}")
        return cls.from_yaml(paths[key])

    @classmethod
    def load(cls, spec: str | os.PathLike[str] | Mapping[str, Any] | InitPolicy) -> InitPolicy:
        """A policy from a path, a preset name, a mapping, or an existing policy.

        Example:
            >>> InitPolicy.load("xavier").name
            'xavier'
        """
        if isinstance(spec, InitPolicy):
            return spec
        if isinstance(spec, Mapping):
            return cls.from_dict(spec)
        if isinstance(spec, str | os.PathLike):
            path = Path(spec)
            if path.suffix in (".yaml", ".yml") or path.exists():
                if not path.exists() and str(spec).removesuffix(".yaml") in _preset_paths():
                    return cls.from_preset(str(spec))
                return cls.from_yaml(path)
            return cls.from_preset(str(spec))
        raise PolicyError(
            f"cannot make a policy from {type(spec).__name__}: give a path, a preset name, "
            "a mapping or an InitPolicy"
        )

    # ---- pickling and repr

    def __getstate__(self) -> dict[str, Any]:
        return {"raw": self._raw, "source": self.source}

    def __setstate__(self, state: dict[str, Any]) -> None:
        other = InitPolicy.from_dict(state["raw"], source=state["source"])
        self.__dict__.update(other.__dict__)

    def __repr__(self) -> str:
        where = f", source={self.source!r}" if self.source else ""
        return (f"InitPolicy(name={self.name!r}, seed={self.seed!r}, rules={len(self.rules)}, "
                f"default={self.default!r}, skip={list(self.skip)!r}, strict={self.strict}"
                f"{where})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InitPolicy) and self._raw == other._raw

    __hash__ = None  # type: ignore[assignment]

    # ---- matching

    def _error(self, message: str, rule: _Rule | None = None, suffix: str = "") -> PolicyError:
        if rule is None:
            return PolicyError(message, source=self.source)
        return PolicyError(message, where=rule.where + suffix, source=self.source,
                           line=rule.line)

    def _resolve_types(self, model: nn.Module, *, whole_model: bool = True
                       ) -> dict[int, tuple[type, ...]]:
        """Check every rule's ``type`` names a class; return the classes to match.

        For one module (``init_module``) a bare name that is none of its classes matches
        nothing instead of raising: it may name a class elsewhere in the model.
        """
        model_classes = {cls for m in model.modules() for cls in type(m).__mro__
                         if issubclass(cls, nn.Module)}
        by_name = {cls.__name__: cls for cls in model_classes}
        nn_names = {n for n in dir(nn) if isinstance(getattr(nn, n, None), type)
                    and issubclass(getattr(nn, n), nn.Module)}
        resolved: dict[int, Any] = {}
        for rule in self.rules:
            classes: list[type] = []
            for type_name in rule.types:
                if ":" in type_name or "." in type_name:
                    module_path, _, attr = type_name.replace(":", ".").rpartition(".")
                    try:
                        cls = getattr(importlib.import_module(module_path), attr)
                    except (ImportError, AttributeError, ValueError, TypeError):  # '..X': TypeError
                        raise self._error(
                            f"type {type_name!r} cannot be imported: give a class name (Linear) "
                            "or an absolute dotted path (mypkg.layers.MyBlock)", rule, ".match.type"
                        ) from None
                    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
                        raise self._error(
                            f"type {type_name!r} is not a torch.nn.Module class", rule,
                            ".match.type")
                    classes.append(cls)
                elif type_name in by_name:
                    classes.append(by_name[type_name])
                elif type_name in nn_names:
                    classes.append(getattr(nn, type_name))
                elif not whole_model:
                    continue
                else:
                    choices = sorted(nn_names | set(by_name))
                    raise self._error(
                        f"type {type_name!r} is no class of torch.nn nor of the model."
                        f"{did_you_mean(type_name, choices)} Give a class name "
                        "(Linear) or a dotted import path (mypkg.layers.MyBlock)",
                        rule, ".match.type")
            resolved[rule.index] = tuple(classes)
        return resolved

    def _skipped(self, module_name: str) -> bool:
        if not self.skip:
            return False
        parts = module_name.split(".") if module_name else []
        candidates = [".".join(parts[:i]) for i in range(1, len(parts) + 1)] or [""]
        return any(fnmatch.fnmatchcase(c, pattern) for c in candidates for pattern in self.skip)

    @staticmethod
    def _matches(rule: _Rule, module_name: str, module: nn.Module,
                 types: dict[int, tuple[type, ...]]) -> bool:
        if rule.types and not (types[rule.index] and isinstance(module, types[rule.index])):
            return False
        return not rule.names or any(fnmatch.fnmatchcase(module_name, g) for g in rule.names)

    def _rule_for(self, target: _Target, module_name: str, module: nn.Module,
                  types: dict[int, tuple[type, ...]]) -> tuple[_Rule, Any] | None:
        for rule in self.rules:
            if not self._matches(rule, module_name, module, types):
                continue
            for key, initializer in rule.params:
                if fnmatch.fnmatchcase(target.local_name, key):
                    return rule, initializer
        return None

    def _build(self, model: nn.Module, *, recurse: bool, prefix: str
               ) -> tuple[list[_PlanItem], list[tuple[str, str]], list[str], list[nn.Module]]:
        """The validated plan, left-alone list, unused-rule labels and modules to reset."""
        if not isinstance(model, nn.Module):
            raise PolicyError(f"a policy applies to a torch.nn.Module, got {type(model).__name__}")
        types = self._resolve_types(model, whole_model=recurse)
        if recurse:
            named = list(model.named_modules(prefix=prefix, remove_duplicate=False))
        else:
            named = [(prefix, model)]
        modules_by_name = dict(named)
        by_tensor: dict[int, _Target] = {}
        claims: dict[int, list[tuple[str, _Rule | None, Any]]] = {}
        order: list[_Target] = []
        left_alone: list[tuple[str, str]] = []
        own_names: dict[int, set[str]] = {rule.index: set() for rule in self.rules}
        for module_name, module in named:
            if recurse and _is_parametrization_container(module_name, modules_by_name):
                continue
            targets = list(_module_targets(module_name, module))
            if targets and not self._skipped(module_name):
                for rule in self.rules:
                    if self._matches(rule, module_name, module, types):
                        own_names[rule.index].update(t.local_name for t in targets)
            for target in targets:
                key = id(target.tensors[0])
                if key in by_tensor:
                    by_tensor[key].aliases.append(target.qualified_name)
                else:
                    by_tensor[key] = target
                    order.append(target)
                if self._skipped(module_name):
                    claims.setdefault(key, []).append((target.qualified_name, None, "skip"))
                    continue
                found = self._rule_for(target, module_name, module, types)
                claims.setdefault(key, []).append(
                    (target.qualified_name, *(found if found else (None, None))))

        items: list[_PlanItem] = []
        used: set[int] = set()
        resets: dict[int, nn.Module] = {}
        for target in order:
            target_claims = claims[id(target.tensors[0])]
            if any(c[2] == "skip" for c in target_claims):
                left_alone.append((target.qualified_name, "skip"))
                continue
            ruled = [(name, rule, init) for name, rule, init in target_claims if rule is not None]
            distinct = {rule.index for _, rule, _ in ruled}
            if len(distinct) > 1:
                first, second = sorted(ruled, key=lambda c: c[1].index)[:2]
                warnings.warn(
                    f"tied parameter {target.qualified_name!r} (also {', '.join(target.aliases)}) "
                    f"is claimed by {first[1].label} as {first[0]!r} and by {second[1].label} as "
                    f"{second[0]!r}: it is initialized once, by {first[1].label}",
                    TiedParameterWarning, stacklevel=3)
            if ruled:
                _name, rule, initializer = min(ruled, key=lambda c: c[1].index)
                used.update(distinct)
                if initializer.kind == "keep":
                    left_alone.append((target.qualified_name, f"keep by {rule.label}"))
                    continue
                if initializer.kind == "tensor":
                    initializer.check_shape(
                        target.shape, where=f"{rule.where}.{_key_for(rule, target)} -> "
                        f"{target.qualified_name}")
                elif not callable(getattr(target.module, "reset_parameters", None)):
                    raise self._error(
                        f"'default' (reset_parameters) asked for {target.qualified_name!r}, but "
                        f"{type(target.module).__name__} has no reset_parameters()", rule)
                else:
                    resets[id(target.module)] = target.module
                items.append(_PlanItem(target, rule.index, rule.label, initializer))
            elif self.default == "reset" and callable(
                    getattr(target.module, "reset_parameters", None)):
                resets[id(target.module)] = target.module
                items.append(_PlanItem(target, None, "default: reset", None))
            elif target.tensors[0].is_meta and callable(
                    getattr(target.module, "reset_parameters", None)):
                resets[id(target.module)] = target.module
                items.append(_PlanItem(target, None, "meta: reset_parameters", None))
            elif target.tensors[0].is_meta:
                raise PolicyError(
                    f"{target.qualified_name!r} is on the meta device, no rule covers it and "
                    f"{type(target.module).__name__} has no reset_parameters(): add a rule for "
                    "it so that it is not left as uninitialized memory", source=self.source)
            else:
                reason = "no rule" if self.default == "keep" else "no rule, no reset_parameters"
                left_alone.append((target.qualified_name, reason))
        for module_name, module in named:  # meta buffers: only reset_parameters() sets them
            if module.__dict__.get("_buffers") and any(
                    b is not None and b.is_meta for b in module._buffers.values()):
                if callable(getattr(module, "reset_parameters", None)):
                    resets.setdefault(id(module), module)
                elif not self._skipped(module_name):
                    warnings.warn(
                        f"{module_name or type(module).__name__!r} has buffers on the meta "
                        "device and no reset_parameters(): they stay uninitialized memory",
                        UserWarning, stacklevel=3)
        unused = [rule.label for rule in self.rules
                  if rule.index not in used and not rule.optional]
        if not recurse:  # one module of many: other rules are for other modules
            unused = []
        if unused:  # a rule whose only key is misspelled ('wieght') matches modules, no parameter
            message = "rule matches no parameter: " + "; ".join(
                rule.label + _key_typos(rule, own_names[rule.index]) for rule in self.rules
                if rule.index not in used and not rule.optional)
            if self.strict:
                first = next(r for r in self.rules if r.label == unused[0])
                raise self._error(message + " (strict: true)", first)
            warnings.warn(message, UnusedRuleWarning, stacklevel=3)
        for rule in self.rules if recurse else ():  # a key no matched module has: a typo?
            names = own_names[rule.index]
            if rule.index not in used or not names:
                continue
            for key, _ in rule.params:
                if not fnmatch.filter(names, key):
                    message = (f"{rule.label}: key {key!r} names no parameter of the modules "
                               f"the rule matches.{did_you_mean(key, names)} Their parameters: "
                               f"{format_choices(names)}")
                    if self.strict:
                        raise self._error(message + " (strict: true)", rule, f".{key}")
                    warnings.warn(message, UnusedRuleWarning, stacklevel=3)
        if recurse:
            self._check_skip_globs([name for name, _ in named if name])
        return items, left_alone, unused, list(resets.values())

    def _check_skip_globs(self, module_names: list[str]) -> None:
        """A ``skip`` glob that matches no module is a typo, or a glob missing its prefix."""
        for pattern in self.skip:
            if any(fnmatch.fnmatchcase(name, pattern) for name in module_names):
                continue
            suffix_matches = [n for n in module_names if fnmatch.fnmatchcase(n, "*." + pattern)]
            if suffix_matches:  # "backbone.*" for "net.backbone.0": the prefix is missing
                parts = suffix_matches[0].split(".")
                prefix = next((
                    ".".join(parts[:i]) + "." for i in range(1, len(parts))
                    if fnmatch.fnmatchcase(suffix_matches[0], ".".join(parts[:i]) + "." + pattern)
                ), "")
                hint = f" Did you mean '{prefix}{pattern}'?"
            else:
                hint = did_you_mean(pattern, module_names)
            message = (f"skip glob {pattern!r} matches no module: skip globs are over full "
                       f"qualified names (such as {module_names[0]!r}).{hint}"
                       if module_names else f"skip glob {pattern!r} matches no module")
            if self.strict:
                raise PolicyError(message + " (strict: true)", where="skip", source=self.source)
            warnings.warn(message, UnusedRuleWarning, stacklevel=4)

    # ---- public API

    def explain(self, model: nn.Module, *, recurse: bool = True, prefix: str = "") -> PolicyPlan:
        """Dry run: what :meth:`apply` would do to ``model``; changes nothing.

        Example:
            >>> policy = InitPolicy.from_dict({"rules": [{"match": {"type": "Linear"},
            ...                                            "bias": "zeros"}]})
            >>> plan = policy.explain(torch.nn.Linear(2, 2))
            >>> [e.qualified_name for e in plan.entries], plan.left_alone
            (['bias'], [('weight', 'no rule')])
        """
        items, left_alone, unused, _resets = self._build(model, recurse=recurse, prefix=prefix)
        entries = [PlanEntry(
            item.target.qualified_name, tuple(item.target.shape), item.rule_index, item.rule,
            item.initializer.describe() if item.initializer is not None else "reset_parameters()",
            item.initializer.expected_std(item.target.shape)
            if item.initializer is not None else None) for item in items]
        return PolicyPlan(self.name, entries, left_alone, unused)

    def apply(self, model: nn.Module, *, seed: int | None = None, recurse: bool = True,
              prefix: str = "", device: torch.device | str | None = None) -> InitReport:
        """Initialize ``model``'s parameters by the policy, atomically; return a report.

        Args:
            model: the module.
            seed: overrides the policy's ``seed`` (e.g. a rank-shared seed).
            recurse: ``False`` initializes only ``model``'s own parameters.
            prefix: prepended to qualified names (for matching, seeds and the report).
            device: where meta-device parameters are materialized (default: the default
                device).

        Raises:
            PolicyError: the policy does not fit the model; nothing was changed.

        Example:
            >>> policy = InitPolicy.from_dict({"seed": 1, "rules": [
            ...     {"match": {"type": "Linear"}, "weight": {"init": "normal", "std": 0.02}}]})
            >>> a, b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
            >>> _ = policy.apply(a); _ = policy.apply(b)
            >>> torch.equal(a.weight, b.weight)
            True
        """
        items, left_alone, unused, resets = self._build(model, recurse=recurse, prefix=prefix)
        seed = self.seed if seed is None else seed
        self._materialize(model, items, recurse=recurse, device=device)
        # Atomic: built-in initializers were validated (arguments, shapes) and cannot fail
        # while writing; everything else (custom initializers, resets, parametrizations,
        # DTensors) is snapshotted and written first, so a failure restores every tensor.
        risky = [item for item in items if not _cannot_fail(item)]
        safe = [item for item in items if _cannot_fail(item)]
        snapshot = _Snapshot(risky, resets)
        written: dict[int, tuple[_PlanItem, torch.Tensor]] = {}
        positions = {id(item): index for index, item in enumerate(items)}
        current = "reset_parameters()"
        try:
            with torch.no_grad():
                self._reset(model, resets, items, seed, prefix)
                for item in [*risky, *safe]:
                    current = f"{item.target.qualified_name!r} by {item.rule}"
                    if item.initializer is None or item.initializer.kind == "reset":
                        tensor = _effective(item.target)
                    else:
                        tensor = _fill(item, seed)
                    written[positions[id(item)]] = (item, tensor)
        except PolicyError as err:
            snapshot.restore()
            raise PolicyError(
                f"initializing {current} failed: {err.bare_message}; every parameter was "
                "restored", where=err.where, source=err.source or self.source, line=err.line,
            ) from err
        except Exception as err:
            snapshot.restore()
            raise PolicyError(
                f"initializing {current} failed: {type(err).__name__}: {err}; every parameter "
                "was restored", source=self.source) from err
        records = _measure([written[index] for index in sorted(written)])
        return InitReport(self.name, records, left_alone, unused, model)

    def init_module(self, module: nn.Module, prefix: str = "", *, seed: int | None = None,
                    device: torch.device | str | None = None) -> InitReport:
        """Initialize ``module``'s own parameters only (FSDP ``param_init_fn``, meta init).

        Meta parameters are materialized first (``to_empty(recurse=False)``); those no rule
        covers fall back to the module's ``reset_parameters()``.

        Example:
            >>> policy = InitPolicy.from_dict({"rules": [{"match": {"type": "Linear"},
            ...                                            "bias": "ones"}]})
            >>> with torch.device("meta"):
            ...     layer = torch.nn.Linear(2, 2)
            >>> _ = policy.init_module(layer, device="cpu")
            >>> layer.bias.tolist(), layer.weight.is_meta
            ([1.0, 1.0], False)
        """
        return self.apply(module, seed=seed, recurse=False, prefix=prefix, device=device)

    # ---- internals of apply

    def _materialize(self, model: nn.Module, items: list[_PlanItem], *, recurse: bool,
                     device: torch.device | str | None) -> None:
        modules = model.modules() if recurse else [model]
        target_device = torch.device(device) if device is not None else (
            torch.empty(0).device)
        remap: dict[int, torch.Tensor] = {}
        alive: list[torch.Tensor] = []  # keeps ids of the meta Parameters unique meanwhile
        for module in modules:
            tensors = [*module._parameters.values(), *module._buffers.values()]
            if not any(t is not None and t.is_meta for t in tensors):
                continue
            old = dict(module._parameters)
            module.to_empty(device=target_device, recurse=False)
            for local, param in old.items():
                if param is None:
                    continue
                alive.append(param)
                if id(param) in remap:  # tied: every owner gets the one new Parameter
                    module._parameters[local] = remap[id(param)]
                else:
                    remap[id(param)] = module._parameters[local]
        if remap:
            for item in items:
                item.target.tensors = tuple(remap.get(id(t), t) for t in item.target.tensors)

    def _reset(self, model: nn.Module, resets: list[nn.Module], items: list[_PlanItem],
               seed: int | None, prefix: str) -> None:
        if not resets:
            return
        # Parameters of reset modules that the plan does not reset keep their values.
        reset_tensors = {id(t) for item in items
                         if item.initializer is None or item.initializer.kind == "reset"
                         for t in item.target.tensors}
        keep = [(p, p.detach().clone()) for m in resets for p in m.parameters(recurse=False)
                if id(p) not in reset_tensors and not p.is_meta]
        names = {id(module): name for name, module in model.named_modules(prefix=prefix)}
        for module in resets:
            if seed is None:
                module.reset_parameters()
                continue
            devices = [p.device.index or 0 for p in module.parameters(recurse=False)
                       if p.device.type == "cuda"]
            with torch.random.fork_rng(devices=sorted(set(devices))):
                torch.manual_seed(_derive_seed(seed, names.get(id(module), prefix), ()))
                module.reset_parameters()
        for param, value in keep:
            param.copy_(value)


def _key_for(rule: _Rule, target: _Target) -> str:
    for key, _ in rule.params:
        if fnmatch.fnmatchcase(target.local_name, key):
            return key
    return target.local_name


def _cannot_fail(item: _PlanItem) -> bool:
    """A built-in tensor initializer on a plain parameter: validated, it cannot fail."""
    from lightning_init import initializers

    target = item.target
    if item.initializer is None or item.initializer.kind != "tensor" or target.kind != "param":
        return False
    if hasattr(target.tensors[0], "placements"):
        return False
    known = set(initializers.known_initializers())
    pending = [item.initializer]
    while pending:
        initializer = pending.pop()
        blocks = getattr(initializer, "blocks", None)
        if blocks:
            pending.extend(blocks)
        elif initializer.name not in known or ":" in initializer.name:
            return False
    return True


class _Snapshot:
    """Copies of every tensor apply may touch; ``restore`` puts them back."""

    def __init__(self, items: list[_PlanItem], resets: list[nn.Module]) -> None:
        seen: dict[int, torch.Tensor] = {}
        for item in items:
            for tensor in item.target.tensors:
                seen[id(tensor)] = tensor
        for module in resets:
            for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
                seen[id(tensor)] = tensor
        self._saved = [(t, _local(t).detach().clone()) for t in seen.values() if not t.is_meta]

    def restore(self) -> None:
        with torch.no_grad():
            for tensor, value in self._saved:
                _local(tensor).copy_(value)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) and hasattr(tensor, "placements") else tensor


def _effective(target: _Target) -> torch.Tensor:
    if target.kind == "param":
        return target.tensors[0]
    return getattr(target.module, target.local_name)


def _fill(item: _PlanItem, seed: int | None) -> torch.Tensor:
    """Fill the target per its initializer; return the tensor whose stats are reported."""
    target = item.target
    first = target.tensors[0]
    is_dtensor = hasattr(first, "placements") and hasattr(first, "device_mesh")
    device = _local(first).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(_derive_seed(seed, target.qualified_name, target.shape))
    if target.kind == "param" and not is_dtensor:
        value = first
    else:
        dtype = first.dtype if target.kind != "old_weight_norm" else target.tensors[1].dtype
        value = torch.empty(target.shape, dtype=dtype, device=device)
    item.initializer.fill_(value, generator)
    module = target.module
    if (target.local_name == "weight" and getattr(module, "padding_idx", None) is not None
            and isinstance(module, nn.Embedding | nn.EmbeddingBag)):
        value[module.padding_idx].zero_()
    if target.kind == "param":
        if is_dtensor:
            from torch.distributed.tensor import distribute_tensor

            shard = distribute_tensor(value, first.device_mesh, first.placements)
            _local(first).copy_(shard.to_local())
        return value
    if target.kind == "parametrized":
        plist = module.parametrizations[target.local_name]
        originals: Any = value
        for parametrization in reversed(plist):
            originals = parametrization.right_inverse(originals)
        originals = (originals,) if plist.is_tensor else tuple(originals)
        for tensor, new in zip(target.tensors, originals, strict=True):
            tensor.copy_(new)
        return value
    if target.kind == "old_weight_norm":
        g, v = target.tensors
        v.copy_(value)
        g.copy_(torch.norm_except_dim(value, 2, target.hook.dim))
        setattr(module, target.local_name, target.hook.compute_weight(module))
        return value
    target.tensors[0].copy_(value)  # old spectral_norm: the weight before normalization
    return value


_EXACT_BELOW = 1 << 16  # elements: smaller tensors get torch.std_mean


def _measure(written: list[tuple[_PlanItem, torch.Tensor]]) -> list[InitRecord]:
    """Mean/std of every written tensor, on its device, with one host transfer per device.

    Large tensors whose initializer promises a positive std use one fast pass each for the sum
    (a matrix-vector product) and the sum of squares (``torch._foreach_norm``); small tensors
    and constants use ``torch.std_mean`` (exact).
    """
    stats: dict[int, tuple[float, float]] = {}
    by_device: dict[torch.device, list[int]] = {}
    for index, (_item, tensor) in enumerate(written):
        by_device.setdefault(_local(tensor).device, []).append(index)
    with torch.no_grad():
        for device, indices in by_device.items():
            rows: list[torch.Tensor] = []
            fast: list[tuple[int, torch.Tensor]] = []
            for index in indices:
                item, tensor = written[index]
                local = _local(tensor).detach()
                promised = (item.initializer.expected_std(item.target.shape)
                            if item.initializer is not None else None)
                if local.numel() == 0:
                    rows.append(torch.full((3,), float("nan"), device=device))
                elif (local.numel() >= _EXACT_BELOW and promised and local.is_contiguous()
                        and local.dtype in (torch.float32, torch.float64)
                        and local.numel() % 1024 == 0):
                    rows.append(torch.zeros(3, device=device))
                    fast.append((len(rows) - 1, local))
                else:
                    std, mean = torch.std_mean(local.to(torch.float64), correction=0)
                    rows.append(torch.stack([mean, std, torch.zeros((), dtype=torch.float64,
                                                                    device=device)]).float())
            if fast:
                norms = torch._foreach_norm([t for _, t in fast])
                for (row, local), norm in zip(fast, norms, strict=True):
                    ones = torch.ones(1024, dtype=local.dtype, device=device)
                    total = (local.view(-1, 1024) @ ones).sum()
                    n = local.numel()
                    rows[row] = torch.stack([total / n, norm.pow(2) / n,
                                             torch.ones((), device=device)]).float()
            table = torch.stack(rows).double().tolist()  # the one host transfer
            for index, (first, second, is_fast) in zip(indices, table, strict=True):
                if is_fast:
                    mean = first
                    stats[index] = (mean, math.sqrt(max(second - mean * mean, 0.0)))
                else:
                    stats[index] = (first, second)
    records = []
    for index, (item, _tensor) in enumerate(written):
        target = item.target
        mean, std = stats[index]
        records.append(InitRecord(
            target.qualified_name, tuple(target.shape), item.rule_index, item.rule,
            item.initializer.describe() if item.initializer is not None
            else "reset_parameters()",
            item.initializer.expected_std(target.shape) if item.initializer is not None
            else None, mean, std))
    return records
