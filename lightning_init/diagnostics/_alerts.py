"""Console alerts: each problem once, naming the parameter or layer and the step."""

from __future__ import annotations

import warnings
from collections.abc import Iterable

__all__ = ["Alerts", "DiagnosticsWarning"]


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
