"""``DiagnosticsOptions``: what the training diagnostics log, when, and when they alert."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from lightning_init.errors import OptionError
from lightning_init.runtime.options import OptionsParser

__all__ = ["DiagnosticsOptionError", "DiagnosticsOptions"]


class DiagnosticsOptionError(OptionError):
    """A ``diagnostics=`` option that is unknown or has an invalid value.

    Attributes:
        option: the option's name, when the error is about one.

    Example:
        >>> error = DiagnosticsOptionError("unknown option", option="histogram")
        >>> isinstance(error, ValueError), error.option
        (True, 'histogram')
    """


DiagnosticsOptionError.__module__ = "lightning_init.diagnostics"  # its public path


_MAX_HISTOGRAM_BINS = 1024  # TensorBoard shows a few dozen; more only costs memory


def _invalid(name: str, expected: str, value: Any, choices: tuple[str, ...] = ()) -> OptionError:
    return _PARSER.invalid(name, expected, value, choices)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    """A finite int or float (NaN and infinities are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(name: str, value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise _invalid(name, "a positive integer", value)
    return value


def _bin_count(name: str, value: Any) -> int:
    if not _is_int(value) or not 1 <= value <= _MAX_HISTOGRAM_BINS:
        raise _invalid(name, f"an integer from 1 to {_MAX_HISTOGRAM_BINS}", value)
    return value


def _step_index(name: str, value: Any) -> int:
    if not _is_int(value) or value < 0:
        raise _invalid(name, "an integer >= 0", value)
    return value


def _switch(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _invalid(name, "true or false", value)
    return value


def _globs(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise _invalid(name, "a glob or a list of globs", value)
    return tuple(value)


def _threshold(name: str, value: Any) -> float:
    if not _is_number(value) or value < 0:
        raise _invalid(name, "a finite number >= 0", value)
    return float(value)


def _fraction(name: str, value: Any) -> float:
    if not _is_number(value) or not 0 < value <= 1:
        raise _invalid(name, "a fraction in (0, 1]", value)
    return float(value)


def _band(name: str, value: Any) -> tuple[float, float]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(_is_number(v) for v in value)
        or not 0 <= value[0] < value[1]
    ):
        raise _invalid(name, "[low, high], finite, with 0 <= low < high", value)
    return float(value[0]), float(value[1])


def _nonfinite_action(name: str, value: Any) -> str:
    if value not in ("warn", "raise"):
        raise _invalid(name, "'warn' or 'raise'", value, ("warn", "raise"))
    return value


def _option(default: Any, parse: Callable[[str, Any], Any]) -> Any:
    """A field with its default and the function that validates and normalizes its value."""
    return dataclasses.field(default=default, metadata={"parse": parse})


@dataclasses.dataclass(frozen=True)
class DiagnosticsOptions:
    """Options of :class:`~lightning_init.diagnostics.TrainingDiagnostics`.

    The defaults are meant to be left on: statistics at steps 0, 1, 2, 4, 8, ... (``dense_start``)
    and every ``every_n_steps`` optimizer steps, up to and including ``until_step``; after that
    nothing is computed, logged or hooked.

    Attributes:
        every_n_steps: log at every multiple of this optimizer step index.
        until_step: the last optimizer step index that may be logged.
        dense_start: also log at steps 0, 1, 2, 4, 8, ... (powers of two), where bad inits show.
        histograms: log histograms of weights and gradients (TensorBoard only).
        activations: per leaf module output mean/std and dead-unit fraction (forward hooks,
            registered only for logged steps).
        update_ratio: log ``||w_t - w_(t-1)|| / ||w_(t-1)||`` (needs a copy of the weights at
            logged steps).
        update_ratio_max_samples: a weight of more than this many elements (and more than
            65,536) keeps a fixed sample of about this many of its elements (runs of 256
            contiguous ones at a regular stride) instead of a whole copy, and its update ratio
            is the sample's estimate: ``||w_t[S] - w_(t-1)[S]|| / ||w_(t-1)[S]||``. Embedding
            tables (``nn.Embedding``, ``nn.EmbeddingBag``) are always copied whole: their
            updates touch only the rows looked up, which a sample would miss.
        parameters: globs (``fnmatch``) on parameter qualified names to watch.
        modules: globs on module qualified names; a parameter is watched when its module's name
            matches, an activation is recorded for leaf modules that match.
        exclude: globs on parameter or module names never watched.
        histogram_bins: number of bins of each histogram, at most 1024.
        histogram_max_samples: tensors larger than this are histogrammed on a fixed random
            subsample of this many elements.
        alerts: report on the console (rank zero, the ``lightning_init`` logger) when something
            is clearly wrong: one line per kind of problem, naming the worst parameters, once
            unless it spreads or gets ten times worse.
        on_nonfinite: ``"warn"`` (one :class:`~lightning_init.diagnostics.DiagnosticsWarning`
            the first time a gradient holds NaN/Inf) or ``"raise"``: stop the run with
            :class:`~lightning_init.diagnostics.NonFiniteError`, naming the parameters, at the
            first optimizer step whose gradients are not finite (checked at every step, on every
            rank; steps a ``GradScaler`` skips are left to it).
        vanishing_grad_norm: alert when a gradient's norm is below this (exactly zero included);
            this and the other thresholds are finite numbers >= 0.
        exploding_grad_norm: alert when a gradient's norm is above this.
        update_ratio_band: alert when a weight matrix's update ratio leaves ``(low, high)``; the
            rule of thumb is about 1e-3. Under a normalized optimizer (Adam, RMSprop, ...)
            ``high`` rises to the ratio its first steps make by design, at most to 1.
        dead_fraction: alert when at least this fraction (in (0, 1]) of a layer's units is
            dead (output exactly zero on every sample of the logged batch); needs
            ``activations``.

    Example:
        >>> options = DiagnosticsOptions.from_arg({"every_n_steps": 5, "until_step": 50})
        >>> options.every_n_steps, options.until_step, options.histograms
        (5, 50, False)
        >>> options.logged_steps()[:8]
        [0, 1, 2, 4, 5, 8, 10, 15]
        >>> DiagnosticsOptions.from_arg(False) is None
        True
    """

    every_n_steps: int = _option(25, _positive_int)
    until_step: int = _option(300, _step_index)
    dense_start: bool = _option(True, _switch)
    histograms: bool = _option(False, _switch)
    activations: bool = _option(False, _switch)
    update_ratio: bool = _option(True, _switch)
    update_ratio_max_samples: int = _option(16384, _positive_int)
    parameters: tuple[str, ...] = _option(("*",), _globs)
    modules: tuple[str, ...] = _option(("*",), _globs)
    exclude: tuple[str, ...] = _option((), _globs)
    histogram_bins: int = _option(64, _bin_count)
    histogram_max_samples: int = _option(16384, _positive_int)
    alerts: bool = _option(True, _switch)
    on_nonfinite: str = _option("warn", _nonfinite_action)
    vanishing_grad_norm: float = _option(1e-8, _threshold)
    exploding_grad_norm: float = _option(1e3, _threshold)
    update_ratio_band: tuple[float, float] = _option((1e-6, 1e-1), _band)
    dead_fraction: float = _option(0.9, _fraction)

    def __post_init__(self) -> None:
        for option in dataclasses.fields(self):
            value = option.metadata["parse"](option.name, getattr(self, option.name))
            object.__setattr__(self, option.name, value)

    @classmethod
    def from_arg(cls, arg: bool | Mapping[str, Any] | DiagnosticsOptions | None) -> (
        DiagnosticsOptions | None
    ):
        """Options from the ``diagnostics=`` argument: ``True`` (defaults), ``False``/``None``
        (off), a mapping of option names to values, or options already built; read by the
        library's one options parser (:class:`lightning_init.runtime.options.OptionsParser`).

        A mapping loaded from YAML by :func:`lightning_init._yaml.load_yaml` knows its lines:
        the error then starts with the line of the offending key.

        Raises:
            DiagnosticsOptionError: an unknown key (with the valid keys and a did-you-mean) or
                an invalid value; for an ``arg`` of another type, one that is also a
                ``TypeError``.

        Example:
            >>> DiagnosticsOptions.from_arg(True).until_step
            300
            >>> DiagnosticsOptions.from_arg({"histogram": True})
            Traceback (most recent call last):
            ...
            lightning_init.diagnostics.DiagnosticsOptionError: unknown diagnostics option 'histogram'. Did you mean 'histograms'? Valid options: activations, alerts, dead_fraction, dense_start, every_n_steps, exclude, exploding_grad_norm, histogram_bins, histogram_max_samples, histograms, modules, on_nonfinite, parameters, until_step, update_ratio, update_ratio_band, update_ratio_max_samples, vanishing_grad_norm.
        """  # noqa: E501
        return _PARSER.parse(arg)

    def is_logged_step(self, step: int) -> bool:
        """Whether optimizer step ``step`` (0-based, ``trainer.global_step``) is logged.

        Example:
            >>> options = DiagnosticsOptions(every_n_steps=10, until_step=100)
            >>> [s for s in range(20) if options.is_logged_step(s)]
            [0, 1, 2, 4, 8, 10, 16]
            >>> options.is_logged_step(110)
            False
        """
        if step < 0 or step > self.until_step:
            return False
        if step % self.every_n_steps == 0:
            return True
        return self.dense_start and step & (step - 1) == 0

    def logged_steps(self) -> list[int]:
        """Every step index that will be logged, in order.

        Example:
            >>> DiagnosticsOptions(every_n_steps=100, until_step=300).logged_steps()
            [0, 1, 2, 4, 8, 16, 32, 64, 100, 128, 200, 256, 300]
        """
        return [step for step in range(self.until_step + 1) if self.is_logged_step(step)]



_PARSER = OptionsParser("diagnostics", DiagnosticsOptions, DiagnosticsOptionError)
