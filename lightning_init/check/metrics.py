"""The check as a few numbers to sort runs by (TensorBoard's HParams page): whether it passed,
the initial loss over ln(C), and the worst drift of the signal's scale over depth, over the
series the check judges (:mod:`lightning_init.check._depth`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lightning_init.check._depth import gradient_series, scale_series, trend

if TYPE_CHECKING:  # pragma: no cover
    from lightning_init.check.report import InitCheckReport

__all__ = ["METRIC_PREFIX", "check_metrics"]

METRIC_PREFIX = "lightning_init/check/"


def _drift(values: Sequence[float | None]) -> float | None:
    """The factor by which ``values`` change from first to last, from a least-squares fit of
    their logarithms against position, as a number >= 1 either way; ``None`` under 3 values.

    Example:
        >>> round(_drift([1.0, 0.5, 0.25, 0.125]), 6)
        8.0
    """
    positive = [v for v in values if v is not None and 0 < v < math.inf]
    if len(positive) < 3:
        return None
    total = trend(positive)
    return max(total, 1 / total)


def check_metrics(report: InitCheckReport) -> dict[str, float]:
    """``ok`` (1 or 0), ``loss_over_ln_c`` (when the cross-entropy check applied) and
    ``worst_drift``: the largest of the factors by which the output std and the
    gradient-to-weight norm ratio change over depth, by the log-linear fits of the series the
    check's ``scale`` and ``gradient`` verdicts judge (the weight layers below the output
    layers; 1 is flat; the check flags 100 and 1000 by default). A NaN/Inf in the check gives
    ``inf``.

    Example:
        >>> import torch
        >>> from lightning_init.check import check_init
        >>> net = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(4)])
        >>> _ = torch.nn.init.eye_(net[0].weight)
        >>> sorted(check_metrics(check_init(net, torch.randn(16, 8))))
        ['lightning_init/check/ok', 'lightning_init/check/worst_drift']
    """
    metrics = {"ok": 1.0 if report.ok else 0.0}
    if report.loss is not None and report.expected_loss:
        metrics["loss_over_ln_c"] = report.loss / report.expected_loss
    drifts = [_drift([layer.output_std for layer in scale_series(report.layers)])]
    drifts += [_drift([layer.grad_to_weight for layer in series])
               for series in gradient_series(report.layers)]
    if any(layer.nonfinite for layer in report.layers):
        metrics["worst_drift"] = math.inf
    elif any(drift is not None for drift in drifts):
        metrics["worst_drift"] = max(drift for drift in drifts if drift is not None)
    return {METRIC_PREFIX + key: value for key, value in metrics.items()}
