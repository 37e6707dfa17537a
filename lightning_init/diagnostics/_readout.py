"""From a logged step's device tensors to named values: one host transfer, then the scalar tags
``lightning_init/<statistic>/<qualified name>``, the histograms and the alerts."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from lightning_init.diagnostics._alerts import (
    Alerts,
    check_dead_layer,
    check_gradient,
    check_update_ratio,
)
from lightning_init.diagnostics._measure import Measured
from lightning_init.diagnostics._options import DiagnosticsOptions
from lightning_init.diagnostics._stats import ABSMAX, EXACT_STD, NORM, SUM, moments_from_sums
from lightning_init.diagnostics._tags import tag as tag_of
from lightning_init.runtime.sparse import stored_values

__all__ = ["Readout", "StepValues", "to_host"]


class _Tags(NamedTuple):
    """The scalar tags of one parameter: ``lightning_init/<statistic>/<qualified name>``."""

    weight_norm: str
    weight_std: str
    weight_mean: str
    weight_absmax: str
    grad_norm: str
    grad_std: str
    grad_absmax: str
    grad_nonfinite: str
    update_ratio: str

    @classmethod
    def of(cls, name: str) -> _Tags:
        return cls(*(tag_of(statistic, name) for statistic in cls._fields))

Histogram = tuple[str, list[float], list[float], list[float]]  # tag, head, edges, counts


@dataclass
class StepValues:
    """What a logged step writes: scalars by tag, and raw histograms."""

    scalars: dict[str, float] = field(default_factory=dict)
    histograms: list[Histogram] = field(default_factory=list)


def to_host(parts: list[Tensor]) -> list[list[Any]]:
    """Every part in one float64 vector, ONE transfer to the host, cut back into nested lists.

    float64: the activations' sums of squares lose their variance in float32.

    Example:
        >>> to_host([torch.ones(2, 2), torch.tensor([0.5])])
        [[[1.0, 1.0], [1.0, 1.0]], [0.5]]
    """
    device = parts[0].device
    host = torch.cat(
        [p.reshape(-1).to(device=device, dtype=torch.float64) for p in parts]
    ).cpu()
    return [
        chunk.view(part.shape).tolist()
        for chunk, part in zip(host.split([p.numel() for p in parts]), parts, strict=True)
    ]


def _on_device(entry: Measured) -> list[Tensor]:
    """An entry's tensors in transfer order: weights ``[n, 4]``, gradients ``[m, 4]`` (if
    any), update norms ``[n]`` (with the update ratio; consumes the snapshot), histograms."""
    parts = [entry.weight_stats]
    if entry.grad_stats is not None:
        parts.append(entry.grad_stats)
    if entry.weight_batch is not None:
        parts.append(entry.weight_batch.change_norms(entry.weights))
        entry.weight_batch = None
    parts.extend(rows for _, rows in entry.histograms)
    return parts


def _nonfinite_counts(entry: Measured, grad: list[list[float]]) -> list[int]:
    """NaN/Inf counts; computed (a second transfer) only for non-finite gradients."""
    if entry.grad_nonfinite is not None:  # sharded: counted with the statistics
        return [int(count) for count in entry.grad_nonfinite.tolist()]
    bad = [k for k, row in enumerate(grad) if not math.isfinite(row[NORM])]
    counts = [0] * len(grad)
    if bad:
        found = torch.stack(
            [(~torch.isfinite(stored_values(entry.grads[k]))).sum() for k in bad]
        ).cpu().tolist()
        for k, count in zip(bad, found, strict=True):
            counts[k] = int(count)
    return counts


class Readout:
    """Turns a logged step's measurements into :class:`StepValues`, raising the alerts.

    Args:
        options: the thresholds of the alerts, ``update_ratio`` and ``histogram_bins``.
    """

    def __init__(self, options: DiagnosticsOptions) -> None:
        self.options = options
        self._tag_cache: dict[str, _Tags] = {}
        # Per parameter name: the element step bound of its normalized optimizer (Adam, ...),
        # set by the callback at each logged step; absent under SGD and the like.
        self.step_bounds: dict[str, float] = {}

    def transfer(
        self, measured: list[Measured], activation_rows: Tensor | None
    ) -> list[list[Any]] | None:
        """The host copy of every block of the step (``None`` when there is nothing)."""
        parts = [part for entry in measured if entry.names for part in _on_device(entry)]
        if activation_rows is not None:
            parts.append(activation_rows)
        return to_host(parts) if parts else None

    def values(
        self,
        measured: list[Measured],
        blocks: list[list[Any]],
        activation_names: list[str] | None,
        alerts: Alerts,
    ) -> dict[int, StepValues]:
        """Unpack :meth:`transfer`'s blocks (same order) into tags by step; alert along the way.

        Each entry's values are of its own step (with manual optimization, the later optimizers
        of a batch have advanced ``global_step``); the activations are of the first entry's.
        The steps come in increasing order."""
        by_step: dict[int, StepValues] = {}
        remaining = iter(blocks)
        for entry in measured:
            if entry.names:
                values = by_step.setdefault(entry.step, StepValues())
                self._entry_values(entry.step, entry, remaining, values, alerts)
        if activation_names is not None:
            step = measured[0].step
            values = by_step.setdefault(step, StepValues())
            self._activation_values(step, activation_names, next(remaining), values, alerts)
        return dict(sorted(by_step.items()))

    def _tags(self, name: str) -> _Tags:
        tags = self._tag_cache.get(name)
        if tags is None:
            tags = self._tag_cache[name] = _Tags.of(name)
        return tags

    def _entry_values(
        self, step: int, entry: Measured, blocks: Iterator[list[Any]], values: StepValues,
        alerts: Alerts,
    ) -> None:
        weight = next(blocks)
        grad = next(blocks) if entry.grad_stats is not None else []
        update = next(blocks) if self.options.update_ratio else []
        tags = [self._tags(name) for name in entry.names]
        scalars = values.scalars
        for tag, numel, row in zip(tags, entry.numels, weight, strict=True):
            mean, std = moments_from_sums(row[NORM], row[SUM], numel, row[EXACT_STD])
            scalars[tag.weight_norm] = row[NORM]
            scalars[tag.weight_std] = std
            scalars[tag.weight_mean] = mean
            scalars[tag.weight_absmax] = row[ABSMAX]
        self._gradient_values(step, entry, tags, grad, scalars, alerts)
        self._update_values(step, entry, tags, weight, update, scalars, alerts)
        bins = self.options.histogram_bins
        for histogram_tags, _ in entry.histograms:
            for tag_name, row in zip(histogram_tags, next(blocks), strict=True):
                values.histograms.append(
                    (tag_name, row[:5], row[5 : 5 + bins], row[5 + bins : 5 + 2 * bins])
                )

    def _gradient_values(
        self, step: int, entry: Measured, tags: list[_Tags], grad: list[list[float]],
        scalars: dict[str, float], alerts: Alerts,
    ) -> None:
        nonfinite_counts = _nonfinite_counts(entry, grad)
        for i, row, nonfinite in zip(entry.grad_rows, grad, nonfinite_counts, strict=True):
            tag, numel = tags[i], entry.numels[i]
            _, std = moments_from_sums(row[NORM], row[SUM], numel, row[EXACT_STD])
            scalars[tag.grad_norm] = row[NORM]
            scalars[tag.grad_std] = std
            scalars[tag.grad_absmax] = row[ABSMAX]
            if nonfinite:  # a healthy run draws no chart of zeros
                scalars[tag.grad_nonfinite] = float(nonfinite)
            check_gradient(
                alerts, self.options, entry.names[i], norm=row[NORM], nonfinite=nonfinite,
                numel=numel,
            )

    def _update_values(
        self, step: int, entry: Measured, tags: list[_Tags], weight: list[list[float]],
        update: list[float], scalars: dict[str, float], alerts: Alerts,
    ) -> None:
        """``||w_(t+1) - w_t|| / ||w_t||`` of every weight whose norm is a positive number."""
        for i, (tag, previous, change) in enumerate(zip(tags, weight, update, strict=False)):
            if previous[NORM] > 0 and math.isfinite(previous[NORM]):
                ratio = change / previous[NORM]
                scalars[tag.update_ratio] = ratio
                if entry.weights[i].dim() >= 2:  # the rule of thumb is for weight matrices
                    bound = self.step_bounds.get(entry.names[i])
                    rms = previous[NORM] / math.sqrt(max(entry.numels[i], 1))
                    # LeCun's scale, element std 1 / sqrt(fan_in), has norm sqrt(rows).
                    lecun_norm = math.sqrt(entry.weights[i].shape[0])
                    check_update_ratio(
                        alerts, self.options, entry.names[i], ratio,
                        normal_ratio=None if bound is None else bound / rms,
                        smallness=lecun_norm / previous[NORM],
                    )

    def _activation_values(
        self, step: int, names: list[str], rows: list[list[float]], values: StepValues,
        alerts: Alerts,
    ) -> None:
        """Mean, std and dead fraction of each leaf module's output, from the reduced rows."""
        for name, row in zip(names, rows, strict=True):
            total, total_sq, count, dead, units = row
            if count == 0 or units == 0:
                continue
            mean = total / count
            variance = (total_sq - total * total / count) / max(count - 1, 1)
            values.scalars[tag_of("act_mean", name)] = mean
            values.scalars[tag_of("act_std", name)] = math.sqrt(max(variance, 0.0))
            values.scalars[tag_of("act_dead_fraction", name)] = dead / units
            check_dead_layer(alerts, self.options, name, dead=dead, units=units)
