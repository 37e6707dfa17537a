"""The policy schema: a mapping (or YAML document) -> frozen rules that remember their file:line.

A policy is a list of rules, read top to bottom; the first rule that matches a parameter wins::

    name: kaiming-relu
    seed: 0
    variables:
      n_layer: {count: "encoder.*"}   # modules matched by the glob, at its depth
    rules:
      - match: {type: [Linear, Conv2d], last: true}
        weight: {init: kaiming_normal, nonlinearity: linear}
      - match: {type: [Linear, Conv2d], name: "encoder.*"}
        optional: true     # no warning when this rule matches nothing (presets use it)
        weight: {init: kaiming_normal, mode: fan_in, nonlinearity: relu}
        bias: zeros
      - match: {type: MyTransposedLinear}
        fan_layout: {in: 0, out: 1}   # its weight is stored (in, out)
        weight: {init: normal, std: "1 / sqrt(fan_in * n_layer)"}
    default: keep          # or reset: module.reset_parameters() for unmatched parameters
    skip: ["backbone.*"]   # modules never touched
    strict: false          # true: a rule that matches nothing is an error

Rule keys other than ``match``, ``optional`` and ``fan_layout`` are globs over the module's
*own* parameter names (``recurse=False``; ``"weight_hh_*"``); their values are initializer
specs of :mod:`lightning_init.policy.initializers`, whose numeric arguments may be expressions
(:mod:`lightning_init.policy._expr`) over the ``variables`` and the per-parameter ``layer_id``,
``fan_in``, ``fan_out`` (:mod:`lightning_init.policy._model_vars`). ``match.type`` is a class name
(of ``torch.nn`` or of the model's own classes; subclasses match) or a dotted import path, or
a list; ``match.name`` is a glob (or list) over the module's qualified name; ``match.last:
true`` matches only the model's output layer, the last module in registration order that has
a weight of 2 or more dimensions. ``fan_layout`` overrides the layer type's weight layout
(:mod:`lightning_init.anatomy.layouts`). ``skip`` globs cover a module and everything under it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lightning_init._text import did_you_mean, format_choices
from lightning_init._yaml import line_of
from lightning_init.anatomy.layouts import Layout, parse_layout
from lightning_init.errors import PolicyError
from lightning_init.policy._model_vars import parse_variables
from lightning_init.policy.initializers import Initializer, resolve_initializer

__all__ = ["DEFAULTS", "TOP_KEYS", "Rule", "Schema", "parse_policy", "parse_rule", "plain"]

TOP_KEYS = ("name", "seed", "variables", "rules", "default", "skip", "strict")
DEFAULTS = ("keep", "reset")
_MATCH_KEYS = ("type", "name", "last")
_RULE_KEYS = ("match", "optional", "fan_layout")  # every other rule key is a parameter glob


@dataclass(frozen=True)
class Rule:
    """One rule: which modules it matches and the initializer per parameter-name glob.

    Attributes:
        index: its position in ``rules``.
        label: how messages and reports name it (``"rules[0] (type=Linear)"``).
        types: ``match.type`` names (empty: any type).
        names: ``match.name`` globs (empty: any name).
        params: ``(glob over the module's own parameter names, Initializer)`` pairs, in order.
        where: its place in the policy (``"rules[0]"``).
        line: its line in the policy file, if known.
        optional: no warning when it matches nothing, nor for a parameter key that every
            matched module was built without (``bias=False``).
        fan_layout: the weight layout its fan-based initializers read, overriding the layer
            type's (``None``: the registered one).
        last: it matches only the output layer (``match.last``).
    """

    index: int
    label: str
    types: tuple[str, ...]
    names: tuple[str, ...]
    params: tuple[tuple[str, Initializer], ...]
    where: str
    line: int | None
    optional: bool = False
    fan_layout: Layout | None = None
    last: bool = False


@dataclass(frozen=True)
class Schema:
    """A validated policy, as written (nothing about a model yet).

    Attributes:
        rules: the rules, in order.
        default: ``"keep"`` or ``"reset"`` for parameters no rule covers.
        skip: globs over module qualified names never touched.
        strict: a rule or glob that matches nothing is an error instead of a warning.
        source: the file the policy came from, if any.
        name: the policy's label.
        seed: the policy's seed.
        variables: the declared variables, parsed (:func:`~lightning_init.policy._model_vars.
            parse_variables`), in order.
    """

    rules: tuple[Rule, ...] = ()
    default: Literal["keep", "reset"] = "keep"
    skip: tuple[str, ...] = ()
    strict: bool = False
    source: str | None = None
    name: str | None = None
    seed: int | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)


def plain(value: Any) -> Any:
    """LinedDict/LinedList -> dict/list (for pickling, equality and repr).

    Example:
        >>> plain({"rules": ({"match": {"type": "Linear"}},)})
        {'rules': [{'match': {'type': 'Linear'}}]}
    """
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def parse_policy(mapping: Any, *, source: str | None = None) -> Schema:
    """Validate a policy mapping (the YAML schema's keys) into a :class:`Schema`.

    Raises:
        PolicyError: an unknown key (with a did-you-mean), a bad value or an unknown
            initializer, naming the key and, for a file, its line.

    Example:
        >>> schema = parse_policy({"seed": 0, "rules": [{"match": {"type": "Linear"},
        ...                                              "bias": "zeros"}]})
        >>> schema.seed, schema.rules[0].label, schema.rules[0].params[0][0]
        (0, 'rules[0] (type=Linear)', 'bias')
    """
    if not isinstance(mapping, Mapping):
        raise PolicyError(
            f"a policy must be a mapping with keys {format_choices(TOP_KEYS)}, "
            f"got {type(mapping).__name__}", source=source, line=line_of(mapping),
        )
    _check_keys(mapping, TOP_KEYS, where="", source=source, what="policy")
    name, seed = _name(mapping, source), _seed(mapping, source)  # checked in this order
    default, strict = _default(mapping, source), _flag(mapping, "strict", source)
    skip = _skip(mapping, source)
    variables = _variables(mapping, source)
    return Schema(rules=_rules(mapping, source, tuple(variables)), default=default, skip=skip,
                  strict=strict, source=source, name=name, seed=seed, variables=variables)


def _where(mapping: Mapping, key: str, source: str | None) -> dict[str, Any]:
    return {"where": key, "source": source, "line": line_of(mapping, key)}


def _name(mapping: Mapping, source: str | None) -> str | None:
    name = mapping.get("name")
    if name is not None and not isinstance(name, str):
        raise PolicyError(f"'name' must be a string, got {name!r}",
                          **_where(mapping, "name", source))
    return name


def _seed(mapping: Mapping, source: str | None) -> int | None:
    seed = mapping.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise PolicyError(f"'seed' must be an integer, got {seed!r}",
                          **_where(mapping, "seed", source))
    return seed


def _default(mapping: Mapping, source: str | None) -> Literal["keep", "reset"]:
    default = mapping.get("default", "keep")
    if default not in DEFAULTS:
        raise PolicyError(
            f"'default' must be one of {format_choices(DEFAULTS)}, got {default!r}."
            + did_you_mean(str(default), DEFAULTS), **_where(mapping, "default", source))
    return default


def _flag(mapping: Mapping, key: str, source: str | None) -> bool:
    value = mapping.get(key, False)
    if not isinstance(value, bool):
        raise PolicyError(f"'{key}' must be true or false, got {value!r}",
                          **_where(mapping, key, source))
    return value


def _skip(mapping: Mapping, source: str | None) -> tuple[str, ...]:
    raw = mapping.get("skip", [])
    if raw in ([], None):
        return ()
    return _str_list(raw, what="'skip'", **_where(mapping, "skip", source))


def _variables(mapping: Mapping, source: str | None) -> dict[str, Any]:
    raw = mapping.get("variables")
    try:
        return parse_variables(raw)
    except PolicyError as err:
        line = _failing_line(raw, err.where) if isinstance(raw, Mapping) else None
        raise PolicyError(err.bare_message, where=err.where, source=source,
                          line=line or line_of(mapping, "variables")) from None


def _failing_line(raw: Mapping, where: str | None) -> int | None:
    """The line of the variable an error is about: named in ``where``, else the first whose
    declaration fails."""
    name = (where or "").partition(".")[2]
    if name in raw:
        return line_of(raw, name)
    keys = list(raw)
    for count in range(1, len(keys) + 1):
        try:
            parse_variables({key: raw[key] for key in keys[:count]})
        except PolicyError:
            return line_of(raw, keys[count - 1])
    return None


def _rules(mapping: Mapping, source: str | None, variables: tuple[str, ...] = ()
           ) -> tuple[Rule, ...]:
    raw = mapping.get("rules", [])
    if raw is None:
        raw = []
    if not isinstance(raw, list | tuple):
        raise PolicyError(f"'rules' must be a list of rules, got {raw!r}",
                          **_where(mapping, "rules", source))
    return tuple(parse_rule(index, rule, line_of(raw, index) or line_of(mapping, "rules"), source,
                            variables=variables)
                 for index, rule in enumerate(raw))


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


def _rule_label(index: int, types: tuple[str, ...], names: tuple[str, ...],
                last: bool = False) -> str:
    parts = []
    if types:
        parts.append("type=" + ",".join(types))
    if names:
        parts.append("name=" + ",".join(names))
    if last:
        parts.append("last")
    return f"rules[{index}]" + (f" ({' '.join(parts)})" if parts else "")


def parse_rule(index: int, raw: Any, line: int | None, source: str | None, *,
               variables: tuple[str, ...] = ()) -> Rule:
    """Validate ``rules[index]`` into a :class:`Rule` (its initializers resolved).

    Args:
        index: its position in ``rules``.
        raw: the rule's mapping.
        line: its line in ``source``, if known.
        source: the policy file, if any.
        variables: the policy's declared variables, which its expressions may use.

    Example:
        >>> rule = parse_rule(0, {"match": {"name": "head.*"}, "weight": "zeros"}, 3, "p.yaml")
        >>> rule.label, rule.line, rule.params[0][1].describe()
        ('rules[0] (name=head.*)', 3, 'zeros')
        >>> parse_rule(1, {"match": {"type": "Conv1D"}, "fan_layout": {"in": 0, "oot": 1},
        ...                "weight": "zeros"}, 7, "p.yaml")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_init.PolicyError: p.yaml, line 7: rules[1].fan_layout: unknown key 'oot'. ...
    """
    where = f"rules[{index}]"
    if not isinstance(raw, Mapping):
        raise PolicyError(
            f"a rule must be a mapping with 'match' and parameter keys, got {raw!r}",
            where=where, source=source, line=line,
        )
    types, names, last = _match(raw, where, line, source)
    optional = raw.get("optional", False)
    if not isinstance(optional, bool):
        raise PolicyError(f"'optional' must be true or false, got {optional!r}",
                          where=f"{where}.optional", source=source, line=line_of(raw, "optional"))
    fan_layout = _fan_layout(raw, where, line, source)
    params = _params(raw, where, line, source, variables)
    return Rule(index, _rule_label(index, types, names, last), types, names, params, where,
                line, optional, fan_layout, last)


def _fan_layout(raw: Mapping, where: str, line: int | None, source: str | None
                ) -> Layout | None:
    if "fan_layout" not in raw:
        return None
    try:
        return parse_layout(raw["fan_layout"], where=f"{where}.fan_layout")
    except PolicyError as err:
        raise PolicyError(err.bare_message, where=err.where, source=source,
                          line=line_of(raw, "fan_layout") or line) from None


def _match(raw: Mapping, where: str, line: int | None, source: str | None
           ) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    if "match" not in raw:
        close = [k for k in raw if did_you_mean(str(k), ["match"])]
        hint = f" (found {close[0]!r}: did you mean 'match'?)" if close else ""
        raise PolicyError(f"rule has no 'match' key{hint}", where=where, source=source, line=line)
    match = raw["match"]
    if not isinstance(match, Mapping) or not match:
        raise PolicyError(
            f"'match' must be a mapping with 'type', 'name' and/or 'last', got {match!r}",
            where=f"{where}.match", source=source, line=line_of(raw, "match"),
        )
    _check_keys(match, _MATCH_KEYS, where=f"{where}.match", source=source, what="match")
    last = match.get("last", False)
    if not isinstance(last, bool):
        raise PolicyError(f"'last' must be true or false, got {last!r}",
                          where=f"{where}.match.last", source=source,
                          line=line_of(match, "last"))
    found = {key: _str_list(match[key], what=f"'{key}'", where=f"{where}.match.{key}",
                            source=source, line=line_of(match, key))
             for key in ("type", "name") if key in match}
    return found.get("type", ()), found.get("name", ()), last


def _params(raw: Mapping, where: str, line: int | None, source: str | None,
            variables: tuple[str, ...]) -> tuple[tuple[str, Initializer], ...]:
    params = []
    for key, spec in raw.items():
        if key in _RULE_KEYS:
            continue
        if not isinstance(key, str) or not key:
            raise PolicyError(
                f"a parameter key must be a name or glob such as 'weight' or 'bias', got {key!r}",
                where=where, source=source, line=line_of(raw, key),
            )
        params.append((key, resolve_initializer(spec, where=f"{where}.{key}", source=source,
                                                line=line_of(raw, key), variables=variables)))
    if not params:
        raise PolicyError(
            "rule names no parameter: add keys such as 'weight: ...' or 'bias: zeros'",
            where=where, source=source, line=line,
        )
    return tuple(params)
