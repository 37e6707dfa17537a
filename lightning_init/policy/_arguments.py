"""An initializer's keyword arguments: how each is declared, checked and frozen.

The checks raise :class:`ArgumentError` with the message only; the caller adds where in the
policy the spec is (and turns it into a :class:`~lightning_init.PolicyError`).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from lightning_init._text import did_you_mean, format_choices
from lightning_init.policy._expr import Expression, parse_expression

__all__ = [
    "PASSED_BY_POLICY",
    "REQUIRED",
    "RESERVED_KEYS",
    "ArgumentError",
    "Formula",
    "Kwargs",
    "Param",
    "is_number_text",
    "number",
    "signature_defaults",
    "validate",
]

#: Keys of an initializer mapping that are not arguments of its function.
RESERVED_KEYS = ("init", "chunks")

#: The default of an argument that has none.
REQUIRED = object()

#: Arguments of a fill function that the policy passes, never the user.
PASSED_BY_POLICY = ("generator", "fans")


class ArgumentError(ValueError):
    """An argument problem, in the user's words, without its place in the policy."""


@dataclass(frozen=True)
class Formula:
    """A numeric argument written as an expression (``std: "0.02 / sqrt(2 * n_layer)"``),
    evaluated for each parameter when the policy meets a model.

    Two formulas of the same text are equal; the parsed expression travels along.

    Example:
        >>> formula = Formula.parse("2 / fan_in", ["fan_in"])
        >>> formula, formula.evaluate({"fan_in": 4.0})
        (Formula('2 / fan_in'), 0.5)
        >>> sorted(formula.names)
        ['fan_in']
    """

    text: str
    expression: Expression = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str, variables: Any) -> Formula:
        """Parse ``text`` over the names ``variables``.

        Raises:
            PolicyError: a syntax error or an unknown name, with its column and a
                did-you-mean.
        """
        return cls(text, parse_expression(text, variables=variables))

    @property
    def names(self) -> frozenset[str]:
        """The variables the formula uses."""
        return self.expression.names

    def evaluate(self, values: Mapping[str, float]) -> float:
        """The formula's value for ``values``."""
        return self.expression.evaluate(values)

    def __repr__(self) -> str:
        return f"Formula({self.text!r})"


def is_number_text(value: Any) -> bool:
    """Whether ``value`` is a string that reads as a float (YAML 1.1 leaves ``1e-2`` a string).

    Example:
        >>> is_number_text("1e-2"), is_number_text("2 * n_layer"), is_number_text(3)
        (True, False, False)
    """
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


Check = Callable[[Any], "str | None"]


def number(*, finite: bool = True, minimum: float | None = None, positive: bool = False,
           maximum: float | None = None, open_max: bool = False) -> Check:
    """A range check for a number: returns the problem (``"must be > 0"``) or ``None``.

    Example:
        >>> check = number(minimum=0.0)
        >>> check(-1.0), check(2.0)
        ('must be >= 0', None)
    """
    def check(value: Any) -> str | None:
        if math.isnan(value):
            return "must not be NaN"
        if finite and math.isinf(value):
            return "must be finite"
        if positive and value <= 0:
            return "must be > 0"
        if minimum is not None and value < minimum:
            return f"must be >= {minimum:g}"
        if maximum is not None and (value >= maximum if open_max else value > maximum):
            return f"must be {'<' if open_max else '<='} {maximum:g}"
        return None

    return check


@dataclass(frozen=True)
class Param:
    """One declared argument: a number, an integer or one of fixed choices, and its check."""

    kind: Literal["number", "int", "choice"]
    check: Check | None = None
    choices: tuple[str, ...] = ()

    def convert(self, function: str, key: str, value: Any) -> Any:
        """``value`` checked (and a YAML 1.1 ``"1e-2"`` string read as a number).

        Raises:
            ArgumentError: the value has the wrong type or is out of range.

        Example:
            >>> Param("number", number(minimum=0.0)).convert("normal", "std", "1e-2")
            0.01
        """
        if isinstance(value, Formula):
            return value  # checked once evaluated
        if self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise ArgumentError(
                    f"{function}: {key}={value!r} is not one of {format_choices(self.choices)}."
                    f"{did_you_mean(str(value), self.choices)}".rstrip(".")
                )
            return value
        converted = self._numeric(value)
        if converted is None:
            wanted = "an integer" if self.kind == "int" else "a number"
            raise ArgumentError(
                f"{function}: {key} must be {wanted}, got {value!r} ({type(value).__name__})"
            )
        problem = self.check(converted) if self.check else None
        if problem:
            raise ArgumentError(f"{function}: {key} {problem}, got {value!r}")
        return converted

    def _numeric(self, value: Any) -> Any:
        converted = value
        if isinstance(value, str) and self.kind == "number":
            try:  # YAML 1.1 reads `1e-2` as a string
                converted = float(value)
            except ValueError:
                return None
        if isinstance(converted, bool) or not isinstance(converted, numbers.Real):
            return None
        if self.kind == "int":
            return int(converted) if isinstance(converted, numbers.Integral) else None
        return converted


class Kwargs(dict):
    """An immutable, hashable, picklable dict of validated keyword arguments.

    Example:
        >>> kwargs = Kwargs(std=0.02)
        >>> hash(kwargs) == hash(Kwargs(std=0.02))
        True
    """

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("initializer arguments are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]
    __ior__ = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted((key, _freeze(value)) for key, value in self.items())))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Kwargs, (dict(self),))


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(_freeze(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def signature_defaults(function: Callable[..., Any]) -> dict[str, Any]:
    """``function``'s keyword arguments (not the tensor, nor those in
    :data:`PASSED_BY_POLICY`) -> default or :data:`REQUIRED`, in signature order.

    Example:
        >>> import torch
        >>> signature_defaults(torch.nn.init.normal_)
        {'mean': 0.0, 'std': 1.0}
    """
    parameters = list(inspect.signature(function).parameters.values())[1:]
    return {
        p.name: (p.default if p.default is not inspect.Parameter.empty else REQUIRED)
        for p in parameters
        if p.name not in PASSED_BY_POLICY
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }


def validate(function: str, defaults: Mapping[str, Any], params: Mapping[str, Param],
             kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The user's ``kwargs`` checked against a built-in initializer's declared arguments.

    Returns:
        The converted values, in signature order (defaults not added).

    Raises:
        ArgumentError: an unknown or missing argument, or a bad value.

    Example:
        >>> validate("normal", {"mean": 0.0, "std": 1.0}, {"mean": Param("number"),
        ...          "std": Param("number")}, {"sdt": 0.1})
        Traceback (most recent call last):
        ...
        lightning_init.policy._arguments.ArgumentError: unknown argument 'sdt' for normal; \
valid: chunks, init, mean, std. Did you mean 'std'?
    """
    for key in kwargs:
        if key not in defaults:
            valid = [*defaults, *RESERVED_KEYS]
            raise ArgumentError(
                f"unknown argument {key!r} for {function}; valid: {format_choices(valid)}."
                f"{did_you_mean(key, valid)}".rstrip(".")
            )
    missing = [key for key, default in defaults.items()
               if default is REQUIRED and key not in kwargs]
    if missing:
        raise ArgumentError(
            f"{function} needs the argument {', '.join(repr(m) for m in missing)} "
            f"(e.g. {{init: {function}, {missing[0]}: ...}})"
        )
    return {key: params[key].convert(function, key, kwargs[key])
            for key in defaults if key in kwargs}
