"""``TrainingDiagnostics``: the Lightning ``Callback`` that decides when the diagnostics measure,
reduce and write.

At a logged optimizer step ``t`` (``trainer.global_step`` when ``on_before_optimizer_step`` runs;
under manual optimization, every optimizer step of a batch that starts at a logged step, each
labelled with its own ``t``):

1. ``on_train_batch_start``: forward hooks on the watched leaf modules (``activations``) for the
   micro-batches of the step; they are removed when the step has been written.
2. ``on_before_optimizer_step`` (after backward, AMP unscaling and accumulation, before clipping
   and the step): weight and gradient statistics of the optimizer's watched parameters, their
   histograms, and a copy of the weights for the update ratio, all on device.
3. ``on_train_batch_end`` (after the step): ``||w_(t+1) - w_t||``, the cross-rank reduction of
   the activation statistics, then ONE host transfer, the alerts, and the writes at step ``t``.

Under DDP the gradients and weights are equal on every rank, so only rank zero reads them. Under
FSDP2 and tensor parallelism (DTensor parameters) every rank measures its shards and the full
tensors' statistics come from the reduced partial sums (``_sharded``: a few collectives per
logged step, on every rank); rank zero writes. The activations are all-reduced on every rank,
also on a rank whose diagnostics failed (a rank that skipped the collectives would leave the
others waiting).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from torch import nn
from typing_extensions import override

from lightning_init._log import warn_user
from lightning_init.diagnostics._activations import ActivationWatch
from lightning_init.diagnostics._alerts import (
    Alerts,
    DiagnosticsWarning,
    NonFiniteError,
    check_gradient,
    element_step_bound,
)
from lightning_init.diagnostics._charts import Charts
from lightning_init.diagnostics._measure import Measured, Measurer
from lightning_init.diagnostics._options import DiagnosticsOptions
from lightning_init.diagnostics._readout import Readout
from lightning_init.diagnostics._selection import Watched, select
from lightning_init.diagnostics._sharded import measure_sharded, reduce_sharded_updates
from lightning_init.diagnostics._writers import LoggerWriters
from lightning_init.runtime.distributed import is_dtensor
from lightning_init.runtime.sparse import stored_values

__all__ = ["TrainingDiagnostics"]


class TrainingDiagnostics(Callback):
    """Layer-wise statistics of early training, written to the trainer's loggers.

    Logs per watched parameter (tag ``lightning_init/<statistic>/<qualified name>``):
    ``weight_norm|std|mean|absmax``, ``grad_norm|std|absmax``, ``grad_nonfinite`` (when not 0),
    ``update_ratio`` (``||w_t - w_(t-1)|| / ||w_(t-1)||``), histograms
    ``weight_hist``/``grad_hist``; per watched leaf module ``act_mean|std|dead_fraction``. The
    step of every value is the optimizer step index (``trainer.global_step`` before the step). A
    TensorBoard logger gets everything plus a Custom Scalars page, one chart per statistic and
    layer group; other loggers get the scalars through ``log_metrics``; with no logger the
    alerts still work. Alerts go to the ``lightning_init`` logger on rank zero: per logged step
    one line per kind of problem (the worst parameter, how many, what to do), each kind once
    unless it spreads or gets ten times worse; NaN/Inf gradients are a
    :class:`DiagnosticsWarning` once, or stop the run with ``on_nonfinite="raise"``. The
    checkpoint keeps which alerts were raised, so a resumed run does not repeat them.

    Manual optimization works: a batch is logged when ``global_step`` is a logged step at its
    start; then each ``optimizer.step()`` inside it reads the parameters of that optimizer, and
    its values are written at its own step (a GAN's discriminator at ``t``, its generator at
    ``t + 1``): every optimizer is measured in the same batches.
    DTensor parameters (FSDP2, tensor parallel) are measured as their full tensors; other
    sharded parameters (FSDP1, DeepSpeed) as the local shard. Sparse gradients
    (``nn.Embedding(sparse=True)``) are measured as their dense equivalents from their values.

    A failure inside the diagnostics never stops training: they warn and stop.

    Args:
        options: :class:`DiagnosticsOptions`, or what :meth:`DiagnosticsOptions.from_arg`
            takes (``True`` for the defaults, a mapping of options).

    Example:
        >>> from lightning.pytorch import Trainer
        >>> diagnostics = TrainingDiagnostics({"every_n_steps": 2, "until_step": 4})
        >>> trainer = Trainer(callbacks=[diagnostics], logger=False)
        >>> diagnostics.options.logged_steps(), diagnostics.hook_count
        ([0, 1, 2, 4], 0)
        >>> diagnostics.state_key
        "TrainingDiagnostics{'every_n_steps': 2, 'until_step': 4}"
    """

    def __init__(self, options: bool | Mapping[str, Any] | DiagnosticsOptions = True) -> None:
        if not isinstance(options, DiagnosticsOptions):
            parsed = DiagnosticsOptions.from_arg(options)
            if parsed is None:
                raise ValueError("TrainingDiagnostics needs options; diagnostics=False is off")
            options = parsed
        self.options = options
        self.logged_steps: list[int] = []
        self._alerts = Alerts()
        self._watched: Watched | None = None  # collected at the start of each fit
        self._sharded = False  # DTensor parameters: every rank measures, collectively
        self._activations = ActivationWatch()
        self._reduce_step: int | None = None  # a logged step whose activations await reduction
        # Manual optimization: the batch's first step when the batch is logged, else None.
        self._batch_step: int | None = None
        self._measurer = Measurer(options)
        self._pending: list[Measured] = []
        self._readout = Readout(options)
        self._writers = LoggerWriters()
        self._charts = Charts([], [])  # the watched model's, from the start of each fit
        self._failed = False
        self._finished = False

    @property
    def hook_count(self) -> int:
        """How many forward hooks are registered right now (0 outside logged steps)."""
        return self._activations.hook_count

    # ------------------------------------------------------------------ state
    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(**_changed_options(self.options))

    @override
    def state_dict(self) -> dict[str, Any]:
        """The alerts already raised, so that a resumed run does not repeat them."""
        return {"alerts_raised": sorted(self._alerts.raised)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self._alerts = Alerts(state_dict.get("alerts_raised", ()))

    # ------------------------------------------------------------------ Lightning hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Start of a ``fit``: forget the previous run's parameters and pending work."""
        if stage != "fit":
            return
        self._release()
        self._watched = None
        self._finished = False

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Collect the watched parameters and leaf modules (on their final device)."""
        if self._finished_at(trainer.global_step):
            return
        self._collect(pl_module)

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Register the activation hooks for the micro-batches of a logged step."""
        step = trainer.global_step
        logged = self.options.is_logged_step(step)
        manual = not getattr(pl_module, "automatic_optimization", True)
        self._batch_step = step if manual and logged else None
        if self._failed or self._finished_at(step):
            return
        if self._watched is None:
            self._collect(pl_module)
        if not self.options.activations:
            return
        if logged:
            self._activations.start(trainer.global_step)
        else:
            self._activations.stop()

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Read the weights and the (unscaled, accumulated) gradients at a logged step."""
        step = trainer.global_step
        if self.options.on_nonfinite == "raise":
            _raise_if_nonfinite(trainer, pl_module, optimizer, self.options)
        manual = not getattr(pl_module, "automatic_optimization", True)
        if manual:  # the batch decides; each optimizer's values keep their own step
            logged, batch_step = self._batch_step is not None, self._batch_step or 0
        else:
            logged, batch_step = self.options.is_logged_step(step), step
        if self._finished_at(batch_step) or not logged:
            return
        if self.options.activations:
            # Every rank reduces the activations at the end of this step, even after a local
            # failure: a rank that skipped the collective would leave the others waiting.
            self._reduce_step = batch_step
        if self._failed or not (trainer.is_global_zero or self._sharded):
            return
        if self._watched is None:
            self._collect(pl_module)
        try:
            self._pending.append(self._measure(step, optimizer))
        except Exception as error:  # never stop training
            self._fail(f"could not measure step {step}: {error!r}")

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:
        """After a logged optimizer step: one host transfer, the alerts and the writes."""
        activation_rows = None
        if self._reduce_step is not None:
            self._reduce_step = None
            activation_rows = self._activations.reduce()
            self._activations.stop()
        if self._activations.error is not None and not self._failed:
            self._fail(f"an activation hook failed: {self._activations.error!r}")
        if self._sharded and self._pending and not self._failed:
            self._reduce_sharded_updates(trainer.is_global_zero)
        if self._pending:
            pending, self._pending = self._pending, []
            if not self._failed:
                try:
                    self._flush(trainer, pending, activation_rows)
                except NonFiniteError:
                    raise  # on_nonfinite="raise": the user asked to stop
                except Exception as error:  # never stop training
                    self._fail(f"could not write step {pending[0].step}: {error!r}")
            self._activations.stop()
        if self._finished_at(trainer.global_step):
            self._release()

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Remove every hook and drop the pending copies."""
        self._release()

    @override
    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Remove every hook and drop the pending copies."""
        self._release()

    # ------------------------------------------------------------------ steps
    def _collect(self, pl_module: nn.Module) -> None:
        self._watched = select(pl_module, self.options)
        self._sharded = any(is_dtensor(param) for _, param in self._watched.parameters)
        self._activations.watch(self._watched.leaf_modules, self._watched.device)
        self._charts = _charts_for(self._watched, self.options, pl_module)

    def _measure(self, step: int, optimizer: torch.optim.Optimizer) -> Measured:
        """The watched parameters of ``optimizer`` not measured yet at this step."""
        watched = self._watched or Watched([], [], frozenset(), torch.device("cpu"))
        params = _unmeasured(watched, optimizer, self._pending)
        self._readout.step_bounds.update(_step_bounds(optimizer, dict(params)))
        if self._sharded:
            return measure_sharded(step, params, self.options)
        return self._measurer.measure(step, params, watched.row_sparse)

    def _reduce_sharded_updates(self, keep: bool) -> None:
        """Every rank: the sharded weights' change norms; only rank zero keeps them, to write."""
        try:
            reduce_sharded_updates(self._pending)
        except Exception as error:  # never stop training
            self._fail(f"could not measure step {self._pending[0].step}: {error!r}")
        self._pending = self._pending if keep else []

    @torch.no_grad()
    def _flush(
        self, trainer: Trainer, pending: list[Measured], activation_rows: torch.Tensor | None
    ) -> None:
        """Rank zero: the step's statistics to the host in one transfer, alerts, writes."""
        blocks = self._readout.transfer(pending, activation_rows)
        if blocks is None:
            return
        names = None
        if activation_rows is not None:
            names = [name for name, _ in self._activations.modules]
        by_step = self._readout.values(pending, blocks, names, self._alerts)
        _write_steps(self._writers, trainer, by_step, self._charts, self.logged_steps)
        if by_step:  # one report per logged batch, at its first step
            self._alerts.report(min(by_step), self.options.on_nonfinite)

    # ------------------------------------------------------------------ life cycle
    def _finished_at(self, step: int) -> bool:
        if step > self.options.until_step and not self._pending:
            if not self._finished:
                self._release()
                self._finished = True
            return True
        return self._finished

    def _release(self) -> None:
        self._activations.stop()
        self._pending = []
        self._measurer.clear()
        self._writers.close()

    def _fail(self, message: str) -> None:
        self._failed = True
        self._release()
        warn_user(f"lightning_init diagnostics stopped ({message}); training goes on.",
                  DiagnosticsWarning)


def _step_bounds(optimizer: torch.optim.Optimizer, params: dict[str, nn.Parameter]) -> (
    dict[str, float]
):
    """Parameter name -> the element step bound of its (normalized) optimizer."""
    bounds: dict[int, float] = {}
    for group in optimizer.param_groups:
        bound = element_step_bound(optimizer, group)
        if bound is not None:
            bounds.update((id(p), bound) for p in group["params"])
    return {name: bounds[id(p)] for name, p in params.items() if id(p) in bounds}


@torch.no_grad()
def _raise_if_nonfinite(
    trainer: Trainer, pl_module: nn.Module, optimizer: torch.optim.Optimizer,
    options: DiagnosticsOptions,
) -> None:
    """``on_nonfinite="raise"``: one fused norm of the optimizer's gradients, one host sync;
    the parameters named when one is not finite. Steps a ``GradScaler`` skips are its own."""
    if getattr(getattr(trainer, "precision_plugin", None), "scaler", None) is not None:
        return
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    named = [(name, p) for name, p in pl_module.named_parameters()
             if id(p) in in_optimizer and p.grad is not None]
    if not named:
        return
    grads = [stored_values(p.grad) for _, p in named]
    if bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()):
        return
    alerts = Alerts()
    for (name, p), grad in zip(named, grads, strict=True):
        bad = int((~torch.isfinite(grad)).sum())
        check_gradient(alerts, options, name, norm=0.0 if bad else 1.0, nonfinite=bad,
                       numel=p.numel())
    alerts.report(trainer.global_step, "raise")


def _charts_for(watched: Watched, options: DiagnosticsOptions, pl_module: nn.Module) -> Charts:
    """The Custom Scalars layout of the watched parameters trained now or held by an optimizer
    (a layer unfrozen later by ``requires_grad_``), and (when on) of the leaf modules."""
    trainer = getattr(pl_module, "_trainer", None)
    in_optimizers = {id(p) for optimizer in getattr(trainer, "optimizers", None) or []
                     for group in optimizer.param_groups for p in group["params"]}
    return Charts(
        [(name, p.dim()) for name, p in watched.parameters
         if p.requires_grad or id(p) in in_optimizers],
        [(name, isinstance(module, (nn.ReLU, nn.ReLU6)))
         for name, module in watched.leaf_modules] if options.activations else [],
        update_ratio=options.update_ratio,
    )


def _unmeasured(
    watched: Watched, optimizer: torch.optim.Optimizer, pending: list[Measured]
) -> list[tuple[str, nn.Parameter]]:
    """The watched parameters ``optimizer`` trains now (in a group, ``requires_grad`` on: a
    layer unfrozen mid-run counts from then on) not measured yet at this step."""
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    measured = {name for entry in pending for name in entry.names}
    return [
        (name, p)
        for name, p in watched.parameters
        if id(p) in in_optimizer and p.requires_grad and name not in measured
    ]


def _write_steps(
    writers: Any, trainer: Trainer, by_step: dict[int, Any], charts: Any, logged: list[int]
) -> None:
    """Each step's values to the loggers, each step added to ``logged`` first."""
    for step, values in by_step.items():
        logged.append(step)
        writers.write(
            getattr(trainer, "loggers", None) or [], step, values.scalars, values.histograms,
            charts,
        )


def _changed_options(options: DiagnosticsOptions) -> dict[str, Any]:
    """The options that differ from the defaults, by name (the callback's state key)."""
    defaults = DiagnosticsOptions()
    return {
        option.name: getattr(options, option.name)
        for option in dataclasses.fields(options)
        if getattr(options, option.name) != getattr(defaults, option.name)
    }
