"""The callback's use of the check and the diagnostics: their options from its arguments, and
the check run on every rank with one verdict for all (``on_fail="raise"`` raises on every rank
if one fails).

The check and the diagnostics are looked up here by their public names (tests stand in for
them by patching this module)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.seed import isolate_rng

from lightning_init._lightning import SampleUnavailable, find_sample_batch
from lightning_init.check import (
    CheckOptions,
    InitCheckReport,
    check_lightning_module,
    publish_check_report,
    raise_or_warn,
)
from lightning_init.diagnostics import DiagnosticsOptions, TrainingDiagnostics
from lightning_init.errors import InitCheckError

__all__ = ["check_options", "diagnostics_for", "run_check"]

_log = logging.getLogger("lightning_init.callback")


def check_options(check: bool | Mapping[str, Any] | CheckOptions) -> CheckOptions | None:
    """The check's options from ``InitCallback(check=...)``; ``None`` when it is off."""
    return CheckOptions.from_arg(check)


def diagnostics_for(
    diagnostics: bool | Mapping[str, Any] | DiagnosticsOptions,
) -> TrainingDiagnostics | None:
    """The diagnostics callback of ``InitCallback(diagnostics=...)``; ``None`` when off."""
    options = DiagnosticsOptions.from_arg(diagnostics)
    return None if options is None else TrainingDiagnostics(options)


def run_check(
    trainer: Trainer, pl_module: LightningModule, options: CheckOptions, *, asked: bool
) -> InitCheckReport | None:
    """The check on every rank; ``on_fail="raise"`` raises on all ranks if one fails. ``None``
    when it could not run (one line said why)."""
    report = _checked(trainer, pl_module, options, asked)
    if report is not None and trainer.is_global_zero:
        publish_check_report(report, trainer, options)
    failed = report is not None and not report.ok and options.on_fail == "raise"
    if trainer.strategy.reduce_boolean_decision(failed, all=False) and not failed:
        raise InitCheckError("the init check failed on another rank; see rank 0's report")
    if report is not None and (failed or (not report.ok and trainer.is_global_zero)):
        raise_or_warn(report, options)  # raises when it failed here, else warns
    return report


def _checked(
    trainer: Trainer, pl_module: LightningModule, options: CheckOptions, asked: bool
) -> InitCheckReport | None:
    """The check's report, or ``None`` when it cannot run: then one line says why."""
    try:
        sample = find_sample_batch(trainer, pl_module, pl_module.device, example_first=False)
        why = "no sample batch: no training dataloader and no `example_input_array`"
    except SampleUnavailable as error:
        sample, why = None, str(error)
    if sample is None and getattr(pl_module, "example_input_array", None) is None:
        _step_aside(trainer, why, asked)
        return None
    try:
        with isolate_rng():
            return check_lightning_module(
                pl_module, None if sample is None else sample.batch, options
            )
    except Exception as error:  # the check never stops a valid fit
        first_line = (str(error).strip().splitlines() or [""])[0]
        _step_aside(trainer, f"{type(error).__name__}: {first_line}", asked)
        return None


def _step_aside(trainer: Trainer, why: str, asked: bool) -> None:
    """One line on rank 0: a warning when the user configured the check, else a log line."""
    if not trainer.is_global_zero:
        return
    message = f"InitCallback: the init check did not run ({why}); training goes on."
    if asked:
        warnings.warn(message, UserWarning, stacklevel=4)
    else:
        _log.warning(message)
