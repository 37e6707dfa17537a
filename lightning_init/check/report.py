"""The init check's records and report: tables, markdown, JSON and the depth figure."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from lightning_init.check._render import markdown, rich_lines, rich_table, text, verdict_lines
from lightning_init.check.records import CheckProblem, LayerRecord, ParameterRecord

__all__ = ["CheckProblem", "InitCheckReport", "LayerRecord", "ParameterRecord"]


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
        # The package's one lazy import that closes a cycle (suggest -> run -> report): the
        # report is the data of a check, the suggestion a second check run on a deep copy.
        from lightning_init.check.suggest import suggest_policy

        return suggest_policy(self, model, inputs, **options)

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
        return verdict_lines(self, thresholds)

    def __str__(self) -> str:
        return text(self)

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
        yield from rich_lines(self)

    def rich_table(self) -> Any:
        """The per-layer table alone, as a ``rich.table.Table``; layers named by a problem in
        red."""
        return rich_table(self)

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
        return markdown(self)

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
        gradient-to-weight norm ratio over that of the last one below the output layers (the
        output layers, left out of the check's depth trends, are ringed). Weight layers are
        filled dots and named on the x axis. Built on ``matplotlib.figure.Figure`` with the Agg
        canvas (no pyplot state, no GUI).

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


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value
