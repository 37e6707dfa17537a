"""The init policy: a YAML/dict schema mapping modules to initializers, applied atomically.

``apply`` builds the whole plan (parameter -> rule -> initializer, shapes checked) before it
writes one value, and a failure restores every tensor it touched. Structure is respected: a
tied parameter is written once; an Embedding's ``padding_idx`` row stays zero; under
``weight_norm`` (both APIs) a ``weight`` rule sets the effective weight and g/v follow; under
``spectral_norm`` it sets the weight before normalization. With a seed, each parameter's values
depend only on ``(seed, qualified_name, shape)``.

The schema is described in :mod:`lightning_init.policy.schema`, the initializers in
:mod:`lightning_init.policy.initializers`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn

from lightning_init._log import LOGGER
from lightning_init._text import did_you_mean, format_choices
from lightning_init._yaml import load_yaml
from lightning_init.errors import PolicyError
from lightning_init.policy._only import restrict
from lightning_init.policy.apply import apply_plan, measure
from lightning_init.policy.coverage import warn_uncovered
from lightning_init.policy.plan import Plan, build_plan
from lightning_init.policy.presets import preset_paths
from lightning_init.policy.reports import InitReport, PlanEntry, PolicyPlan
from lightning_init.policy.schema import Rule, Schema, parse_policy, plain

__all__ = ["InitPolicy"]


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
        variables: the declared variables (``variables:``), parsed, in order.

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
                 rules: Sequence[Rule] = (), default: Literal["keep", "reset"] = "keep",
                 skip: Sequence[str] = (), strict: bool = False, source: str | None = None,
                 raw: Any = None, variables: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.seed = seed
        self.rules = tuple(rules)
        self.default = default
        self.skip = tuple(skip)
        self.strict = strict
        self.source = source
        self.variables = dict(variables or {})
        self._raw = raw
        self._preset: str | None = None  # a shipped preset warns about weights it leaves alone

    # ---- construction

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], *, source: str | None = None) -> InitPolicy:
        """Build a policy from a mapping with the YAML schema's keys.

        Raises:
            PolicyError: an unknown key, a bad value or an unknown initializer; no rules and
                ``default: keep`` (a policy that would change nothing).

        Example:
            >>> InitPolicy.from_dict({"rulez": []})  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            lightning_init.PolicyError: unknown policy key 'rulez'. Did you mean 'rules'?...
            >>> InitPolicy.from_dict({"rules": []})  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            lightning_init.PolicyError: the policy has no rules: the mapping has an empty ...
        """
        if isinstance(mapping, InitPolicy):
            return mapping
        policy = cls._parsed(mapping, source=source)
        if not policy.rules and policy.default == "keep":
            what = "file" if source is not None else "mapping"
            empty = ("has an empty 'rules' list" if isinstance(mapping, Mapping)
                     and "rules" in mapping else "has no 'rules' key")
            raise PolicyError(
                f"the policy has no rules: the {what} {empty}, so it would change nothing. Add "
                "rules (see `lightning-init presets` for complete examples), or `default: "
                "reset` to run every module's reset_parameters()", source=source)
        return policy

    @classmethod
    def _parsed(cls, mapping: Mapping[str, Any], *, source: str | None = None) -> InitPolicy:
        """The policy of ``mapping``, also one that changes nothing (an auto policy of a
        model without weight layers)."""
        schema = parse_policy(mapping, source=source)
        return cls(name=schema.name, seed=schema.seed, rules=schema.rules,
                   default=schema.default, skip=schema.skip, strict=schema.strict,
                   source=source, raw=plain(mapping), variables=schema.variables)

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
            raise PolicyError(
                "the policy has no rules: the file is empty, so it would change nothing. Add "
                "`rules:` (see `lightning-init presets` for complete examples), or `default: "
                "reset` to run every module's reset_parameters()", source=str(path))
        policy = cls.from_dict(document, source=str(path))
        if not policy.rules and policy.default == "reset" and not _is_preset(path):
            LOGGER.warning(
                "lightning_init: policy file %s has no rules: `default: reset` runs every "
                "module's reset_parameters() and nothing else.", path)
        return policy

    @classmethod
    def from_preset(cls, name: str) -> InitPolicy:
        """Load a shipped preset by name (see :func:`~lightning_init.list_presets`).

        Example:
            >>> InitPolicy.from_preset("kaiming_relu").name
            'kaiming_relu'
        """
        paths = preset_paths()
        key = name[:-5] if name.endswith(".yaml") else name
        if key not in paths:
            raise PolicyError(f"unknown preset {name!r}.{did_you_mean(name, paths)} "
                              f"Presets: {format_choices(paths)}")
        policy = cls.from_yaml(paths[key])
        policy._preset = key
        return policy

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
            return _from_path_or_preset(cls, spec)
        raise PolicyError(
            f"cannot make a policy from {type(spec).__name__}: give a path, a preset name, "
            "a mapping or an InitPolicy"
        )

    @classmethod
    def auto(cls, model: nn.Module, sample: Any, *, forward: Any = None,
             num_classes: int | None = None, prior: float | None = None) -> InitPolicy:
        """A policy built from ``model``'s structure and one sample pass (``policy: "auto"``).

        Each weight layer gets the gain of the activation that follows it in the pass;
        residual blocks, norms, embeddings, the output layer and LSTM/GRU get their own rules
        (:mod:`lightning_init.policy.auto`). ``model`` is not changed. ``prior``: the positive
        class's frequency for a sigmoid head; its bias starts at ``ln(p / (1 - p))``.

        Example:
            >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
            >>> policy = InitPolicy.auto(net, torch.randn(2, 4))
            >>> policy.explain(net).entries[0].initializer
            'normal(std=sqrt(2) / sqrt(fan_in) -> 0.707107)'
        """
        from lightning_init.policy._auto_rules import build_rules

        return build_rules(model, sample, cls._parsed, forward=forward,
                           num_classes=num_classes, prior=prior).policy()

    # ---- pickling and repr

    def __getstate__(self) -> dict[str, Any]:
        return {"raw": self._raw, "source": self.source, "preset": self._preset}

    def __setstate__(self, state: dict[str, Any]) -> None:
        other = InitPolicy._parsed(state["raw"], source=state["source"])
        self.__dict__.update(other.__dict__)
        self._preset = state.get("preset")

    def __repr__(self) -> str:
        return _repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InitPolicy) and self._raw == other._raw

    __hash__ = None  # type: ignore[assignment]

    # ---- use

    def _plan(self, model: nn.Module, *, recurse: bool, prefix: str,
              only: Iterable[str] | None = None) -> Plan:
        plan = build_plan(_schema(self), model, recurse=recurse, prefix=prefix)
        if only is not None:
            plan = restrict(plan, only, model, prefix=prefix)
        if self._preset is not None and recurse:
            warn_uncovered(self._preset, model, plan.left_alone, prefix=prefix)
        return plan

    def explain(self, model: nn.Module, *, recurse: bool = True, prefix: str = "",
                only: Iterable[str] | None = None) -> PolicyPlan:
        """Dry run: what :meth:`apply` would do to ``model``; changes nothing.

        Each row shows the initializer with its arguments evaluated for that parameter; a
        line under the table gives the model-wide variables' values.

        Example:
            >>> policy = InitPolicy.from_dict({"rules": [{"match": {"type": "Linear"},
            ...                                            "bias": "zeros"}]})
            >>> plan = policy.explain(torch.nn.Linear(2, 2))
            >>> [e.qualified_name for e in plan.entries], plan.left_alone
            (['bias'], [('weight', 'no rule')])
            >>> deep = InitPolicy.from_dict({
            ...     "variables": {"n_layer": {"count": "*"}},
            ...     "rules": [{"match": {"type": "Linear"},
            ...                "weight": {"init": "normal", "std": "0.02 / sqrt(n_layer)"}}]})
            >>> plan = deep.explain(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Tanh(),
            ...                                         torch.nn.Linear(2, 2), torch.nn.Tanh()))
            >>> plan.entries[0].initializer, plan.variables
            ('normal(std=0.02 / sqrt(n_layer) -> 0.01)', {'n_layer': 4.0})
        """
        plan = self._plan(model, recurse=recurse, prefix=prefix, only=only)
        return PolicyPlan(self.name, [PlanEntry.of(item) for item in plan.items],
                          plan.left_alone, plan.unused_rules, plan.variables)

    def apply(self, model: nn.Module, *, seed: int | None = None, recurse: bool = True,
              prefix: str = "", device: torch.device | str | None = None,
              only: Iterable[str] | None = None) -> InitReport:
        """Initialize ``model``'s parameters by the policy, atomically; return a report.

        Args:
            model: the module.
            seed: overrides the policy's ``seed`` (e.g. a rank-shared seed).
            recurse: ``False`` initializes only ``model``'s own parameters.
            prefix: prepended to qualified names (for matching, seeds and the report).
            device: where meta-device parameters are materialized (default: the default
                device).
            only: qualified parameter names: initialize these and leave every other
                parameter as it is (the parameters a checkpoint lacks, e.g. HF's
                ``loading_info["missing_keys"]``; see
                :func:`~lightning_init.policy.missing_parameters`).

        Raises:
            PolicyError: the policy does not fit the model, or ``only`` names a parameter
                the model does not have; nothing was changed.

        Example:
            >>> policy = InitPolicy.from_dict({"seed": 1, "rules": [
            ...     {"match": {"type": "Linear"}, "weight": {"init": "normal", "std": 0.02}}]})
            >>> a, b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
            >>> _ = policy.apply(a); _ = policy.apply(b)
            >>> torch.equal(a.weight, b.weight)
            True
        """
        report = self._apply(model, seed=seed, recurse=recurse, prefix=prefix, device=device,
                             only=only)
        return cast(InitReport, report)  # report=True: never None

    def _apply(self, model: nn.Module, *, seed: int | None = None, recurse: bool = True,
               prefix: str = "", device: torch.device | str | None = None,
               only: Iterable[str] | None = None, atomic: bool = True,
               report: bool = True) -> InitReport | None:
        """:meth:`apply`; ``atomic=False`` copies no tensor first (over weights that are about
        to be replaced: the automatic policy's measuring passes and its apply over them);
        ``report=False`` measures nothing and returns ``None``."""
        plan = self._plan(model, recurse=recurse, prefix=prefix, only=only)
        written = apply_plan(plan, model, seed=self.seed if seed is None else seed,
                             prefix=prefix, source=self.source, recurse=recurse, device=device,
                             atomic=atomic)
        if not report:
            return None
        return InitReport(self.name, measure(written), plan.left_alone, plan.unused_rules,
                          model, variables=plan.variables)

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


def _from_path_or_preset(cls: type[InitPolicy], spec: str | os.PathLike[str]) -> InitPolicy:
    """A YAML file (a ``.yaml`` name or an existing path), else a preset by name."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists() and str(spec).removesuffix(".yaml") in preset_paths():
            return cls.from_preset(str(spec))
        return cls.from_yaml(path)
    return cls.from_preset(str(spec))


def _schema(policy: InitPolicy) -> Schema:
    """The policy's validated parts, as the planner reads them."""
    return Schema(rules=policy.rules, default=policy.default, skip=policy.skip,
                  strict=policy.strict, source=policy.source, name=policy.name,
                  seed=policy.seed, variables=policy.variables)


def _repr(policy: InitPolicy) -> str:
    where = f", source={policy.source!r}" if policy.source else ""
    return (f"InitPolicy(name={policy.name!r}, seed={policy.seed!r}, rules={len(policy.rules)}, "
            f"default={policy.default!r}, skip={list(policy.skip)!r}, strict={policy.strict}"
            f"{where})")


def _is_preset(path: Path) -> bool:
    """Whether ``path`` is one of the shipped presets (their `default: reset` is deliberate)."""
    return path.resolve() in {preset.resolve() for preset in preset_paths().values()}
