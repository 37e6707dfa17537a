"""The init check's records and report: tables, markdown, JSON and the depth figure."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

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
        loss_source: where the loss came from: ``"training_step"``, ``"loss_fn"`` or
            ``"surrogate"`` (a fixed random projection of the output, see ``check_init``).
        expected_loss: ``ln(num_classes)`` when the cross-entropy check applied.
        num_classes: the number of classes used for that check.
        notes: remarks that are not problems (what was skipped and why).

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
    _subject: Any = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """``True`` when the check found no problem."""
        return not self.problems

    def suggest_policy(self, model: Any = None, inputs: Any = None, **options: Any) -> Any:
        """A policy that fixes what the check found, verified on a deep copy before offered.

        See :func:`lightning_init.check.suggest.suggest_policy` (``model`` and ``inputs``
        default to those the check ran on).

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
        if self.ok:
            lines.append("init check: OK, no problem found")
        else:
            lines.append(f"init check: {len(self.problems)} problem(s)")
            lines.extend(f"{bullet}{problem.message}" for problem in self.problems)
        return lines

    def __str__(self) -> str:
        rows = [list(self._HEADER), *self._rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self._HEADER))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join([*lines, "", *self._summary_lines()])

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
        from rich.table import Table
        from rich.text import Text

        table = Table(title="lightning_init: init check", show_lines=False)
        for column in self._HEADER:
            table.add_column(column, justify="left" if column in ("layer", "type") else "right")
        problem_layers = {name for problem in self.problems for name in problem.layers}
        for row, layer in zip(self._rows(), self.layers, strict=True):
            table.add_row(*row, style="red" if layer.name in problem_layers else None)
        yield table
        for line in self._summary_lines():
            yield Text(line, style="red" if line.startswith("  - ") else "")

    def to_markdown(self) -> str:
        """The report as a markdown table plus the verdicts (TensorBoard's text tab renders it).

        Example:
            >>> import torch
            >>> from lightning_init.check import check_init
            >>> print(check_init(torch.nn.Linear(4, 3), torch.randn(8, 4)).to_markdown())
            ... # doctest: +ELLIPSIS
            | # | layer | type | mean | std | ...
        """
        lines = ["| " + " | ".join(self._HEADER) + " |",
                 "|" + "---|" * len(self._HEADER)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                  for row in self._rows()]
        lines.append("")
        for line in self._summary_lines(bullet="- "):
            lines.append(line)
            if not line.startswith("- "):
                lines.append("")  # markdown paragraphs
        return "\n".join(lines).rstrip() + "\n"

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

    def figure(self) -> Any:
        """A matplotlib figure: activation std and gradient norm against depth, log y scale.

        Built on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot state, no GUI).
        Vanishing shows as lines falling with depth, exploding as lines rising.

        Example:
            >>> import torch
            >>> from lightning_init.check import check_init
            >>> fig = check_init(torch.nn.Linear(4, 3), torch.randn(8, 4)).figure()
            >>> [axis.get_yscale() for axis in fig.axes]
            ['log', 'log']
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(8, 6))
        FigureCanvasAgg(figure)
        act_axis, grad_axis = figure.subplots(2, 1, sharex=True)
        depth = [layer.index for layer in self.layers]
        stds = [_positive(layer.output_std) for layer in self.layers]
        act_axis.plot(depth, stds, marker=".", label="activation std")
        act_axis.set_yscale("log")
        act_axis.set_ylabel("output std")
        act_axis.set_title("init check: activation std and gradient norm by depth")
        act_axis.grid(True, which="both", alpha=0.3)
        grad_points = [(layer.index, _positive(layer.grad_norm)) for layer in self.layers
                       if layer.grad_norm is not None]
        if grad_points:
            depths, norms = zip(*grad_points, strict=True)
            grad_axis.plot(depths, norms, marker=".", color="tab:red", label="grad norm")
        grad_axis.set_yscale("log")
        grad_axis.set_ylabel("gradient norm")
        grad_axis.set_xlabel("depth (module index, forward order)")
        grad_axis.grid(True, which="both", alpha=0.3)
        figure.tight_layout()
        return figure


def _positive(value: float | None) -> float:
    """Log axes cannot show 0, NaN or Inf: plot those as NaN (a gap)."""
    if value is None or not math.isfinite(value) or value <= 0:
        return math.nan
    return value


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
