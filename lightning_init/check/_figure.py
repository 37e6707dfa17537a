"""The init check's depth figure: how the signal's scale moves through the layers, forward and
backward, against the band the check accepts.

Two panels side by side, modules in forward order along x, weight layers named:

- left, each module's output std relative to the first weight layer's: the forward signal. The
  check flags a drift of more than ``max_scale_drift`` between the first and last weight layer
  below the output layers (a depth trend that He et al. 2015 show compounds layer after layer);
- right, each weight layer's gradient-to-weight norm ratio relative to that of the last weight
  layer below the output layers: the backward signal, flagged past ``max_grad_drift``.

The output layers (``LayerRecord.output_layer``) are ringed: the check leaves them out of both
depth trends (:mod:`lightning_init.check._depth`), since a head drawn at scale s sits s away
from the body forwards and 1/s^2 backwards without any trend over depth (a regression head
started small on purpose, a zero-ish classifier).

The y axes are logarithmic over a fixed range of at least twelve decades, so that a healthy
net draws a flat line and a vanishing one a cliff; the accepted band is shaded. Weight layers
(modules with parameters) are filled dots; parameter-free modules (activations, pooling) are
small hollow ones; a module with NaN/Inf outputs is a red cross on the top edge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lightning_init.check._depth import below_heads

if TYPE_CHECKING:  # pragma: no cover
    from lightning_init.check.records import LayerRecord
    from lightning_init.check.report import InitCheckReport

__all__ = ["depth_figure"]

_DECADES = 6  # the y range spans at least 10^-6 to 10^6
_MAX_LABELS = 40
_HEALTHY = "#2ca02c"
_WEIGHT = "#1f5fa8"
_GRADIENT = "#c0392b"
_OUTPUT = "#e67e22"
_OUTPUT_LABEL = "output layer (not in the depth trends)"


def _ratio(value: float | None, reference: float | None) -> float:
    """``value / reference``, NaN (a gap on a log axis) when either is missing, 0 or not finite."""
    if value is None or reference is None or not reference > 0 or not math.isfinite(reference):
        return math.nan
    ratio = value / reference
    return ratio if 0 < ratio < math.inf else math.nan


def _input_driven(layer: LayerRecord) -> float | None:
    """The part of a module's output that varies with the input: its root-mean-square times
    its input dependence (the spread across samples over the root-mean-square)."""
    if layer.input_dependence is None:
        return None
    return math.hypot(layer.output_mean, layer.output_std) * layer.input_dependence


def _y_limits(values: Sequence[float]) -> tuple[float, float]:
    """Whole decades holding ``10^-6 .. 10^6`` and every positive value, within
    ``10^-12 .. 10^12``.

    Example:
        >>> _y_limits([0.5, 3e-9, math.nan, 0.0])
        (1e-09, 1000000.0)
    """
    finite = [v for v in values if 0 < v < math.inf] + [1.0]
    low = max(-2 * _DECADES, min(-_DECADES, math.floor(math.log10(min(finite)) - 0.3)))
    high = min(2 * _DECADES, max(_DECADES, math.ceil(math.log10(max(finite)) + 0.3)))
    return 10.0**low, 10.0**high


def _panel(
    axis: Any, positions: list[int], values: list[float], is_weight: list[bool], band: float,
    color: str, band_label: str,
) -> None:
    """One log panel: the path through the modules at ``positions``, filled dots on the weight
    layers, hollow ones elsewhere, the accepted band shaded."""
    axis.plot(positions, values, color=color, linewidth=1.6, alpha=0.85, zorder=3)
    weights = [(x, v) for x, v, w in zip(positions, values, is_weight, strict=True) if w]
    others = [(x, v) for x, v, w in zip(positions, values, is_weight, strict=True) if not w]
    if weights:
        axis.scatter(*zip(*weights, strict=True), s=26, color=color, zorder=4,
                     label="weight layer")
    if others:
        axis.scatter(*zip(*others, strict=True), s=14, facecolors="white", edgecolors=color,
                     linewidths=1.0, zorder=4, label="no parameters (activation, ...)")
    axis.set_yscale("log")
    axis.axhspan(1 / band, band, color=_HEALTHY, alpha=0.12, zorder=1, label=band_label)
    axis.axhline(1.0, color=_HEALTHY, linewidth=0.8, alpha=0.6, zorder=2)
    axis.grid(True, axis="y", which="major", alpha=0.3)
    axis.tick_params(axis="y", labelsize=12)


def _ring_outputs(axis: Any, positions: list[int], values: list[float],
                  layers: Sequence[LayerRecord]) -> None:
    """A ring around each output layer's point."""
    rings = [(x, v) for x, v in zip(positions, values, strict=True)
             if layers[x].output_layer and 0 < v < math.inf]
    if rings:
        axis.scatter(*zip(*rings, strict=True), s=110, facecolors="none", edgecolors=_OUTPUT,
                     linewidths=1.8, zorder=5, label=_OUTPUT_LABEL)


def _label_layers(axis: Any, layers: Sequence[LayerRecord], is_weight: list[bool]) -> None:
    """The weight layers' names under the x axis (every k-th past ``_MAX_LABELS``)."""
    named = [i for i, weight in enumerate(is_weight) if weight] or list(range(len(layers)))
    step = max(1, math.ceil(len(named) / _MAX_LABELS))
    shown = named[::step]
    axis.set_xticks(shown)
    axis.set_xticklabels([layers[i].name or "(model)" for i in shown], rotation=90,
                         fontsize=9 if len(shown) > 20 else 11)


def _mark_nonfinite(axis: Any, layers: Sequence[LayerRecord]) -> None:
    bad = [i for i, layer in enumerate(layers) if layer.nonfinite]
    if bad:
        top = axis.get_ylim()[1]
        axis.scatter(bad, [top] * len(bad), marker="x", s=60, color="red", clip_on=False,
                     zorder=5, label="NaN/Inf output")


def depth_figure(
    report: InitCheckReport, *, max_scale_drift: float = 100.0, max_grad_drift: float = 1000.0
) -> Any:
    """The depth figure of a check report (see the module's docstring).

    Args:
        report: the check's report.
        max_scale_drift: the forward band shaded, as the check's threshold of that name.
        max_grad_drift: the backward band shaded, as the check's threshold of that name.

    Returns:
        A ``matplotlib.figure.Figure`` on the Agg canvas (no pyplot state, no GUI): axes
        ``[forward, backward]``, each with the path through every module as its first line.

    Example:
        >>> import torch
        >>> from lightning_init.check import check_init
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> forward, backward = depth_figure(check_init(net, torch.randn(16, 4))).axes
        >>> [label.get_text() for label in forward.get_xticklabels()]
        ['0', '2']
        >>> [float(limit) for limit in forward.get_ylim()]
        [1e-06, 1000000.0]
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = report.layers
    is_weight = [layer.weight_norm is not None for layer in layers]
    weight_layers = [layer for layer, weight in zip(layers, is_weight, strict=True) if weight]
    first = weight_layers[0] if weight_layers else (layers[0] if layers else None)
    below = [layer for layer in below_heads(layers) if layer.grad_to_weight]
    last = below[-1] if below else weight_layers[-1] if weight_layers else None
    forward = [_ratio(layer.output_std, first and first.output_std) for layer in layers]
    driven = [_ratio(_input_driven(layer), first and first.output_std) for layer in layers]
    weight_positions = [i for i, weight in enumerate(is_weight) if weight]
    backward = [_ratio(layers[i].grad_to_weight, last and last.grad_to_weight)
                for i in weight_positions]

    figure = Figure(figsize=(14, 5.2), layout="constrained")
    FigureCanvasAgg(figure)
    forward_axis, backward_axis = figure.subplots(1, 2, sharex=True)
    _panel(forward_axis, list(range(len(layers))), forward, is_weight, max_scale_drift,
           _WEIGHT, f"accepted: within {max_scale_drift:g}x")
    forward_axis.plot(range(len(layers)), driven, color=_WEIGHT, linestyle="--", linewidth=1.2,
                      alpha=0.8, zorder=3, label="of it, input-driven")
    forward_axis.set_title("forward: output std / first weight layer's", fontsize=14)
    _panel(backward_axis, weight_positions, backward, [True] * len(backward), max_grad_drift,
           _GRADIENT, f"accepted: within {max_grad_drift:g}x")
    backward_axis.set_title("backward: |grad| / |weight|, over the last non-output layer's",
                            fontsize=14)
    _ring_outputs(forward_axis, list(range(len(layers))), forward, layers)
    _ring_outputs(backward_axis, weight_positions, backward, layers)
    limits = _y_limits(forward + driven + backward)
    for axis in (forward_axis, backward_axis):
        axis.set_ylim(*limits)
        axis.set_xlim(-0.5, max(len(layers) - 0.5, 0.5))
        _label_layers(axis, layers, is_weight)
        _mark_nonfinite(axis, layers)
    entries = dict(zip(*forward_axis.get_legend_handles_labels()[::-1], strict=True))
    for handle, label in zip(*backward_axis.get_legend_handles_labels(), strict=True):
        entries.setdefault(label, handle)
    labels = sorted(entries, key=lambda label: label.startswith("accepted"))
    handles = [entries[label] for label in labels]
    columns = len(handles) if len(handles) <= 5 else (len(handles) + 1) // 2  # fits 14 in
    figure.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize=12,
                  frameon=False)
    return figure
