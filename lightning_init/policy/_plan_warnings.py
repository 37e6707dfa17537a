"""The plan's warnings: what looks like a typo (a rule, a parameter key or a ``skip`` glob that
matches nothing; a tied parameter claimed by two rules), each said at the user's line, or raised
under ``strict: true``."""

from __future__ import annotations

import fnmatch
import os
import sys
import warnings
from typing import Any

from lightning_init._text import did_you_mean, edit_distance, format_choices
from lightning_init.errors import PolicyError
from lightning_init.policy.schema import Rule

__all__ = [
    "TiedParameterWarning",
    "UnusedRuleWarning",
    "skip_globs",
    "unknown_keys",
    "unused_rules",
    "warn",
]


class UnusedRuleWarning(UserWarning):
    """A rule matched no parameter (usually a typo in ``type``, ``name`` or a parameter key).

    Example:
        >>> issubclass(UnusedRuleWarning, UserWarning)
        True
    """


class TiedParameterWarning(UserWarning):
    """A tied parameter (one tensor under two names) is claimed by two different rules.

    Example:
        >>> issubclass(TiedParameterWarning, UserWarning)
        True
    """


_PACKAGE = os.path.dirname(__file__) + os.sep


def warn(message: str, category: type[Warning]) -> None:
    """Warn at the first caller outside the policy package (the user's ``apply`` line)."""
    frame, level = sys._getframe(0), 1  # stacklevel 1 is this frame
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


# ---- what looks like a typo

def unused_rules(planner: Any) -> list[str]:
    if not planner.recurse:  # one module of many: other rules are for other modules
        return []
    unused = [rule for rule in planner.schema.rules
              if rule.index not in planner.used and not rule.optional]
    if unused:
        # a rule whose only key is misspelled ('wieght') matches modules, no parameter
        message = "rule matches no parameter: " + "; ".join(
            rule.label + _key_typos(rule, planner.own_names[rule.index]) for rule in unused)
        if planner.schema.strict:
            raise planner.rule_error(message + " (strict: true)", unused[0])
        warn(message, UnusedRuleWarning)
    return [rule.label for rule in unused]

def unknown_keys(planner: Any) -> None:
    """A parameter key that no matched module has: a typo?

    A key that only names parameters the modules were built without (``bias=False``) is
    no typo: a plainer warning. An optional rule warns only about a near miss (at most two
    edits from a parameter its modules have).
    """
    for rule in planner.schema.rules:
        names = planner.own_names[rule.index]
        if rule.index not in planner.used or not names:
            continue
        for key, _ in rule.params:
            if fnmatch.filter(names, key):
                continue
            # an optional rule (the presets') is written for several layouts of a family:
            # a key another layout has ('mask_token') is fine, a misspelling ('bais') is not
            if rule.optional and not any(edit_distance(key, name) <= 2 for name in names):
                continue
            if fnmatch.filter(planner.absent_names[rule.index], key):
                message = (f"{rule.label}: key {key!r} names a parameter that every module "
                           f"the rule matches was built without (such as bias=False); "
                           f"'optional: true' on the rule silences this")
            else:
                message = (f"{rule.label}: key {key!r} names no parameter of the modules "
                           f"the rule matches.{did_you_mean(key, names)} Their "
                           f"parameters: {format_choices(names)}")
            if planner.schema.strict:
                raise planner.rule_error(message + " (strict: true)", rule, f".{key}")
            warn(message, UnusedRuleWarning)

def skip_globs(planner: Any, module_names: list[str]) -> None:
    """A ``skip`` glob that matches no module is a typo, or a glob missing its prefix."""
    for pattern in planner.schema.skip:
        if any(fnmatch.fnmatchcase(name, pattern) for name in module_names):
            continue
        message = f"skip glob {pattern!r} matches no module"
        if module_names:
            message += (": skip globs are over full qualified names (such as "
                        f"{module_names[0]!r}).{_skip_hint(pattern, module_names)}")
        if planner.schema.strict:
            raise PolicyError(message + " (strict: true)", where="skip",
                              source=planner.schema.source)
        warn(message, UnusedRuleWarning)


def _key_typos(rule: Rule, names: set[str]) -> str:
    """``" (key 'wieght' names no parameter of its modules. Did you mean 'weight'?...)"`` for the
    keys of ``rule`` that match none of ``names``, its modules' own parameters; else ``""``."""
    typos = [f"key {key!r} names no parameter of its modules.{did_you_mean(key, names)}"
             for key, _ in rule.params if names and not fnmatch.filter(names, key)]
    if not typos:
        return ""
    return f" ({' '.join(typos)} Their parameters: {format_choices(names)})"


def _skip_hint(pattern: str, module_names: list[str]) -> str:
    suffix_matches = [n for n in module_names if fnmatch.fnmatchcase(n, "*." + pattern)]
    if not suffix_matches:
        return did_you_mean(pattern, module_names)
    parts = suffix_matches[0].split(".")  # "backbone.*" for "net.backbone.0": no prefix
    prefix = next((".".join(parts[:i]) + "." for i in range(1, len(parts))
                   if fnmatch.fnmatchcase(suffix_matches[0], ".".join(parts[:i]) + "." + pattern)),
                  "")
    return f" Did you mean '{prefix}{pattern}'?"
