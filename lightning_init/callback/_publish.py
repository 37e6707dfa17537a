"""What the callback tells the user and the loggers: one console line per policy report, the
hyperparameters ``lightning_init/policy`` and ``lightning_init/fingerprint`` (with the check's
numbers as HParams metrics), and the applied table as TensorBoard text. Every write goes
through :func:`~lightning_init._publishing.guarded_writes`."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_init._log import LOGGER
from lightning_init._publishing import guarded_writes

__all__ = ["announce", "publish_record"]


@runtime_checkable
class _Markdown(Protocol):
    """A report that renders as a Markdown table (:class:`~lightning_init.policy.InitReport`)."""

    def to_markdown(self) -> str: ...


def announce(trainer: Trainer, reports: list[object]) -> None:
    """One console line per policy report: what was set, what was left, where the table is."""
    tensorboard = any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers)
    where = "TensorBoard, TEXT tab, lightning_init/policy" if tensorboard else None
    for report in reports:
        summary = getattr(report, "summary", None)
        if callable(summary):
            LOGGER.info(summary(where))


def _log_hyperparams(logger: Any, params: dict[str, Any], metrics: dict[str, float]) -> None:
    """``params``, with ``metrics`` as TensorBoard HParams metrics (runs sort by them); other
    loggers get the metrics as values at step 0."""
    if not metrics:
        logger.log_hyperparams(params)
    elif isinstance(logger, TensorBoardLogger):
        if getattr(logger, "_default_hp_metric", False):
            metrics = {"hp_metric": -1, **metrics}  # Lightning's placeholder, kept
        logger.log_hyperparams(params, metrics=metrics, step=0)
    else:
        logger.log_hyperparams(params)
        logger.log_metrics(metrics, step=0)


def _module_hparams(trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
    """The hyperparameters Lightning logs after on_fit_start (module's, then datamodule's)."""
    merged: dict[str, Any] = {}
    if getattr(pl_module, "_log_hyperparams", False):
        merged.update(pl_module.hparams_initial)
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None and getattr(datamodule, "_log_hyperparams", False):
        merged.update(datamodule.hparams_initial)
    merged.pop("_class_path", None)
    return merged


def publish_record(
    trainer: Trainer,
    pl_module: LightningModule,
    hparams: dict[str, Any],
    reports: list[object],
    metrics: dict[str, float],
    appendix: str = "",
) -> None:
    """Hyperparameters to every logger; the applied tables (and ``appendix``) as TensorBoard
    text, once."""
    text = "\n\n".join(report.to_markdown() for report in reports if isinstance(report, _Markdown))
    if text and appendix:
        text += appendix
    # TensorBoard's HParams view reads the first session a run writes, and Lightning writes
    # the module's hyperparameters after on_fit_start: write them here, ours added.
    merged = {**_module_hparams(trainer, pl_module), **hparams}
    with guarded_writes("the initialization's record") as attempt:
        for logger in trainer.loggers:
            with attempt(f"the hyperparameters to {type(logger).__name__}"):
                _log_hyperparams(logger, merged, metrics)
            if text and trainer.is_global_zero and isinstance(logger, TensorBoardLogger):
                with attempt("TensorBoard text 'lightning_init/policy'"):
                    logger.experiment.add_text(
                        "lightning_init/policy", text, global_step=trainer.global_step
                    )
