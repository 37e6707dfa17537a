"""The init check's records and report: tables, markdown, JSON and the depth figure."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from lightning_init._text import markdown_table, table

__all__ = ["CheckProblem", "InitCheckReport", "LayerRecord", "ParameterRecord"]


def _grad_to_weight(record: LayerRecord | ParameterRecord) -> float | None:
    """``grad_norm / weight_norm`` (``None`` when either is missing or zero)."""
    if record.grad_norm is None or not record.weight_norm:
        return None
    return record.grad_norm / record.weight_norm


@dataclass(frozen=True)
class LayerRecord:
    """What one module's output looked like in the check's forward pass.

    Attributes:
        index: position in forward order (0 = first module to produce an output).
        name: the module's qualified name in the model given (``"net.0"``).
        type: the module's class name (``"Linear"``).
        shape: the measured output's shape.
        output_mean: mean over all elements of the output.
        output_std: standard deviation over all elements (population, ``unbiased=False``).
        input_dependence: root-mean-square over features of the spread across the leading
            (batch) dimension, divided by the output's root-mean-square; 0 when every sample
            gives the same output, about 1 for a centred input-driven output. ``None`` with a
            single sample.
        dead_fraction: ReLU family only: fraction of units (columns; channels for ``N, C, ...``
            outputs) that are zero for every sample.
        saturated_fraction: tanh / sigmoid (and hard variants) only: fraction of outputs in the
            flat tails (``|tanh| > 0.99``, ``sigmoid < 0.01`` or ``> 0.99``).
        nonfinite: how many output elements are NaN or Inf.
        grad_norm: L2 norm of the gradient of all the module's own parameters, if any.
        weight_norm: L2 norm of the module's own parameters, if any.
        inflow_dependence: the input dependence of the module's own input (integer indices
            read as numbers: all-zero ``token_type_ids`` give 0); ``None`` when not measured.
        inflow_rms: the root-mean-square of the module's own (floating-point) input.
        source: the index of the module whose output this module received as is (same
            storage: a view, an in-place op); ``None`` when its input was computed in between
            (a residual sum, a functional op) or is the model's input.
        transforms: whether the module transforms its input with its own weight matrix (the
            kinds registry's ``transforms``: weight layers, attention, recurrent layers).
    """

    index: int
    name: str
    type: str
    shape: tuple[int, ...]
    output_mean: float
    output_std: float
    input_dependence: float | None
    dead_fraction: float | None
    saturated_fraction: float | None
    nonfinite: int
    grad_norm: float | None = None
    weight_norm: float | None = None
    inflow_dependence: float | None = None
    inflow_rms: float | None = None
    source: int | None = None
    transforms: bool = False

    grad_to_weight = property(_grad_to_weight)


@dataclass(frozen=True)
class ParameterRecord:
    """One parameter's gradient in the check's backward pass.

    Attributes:
        name: the parameter's qualified name (``"net.0.weight"``).
        layer: the qualified name of the module owning it.
        weight_norm: L2 norm of the parameter.
        grad_norm: L2 norm of its gradient; ``None`` when the loss does not depend on it.
    """

    name: str
    layer: str
    weight_norm: float
    grad_norm: float | None

    grad_to_weight = property(_grad_to_weight)


@dataclass(frozen=True)
class CheckProblem:
    """One verdict: what is wrong, where, the number, the expectation and a likely fix.

    Attributes:
        kind: ``"nonfinite"``, ``"scale"``, ``"input_dependence"``, ``"dead_units"``,
            ``"saturation"``, ``"gradient"`` or ``"loss"``.
        layers: the qualified names concerned (first one first).
        message: the full sentence, naming the layer, the number, the expectation and the fix.
    """

    kind: str
    layers: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class InitCheckReport:
    """The result of :func:`~lightning_init.check_init`: per-layer records and verdicts.

    Attributes:
        ok: ``True`` when no problem was found.
        problems: the verdicts, most fundamental first.
        layers: one :class:`LayerRecord` per module output, in forward order.
        parameters: one :class:`ParameterRecord` per trainable parameter.
        loss: the initial loss (``None`` when no loss was computed).
        loss_source: where the loss came from: ``"training_step"``, ``"loss_fn"``,
            ``"model_output"`` (the ``loss`` of a mapping output) or ``"surrogate"`` (a fixed
            random projection of the output, see ``check_init``).
        expected_loss: ``ln(num_classes)`` when the cross-entropy check applied.
        num_classes: the number of classes used for that check.
        notes: remarks that are not problems (what was skipped and why).
        ignored: problems accepted by the ``ignore`` option; listed, not counted.

    Example:
        >>> import torch
        >>> from lightning_init.check import check_init
        >>> report = check_init(torch.nn.Linear(4, 3), torch.randn(8, 4))
        >>> report.ok, [layer.name for layer in report.layers]
        (True, [''])
    """

    problems: list[CheckProblem]
    layers: list[LayerRecord]
    parameters: list[ParameterRecord] = field(default_factory=list)
    loss: float | None = None
    loss_source: str | None = None
    expected_loss: float | None = None
    num_classes: int | None = None
    notes: list[str] = field(default_factory=list)
    ignored: list[CheckProblem] = field(default_factory=list)
    _subject: Any = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """``True`` when the check found no problem."""
        return not self.problems

    def suggest_policy(self, model: Any = None, inputs: Any = None, **options: Any) -> Any:
        """A policy that fixes what the check found, verified on a deep copy before offered.

        See :func:`lightning_init.check.suggest.suggest_policy` (``model`` and ``inputs``
        default to those the check ran on; ``prior=p`` starts a sigmoid head's bias at the
        prior).

        Example:
            >>> import torch
            >>> from lightning_init.check import check_init
            >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
            >>> check_init(net, torch.randn(8, 4)).suggest_policy().reason
            'withheld: the check found nothing to fix'
        """
        from lightning_init.check.suggest import suggest_policy

        return suggest_policy(self, model, inputs, **options)

    # ------------------------------------------------------------------ rendering
    def _rows(self) -> list[list[str]]:
        rows = []
        for layer in self.layers:
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

    _HEADER = (
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

    def _summary_lines(self, bullet: str = "  - ") -> list[str]:
        lines = []
        if self.loss is not None:
            text = f"initial loss ({self.loss_source}): {_cell(self.loss)}"
            if self.expected_loss is not None:
                text += f" (ln({self.num_classes}) = {self.expected_loss:.3f})"
            lines.append(text)
        lines.extend(f"note: {note}" for note in self.notes)
        lines.extend(f"ignored ({problem.kind}, by the ignore option): {problem.message}"
                     for problem in self.ignored)
        if self.ok:
            lines.append("init check: OK, no problem found")
        else:
            lines.append(f"init check: {len(self.problems)} problem(s)")
            lines.extend(f"{bullet}{problem.message}" for problem in self.problems)
        return lines

    def verdict(self, thresholds: Mapping[str, float] | None = None) -> list[str]:
        """The compact verdict for a console: one line, then (when all is well) the margins
        closest to a limit, each with its layer; when something is wrong, one line per problem.

        ``thresholds``: the check's (``CheckOptions.thresholds``), to show each margin's limit.

        Example:
            >>> import torch
            >>> from lightning_init.check import check_init
            >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
            <...>
            >>> net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
            ...                           torch.nn.Linear(16, 4))
            >>> lines = check_init(net, torch.randn(64, 8)).verdict({"max_dead_fraction": 0.9})
            >>> lines[0]
            'lightning_init: init check: OK, no problem found in 3 module outputs'
            >>> lines[1]  # doctest: +ELLIPSIS
            '  output `2` std ...'
            >>> [x.split(" (")[0] for x in lines if "dependence" in x]  # doctest: +ELLIPSIS
            ['  input dependence down to ...']
        """
        limits = thresholds or {}
        if not self.ok:
            lines = [f"lightning_init: init check: {len(self.problems)} problem(s)"]
            return lines + [f"  - {problem.message}" for problem in self.problems]
        margins = [*_output_margin(self.layers), *_loss_margin(self, limits),
                   *_layer_margins(self.layers, limits)]
        head = f"lightning_init: init check: OK, no problem found in {len(self.layers)} module " \
               "outputs"
        return [head, *(f"  {margin}" for margin in margins),
                *(f"  note: {note}" for note in self.notes)]

    def __str__(self) -> str:
        return "\n".join([table(self._HEADER, self._rows()), "", *self._summary_lines()])

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        """The table and the verdicts for ``rich``: ``Console().print(report)``; the rows of
        layers named by a problem in red.

        Example:
            >>> import io, torch
            >>> from rich.console import Console
            >>> from lightning_init.check import check_init
            >>> console = Console(file=io.StringIO(), width=160)
            >>> console.print(check_init(torch.nn.Linear(4, 3), torch.randn(8, 4)))
            >>> "init check: OK, no problem found" in console.file.getvalue()
            True
        """
        from rich.text import Text

        yield self.rich_table()
        for line in self._summary_lines():
            yield Text(line, style="red" if line.startswith("  - ") else "")

    def rich_table(self) -> Any:
        """The per-layer table alone, as a ``rich.table.Table``; layers named by a problem in
        red."""
        from rich.table import Table

        table = Table(title="lightning_init: init check", show_lines=False)
        for column in self._HEADER:
            table.add_column(column, justify="left" if column in ("layer", "type") else "right")
        problem_layers = {name for problem in self.problems for name in problem.layers}
        for row, layer in zip(self._rows(), self.layers, strict=True):
            table.add_row(*row, style="red" if layer.name in problem_layers else None)
        return table

    def to_markdown(self) -> str:
        """The report in markdown (TensorBoard's text tab renders it): the verdict first, then
        the problems, the initial loss and the notes, then the table, without its empty columns.

        Example:
            >>> import torch
            >>> from lightning_init.check import check_init
            >>> markdown = check_init(torch.nn.Linear(4, 3), torch.randn(8, 4)).to_markdown()
            >>> lines = markdown.splitlines()
            >>> lines[0], next(line for line in lines if line.startswith("|"))
            ('**init check: OK, no problem found**', '| # | layer | type | mean | std | input dep. | grad norm | grad/weight |')
        """  # noqa: E501
        if self.ok:
            lines = ["**init check: OK, no problem found**", ""]
        else:
            lines = [f"**init check: {len(self.problems)} problem(s)**", ""]
            lines += [f"- {problem.message}" for problem in self.problems] + [""]
        for line in self._summary_lines():
            if not line.startswith(("init check:", "  - ")):  # the loss and the notes
                lines += [line, ""]
        rows = self._rows()
        kept = [i for i in range(len(self._HEADER)) if i < 3 or any(row[i] for row in rows)]
        lines.append(markdown_table([self._HEADER[i] for i in kept],
                                    [[row[i] for i in kept] for row in rows]))
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (NaN/Inf written as strings)."""
        return _jsonable(
            {
                "ok": self.ok,
                "loss": self.loss,
                "loss_source": self.loss_source,
                "expected_loss": self.expected_loss,
                "num_classes": self.num_classes,
                "problems": [asdict(problem) for problem in self.problems],
                "layers": [
                    {**asdict(layer), "grad_to_weight": layer.grad_to_weight}
                    for layer in self.layers
                ],
                "parameters": [
                    {**asdict(param), "grad_to_weight": param.grad_to_weight}
                    for param in self.parameters
                ],
                "notes": list(self.notes),
                "ignored": [asdict(problem) for problem in self.ignored],
            }
        )

    def to_json(self, *, indent: int | None = 2) -> str:
        """The report as a JSON string (``json.loads`` gives :meth:`to_dict`).

        Example:
            >>> import json, torch
            >>> from lightning_init.check import check_init
            >>> json.loads(check_init(torch.nn.Linear(4, 3), torch.randn(8, 4)).to_json())["ok"]
            True
        """
        return json.dumps(self.to_dict(), indent=indent)

    def figure(self, *, max_scale_drift: float = 100.0, max_grad_drift: float = 1000.0) -> Any:
        """A matplotlib figure of the signal's scale through the layers, forward and backward.

        Two log panels over a fixed range of at least twelve decades, the check's accepted band
        shaded: each module's output std over the first weight layer's, and each weight layer's
        gradient-to-weight norm ratio over the last one's. Weight layers are filled dots and
        named on the x axis. Built on ``matplotlib.figure.Figure`` with the Agg canvas (no
        pyplot state, no GUI).

        Args:
            max_scale_drift: the forward band, as the check's threshold of that name.
            max_grad_drift: the backward band, as the check's threshold of that name.

        Example:
            >>> import torch
            >>> from lightning_init.check import check_init
            >>> fig = check_init(torch.nn.Linear(4, 3), torch.randn(8, 4)).figure()
            >>> [axis.get_yscale() for axis in fig.axes]
            ['log', 'log']
        """
        from lightning_init.check._figure import depth_figure

        return depth_figure(self, max_scale_drift=max_scale_drift, max_grad_drift=max_grad_drift)


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
    shown = f" (limit {limit:g}x)" if limit is not None else ""
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
    the weight layers' output std from the first to the last."""
    margins = []
    weighted = [layer for layer in layers if layer.transforms
                and math.isfinite(layer.output_std) and layer.output_std > 0]
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value
