"""The check report's renderings: the plain-text table, the console verdict with its margins,
``rich``'s table, and markdown. The report's data and its JSON form stay in
:mod:`lightning_init.check.report`, which calls these."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from lightning_init._text import markdown_table, table
from lightning_init.check._depth import scale_series
from lightning_init.check._theory import expected_cross_entropy
from lightning_init.check.records import LayerRecord

if TYPE_CHECKING:  # pragma: no cover
    from lightning_init.check.report import InitCheckReport

__all__ = ["markdown", "rich_lines", "rich_table", "text", "verdict_lines"]


def table_rows(report: InitCheckReport) -> list[list[str]]:
    rows = []
    for layer in report.layers:
        rows.append(
            [
                str(layer.index),
                layer.name or "(model)",
                layer.type,
                _cell(layer.output_mean),
                _cell(layer.output_std),
                _cell(layer.input_dependence),
                _pct(layer.dead_fraction),
                _pct(layer.saturated_fraction),
                str(layer.nonfinite) if layer.nonfinite else "",
                _cell(layer.grad_norm),
                _cell(layer.grad_to_weight),
            ]
        )
    return rows

HEADER = (
    "#",
    "layer",
    "type",
    "mean",
    "std",
    "input dep.",
    "dead",
    "saturated",
    "nan/inf",
    "grad norm",
    "grad/weight",
)

def summary_lines(report: InitCheckReport, bullet: str = "  - ") -> list[str]:
    lines = []
    if report.loss is not None:
        text = f"initial loss ({report.loss_source}): {_cell(report.loss)}"
        if report.expected_loss is not None:
            text += f" (ln({report.num_classes}) = {report.expected_loss:.3f})"
        lines.append(text)
    lines.extend(f"note: {note}" for note in report.notes)
    lines.extend(f"ignored ({problem.kind}, by the ignore option): {problem.message}"
                 for problem in report.ignored)
    if report.ok:
        lines.append("init check: OK, no problem found")
    else:
        lines.append(f"init check: {len(report.problems)} problem(s)")
        lines.extend(f"{bullet}{problem.message}" for problem in report.problems)
    return lines


def text(report: InitCheckReport) -> str:
    """The plain-text table, then the summary lines."""
    return "\n".join([table(HEADER, table_rows(report)), "", *summary_lines(report)])


def verdict_lines(report: InitCheckReport, thresholds: Mapping[str, float] | None) -> list[str]:
    """The compact verdict: see :meth:`InitCheckReport.verdict`."""
    limits = thresholds or {}
    if not report.ok:
        lines = [f"lightning_init: init check: {len(report.problems)} problem(s)"]
        return lines + [f"  - {problem.message}" for problem in report.problems]
    margins = [*_output_margin(report.layers), *_loss_margin(report, limits),
               *_layer_margins(report.layers, limits)]
    head = f"lightning_init: init check: OK, no problem found in {len(report.layers)} module " \
           "outputs"
    return [head, *(f"  {margin}" for margin in margins),
            *(f"  note: {note}" for note in report.notes)]


def rich_lines(report: InitCheckReport) -> Iterator[Any]:
    """The table, then the verdicts (problems in red), for ``rich``."""
    from rich.text import Text

    yield rich_table(report)
    for line in summary_lines(report):
        yield Text(line, style="red" if line.startswith("  - ") else "")


def rich_table(report: InitCheckReport) -> Any:
    """The per-layer table as a ``rich.table.Table``; layers named by a problem in red."""
    from rich.table import Table

    table = Table(title="lightning_init: init check", show_lines=False)
    for column in HEADER:
        table.add_column(column, justify="left" if column in ("layer", "type") else "right")
    problem_layers = {name for problem in report.problems for name in problem.layers}
    for row, layer in zip(table_rows(report), report.layers, strict=True):
        table.add_row(*row, style="red" if layer.name in problem_layers else None)
    return table


def markdown(report: InitCheckReport) -> str:
    """The report in markdown, the verdict first; the table without its empty columns."""
    if report.ok:
        lines = ["**init check: OK, no problem found**", ""]
    else:
        lines = [f"**init check: {len(report.problems)} problem(s)**", ""]
        lines += [f"- {problem.message}" for problem in report.problems] + [""]
    for line in summary_lines(report):
        if not line.startswith(("init check:", "  - ")):  # the loss and the notes
            lines += [line, ""]
    rows = table_rows(report)
    kept = [i for i in range(len(HEADER)) if i < 3 or any(row[i] for row in rows)]
    lines.append(markdown_table([HEADER[i] for i in kept],
                                [[row[i] for i in kept] for row in rows]))
    return "\n".join(lines) + "\n"


def _label(layer: LayerRecord) -> str:
    return f"`{layer.name}`" if layer.name else "the model"


def _output_margin(layers: list[LayerRecord]) -> list[str]:
    """The model's last output: its scale is what the loss sees."""
    if not layers:
        return []
    last = layers[-1]
    return [f"output {_label(last)} std {_cell(last.output_std)}"]


def _loss_margin(report: InitCheckReport, limits: Mapping[str, float]) -> list[str]:
    if report.loss is None:
        return []
    if report.expected_loss is None or not report.expected_loss > 0:
        return [f"initial loss {_cell(report.loss)} ({report.loss_source})"]
    ratio = report.loss / report.expected_loss
    limit = limits.get("max_loss_ratio")
    spread = limits.get("max_logit_std")
    if limit is not None and spread is not None and report.num_classes:
        limit = max(limit, expected_cross_entropy(report.num_classes, spread)
                    / report.expected_loss)
    shown = f" (limit {limit:.3g}x)" if limit is not None else ""
    return [f"initial loss {_cell(report.loss)} = {ratio:.2f}x ln({report.num_classes}){shown}"]


def _extreme(layers: list[LayerRecord], attribute: str, largest: bool) -> LayerRecord | None:
    measured = [layer for layer in layers if getattr(layer, attribute) is not None
                and math.isfinite(getattr(layer, attribute))]
    if not measured:
        return None
    pick = max if largest else min
    return pick(measured, key=lambda layer: getattr(layer, attribute))


def _layer_margins(layers: list[LayerRecord], limits: Mapping[str, float]) -> list[str]:
    """The layer nearest each per-layer limit: most dead, most saturated, least input-driven;
    the weight layers' output std from the first to the last below the output layers."""
    margins = []
    weighted = scale_series(layers)  # the series the scale verdict judges
    if len(weighted) >= 2:
        first, last = weighted[0], weighted[-1]
        drift = max(first.output_std, last.output_std) / min(first.output_std, last.output_std)
        limit = limits.get("max_scale_drift")
        shown = f" (limit {limit:g}x)" if limit is not None else ""
        margins.append(f"weight layers' output std {_cell(first.output_std)} at {_label(first)}"
                       f" to {_cell(last.output_std)} at {_label(last)}: {drift:.3g}x{shown}")
    for attribute, largest, what, limit_key in (
        ("dead_fraction", True, "dead units", "max_dead_fraction"),
        ("saturated_fraction", True, "saturated", "max_saturated_fraction"),
        ("input_dependence", False, "input dependence", "min_input_dependence"),
    ):
        layer = _extreme(layers, attribute, largest)
        if layer is None:
            continue
        value = getattr(layer, attribute)
        shown = _pct(value) if attribute != "input_dependence" else _cell(value)
        limit = limits.get(limit_key)
        if limit is not None:
            limit_text = _pct(limit) if attribute != "input_dependence" else f"{limit:g}"
            shown += f" (limit {limit_text})"
        margins.append(f"{what} {'up to' if largest else 'down to'} {shown} at {_label(layer)}")
    return margins



def _cell(value: float | None) -> str:
    """A number in a table cell: 4 significant digits, scientific outside [1e-3, 1e4)."""
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.4g}"
    return f"{value:.2e}"


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"
