"""The series over depth that the check judges, one definition for its verdicts and displays.

A depth trend (the forward output std, the backward grad/weight norm ratio) is judged over the
weight layers below the output layers. An output layer (``LayerRecord.output_layer``: the last
weight layers before what the loss reads, found by data flow) drawn at scale s scales the
model's output by s and the gradient of every layer below it by s alike, and its own
grad/weight ratio by 1/s: a head started small on purpose (a regression head next to its
target's scale, a zero-ish classifier) makes one step of s forwards and 1/s^2 backwards at the
top, which is no trend over depth; its scale is the loss and gain verdicts' to judge. The
verdicts (:mod:`lightning_init.check.verdicts`), the console's margins, the depth figure and
:func:`~lightning_init.check.metrics.check_metrics` all read the series from here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from lightning_init.check.records import LayerRecord

__all__ = ["below_heads", "fit_factor", "gradient_series", "output_names", "scale_series",
           "trend"]


def fit_factor(values: Sequence[float]) -> float:
    """Per-step factor of a least-squares fit of log(values) against position.

    Example:
        >>> round(fit_factor([1.0, 0.5, 0.25]), 6)
        0.5
    """
    logs = [math.log(value) for value in values]
    count = len(logs)
    mean_x = (count - 1) / 2
    mean_y = sum(logs) / count
    numerator = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(logs))
    denominator = sum((i - mean_x) ** 2 for i in range(count))
    return math.exp(numerator / denominator)


def trend(values: Sequence[float]) -> float:
    """The factor by which ``values`` change from the first to the last by that fit.

    Example:
        >>> round(trend([1.0, 0.5, 0.25, 0.125]), 6)
        0.125
    """
    return fit_factor(values) ** (len(values) - 1)


def output_names(layers: Sequence[LayerRecord], heads: Iterable[str] | None) -> frozenset[str]:
    """The output layers' names: ``heads`` (found by data flow), or where not known the last
    weight layer in forward order."""
    if heads is not None:
        return frozenset(heads)
    last = next((layer for layer in reversed(layers) if layer.transforms), None)
    return frozenset((last.name,)) if last is not None else frozenset()


def below_heads(layers: Sequence[LayerRecord]) -> list[LayerRecord]:
    """The weight layers below the output layers, in forward order."""
    return [layer for layer in layers if layer.transforms and not layer.output_layer]


def scale_series(layers: Sequence[LayerRecord]) -> list[LayerRecord]:
    """The forward series: the weight layers below the output layers with a finite, nonzero
    output std whose output does not go straight into a normalization (which removes its
    scale)."""
    return [layer for layer in below_heads(layers) if not layer.normalized
            and layer.output_std > 0 and math.isfinite(layer.output_std)]


def _role(name: str) -> str:
    """A layer's name with its block indices blanked: ``model.layers.#.self_attn.q_proj``."""
    return re.sub(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.|$)", "#", name)


def gradient_series(layers: Sequence[LayerRecord]) -> list[list[LayerRecord]]:
    """The backward series, of the weight layers below the output layers with a nonzero
    grad/weight ratio: one per role that repeats across blocks (so that a pattern repeating
    inside each block, such as attention's query/key against its value, does not read as a
    trend), or all of them when no role repeats; series of 3 layers or more."""
    weighted = [layer for layer in below_heads(layers) if layer.grad_to_weight]
    by_role: dict[str, list[LayerRecord]] = {}
    for layer in weighted:
        by_role.setdefault(_role(layer.name), []).append(layer)
    repeated = [series for series in by_role.values() if len(series) >= 2]
    if len(repeated) <= 1:
        return [weighted] if len(weighted) >= 3 else []
    return [series for series in repeated if len(series) >= 3]
