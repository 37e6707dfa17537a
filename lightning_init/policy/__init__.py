"""The policy engine: declarative init policies, read from YAML or a mapping, applied atomically.

The public names are below; :mod:`lightning_init.policy.initializers` documents the
initializers a policy can name. Inside, one module per step:

- ``schema``: a mapping or YAML document -> frozen rules that remember their file and line;
- ``plan``: the rules matched against a model (tied parameters, ``skip``, ``default``,
  shapes checked) -> a plan, before anything is written; ``_plan_warnings``: its typo warnings;
- ``apply``: meta parameters materialized, every value written atomically, then measured;
- ``_snapshot``: what an apply may change, copied first and put back on any failure;
- ``targets``: where a value lands (parametrizations, ``weight_norm``, DTensor shards);
- ``reports``: the plan and report tables;
- ``presets``: the shipped YAML presets; ``coverage``: the warning when a preset leaves
  weights alone (a model of another family);
- ``finetune``: the parameters a checkpoint lacks, for ``apply(model, only=...)``;
- ``initializers`` (read by ``_resolver``, registered in ``_catalogue``) and ``layouts``: the
  initializers and the fans per layer type;
- ``auto``: the automatic policy (``_auto_rules`` builds it from ``_auto_pass``'s sample pass
  and ``_calibrate``'s measurements).

Names are imported on first use, so ``lightning_init.policy.presets`` answers without torch.

Example:
    >>> from lightning_init.policy import InitPolicy
    >>> InitPolicy.from_preset("xavier").name
    'xavier'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "InitPolicy",
    "InitRecord",
    "InitReport",
    "PlanEntry",
    "PolicyPlan",
    "TiedParameterWarning",
    "UncoveredWeightWarning",
    "UnusedRuleWarning",
    "list_presets",
    "missing_parameters",
]

_LAZY = {
    "InitPolicy": "lightning_init.policy.init_policy",
    "InitRecord": "lightning_init.policy.reports",
    "InitReport": "lightning_init.policy.reports",
    "PlanEntry": "lightning_init.policy.reports",
    "PolicyPlan": "lightning_init.policy.reports",
    "TiedParameterWarning": "lightning_init.policy.plan",
    "UncoveredWeightWarning": "lightning_init.policy.coverage",
    "UnusedRuleWarning": "lightning_init.policy.plan",
    "list_presets": "lightning_init.policy.presets",
    "missing_parameters": "lightning_init.policy.finetune",
}

if TYPE_CHECKING:  # pragma: no cover
    from lightning_init.policy.coverage import UncoveredWeightWarning
    from lightning_init.policy.finetune import missing_parameters
    from lightning_init.policy.init_policy import InitPolicy
    from lightning_init.policy.plan import TiedParameterWarning, UnusedRuleWarning
    from lightning_init.policy.presets import list_presets
    from lightning_init.policy.reports import InitRecord, InitReport, PlanEntry, PolicyPlan


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'lightning_init.policy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
