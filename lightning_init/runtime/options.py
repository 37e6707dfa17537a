"""One parser for the options arguments (``check=``, ``diagnostics=``), and one wording of
their errors.

An options argument is ``True`` (the defaults), ``False`` or ``None`` (off), options already
built (a frozen dataclass), or a mapping of option names to values. Each engine keeps its
options class, its exception and the checks of its values; :class:`OptionsParser` does the
rest, the same way for all:

- the argument's shape: anything else is refused in one wording (an error that is both the
  engine's :class:`~lightning_init.errors.OptionError` and a ``TypeError``);
- the keys: an unknown one is named with a did-you-mean and the valid options;
- the values: :meth:`OptionsParser.invalid` words an error as
  ``<argument> option '<name>' must be <expected>, got <value>``;
- a mapping loaded from YAML (:func:`lightning_init._yaml.load_yaml`) knows its lines: an
  error about one option starts with that option's line.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from lightning_init._text import did_you_mean, format_choices
from lightning_init._yaml import line_of
from lightning_init.errors import OptionError

__all__ = ["OptionsParser", "unknown_name"]

_O = TypeVar("_O")


def unknown_name(name: object, valid: Iterable[str], what: str = "option") -> str:
    """The message for an unknown ``name``: ``unknown <what> 'name'.`` with a did-you-mean and
    the valid names (``Valid <last word of what>s: ...``).

    Example:
        >>> unknown_name("on_fial", ["on_fail", "ignore"], "check option")
        "unknown check option 'on_fial'. Did you mean 'on_fail'? Valid options: ignore, on_fail."
    """
    valid = list(valid)
    plural = what.split()[-1] + "s"
    return (f"unknown {what} {str(name)!r}.{did_you_mean(str(name), valid)} "
            f"Valid {plural}: {format_choices(valid)}.")


@functools.cache
def _argument_error(error: type[OptionError]) -> type[OptionError]:
    """``error`` that is also a ``TypeError``: an options argument of a type it cannot be.

    Shown, and pickled, as ``error`` itself.
    """

    def reduce(self: BaseException) -> tuple[Any, ...]:
        return error, self.args

    return type(error.__name__, (error, TypeError), {
        "__module__": error.__module__, "__qualname__": error.__qualname__, "__reduce__": reduce,
    })


@dataclasses.dataclass(frozen=True)
class OptionsParser(Generic[_O]):
    """How an engine's options argument is read.

    Attributes:
        argument: the argument's name in messages (``"check"``, ``"diagnostics"``).
        options: the options class, a dataclass whose fields are the options; ``options()``
            gives the defaults.
        error: the engine's exception, an :class:`~lightning_init.errors.OptionError`.
        extra_keys: keys a mapping may hold besides the fields (the check's ``thresholds``).

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Options:
        ...     every: int = 1
        >>> parser = OptionsParser("demo", Options, OptionError)
        >>> parser.parse({"every": 3}), parser.parse(False)
        (Options(every=3), None)
        >>> parser.parse({"evry": 3})
        Traceback (most recent call last):
        ...
        lightning_init.OptionError: unknown demo option 'evry'. Did you mean 'every'? Valid options: every.
        >>> parser.parse("yes")
        Traceback (most recent call last):
        ...
        lightning_init.OptionError: demo= takes True, False or a mapping of options (or Options), got 'yes' of type str
        >>> isinstance(parser.error_of("yes"), TypeError)
        True
    """  # noqa: E501

    argument: str
    options: type[_O]
    error: type[OptionError]
    extra_keys: tuple[str, ...] = ()

    def parse(
        self, arg: object, build: Callable[[dict[str, Any]], _O] | None = None
    ) -> _O | None:
        """The options ``arg`` stands for, or ``None`` when it turns them off.

        Args:
            arg: ``True``, ``False``, ``None``, an ``options`` instance or a mapping.
            build: makes the options from a mapping whose keys are known (default:
                ``options(**mapping)``).

        Raises:
            OptionError: (``error``) an unknown key or an invalid value; for an ``arg`` of
                another type, an ``error`` that is also a ``TypeError``.
        """
        if arg is None or arg is False:
            return None
        if arg is True:
            return self.options()
        if isinstance(arg, self.options):
            return arg
        if not isinstance(arg, Mapping):
            raise self.error_of(arg)
        valid = [*(field.name for field in dataclasses.fields(self.options)),  # type: ignore[arg-type]
                 *self.extra_keys]
        for key in arg:
            if key not in valid:
                raise self._at_line(arg, self.error(
                    unknown_name(key, valid, f"{self.argument} option"), option=str(key)))
        try:
            return (build or self._build)(dict(arg))
        except OptionError as error:
            raise self._at_line(arg, error) from None

    def invalid(
        self, name: str, expected: str, value: object, choices: Iterable[str] = ()
    ) -> OptionError:
        """The error for option ``name``'s ``value``: ``<argument> option 'name' must be
        <expected>, got <value>``, with a did-you-mean among ``choices``.

        Example:
            >>> @dataclasses.dataclass(frozen=True)
            ... class Options:
            ...     mode: str = "warn"
            >>> parser = OptionsParser("demo", Options, OptionError)
            >>> str(parser.invalid("mode", "'warn' or 'raise'", "rasie", ("warn", "raise")))
            "demo option 'mode' must be 'warn' or 'raise', got 'rasie'. Did you mean 'raise'?"
        """
        hint = did_you_mean(str(value), choices) if choices else ""
        message = f"{self.argument} option {name!r} must be {expected}, got {value!r}"
        return self.error(f"{message}.{hint}" if hint else message, option=name)

    def error_of(self, arg: object) -> OptionError:
        """The error for an argument that is none of what an options argument takes."""
        return _argument_error(self.error)(
            f"{self.argument}= takes True, False or a mapping of options (or "
            f"{self.options.__name__}), got {arg!r} of type {type(arg).__name__}"
        )

    def _build(self, mapping: dict[str, Any]) -> _O:
        return self.options(**mapping)

    def _at_line(self, arg: Mapping[Any, Any], error: OptionError) -> OptionError:
        """``error`` starting with its option's YAML line, when ``arg`` knows it."""
        line = None if error.option is None else line_of(arg, error.option)
        if line is None:
            return error
        return type(error)(f"line {line}: {error}", option=error.option)
