"""Reading an initializer spec (a name, a mapping, ``chunks``, an import path) into a
validated :class:`~lightning_init.policy.initializers.Initializer`; every error names where
in the policy it is."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lightning_init._text import did_you_mean, format_choices
from lightning_init.errors import PolicyError
from lightning_init.policy import _custom
from lightning_init.policy._arguments import (
    ArgumentError,
    Formula,
    Kwargs,
    is_number_text,
    validate,
)
from lightning_init.policy._catalogue import REGISTRY, SPECIAL, known_initializers

if TYPE_CHECKING:  # pragma: no cover
    from lightning_init.policy.initializers import Initializer

__all__ = ["Resolver"]


class Resolver:
    """Reads one spec; every error names ``where`` (a block adds ``.chunks[i]``)."""

    def __init__(self, where: str, source: str | None, line: int | None,
                 variables: frozenset[str], initializer: type[Initializer]) -> None:
        self.where, self.source, self.line = where, source, line
        self.variables = variables
        self.initializer = initializer  # the class (initializers.py imports this module)

    def error(self, message: str, where: str | None = None) -> PolicyError:
        return PolicyError(
            message, where=self.where if where is None else where, source=self.source,
            line=self.line,
        )

    def make(self, name: str, kwargs: Mapping[str, Any], kind: str = "tensor",
             chunks: int | None = None, blocks: tuple[Initializer, ...] | None = None
             ) -> Initializer:
        return self.initializer(name, Kwargs(kwargs), kind, chunks, blocks,  # type: ignore[arg-type]
                           self.source, self.line)

    def resolve(self, spec: Any, where: str | None = None) -> Initializer:
        where = self.where if where is None else where
        if isinstance(spec, self.initializer):
            return spec
        if isinstance(spec, str):
            return self._named(spec, {}, None, where)
        if not isinstance(spec, Mapping):
            raise self.error(
                f"an initializer is a name (e.g. 'zeros') or a mapping with an 'init' key, "
                f"got {spec!r} ({type(spec).__name__})", where)
        spec = dict(spec)
        for key in spec:
            if not isinstance(key, str):
                raise self.error(f"initializer keys must be strings, got {key!r}", where)
        chunks = spec.pop("chunks", None)
        if isinstance(chunks, list | tuple):
            if spec:
                raise self.error(
                    "'chunks' given as a list of per-block initializers takes no other keys, "
                    f"got {format_choices(spec)}", where)
            return self._blocks(chunks, where)
        if "init" not in spec:
            hint = "".join(did_you_mean(key, ["init"]) for key in spec)
            raise self.error(
                "an initializer mapping needs an 'init' key (or 'chunks' as a list), got keys "
                f"{format_choices(spec) or '(none)'}.{hint}".rstrip("."), where)
        name = spec.pop("init")
        if not isinstance(name, str):
            raise self.error(f"'init' must be an initializer name, got {name!r}", where)
        return self._named(name, spec, chunks, where)

    def _blocks(self, specs: list[Any] | tuple[Any, ...], where: str) -> Initializer:
        if not specs:
            raise self.error("'chunks' as a list needs at least one initializer", where)
        blocks = []
        for index, block_spec in enumerate(specs):
            block_where = f"{where}.chunks[{index}]" if where else f"chunks[{index}]"
            block = self.resolve(block_spec, block_where)
            if block.kind == "reset":
                raise self.error(
                    "'default' (the module's reset_parameters) cannot initialize one block; "
                    "use 'keep' to leave a block alone", block_where)
            blocks.append(block)
        return self.make("chunks", {}, "tensor", len(blocks), tuple(blocks))

    def _named(self, raw_name: str, kwargs: dict[str, Any], chunks: Any, where: str
               ) -> Initializer:
        name = raw_name.strip()
        if ":" in name:
            return self._custom(name, kwargs, chunks, where)
        canonical = name.lower().rstrip("_")
        if canonical in SPECIAL:
            if kwargs:
                raise self.error(
                    f"'{canonical}' takes no arguments, got {format_choices(kwargs)}", where)
            if chunks is not None:
                raise self.error(f"'chunks' cannot be combined with '{canonical}'", where)
            return self.make(canonical, {}, SPECIAL[canonical])
        entry = REGISTRY.get(canonical)
        if entry is None:
            raise self.error(_unknown_name(raw_name, canonical), where)
        kwargs = self._formulas(kwargs, entry.params, where)
        try:
            validated = validate(canonical, entry.defaults, entry.params, kwargs)
            deferred = any(isinstance(v, Formula) for v in validated.values())
            problem = entry.check(entry.args(validated)) if entry.check and not deferred \
                else None
        except ArgumentError as err:
            raise self.error(str(err), where) from None
        if problem:
            raise self.error(problem, where)
        return self.make(canonical, validated, "tensor", self._chunks(chunks, where))

    def _formulas(self, kwargs: dict[str, Any], params: Mapping[str, Any], where: str
                  ) -> dict[str, Any]:
        """Numeric arguments written as expressions -> :class:`Formula` (a constant one is
        evaluated now)."""
        parsed = dict(kwargs)
        for key, value in kwargs.items():
            param = params.get(key)
            if (param is None or param.kind != "number" or not isinstance(value, str)
                    or is_number_text(value)):
                continue
            try:
                formula = Formula.parse(value, self.variables)
                parsed[key] = formula.evaluate({}) if not formula.names else formula
            except PolicyError as err:
                raise self.error(f"{key} must be a number or an expression over the policy's "
                                 f"variables, got {value!r}: {err.bare_message}",
                                 f"{where}.{key}" if where else key) from None
        return parsed

    def _chunks(self, chunks: Any, where: str) -> int | None:
        if chunks is None:
            return None
        if isinstance(chunks, bool) or not isinstance(chunks, numbers.Integral) or chunks < 1:
            raise self.error(
                f"'chunks' must be an integer >= 1 (equal blocks along dim 0) or a list of "
                f"initializers, got {chunks!r}", where)
        return int(chunks)

    def _custom(self, path: str, kwargs: dict[str, Any], chunks: Any, where: str
                ) -> Initializer:
        function = _custom.load(path, where=where, source=self.source, line=self.line)
        problem = _custom.argument_problem(function, path, kwargs)
        if problem:
            raise self.error(problem, where)
        return self.make(path, kwargs, "tensor", self._chunks(chunks, where))


def _unknown_name(raw_name: str, canonical: str) -> str:
    """The message for a name that is neither built in nor an import path."""
    message = (f"unknown initializer {raw_name!r}; "
               f"known: {format_choices(known_initializers())}.")
    hint = did_you_mean(canonical, known_initializers())
    name = raw_name.strip()
    if not hint and "." in name:
        module, _, attribute = name.rpartition(".")
        hint = f" Did you mean '{module}:{attribute}'?"
    return message + (hint or " A custom initializer needs an import path "
                               "'package.module:function'.")
