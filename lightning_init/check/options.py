"""The init check's options: one frozen dataclass with typed fields.

Typed fields let LightningCLI (jsonargparse) validate ``check: {...}`` key by key; the same
checks run again in ``__post_init__`` (a dataclass built directly, or by jsonargparse) and
:meth:`CheckOptions.from_arg` reads the argument with the library's one options parser
(:class:`lightning_init.runtime.options.OptionsParser`), which adds the did-you-mean for
unknown keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lightning_init._text import format_choices
from lightning_init.check.ignore import parse_ignore
from lightning_init.check.verdicts import DEFAULT_THRESHOLDS
from lightning_init.errors import OptionError
from lightning_init.runtime.options import OptionsParser, unknown_name

__all__ = ["CheckOptionError", "CheckOptions", "resolve_thresholds", "validate_num_classes"]

_ON_FAIL = ("warn", "raise")


class CheckOptionError(OptionError):
    """An unknown or invalid option of the init check (``check={...}`` or a keyword).

    Example:
        >>> CheckOptions.from_arg({"on_fial": "raise"})
        Traceback (most recent call last):
        ...
        lightning_init.check.CheckOptionError: unknown check option 'on_fial'. Did you mean ...
    """


CheckOptionError.__module__ = "lightning_init.check"  # shown under its public path


def resolve_thresholds(overrides: Mapping[str, Any], where: str) -> dict[str, float]:
    """Every threshold: :data:`~lightning_init.check.verdicts.DEFAULT_THRESHOLDS` with
    ``overrides`` validated (known name, positive finite number) and applied.

    Raises:
        CheckOptionError: an unknown name (with a did-you-mean and the valid names) or a
            value that is not a positive number; the message starts with ``where``.

    Example:
        >>> resolve_thresholds({"max_dead_fraction": 1}, "check")["max_dead_fraction"]
        1.0
    """
    resolved = dict(DEFAULT_THRESHOLDS)
    for key, value in overrides.items():
        if key not in DEFAULT_THRESHOLDS:
            raise CheckOptionError(f"{where}: {unknown_name(key, DEFAULT_THRESHOLDS, 'threshold')}")
        if not _is_positive_number(value):
            raise CheckOptionError(
                f"{where}: threshold {key!r} must be a positive number, got {value!r}"
            )
        resolved[key] = float(value)
    return resolved


def validate_num_classes(value: Any, where: str) -> int | None:
    """``value`` when it is ``None`` or an integer of at least 2.

    Raises:
        CheckOptionError: anything else; the message starts with ``where``.

    Example:
        >>> validate_num_classes(10, "check")
        10
    """
    if not _is_class_count(value):
        raise CheckOptionError(f"{where}: 'num_classes' must be an integer >= 2, got {value!r}")
    return value


def _is_positive_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0 \
        and math.isfinite(value)


def _is_class_count(value: Any) -> bool:
    return value is None or (not isinstance(value, bool) and isinstance(value, int) and value >= 2)


def _validate_on_fail(value: Any) -> Any:
    if value not in _ON_FAIL:
        raise _PARSER.invalid("on_fail", f"one of {format_choices(_ON_FAIL)}", value, _ON_FAIL)
    return value


@dataclass(frozen=True)
class CheckOptions:
    """Options of the init check as given to ``InitCallback(check=...)``.

    The thresholds are described in :mod:`lightning_init.check.verdicts`.

    Attributes:
        on_fail: ``"warn"`` (default: a warning listing the problems) or ``"raise"``
            (:class:`~lightning_init.InitCheckError` before the first training step).
        num_classes: the number of classes for the initial-loss check, when
            ``training_step`` computes no cross-entropy that tells (see
            :mod:`lightning_init.check.classes`).
        min_input_dependence: see :data:`~lightning_init.check.verdicts.DEFAULT_THRESHOLDS`.
        max_scale_drift: idem.
        max_dead_fraction: idem.
        max_saturated_fraction: idem.
        max_grad_drift: idem.
        max_loss_ratio: idem.
        max_logit_std: idem.
        max_layer_gain: idem.
        min_layer_gain: idem.
        max_embedding_ratio: idem.
        ignore: globs over module names (or ``"kind:glob"``) of accepted findings, moved to
            ``report.ignored``.

    Raises:
        CheckOptionError: an invalid value (also when built directly).

    Example:
        >>> options = CheckOptions.from_arg({"on_fail": "raise", "max_dead_fraction": 0.3})
        >>> options.on_fail, options.thresholds["max_dead_fraction"]
        ('raise', 0.3)
        >>> CheckOptions.from_arg(False) is None
        True
    """

    on_fail: Literal["warn", "raise"] = "warn"
    num_classes: int | None = None
    min_input_dependence: float = DEFAULT_THRESHOLDS["min_input_dependence"]
    max_scale_drift: float = DEFAULT_THRESHOLDS["max_scale_drift"]
    max_dead_fraction: float = DEFAULT_THRESHOLDS["max_dead_fraction"]
    max_saturated_fraction: float = DEFAULT_THRESHOLDS["max_saturated_fraction"]
    max_grad_drift: float = DEFAULT_THRESHOLDS["max_grad_drift"]
    max_loss_ratio: float = DEFAULT_THRESHOLDS["max_loss_ratio"]
    max_logit_std: float = DEFAULT_THRESHOLDS["max_logit_std"]
    max_layer_gain: float = DEFAULT_THRESHOLDS["max_layer_gain"]
    min_layer_gain: float = DEFAULT_THRESHOLDS["min_layer_gain"]
    max_embedding_ratio: float = DEFAULT_THRESHOLDS["max_embedding_ratio"]
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _validate_on_fail(self.on_fail)
        if not _is_class_count(self.num_classes):
            raise _PARSER.invalid("num_classes", "an integer >= 2", self.num_classes)
        object.__setattr__(self, "ignore", parse_ignore(self.ignore, "check", CheckOptionError))
        for name in DEFAULT_THRESHOLDS:
            value = getattr(self, name)
            if not _is_positive_number(value):
                raise _PARSER.invalid(name, "a positive number", value)
            object.__setattr__(self, name, float(value))  # ints become floats

    @property
    def thresholds(self) -> dict[str, float]:
        """Every threshold by name (the keyword arguments of :func:`check_init`).

        Example:
            >>> CheckOptions(max_scale_drift=10).thresholds["max_scale_drift"]
            10.0
        """
        return {name: getattr(self, name) for name in DEFAULT_THRESHOLDS}

    @classmethod
    def from_arg(cls, arg: bool | Mapping[str, Any] | CheckOptions | None) -> CheckOptions | None:
        """Parse what ``InitCallback(check=...)`` was given, with the library's one options
        parser (:class:`lightning_init.runtime.options.OptionsParser`).

        ``True`` -> defaults; ``False``/``None`` -> ``None`` (check off); a ``CheckOptions`` as
        is; a mapping of ``on_fail``, ``num_classes``, ``ignore`` and thresholds (top level or
        under ``thresholds``).

        Raises:
            CheckOptionError: unknown key (with a did-you-mean) or invalid value; for an
                ``arg`` of another type, one that is also a ``TypeError``.

        Example:
            >>> CheckOptions.from_arg({"thresholds": {"max_grad_drift": 50}}).max_grad_drift
            50.0
        """
        return _PARSER.parse(arg, _from_mapping)


def _from_mapping(mapping: dict[str, Any]) -> CheckOptions:
    """Options from a mapping of known keys: thresholds at the top level or nested."""
    nested = mapping.pop("thresholds", None) or {}
    if not isinstance(nested, Mapping):
        raise _PARSER.invalid("thresholds", "a mapping", nested)
    for key in nested:
        if key not in DEFAULT_THRESHOLDS:
            raise CheckOptionError(
                f"check option 'thresholds': {unknown_name(key, DEFAULT_THRESHOLDS, 'threshold')}",
                option="thresholds",
            )
    return CheckOptions(**{**nested, **mapping})  # a threshold at the top level wins


_PARSER = OptionsParser("check", CheckOptions, CheckOptionError, extra_keys=("thresholds",))
