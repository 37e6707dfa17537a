"""A preset's expressions and variables evaluated for one model: a policy in plain numbers.

Test support only, for the presets written in the ``variables:`` / expression syntax before the
policy engine evaluates it itself: the preset is planned once with placeholder numbers (to
learn which rule claims which parameter), then each parameter an expression rule claimed gets
its own exact-name rule, with the expressions evaluated by the engines the policy will use
(:mod:`lightning_init._model_vars`, :mod:`lightning_init._expr`), placed first. The result is
the same init the preset describes, in the syntax the engine reads today.
"""

from __future__ import annotations

import copy
import fnmatch
from typing import Any

from torch import nn

from lightning_init._expr import parse_expression
from lightning_init._model_vars import (
    PARAMETER_VARIABLES,
    known_variables,
    model_variables,
    parameter_variables,
    parse_variables,
)
from lightning_init._yaml import load_yaml
from lightning_init.policy import InitPolicy
from lightning_init.policy.plan import build_plan
from lightning_init.policy.presets import preset_paths
from lightning_init.policy.schema import parse_policy, plain

_RULE_KEYS = ("match", "optional")
_PLACEHOLDER = {"a": -1.0, "b": 1.0}  # trunc_normal bounds must stay ordered
_WORDS = ("init", "mode", "nonlinearity", "distribution")  # string arguments, not expressions


def preset_mapping(name: str) -> dict[str, Any]:
    """The preset's YAML as plain dicts and lists."""
    return plain(load_yaml(preset_paths()[name].read_text(encoding="utf-8")))


def uses_expressions(name: str) -> bool:
    """Whether the preset needs the expression engine (variables or string arguments)."""
    mapping = preset_mapping(name)
    return "variables" in mapping or any(_has_expression(spec) for rule in mapping["rules"]
                                         for key, spec in rule.items() if key not in _RULE_KEYS)


def _has_expression(spec: Any) -> bool:
    if isinstance(spec, dict):
        return any(_has_expression(value) if key == "chunks" else
                   (key not in _WORDS and isinstance(value, str)) for key, value in spec.items())
    if isinstance(spec, list):
        return any(_has_expression(item) for item in spec)
    return False


def _substitute(spec: Any, evaluate: Any) -> Any:
    """``spec`` with every expression string replaced by ``evaluate(text, key)``."""
    if isinstance(spec, dict):
        out = {}
        for key, value in spec.items():
            if key == "chunks" and isinstance(value, list):
                out[key] = [_substitute(item, evaluate) for item in value]
            elif key not in _WORDS and isinstance(value, str):
                out[key] = evaluate(value, key)
            else:
                out[key] = value
        return out
    return spec


def expanded_policy(name: str, model: nn.Module) -> InitPolicy:
    """The preset ``name`` for ``model``, its expressions evaluated: a policy in numbers."""
    mapping = preset_mapping(name)
    specs = parse_variables(mapping.pop("variables", None))
    known = set(known_variables(specs)) | set(PARAMETER_VARIABLES)
    skeleton = copy.deepcopy(mapping)
    for rule in skeleton["rules"]:
        for key in [k for k in rule if k not in _RULE_KEYS]:
            rule[key] = _substitute(rule[key], lambda _text, k: _PLACEHOLDER.get(k, 1.0))
    needed = set()
    for rule in mapping["rules"]:
        for key in [k for k in rule if k not in _RULE_KEYS]:
            _substitute(rule[key], lambda text, _k: needed.update(
                parse_expression(text, variables=known).names))
    values = model_variables(model, specs, needed=sorted(needed))
    plan = build_plan(parse_policy(skeleton), model)
    exact: list[dict[str, Any]] = []
    for item in plan.items:
        if item.rule_index is None:
            continue
        rule = mapping["rules"][item.rule_index]
        key = next(k for k in rule if k not in _RULE_KEYS
                   and fnmatch.fnmatchcase(item.target.local_name, k))
        if not _has_expression(rule[key]):
            continue
        target = item.target
        local = parameter_variables(target.module, target.module_name, target.local_name,
                                    target.tensors[0])
        scope = {**values, **local}
        spec = _substitute(rule[key], lambda text, _k, scope=scope: parse_expression(
            text, variables=known).evaluate(scope))
        exact.append({"match": {"name": target.module_name or "*"}, "optional": True,
                      target.local_name: spec})
    rules = exact + [{**rule, "optional": True} if _has_any(original) else rule
                     for rule, original in zip(skeleton["rules"], mapping["rules"], strict=True)]
    return InitPolicy.from_dict({**{k: v for k, v in skeleton.items() if k != "rules"},
                                 "rules": rules})


def _has_any(rule: dict[str, Any]) -> bool:
    return any(_has_expression(spec) for key, spec in rule.items() if key not in _RULE_KEYS)
