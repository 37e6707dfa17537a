"""The check in a Trainer run: check a LightningModule the way it is fed, publish, act.

Used by :class:`~lightning_init.InitCallback`; feeding the module goes through
:mod:`lightning_init._lightning`, shared with the callback.
"""

from __future__ import annotations

import os
from typing import Any

from lightning_init._lightning import (
    convert_input,
    forward_input,
    is_manual_optimization,
    muted_logging,
    precision_context,
    to_device,
)
from lightning_init._log import warn_user
from lightning_init._publishing import guarded_writes
from lightning_init.check.classes import ClassificationLosses
from lightning_init.check.ignore import apply_ignore
from lightning_init.check.measure import first_float_tensor, loss_from_step_output
from lightning_init.check.options import CheckOptions
from lightning_init.check.report import InitCheckReport
from lightning_init.check.run import PassResult, check_init, check_pass
from lightning_init.errors import InitCheckError

__all__ = ["check_lightning_module", "publish_check_report", "raise_or_warn"]


def check_lightning_module(pl_module: Any, batch: Any, options: CheckOptions) -> InitCheckReport:
    """Check a ``LightningModule`` the way it is fed.

    With a ``batch`` (the first batch of the training dataloader), runs
    ``pl_module.training_step(batch, 0)`` with ``self.log``/``self.log_dict`` muted, under the
    trainer's precision context when attached; its return (a tensor, or a dict's ``"loss"``)
    is the initial loss. With ``batch=None``, calls ``pl_module(example_input_array)`` (tuple
    unpacked, dict as keywords, like Lightning's model summary) and gradients assume the
    surrogate loss. Either input is converted by the attached trainer's precision plugin, as
    Lightning converts a training batch (``"bf16-true"``, ``"64-true"``).
    Manual optimization (``automatic_optimization=False``) would step the
    optimizers inside ``training_step``: then the forward uses ``example_input_array`` if set,
    else the batch's input (a tensor batch, the first element of a tuple, a dict whose keys
    ``forward`` takes).

    The initial-loss check uses ``options.num_classes``, or the C of the classification loss
    that ``training_step`` computes (``F.cross_entropy`` / ``F.nll_loss`` averaged over
    samples: :mod:`lightning_init.check.classes`); never a guess from the batch.

    Args:
        pl_module: the (inner, unwrapped) LightningModule.
        batch: the sample batch (moved to ``pl_module.device`` if it is elsewhere), or
            ``None``.
        options: the check's options.

    Returns:
        The :class:`InitCheckReport`.

    Raises:
        ValueError: no batch and no ``example_input_array``, or a batch the forward cannot
            take under manual optimization.

    Example:
        >>> import torch, lightning
        >>> class Classifier(lightning.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
        ...                                        torch.nn.Linear(16, 4))
        ...     def training_step(self, batch, batch_idx):
        ...         x, y = batch
        ...         loss = torch.nn.functional.cross_entropy(self.net(x), y)
        ...         self.log("train_loss", loss)
        ...         return loss
        >>> batch = (torch.randn(32, 8), torch.randint(0, 4, (32,)))
        >>> report = check_lightning_module(Classifier(), batch, CheckOptions())
        >>> report.ok, report.loss_source, report.num_classes
        (True, 'training_step', 4)
    """
    device = getattr(pl_module, "device", None)
    manual = is_manual_optimization(pl_module)
    if batch is None or manual:
        inputs = to_device(forward_input(pl_module, batch, "check"), device)
        inputs = convert_input(pl_module, inputs)
        report = check_init(pl_module, inputs, num_classes=None, ignore=options.ignore,
                            **options.thresholds)
        if manual:
            report.notes.append("manual optimization: training_step not run (it would step the "
                                "optimizers); the forward was measured")
        return report

    batch = convert_input(pl_module, to_device(batch, device))

    losses = ClassificationLosses()

    def run() -> PassResult:
        with muted_logging(pl_module), precision_context(pl_module), losses.recording():
            step_output = pl_module.training_step(batch, 0)
        loss = loss_from_step_output(step_output)
        if loss is None:
            if first_float_tensor(step_output) is None:
                raise ValueError(
                    f"check: {type(pl_module).__name__}.training_step returned "
                    f"{type(step_output).__name__}, not a loss tensor or a dict with 'loss'; "
                    f"set `self.example_input_array` to check the forward instead"
                )
            return None, "surrogate", step_output
        return loss, "training_step", loss

    def classes_from_loss(_output: Any, _shapes: list[tuple[int, ...]]) -> int | None:
        return losses.classes

    report = check_pass(pl_module, run, batch, options.thresholds, options.num_classes,
                        None if options.num_classes is not None else classes_from_loss,
                        loss_term=lambda: losses.term)
    return apply_ignore(report, options.ignore)


def publish_check_report(
    report: InitCheckReport, trainer: Any, options: CheckOptions | None = None
) -> None:
    """Show the report of a Trainer run: rank zero only.

    On the console, when all is well, the compact verdict (:meth:`InitCheckReport.verdict`:
    one line and the margins nearest each limit); when something is wrong, the per-layer table
    with the problem layers in red. For every ``TensorBoardLogger`` in ``trainer.loggers`` the
    markdown table as text (``lightning_init/check``) and the depth figure
    (``lightning_init/check_depth``); a JSON copy ``init_check.json`` in the first logger's
    ``log_dir``. Never calls ``trainer.log_dir`` (it broadcasts, and only rank zero gets here).

    A write that fails (a full disk, an unwritable directory) does not raise: the others still
    run, and one warning names what could not be written and why.

    Args:
        report: the check's report.
        trainer: the ``lightning.Trainer``.
        options: the check's options: their thresholds are shown with the margins, and the
            problems are left to :func:`raise_or_warn` (printed once, in its warning or error).
            Without them the problems are printed here.

    Example:
        >>> import torch, lightning
        >>> trainer = lightning.Trainer(logger=False, enable_progress_bar=False)
        >>> report = check_init(torch.nn.Linear(2, 2), torch.randn(4, 2))
        >>> import contextlib, io
        >>> console_output = io.StringIO()
        >>> with contextlib.redirect_stdout(console_output):
        ...     publish_check_report(report, trainer)
        >>> print(console_output.getvalue())  # doctest: +ELLIPSIS
        lightning_init: init check: OK, no problem found in 1 module outputs
          output the model std ...
          full table: print(InitCallback.check_report)
        <BLANKLINE>
    """
    if not getattr(trainer, "is_global_zero", True):
        return
    with guarded_writes("the init check's report") as attempt:
        where = _publish_to_loggers(report, trainer, attempt)
        with attempt("the console table"):
            _print(report, where, options)


def _publish_to_loggers(report: InitCheckReport, trainer: Any, attempt: Any) -> list[str]:
    """The text, figure and JSON to the loggers, each write guarded; returns where the full
    table went."""
    where: list[str] = []
    json_written = False
    for logger in getattr(trainer, "loggers", []) or []:
        if _is_tensorboard(logger):
            with attempt(f"{type(logger).__name__} text and figure 'lightning_init/check*'"):
                experiment = logger.experiment
                experiment.add_text("lightning_init/check", report.to_markdown(), global_step=0)
                experiment.add_figure(
                    "lightning_init/check_depth", report.figure(), global_step=0
                )
                experiment.flush()
                if not where:
                    where.append("TensorBoard, TEXT tab, lightning_init/check")
        log_dir = getattr(logger, "log_dir", None)
        if not json_written and log_dir:
            path = os.path.join(log_dir, "init_check.json")
            with attempt(path):
                os.makedirs(log_dir, exist_ok=True)
                with open(path, "w", encoding="utf-8") as file:
                    file.write(report.to_json())
                where.append(path)
            json_written = True
    return where


def _print(report: InitCheckReport, where: list[str], options: CheckOptions | None) -> None:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # logs and notebooks: do not squeeze the table into 80 columns
        console = Console(width=160, soft_wrap=True)
    if report.ok:
        lines = report.verdict(None if options is None else options.thresholds)
        table_at = " and ".join(where) or "print(InitCallback.check_report)"
        console.print("\n".join([*lines, f"  full table: {table_at}"]), highlight=False,
                      markup=False)
        return
    if options is None:  # nobody else will say what is wrong: the table and the problems
        console.print(report)
        return
    console.print(report.rich_table())
    action = "error" if options.on_fail == "raise" else "warning"
    heading = report.verdict()[0]
    console.print(f"{heading}: the {action} below says which and what to do", style="red",
                  highlight=False, markup=False)



def _is_tensorboard(logger: Any) -> bool:
    from lightning.pytorch.loggers import TensorBoardLogger

    return isinstance(logger, TensorBoardLogger)


def raise_or_warn(report: InitCheckReport, options: CheckOptions) -> None:
    """Act on ``options.on_fail`` when the report has problems (used by the callback).

    Raises:
        InitCheckError: ``on_fail="raise"`` and problems were found; ``.report`` is attached.

    Example:
        >>> import torch
        >>> raise_or_warn(check_init(torch.nn.Linear(2, 2), torch.randn(4, 2)), CheckOptions())
    """
    if report.ok:
        return
    message = "lightning_init init check found {} problem(s):\n{}".format(
        len(report.problems), "\n".join(f"  - {problem.message}" for problem in report.problems))
    if options.on_fail == "raise":
        raise InitCheckError(message, report=report)
    warn_user(f"{message}\nTraining goes on; check={{'on_fail': 'raise'}} stops before the first"
              " step.")
