"""``DiagnosticsOptions``: what the training diagnostics log, when, and when they alert."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from lightning_init._text import did_you_mean, format_choices
from lightning_init.errors import OptionError

__all__ = ["DiagnosticsOptionError", "DiagnosticsOptions"]


class DiagnosticsOptionError(OptionError):
    """A ``diagnostics=`` option that is unknown or has an invalid value.

    Example:
        >>> isinstance(DiagnosticsOptionError("unknown option"), ValueError)
        True
    """


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
            is the sample's: ``||w_t[S] - w_(t-1)[S]|| / ||w_(t-1)[S]||``. On a 512x512
            Linear it was within 1.7% of the exact ratio at the median (6% at the 95th
            percentile) under Adam, 7% (22%) under SGD. Copying and comparing every element of
            the large weights costs most of what the other statistics cost together. Embedding
            tables (``nn.Embedding``, ``nn.EmbeddingBag``) are always copied whole: their
            updates touch only the rows looked up, which a sample would miss.
        parameters: globs (``fnmatch``) on parameter qualified names to watch.
        modules: globs on module qualified names; a parameter is watched when its module's name
            matches, an activation is recorded for leaf modules that match.
        exclude: globs on parameter or module names never watched.
        histogram_bins: number of bins of each histogram.
        histogram_max_samples: tensors larger than this are histogrammed on a fixed random
            subsample of this many elements.
        alerts: warn on the console (rank zero, each once) when something is clearly wrong.
        vanishing_grad_norm: alert when a gradient's norm is below this (exactly zero included).
        exploding_grad_norm: alert when a gradient's norm is above this.
        update_ratio_band: alert when an update ratio leaves ``(low, high)``; the rule of thumb
            is about 1e-3.
        dead_fraction: alert when at least this fraction of a layer's units is dead (output
            exactly zero on every sample of the logged batch); needs ``activations``.

    Example:
        >>> options = DiagnosticsOptions.from_arg({"every_n_steps": 5, "until_step": 50})
        >>> options.every_n_steps, options.until_step, options.histograms
        (5, 50, False)
        >>> options.logged_steps()[:8]
        [0, 1, 2, 4, 5, 8, 10, 15]
        >>> DiagnosticsOptions.from_arg(False) is None
        True
    """

    every_n_steps: int = 25
    until_step: int = 300
    dense_start: bool = True
    histograms: bool = False
    activations: bool = False
    update_ratio: bool = True
    update_ratio_max_samples: int = 16384
    parameters: tuple[str, ...] = ("*",)
    modules: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    histogram_bins: int = 64
    histogram_max_samples: int = 16384
    alerts: bool = True
    vanishing_grad_norm: float = 1e-8
    exploding_grad_norm: float = 1e3
    update_ratio_band: tuple[float, float] = (1e-6, 1e-1)
    dead_fraction: float = 0.9

    def __post_init__(self) -> None:
        for name in (
            "every_n_steps", "histogram_bins", "histogram_max_samples", "update_ratio_max_samples"
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DiagnosticsOptionError(
                    f"diagnostics option '{name}' must be a positive integer, got {value!r}"
                )
        if (
            isinstance(self.until_step, bool)
            or not isinstance(self.until_step, int)
            or self.until_step < 0
        ):
            raise DiagnosticsOptionError(
                f"diagnostics option 'until_step' must be an integer >= 0, got {self.until_step!r}"
            )
        for name in ("dense_start", "histograms", "activations", "update_ratio", "alerts"):
            if not isinstance(getattr(self, name), bool):
                raise DiagnosticsOptionError(
                    f"diagnostics option '{name}' must be true or false, "
                    f"got {getattr(self, name)!r}"
                )
        for name in ("parameters", "modules", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise DiagnosticsOptionError(
                    f"diagnostics option '{name}' must be a glob or a list of globs, got {value!r}"
                )
            object.__setattr__(self, name, tuple(value))
        for name in ("vanishing_grad_norm", "exploding_grad_norm", "dead_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise DiagnosticsOptionError(
                    f"diagnostics option '{name}' must be a number >= 0, got {value!r}"
                )
            object.__setattr__(self, name, float(value))
        band = self.update_ratio_band
        if (
            not isinstance(band, (list, tuple))
            or len(band) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in band)
            or not 0 <= band[0] < band[1]
        ):
            raise DiagnosticsOptionError(
                "diagnostics option 'update_ratio_band' must be [low, high] with "
                f"0 <= low < high, got {band!r}"
            )
        object.__setattr__(self, "update_ratio_band", (float(band[0]), float(band[1])))

    @classmethod
    def from_arg(cls, arg: bool | Mapping[str, Any] | DiagnosticsOptions | None) -> (
        DiagnosticsOptions | None
    ):
        """Options from the ``diagnostics=`` argument: ``True`` (defaults), ``False``/``None``
        (off), a mapping of option names to values, or options already built.

        Raises:
            DiagnosticsOptionError: an unknown key (with the valid keys and a did-you-mean) or
                an invalid value.

        Example:
            >>> DiagnosticsOptions.from_arg(True).until_step
            300
            >>> DiagnosticsOptions.from_arg({"histogram": True})
            Traceback (most recent call last):
            ...
            lightning_init.diagnostics._options.DiagnosticsOptionError: unknown diagnostics option 'histogram'. Did you mean 'histograms'? Valid options: activations, alerts, dead_fraction, dense_start, every_n_steps, exclude, exploding_grad_norm, histogram_bins, histogram_max_samples, histograms, modules, parameters, until_step, update_ratio, update_ratio_band, update_ratio_max_samples, vanishing_grad_norm.
        """  # noqa: E501
        if arg is None or arg is False:
            return None
        if arg is True:
            return cls()
        if isinstance(arg, DiagnosticsOptions):
            return arg
        if not isinstance(arg, Mapping):
            raise DiagnosticsOptionError(
                f"diagnostics must be true, false or a mapping of options, got {arg!r}"
            )
        valid = [field.name for field in dataclasses.fields(cls)]
        for key in arg:
            if key not in valid:
                raise DiagnosticsOptionError(
                    f"unknown diagnostics option {str(key)!r}.{did_you_mean(str(key), valid)} "
                    f"Valid options: {format_choices(valid)}."
                )
        return cls(**dict(arg))

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
