"""TensorBoard's Custom Scalars page for the diagnostics: one chart per statistic and layer group.

TensorBoard colours the lines of a chart by run, not by tag, so a chart of thirty layers is one
colour: a chart holds one layer group of at most :data:`CHART_MAX_LINES` lines, each named in
the tooltip. Parameters are grouped by role (the qualified name with its block indices as
``*``: ``transformer.h.*.attn.c_attn.weight`` across depth), matrices apart from vectors
(biases, norm gains), whose norms differ by orders of magnitude. Statistics that span decades
(update ratio, gradient and weight norms) are charted as base-10 logarithms (the page's axes
are linear), written by TensorBoard writers only next to the plain values.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.plugins.custom_scalar import layout_pb2

from lightning_init.diagnostics._tags import log10_tag, tag

__all__ = ["CHART_MAX_LINES", "Charts", "layer_groups"]

CHART_MAX_LINES = 8


class _Statistic(NamedTuple):
    key: str
    title: str
    log10: bool = False
    closed: bool = False


_PARAMETER_STATISTICS = (
    _Statistic("update_ratio", "update ratio ||w_t+1 - w_t|| / ||w_t||, log10 (about -3 is usual)",
               log10=True),
    _Statistic("grad_norm", "gradient norm, log10", log10=True),
    _Statistic("weight_norm", "weight norm, log10", log10=True),
)
_DEAD_FRACTION = _Statistic("act_dead_fraction", "dead fraction of units (ReLU)")
_CLOSED_STATISTICS = (
    _Statistic("weight_std", "weight std", closed=True),
    _Statistic("grad_std", "gradient std", closed=True),
    _Statistic("weight_absmax", "weight max |w|", closed=True),
    _Statistic("grad_absmax", "gradient max |g|", closed=True),
    _Statistic("weight_mean", "weight mean", closed=True),
)


def _role(name: str) -> str:
    """A qualified name with its numeric components (block indices) as ``*``.

    Example:
        >>> _role("transformer.h.11.attn.c_attn.weight")
        'transformer.h.*.attn.c_attn.weight'
    """
    return ".".join("*" if part.isdigit() else part for part in name.split("."))


def _chunks(names: list[str]) -> list[list[str]]:
    """``names`` cut into as few consecutive chunks of near-equal size as fit the limit."""
    count = math.ceil(len(names) / CHART_MAX_LINES)
    size, extra = divmod(len(names), count)
    bounds = [k * size + min(k, extra) for k in range(count + 1)]
    return [names[low:high] for low, high in itertools.pairwise(bounds)]


def _title(label: str, names: list[str]) -> str:
    """A chart's title: its one name, a role with the range of its block indices, or a pool's
    label with its count.

    Example:
        >>> _title("h.*.attn.weight", ["h.0.attn.weight", "h.1.attn.weight", "h.5.attn.weight"])
        'h.0-5.attn.weight'
    """
    if len(names) == 1:
        return names[0]
    if "*" not in label:
        return f"{label} ({len(names)})"
    first, last = names[0].split("."), names[-1].split(".")
    return ".".join(
        part if part != "*" else (a if a == b else f"{a}-{b}")
        for part, a, b in zip(label.split("."), first, last, strict=True)
    )


def layer_groups(entries: Sequence[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """``(title, names)`` of each chart, from ``(qualified name, kind)`` in model order.

    Names of one kind and role share charts, cut at :data:`CHART_MAX_LINES`; roles of a
    single name are pooled per kind.

    Example:
        >>> entries = [(f"net.{i}.weight", "matrix") for i in range(0, 20, 2)]
        >>> entries += [("head.weight", "matrix"), ("head.bias", "vector")]
        >>> for title, names in layer_groups(entries):
        ...     print(title, len(names))
        net.0-8.weight 5
        net.10-18.weight 5
        head.weight 1
        head.bias 1
    """
    by_role: dict[tuple[str, str], list[str]] = {}
    for name, kind in entries:
        by_role.setdefault((kind, _role(name)), []).append(name)
    groups: dict[tuple[str, str], list[str]] = {}
    for (kind, role), names in by_role.items():
        key = (kind, role) if len(names) > 1 else (kind, "")  # "": the pool of singles
        groups.setdefault(key, []).extend(names)
    charts = []
    for (kind, role), names in groups.items():
        chunks = _chunks(names)
        label = role or ("weights" if kind == "matrix" else "biases and gains")
        charts += [(_title(label, chunk), chunk) for chunk in chunks]
    return charts


def _chart(title: str, tags: list[str]) -> layout_pb2.Chart:
    pattern = "^(?:" + "|".join(re.escape(t) for t in tags) + ")$"
    return layout_pb2.Chart(
        title=title, multiline=layout_pb2.MultilineChartContent(tag=[pattern])
    )


class Charts:
    """The Custom Scalars layout of one model, and the log10 values its charts draw.

    Args:
        parameters: ``(qualified name, number of dimensions)`` of the watched parameters.
        modules: ``(qualified name, whether its units can die)`` of the leaf modules whose
            activations are recorded; only those that can die (ReLU: exact zeros) get a
            dead-fraction chart, the others' would be all zeros.
        update_ratio: whether the update ratio is logged.

    Example:
        >>> charts = Charts([("net.0.weight", 2), ("net.0.bias", 1)], [])
        >>> [category.title for category in charts.layout.category][:2]
        ['lightning_init: update ratio ||w_t+1 - w_t|| / ||w_t||, log10 (about -3 is usual)', 'lightning_init: gradient norm, log10']
        >>> charts.log10_values({"lightning_init/grad_norm/net.0.weight": 0.01,
        ...                      "lightning_init/grad_norm/net.0.bias": 0.0})
        {'lightning_init/log10_grad_norm/net.0.weight': -2.0}
    """  # noqa: E501

    def __init__(
        self, parameters: Sequence[tuple[str, int]], modules: Sequence[tuple[str, bool]],
        update_ratio: bool = True,
    ) -> None:
        kinds = [(name, "matrix" if dims >= 2 else "vector") for name, dims in parameters]
        statistics = [s for s in _PARAMETER_STATISTICS if update_ratio or s.key != "update_ratio"]
        plan = [(s, layer_groups(kinds)) for s in statistics]
        if modules:
            module_groups = layer_groups([(name, "module") for name, _ in modules])
            plan.append((_Statistic("act_std", "activation std"), module_groups))
            dying = [(name, "module") for name, can_die in modules if can_die]
            if dying:
                plan.append((_DEAD_FRACTION, layer_groups(dying)))
            plan.append((_Statistic("act_mean", "activation mean", closed=True), module_groups))
        plan += [(s, layer_groups(kinds)) for s in _CLOSED_STATISTICS]
        self.log10_tags: dict[str, str] = {}
        self.layout = layout_pb2.Layout()
        for statistic, groups in plan:
            category = self.layout.category.add(
                title=f"lightning_init: {statistic.title}", closed=statistic.closed
            )
            for title, names in groups:
                tags = [self._tag(statistic, name) for name in names]
                category.chart.append(_chart(title, tags))

    def _tag(self, statistic: _Statistic, name: str) -> str:
        plain = tag(statistic.key, name)
        if not statistic.log10:
            return plain
        logged = self.log10_tags[plain] = log10_tag(statistic.key, name)
        return logged

    def summary(self) -> Summary:
        """The layout as the ``custom_scalars__config__`` summary TensorBoard reads."""
        metadata = SummaryMetadata(
            plugin_data=SummaryMetadata.PluginData(plugin_name="custom_scalars")
        )
        tensor = TensorProto(
            dtype="DT_STRING", string_val=[self.layout.SerializeToString()],
            tensor_shape=TensorShapeProto(),
        )
        return Summary(
            value=[Summary.Value(tag="custom_scalars__config__", tensor=tensor, metadata=metadata)]
        )

    def log10_values(self, scalars: Mapping[str, float]) -> dict[str, float]:
        """The base-10 logarithms the charts draw, of the positive finite values among
        ``scalars``."""
        values = {}
        for plain, logged in self.log10_tags.items():
            value = scalars.get(plain)
            if value is not None and 0 < value < math.inf:
                values[logged] = math.log10(value)
        return values
