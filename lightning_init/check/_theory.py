"""The cross-entropy that logits of a given spread give at init, whatever the labels.

At init the labels are independent of the logits. For logits ``z`` drawn i.i.d. from
``N(0, s^2)`` over C classes, the expected cross-entropy is

    E[CE] = E[logsumexp(z)] - E[z_y] = E[logsumexp(z)]  ~  ln C + (1 - 1/C) s^2 / 2

to second order in ``s`` (the delta method on ``ln(mean_c exp(z_c))``; its mean is
``exp(s^2 / 2)``, the log-normal mean). It is ln C for uniform predictions (``s = 0``) and grows
with the spread: for ``C = 2`` a head of unit-std logits already starts at 1.3x ln 2, for
``C = 500`` at 1.08x ln 500. :func:`expected_cross_entropy` computes it exactly, by sampling.
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["expected_cross_entropy"]

_NUMBERS = 1 << 21  # logits drawn per estimate (rows x C)


@functools.lru_cache(maxsize=256)
def expected_cross_entropy(classes: int, std: float) -> float:
    """``E[logsumexp(z)]`` for ``z ~ N(0, std^2 I_C)``: the expected cross-entropy of such
    logits against labels drawn independently of them. Estimated from ``2^21`` logits drawn
    with a fixed generator (rows of C; at least one row), so the same on every call.

    Example:
        >>> round(expected_cross_entropy(10, 0.0), 4), round(math.log(10), 4)
        (2.3026, 2.3026)
        >>> round(expected_cross_entropy(2, 1.0), 2)   # 1.3x ln 2
        0.9
        >>> round(expected_cross_entropy(1000, 0.5), 3), round(math.log(1000) + 0.5**2 / 2, 3)
        (7.033, 7.033)
    """
    if classes < 2:
        raise ValueError(f"expected_cross_entropy: classes must be at least 2, got {classes}")
    if std == 0:
        return math.log(classes)
    rows = max(1, _NUMBERS // classes)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, classes, generator=generator, dtype=torch.float64) * std
    return float(torch.logsumexp(logits, dim=1).mean())
