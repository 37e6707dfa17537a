"""The variables a policy's expressions use, declared in the policy or derived from the model.

Model-wide variables are declared under ``variables:`` as

- a number: ``n_layer: 12``;
- a count of modules: ``n_layer: {count: "transformer.h.*"}`` counts the modules whose
  qualified name matches the glob segment by segment, at exactly its depth
  (``transformer.h.0`` matches, ``transformer.h.0.attn`` does not); a list of globs counts
  the modules any of them matches, for presets written for several naming schemes;
- an expression over the variables declared before it: ``std_out: "0.02 / sqrt(2 * n_layer)"``.

``d_model``, unless declared, is the hidden size from the model's ``config`` (the first
integer of ``hidden_size``, ``n_embd``, ``d_model``, as Hugging Face configs name it).

Per parameter, three more are defined: ``layer_id``, the first integer segment of the
module's qualified name (``transformer.h.3.attn.c_proj`` is layer 3; a name without one has
no layer_id), and ``fan_in`` and ``fan_out`` of the weight under its layer type's layout
(:mod:`lightning_init.anatomy.layouts`).

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> specs = parse_variables({"n_layer": {"count": "*"}, "scale": "1 / sqrt(n_layer)"})
    >>> values = model_variables(model, specs)
    >>> values["n_layer"], round(values["scale"], 4)
    (3.0, 0.5774)
    >>> parameter_variables(model[2], "2", "weight", model[2].weight)
    {'layer_id': 2.0, 'fan_in': 8.0, 'fan_out': 2.0}
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from lightning_init._text import closest, did_you_mean, format_choices
from lightning_init.anatomy.layouts import Layout, fans
from lightning_init.errors import PolicyError
from lightning_init.policy._expr import FUNCTIONS, Expression, parse_expression

__all__ = [
    "DERIVED_VARIABLES",
    "PARAMETER_VARIABLES",
    "count_modules",
    "hidden_size",
    "known_variables",
    "layer_id",
    "model_variables",
    "parameter_variables",
    "parse_variables",
]

#: Defined for each parameter, never declared.
PARAMETER_VARIABLES: tuple[str, ...] = ("layer_id", "fan_in", "fan_out")
#: Derived from the model unless declared.
DERIVED_VARIABLES: tuple[str, ...] = ("d_model",)
_HIDDEN_SIZE_ATTRS = ("hidden_size", "n_embd", "d_model")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class _Count:
    patterns: tuple[str, ...]


_Spec = float | _Count | Expression


# ---------------------------------------------------------------------------------------------
# Derivations
# ---------------------------------------------------------------------------------------------


def _matches(name: str, pattern: str) -> bool:
    parts, globs = name.split("."), pattern.split(".")
    return len(parts) == len(globs) and all(map(fnmatchcase, parts, globs))


def count_modules(model: nn.Module, patterns: str | Iterable[str]) -> int:
    """How many modules have a qualified name that a glob matches at exactly its depth.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), nn.Linear(2, 2))
        >>> count_modules(model, "*"), count_modules(model, "*.*"), count_modules(model, "0.*")
        (2, 2, 2)
    """
    globs = [patterns] if isinstance(patterns, str) else list(patterns)
    return sum(1 for name, _ in model.named_modules()
               if name and any(_matches(name, glob) for glob in globs))


def layer_id(qualified_name: str) -> int | None:
    """The first integer segment of a qualified name, or ``None``.

    Example:
        >>> layer_id("transformer.h.3.attn.c_proj"), layer_id("model.layers.10.mlp.up_proj")
        (3, 10)
        >>> layer_id("conv2.weight") is None
        True
    """
    for part in qualified_name.split("."):
        if part.isdigit():
            return int(part)
    return None


def hidden_size(model: nn.Module) -> int | None:
    """The hidden size from ``model.config`` (``hidden_size``, ``n_embd`` or ``d_model``).

    Example:
        >>> from types import SimpleNamespace
        >>> from torch import nn
        >>> model = nn.Linear(2, 2)
        >>> hidden_size(model) is None
        True
        >>> model.config = SimpleNamespace(n_embd=768)
        >>> hidden_size(model)
        768
    """
    config = getattr(model, "config", None)
    if config is None:
        return None
    for attr in _HIDDEN_SIZE_ATTRS:
        value = config.get(attr) if isinstance(config, Mapping) else getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


# ---------------------------------------------------------------------------------------------
# Declarations
# ---------------------------------------------------------------------------------------------


def _check_name(name: Any, where: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise PolicyError(f"variable name {name!r} is not a name (letters, digits and _, not "
                          f"starting with a digit)", where=where)
    if name in FUNCTIONS:
        raise PolicyError(f"{name!r} is a function; choose another variable name",
                          where=where)
    if name in PARAMETER_VARIABLES:
        raise PolicyError(f"{name!r} is defined for each parameter and cannot be declared",
                          where=where)


def _parse_count(spec: Mapping, where: str) -> _Count:
    for key in spec:
        if key != "count":
            raise PolicyError(f"unknown key {key!r}.{did_you_mean(str(key), ['count'])} "
                              f"A variable is a number, an expression or {{count: glob}}.",
                              where=where)
    if "count" not in spec:
        raise PolicyError("expected {count: glob}", where=where)
    raw = spec["count"]
    globs = [raw] if isinstance(raw, str) else raw
    if not isinstance(globs, list) or not globs:
        raise PolicyError(f"count: expected a glob or a list of globs, got {raw!r}",
                          where=where)
    for glob in globs:
        if not isinstance(glob, str) or not glob or "" in glob.split("."):
            raise PolicyError(f"count: {glob!r} is not a module-name glob such as "
                              f"'transformer.h.*'", where=where)
    return _Count(tuple(globs))


def _parse_one(value: Any, known: set[str], where: str) -> _Spec:
    if isinstance(value, Mapping):
        return _parse_count(value, where)
    if isinstance(value, str):
        try:
            return parse_expression(value, variables=known)
        except PolicyError as err:
            raise PolicyError(err.bare_message, where=where) from None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise PolicyError(f"expected a number, an expression or {{count: glob}}, got "
                      f"{type(value).__name__} {value!r}", where=where)


def parse_variables(spec: Mapping[str, Any] | None, *,
                    where: str = "variables") -> dict[str, _Spec]:
    """Validate the ``variables:`` section; an expression may use the variables before it.

    Raises:
        PolicyError: a name that is not an identifier, a function or a per-parameter
            variable; a value that is no number, expression or ``{count: glob}``; an
            expression that does not parse or uses an unknown variable.

    Example:
        >>> sorted(parse_variables({"n_layer": {"count": "h.*"}, "s": "2 * n_layer"}))
        ['n_layer', 's']
        >>> parse_variables({"s": "2 * n_layr", "n_layer": 3})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_init.PolicyError: variables.s: expression '2 * n_layr', column 5: unknown ...
    """
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise PolicyError(f"expected a mapping of names to values, got "
                          f"{type(spec).__name__} {spec!r}", where=where)
    known = set(DERIVED_VARIABLES)
    parsed: dict[str, _Spec] = {}
    for name, value in spec.items():
        _check_name(name, where)
        parsed[name] = _parse_one(value, known, f"{where}.{name}")
        known.add(name)
    return parsed


def known_variables(specs: Mapping[str, _Spec]) -> frozenset[str]:
    """Every name a rule's expression may use: declared, derived and per-parameter.

    Example:
        >>> sorted(known_variables(parse_variables({"n_layer": 2})))
        ['d_model', 'fan_in', 'fan_out', 'layer_id', 'n_layer']
    """
    return frozenset(specs) | frozenset(DERIVED_VARIABLES) | frozenset(PARAMETER_VARIABLES)


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


def _name_shapes(model: nn.Module) -> set[str]:
    """The model's module names with every integer segment written ``*``."""
    return {".".join("*" if part.isdigit() else part for part in name.split("."))
            for name, _ in model.named_modules() if name}


def _suggest_glob(glob: str, shapes: set[str]) -> str | None:
    """A shape that differs from ``glob`` by a leading prefix (a wrapper), else the closest."""
    fixes = [shape for shape in shapes
             if shape.endswith("." + glob) or glob.endswith("." + shape)]
    if fixes:
        return min(fixes, key=len)
    return closest(glob, shapes)


def _count_value(model: nn.Module, count: _Count, where: str) -> float:
    found = count_modules(model, count.patterns)
    if found:
        return float(found)
    shapes = _name_shapes(model)
    globs = ", ".join(repr(g) for g in count.patterns)
    hints = {hit for hit in (_suggest_glob(g, shapes) for g in count.patterns) if hit}
    hint = f" Did you mean {' or '.join(repr(h) for h in sorted(hints))}?" if hints else ""
    lists = [shape for shape in shapes if shape.endswith(".*") and shape.count("*") == 1]
    listing = f" Its module lists: {format_choices(lists, limit=8)}." if lists else ""
    raise PolicyError(f"count {globs} matches no module of {type(model).__name__}."
                      f"{hint}{listing}", where=where)


def model_variables(model: nn.Module, specs: Mapping[str, _Spec], *,
                    needed: Iterable[str] = (), where: str = "variables") -> dict[str, float]:
    """The model-wide values: declared numbers, counts, expressions and ``d_model``.

    Args:
        model: the model the policy applies to.
        specs: :func:`parse_variables`'s result.
        needed: names the policy's expressions use; one the model cannot give is an error.
        where: the place in the policy, for messages.

    Raises:
        PolicyError: a count that matches no module (with a did-you-mean among the model's
            names), an expression that fails, or a needed ``d_model`` the model's config
            does not give.

    Example:
        >>> from torch import nn
        >>> model_variables(nn.Linear(2, 2), {}, needed=["d_model"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_init.PolicyError: variables: 'd_model' is needed, but Linear has no config ...
    """
    values: dict[str, float] = {}
    size = hidden_size(model)
    if size is not None:
        values["d_model"] = float(size)
    for name, spec in specs.items():
        if isinstance(spec, _Count):
            values[name] = _count_value(model, spec, f"{where}.{name}")
        elif isinstance(spec, Expression):
            try:
                values[name] = spec.evaluate(values)
            except PolicyError as err:
                raise PolicyError(err.bare_message, where=f"{where}.{name}") from None
        else:
            values[name] = float(spec)
    for name in needed:
        if name in DERIVED_VARIABLES and name not in values:
            raise PolicyError(
                f"{name!r} is needed, but {type(model).__name__} has no config with "
                f"{format_choices(_HIDDEN_SIZE_ATTRS)}: declare it, e.g. "
                f"variables: {{{name}: 512}}", where=where)
    return values


def parameter_variables(module: nn.Module, qualified_name: str, param_name: str, tensor: Any,
                        *, layout: Layout | Mapping[str, int] | None = None
                        ) -> dict[str, float]:
    """``layer_id``, ``fan_in`` and ``fan_out`` for one parameter, where they are defined.

    ``layer_id`` is absent when the module's name has no integer segment; the fans are
    absent for tensors of fewer than 2 dimensions (biases, norms' scales).

    Args:
        module: the module that owns the parameter.
        qualified_name: the module's qualified name in the model.
        param_name: the parameter's name on the module.
        tensor: the parameter (any device, meta included) or a tensor of its shape.
        layout: a rule's ``fan_layout``, overriding the layer type's.

    Example:
        >>> from torch import nn
        >>> conv = nn.Conv2d(3, 8, 3)
        >>> parameter_variables(conv, "stem.conv", "weight", conv.weight)
        {'fan_in': 27.0, 'fan_out': 72.0}
        >>> parameter_variables(conv, "blocks.1.conv", "bias", conv.bias)
        {'layer_id': 1.0}
    """
    values: dict[str, float] = {}
    index = layer_id(qualified_name)
    if index is not None:
        values["layer_id"] = float(index)
    if len(tensor.shape) >= 2:
        fan_in, fan_out = fans(module, param_name, tensor, layout=layout)
        values["fan_in"], values["fan_out"] = float(fan_in), float(fan_out)
    return values
