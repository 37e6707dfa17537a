"""Console alerts: each problem once, naming the parameter or layer and the step."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from lightning_init.diagnostics._options import DiagnosticsOptions

__all__ = [
    "Alerts",
    "DiagnosticsWarning",
    "check_dead_layer",
    "check_gradient",
    "check_update_ratio",
]


class DiagnosticsWarning(UserWarning):
    """A training-diagnostics alert: NaN/Inf, vanishing or exploding gradients, update ratios far
    out of band, dead layers. Filter it with ``warnings.filterwarnings``.

    Example:
        >>> issubclass(DiagnosticsWarning, UserWarning)
        True
    """


class Alerts:
    """Raises each alert once per (kind, name); the caller decides the rank (zero only).

    Example:
        >>> alerts = Alerts()
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     first = alerts.warn("nonfinite", "net.0.weight", 3, "gradient has 2 NaN/Inf values")
        ...     again = alerts.warn("nonfinite", "net.0.weight", 4, "gradient has 2 NaN/Inf values")
        >>> first, again, len(caught)
        (True, False, 1)
        >>> str(caught[0].message)
        "lightning_init diagnostics, step 3: 'net.0.weight': gradient has 2 NaN/Inf values"
    """

    def __init__(self, raised: Iterable[str] = ()) -> None:
        self.raised: set[str] = set(raised)

    def warn(self, kind: str, name: str, step: int, message: str) -> bool:
        """Warn about ``name`` unless this kind of alert was already raised for it."""
        key = f"{kind}:{name}"
        if key in self.raised:
            return False
        self.raised.add(key)
        warnings.warn(
            f"lightning_init diagnostics, step {step}: {name!r}: {message}",
            DiagnosticsWarning,
            stacklevel=3,
        )
        return True


def check_gradient(
    alerts: Alerts, options: DiagnosticsOptions, step: int, name: str, *, norm: float,
    nonfinite: int, numel: int,
) -> None:
    """Alert on NaN/Inf values, else on a vanishing or an exploding norm.

    Example:
        >>> from lightning_init.diagnostics._options import DiagnosticsOptions
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     check_gradient(Alerts(), DiagnosticsOptions(), 2, "w", norm=0.0, nonfinite=0,
        ...                    numel=4)
        >>> str(caught[0].message)
        "lightning_init diagnostics, step 2: 'w': vanishing gradient: norm 0 <= 1e-08"
    """
    if not options.alerts:
        return
    if nonfinite:
        alerts.warn("nonfinite", name, step, f"gradient has {nonfinite} NaN/Inf values of {numel}")
    elif norm <= options.vanishing_grad_norm:
        alerts.warn(
            "vanishing", name, step,
            f"vanishing gradient: norm {norm:.3g} <= {options.vanishing_grad_norm:g}",
        )
    elif norm > options.exploding_grad_norm:
        alerts.warn(
            "exploding", name, step,
            f"exploding gradient: norm {norm:.3g} > {options.exploding_grad_norm:g}",
        )


def check_update_ratio(
    alerts: Alerts, options: DiagnosticsOptions, step: int, name: str, ratio: float
) -> None:
    """Alert when a weight matrix's update ratio leaves ``update_ratio_band``.

    A zero update is a skipped step (AMP overflow, zero learning rate), not a bad init: no
    alert. The caller passes matrices only: vectors (biases, norm gains) start at 0 or 1 and
    move by large relative amounts early on.

    Example:
        >>> from lightning_init.diagnostics._options import DiagnosticsOptions
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     for ratio in (1e-3, 0.0, 0.5):
        ...         check_update_ratio(Alerts(), DiagnosticsOptions(), 1, "w", ratio)
        >>> [str(w.message).split(": ", 2)[2][:30] for w in caught]
        ['update ratio ||w_t - w_(t-1)||']
    """
    low, high = options.update_ratio_band
    if options.alerts and ratio > 0 and not low <= ratio <= high:
        alerts.warn(
            "update_ratio", name, step,
            f"update ratio ||w_t - w_(t-1)|| / ||w_(t-1)|| = {ratio:.3g} is outside "
            f"[{low:g}, {high:g}] (rule of thumb: about 1e-3)",
        )


def check_dead_layer(
    alerts: Alerts, options: DiagnosticsOptions, step: int, name: str, *, dead: float,
    units: float,
) -> None:
    """Alert when at least ``dead_fraction`` of a layer's units output exactly 0 throughout.

    Example:
        >>> from lightning_init.diagnostics._options import DiagnosticsOptions
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     check_dead_layer(Alerts(), DiagnosticsOptions(), 0, "net.1", dead=15, units=16)
        >>> str(caught[0].message)
        "lightning_init diagnostics, step 0: 'net.1': dead layer: 94% of its 16 units output exactly 0 on every sample"
    """  # noqa: E501
    if options.alerts and units > 0 and dead / units >= options.dead_fraction:
        alerts.warn(
            "dead", name, step,
            f"dead layer: {dead / units:.0%} of its {int(units)} units output exactly"
            " 0 on every sample",
        )
