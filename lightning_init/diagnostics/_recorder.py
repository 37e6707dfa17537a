"""``TrainingDiagnostics``: early-training statistics driven by Lightning's hooks.

Not a ``Callback``: ``InitCallback`` owns one and forwards its hooks (same signatures).

At a logged optimizer step ``t`` (``trainer.global_step`` when ``on_before_optimizer_step`` runs):

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
logged step, on every rank); rank zero writes. The activations are all-reduced (two small
collectives per logged step, on every rank, also on a rank whose diagnostics failed: a rank
that skipped them would leave the others waiting).
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lightning_init._distributed import is_dtensor
from lightning_init._hooks import HookHandles
from lightning_init._sparse import coalesced, stored_values
from lightning_init.diagnostics._alerts import Alerts, DiagnosticsWarning
from lightning_init.diagnostics._options import DiagnosticsOptions
from lightning_init.diagnostics._sharded import (
    Precomputed,
    ShardedSnapshot,
    sharded_histograms,
    sharded_rows,
)
from lightning_init.diagnostics._stats import (
    ABSMAX,
    EXACT_STD,
    NORM,
    SUM,
    TensorBatch,
    moments_from_sums,
    sparse_histograms,
    sparse_stats,
)
from lightning_init.diagnostics._writers import make_writer

__all__ = ["TrainingDiagnostics"]

_ACT_STATS = ("act_mean", "act_std", "act_dead_fraction")


class _Tags(NamedTuple):
    """The scalar tags of one parameter: ``<statistic>/<qualified name>``."""

    weight_norm: str
    weight_std: str
    weight_mean: str
    weight_absmax: str
    grad_norm: str
    grad_std: str
    grad_absmax: str
    grad_nonfinite: str
    update_ratio: str

    @classmethod
    def of(cls, name: str) -> _Tags:
        return cls(*(f"{statistic}/{name}" for statistic in cls._fields))


_WEIGHT_STATS = _Tags._fields[:4]
_GRAD_STATS = _Tags._fields[4:8]


@dataclass
class _Pending:
    """What one optimizer call at a logged step left on device, waiting for the step's end."""

    step: int
    names: list[str]
    numels: list[int]
    weights: list[Tensor]
    weight_stats: Tensor  # [n, 4], see TensorBatch.stats
    grad_rows: list[int]  # indices (into names) of the parameters that have a gradient
    grad_stats: Tensor | None
    grads: list[Tensor]
    weight_batch: TensorBatch | None = None  # holds the snapshot for the update ratio
    histograms: list[tuple[list[str], Tensor]] = field(default_factory=list)
    grad_nonfinite: Tensor | None = None  # sharded parameters: counted with the statistics


class _ActivationRecord:
    """Per leaf module, per rank: sum, sum of squares, count and per-unit max |output|."""

    __slots__ = ("count", "sum", "sum_sq", "unit_absmax")

    def __init__(self) -> None:
        self.sum: Tensor | None = None
        self.sum_sq: Tensor | None = None
        self.count = 0
        self.unit_absmax: Tensor | None = None

    @torch.no_grad()
    def update(self, output: Tensor) -> None:
        values = output.detach().float()
        total, total_sq = values.sum(), values.pow(2).sum()
        if values.ndim >= 2:  # units: channels of images/volumes, else the last dimension
            unit_dim = 1 if values.ndim in (4, 5) else values.ndim - 1
            other = tuple(d for d in range(values.ndim) if d != unit_dim)
            unit_absmax = values.abs().amax(dim=other)
        else:
            unit_absmax = values.abs()
        if self.sum is None or self.sum_sq is None or self.unit_absmax is None:
            self.sum, self.sum_sq, self.unit_absmax = total, total_sq, unit_absmax
        else:
            self.sum, self.sum_sq = self.sum + total, self.sum_sq + total_sq
            if self.unit_absmax.shape == unit_absmax.shape:
                self.unit_absmax = torch.maximum(self.unit_absmax, unit_absmax)
        self.count += values.numel()


def _first_tensor(output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, Tensor):
                return item
    return None


def _in_order(blocks: list[Tensor], rows: list[int]) -> Tensor:
    """The rows of ``blocks`` (stacked) put back in order: row ``i`` of the stack is row
    ``rows[i]`` of the result."""
    stacked = torch.cat(blocks) if len(blocks) > 1 else blocks[0]
    if rows == sorted(rows):
        return stacked
    index = torch.tensor(rows, device=stacked.device)
    return torch.empty_like(stacked).index_copy_(0, index, stacked)


def _matches(name: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, glob) for glob in globs)


class TrainingDiagnostics:
    """Layer-wise statistics of early training, written to the trainer's loggers.

    Logs per watched parameter (qualified name in the tag, ``<statistic>/<name>``):
    ``weight_norm|std|mean|absmax``, ``grad_norm|std|absmax|nonfinite``, ``update_ratio``
    (``||w_t - w_(t-1)|| / ||w_(t-1)||``), histograms ``weight_hist``/``grad_hist``; per watched
    leaf module ``act_mean|std|dead_fraction``. The step of every value is the optimizer step
    index (``trainer.global_step`` before the step). A TensorBoard logger gets everything plus a
    custom-scalars layout with one chart per statistic comparing all layers; other loggers get
    the scalars through ``log_metrics``; with no logger the alerts still work. Alerts are
    :class:`DiagnosticsWarning` s on rank zero, each once.

    Manual optimization works: each ``optimizer.step()`` at a logged step reads the parameters of
    that optimizer. DTensor parameters (FSDP2, tensor parallel) are measured as their full
    tensors; other sharded parameters (FSDP1, DeepSpeed) as the local shard. Sparse gradients
    (``nn.Embedding(sparse=True)``) are measured as their dense equivalents from their values.

    Args:
        options: :class:`DiagnosticsOptions` (``DiagnosticsOptions.from_arg(True)`` for the
            defaults).

    Example:
        >>> options = DiagnosticsOptions.from_arg({"every_n_steps": 2, "until_step": 4})
        >>> diagnostics = TrainingDiagnostics(options)  # InitCallback forwards its hooks here
        >>> diagnostics.options.logged_steps(), diagnostics.hook_count
        ([0, 1, 2, 4], 0)
    """

    def __init__(self, options: DiagnosticsOptions) -> None:
        if not isinstance(options, DiagnosticsOptions):
            options = DiagnosticsOptions.from_arg(options)  # type: ignore[arg-type]
            if options is None:
                raise ValueError("TrainingDiagnostics needs options; diagnostics=False is off")
        self.options = options
        self.logged_steps: list[int] = []
        self._alerts = Alerts()
        self._hooks = HookHandles()
        self._watched: list[tuple[str, nn.Parameter]] | None = None
        self._sharded = False  # DTensor parameters: every rank measures, collectively
        self._leaf_modules: list[tuple[str, nn.Module]] = []
        self._activations: dict[str, _ActivationRecord] = {}
        self._activation_step: int | None = None
        self._reduce_step: int | None = None  # a logged step whose activations await reduction
        self._hook_error: BaseException | None = None
        self._device = torch.device("cpu")  # where the activations are reduced
        self._pending: list[_Pending] = []
        self._batches: dict[tuple[str, ...], tuple[list[Any], TensorBatch]] = {}
        self._tag_cache: dict[str, _Tags] = {}
        # Embedding tables: their updates touch the looked-up rows only (copied whole).
        self._row_sparse: set[str] = set()
        self._writers: dict[int, Any] = {}
        self._layout_written: set[int] = set()
        self._broken_writers: set[int] = set()
        self._failed = False
        self._finished = False

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Start of a ``fit``: forget the previous run's parameters and pending work."""
        if stage != "fit":
            return
        self._release()
        self._watched = None
        self._finished = False

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Collect the watched parameters and leaf modules (on their final device)."""
        if self._finished_at(trainer.global_step):
            return
        self._collect(pl_module)

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        """Register the activation hooks for the micro-batches of a logged step."""
        if self._failed or self._finished_at(trainer.global_step):
            return
        if self._watched is None:
            self._collect(pl_module)
        step = trainer.global_step
        if not self.options.activations:
            return
        if not self.options.is_logged_step(step):
            self._remove_activation_hooks()
            return
        if self._activation_step != step:
            self._remove_activation_hooks()
            self._activation_step = step
            self._register_activation_hooks()

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """Read the weights and the (unscaled, accumulated) gradients at a logged step."""
        step = trainer.global_step
        if self._finished_at(step) or not self.options.is_logged_step(step):
            return
        if self.options.activations:
            # Every rank reduces the activations at the end of this step, even after a local
            # failure: a rank that skipped the collective would leave the others waiting.
            self._reduce_step = step
        if self._failed or not (trainer.is_global_zero or self._sharded):
            return
        if self._watched is None:
            self._collect(pl_module)
        try:
            self._pending.append(self._measure(step, optimizer))
        except Exception as error:  # never stop training
            self._fail(f"could not measure step {step}: {error!r}")

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """After a logged optimizer step: one host transfer, the alerts and the writes."""
        activation_rows = None
        if self._reduce_step is not None:
            self._reduce_step = None
            activation_rows = self._reduce_activations()
            self._remove_activation_hooks()
        if self._hook_error is not None and not self._failed:
            self._fail(f"an activation hook failed: {self._hook_error!r}")
        if self._sharded and self._pending and not self._failed:
            self._reduce_sharded_updates()
            if not trainer.is_global_zero:
                self._pending = []
        if self._pending:
            pending, self._pending = self._pending, []
            if not self._failed:
                try:
                    self._flush(trainer, pending, activation_rows)
                except Exception as error:  # never stop training
                    self._fail(f"could not write step {pending[0].step}: {error!r}")
            self._remove_activation_hooks()
        if self._finished_at(trainer.global_step):
            self._release()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Remove every hook and drop the pending copies."""
        self._release()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Remove every hook and drop the pending copies."""
        self._release()

    def state_dict(self) -> dict[str, Any]:
        """The alerts already raised, so that a resumed run does not repeat them."""
        return {"alerts_raised": sorted(self._alerts.raised)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self._alerts = Alerts(state.get("alerts_raised", ()))

    # ------------------------------------------------------------------ internals
    @property
    def hook_count(self) -> int:
        """How many forward hooks are registered right now (0 outside logged steps)."""
        return len(self._hooks)

    def _finished_at(self, step: int) -> bool:
        if step > self.options.until_step and not self._pending:
            if not self._finished:
                self._release()
                self._finished = True
            return True
        return self._finished

    def _release(self) -> None:
        self._remove_activation_hooks()
        self._pending = []
        self._batches = {}
        for writer in self._writers.values():
            with contextlib.suppress(Exception):  # a broken file must not stop the teardown
                writer.close()

    def _remove_activation_hooks(self) -> None:
        self._hooks.remove()
        self._activations = {}
        self._activation_step = None

    def _fail(self, message: str) -> None:
        self._failed = True
        self._release()
        warnings.warn(
            f"lightning_init diagnostics stopped ({message}); training goes on.",
            DiagnosticsWarning,
            stacklevel=3,
        )

    def _collect(self, pl_module: nn.Module) -> None:
        options = self.options
        seen: set[int] = set()
        watched: list[tuple[str, nn.Parameter]] = []
        leaves: list[tuple[str, nn.Module]] = []
        row_sparse: set[str] = set()
        for module_name, module in pl_module.named_modules():
            if not _matches(module_name, options.modules) or _matches(module_name, options.exclude):
                continue
            if type(module).__module__.startswith("torchmetrics"):
                continue
            if next(module.children(), None) is None and module is not pl_module:
                leaves.append((module_name, module))
            for param_name, param in module.named_parameters(recurse=False):
                name = f"{module_name}.{param_name}" if module_name else param_name
                if id(param) in seen or not param.requires_grad:
                    continue
                if not _matches(name, options.parameters) or _matches(name, options.exclude):
                    continue
                if param.numel() == 0:
                    continue
                seen.add(id(param))
                watched.append((name, param))
                if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
                    row_sparse.add(name)
        self._watched = watched
        self._sharded = any(is_dtensor(param) for _, param in watched)
        self._leaf_modules = leaves
        self._row_sparse = row_sparse
        device = getattr(pl_module, "device", None)
        self._device = device if isinstance(device, torch.device) else torch.device("cpu")

    def _register_activation_hooks(self) -> None:
        for name, module in self._leaf_modules:
            record = _ActivationRecord()
            self._activations[name] = record

            def hook(_module: nn.Module, _inputs: Any, output: Any, record=record) -> None:
                tensor = _first_tensor(output)
                if tensor is None or not tensor.is_floating_point() or tensor.numel() == 0:
                    return
                try:
                    record.update(tensor)
                except Exception as error:  # never break the model's forward
                    self._hook_error = error

            self._hooks.add(module.register_forward_hook(hook))

    def _tags(self, name: str) -> _Tags:
        tags = self._tag_cache.get(name)
        if tags is None:
            tags = self._tag_cache[name] = _Tags.of(name)
        return tags

    def _empty_pending(self, step: int) -> _Pending:
        return _Pending(step, [], [], [], torch.zeros(0, 4), [], None, [])

    def _batch(self, kind: str, names: list[str], tensors: list[Tensor]) -> TensorBatch:
        """The layout of these tensors, built at their first logged step and reused (rebuilt
        if a tensor's shape or dtype changed, as when a model resizes its embeddings)."""
        key = (kind, *names)
        signature = [(t.shape, t.dtype) for t in tensors]
        cached = self._batches.get(key)
        if cached is None or cached[0] != signature:
            batch = TensorBatch(
                tensors,
                keep_copy=kind == "weight" and self.options.update_ratio,
                copy_max_numel=self.options.update_ratio_max_samples,
                copy_whole=[name in self._row_sparse for name in names],
            )
            cached = self._batches[key] = (signature, batch)
        return cached[1]

    @torch.no_grad()
    def _measure(self, step: int, optimizer: Any) -> _Pending:
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        measured = {name for entry in self._pending for name in entry.names}
        params = [
            (name, p)
            for name, p in self._watched or []
            if id(p) in in_optimizer and name not in measured
        ]
        if not params:
            return self._empty_pending(step)
        if self._sharded:
            return self._measure_sharded(step, params)
        names = [name for name, _ in params]
        weights = [p.detach() for _, p in params]
        weight_batch = self._batch("weight", names, weights)
        # With update_ratio, this also copies the weights: the snapshot read after the step.
        weight_stats = weight_batch.stats(weights)
        grad_rows = [i for i, (_, p) in enumerate(params) if p.grad is not None]
        grads = [params[i][1].grad.detach() for i in grad_rows]  # type: ignore[union-attr]
        # Sparse gradients (embeddings with sparse=True) are measured from their values.
        sparse = [k for k, grad in enumerate(grads) if grad.layout is not torch.strided]
        for k in sparse:
            grads[k] = coalesced(grads[k])
        dense = [k for k, grad in enumerate(grads) if grad.layout is torch.strided]
        dense_grads = [grads[k] for k in dense]
        dense_names = [names[grad_rows[k]] for k in dense]
        grad_batch = self._batch("grad", dense_names, dense_grads) if dense_grads else None
        grad_stats = None
        if grads:
            blocks = [] if grad_batch is None else [grad_batch.stats(dense_grads)]
            if sparse:
                blocks.append(sparse_stats([grads[k] for k in sparse]))
            grad_stats = _in_order(blocks, dense + sparse)
        pending = _Pending(
            step, names, [w.numel() for w in weights], weights, weight_stats, grad_rows,
            grad_stats, grads, weight_batch if self.options.update_ratio else None,
        )
        if self.options.histograms:
            bins, samples = self.options.histogram_bins, self.options.histogram_max_samples
            pending.histograms.append(
                ([f"weight_hist/{name}" for name in names],
                 weight_batch.histograms(weights, bins, samples))
            )
            if grad_batch is not None:
                pending.histograms.append(
                    ([f"grad_hist/{name}" for name in dense_names],
                     grad_batch.histograms(dense_grads, bins, samples))
                )
            if sparse:
                pending.histograms.append(
                    ([f"grad_hist/{names[grad_rows[k]]}" for k in sparse],
                     sparse_histograms([grads[k] for k in sparse], bins, samples))
                )
        return pending

    @torch.no_grad()
    def _measure_sharded(self, step: int, params: list[tuple[str, nn.Parameter]]) -> _Pending:
        """Every rank: the full tensors' statistics from the shards (see ``_sharded``)."""
        names = [name for name, _ in params]
        weights = [p.detach() for _, p in params]
        weight_stats, _ = sharded_rows(weights)
        grad_rows = [i for i, (_, p) in enumerate(params) if p.grad is not None]
        grads = [params[i][1].grad.detach() for i in grad_rows]  # type: ignore[union-attr]
        grad_stats, nonfinite = sharded_rows(grads) if grads else (None, None)
        snapshot = ShardedSnapshot(weights) if self.options.update_ratio else None
        pending = _Pending(
            step, names, [w.numel() for w in weights], weights, weight_stats, grad_rows,
            grad_stats, grads, snapshot, grad_nonfinite=nonfinite,  # type: ignore[arg-type]
        )
        if self.options.histograms:
            bins, samples = self.options.histogram_bins, self.options.histogram_max_samples
            pending.histograms.append(
                ([f"weight_hist/{name}" for name in names],
                 sharded_histograms(weights, bins, samples))
            )
            if grads:
                pending.histograms.append(
                    ([f"grad_hist/{names[i]}" for i in grad_rows],
                     sharded_histograms(grads, bins, samples))
                )
        return pending

    def _reduce_sharded_updates(self) -> None:
        """Every rank, after the step: the full change norms of the sharded weights."""
        try:
            for entry in self._pending:
                if entry.weight_batch is not None:
                    changes = entry.weight_batch.change_norms(entry.weights)
                    if bool(changes.isnan().any()):
                        raise RuntimeError("a rank could not measure its weights' change")
                    entry.weight_batch = Precomputed(changes)  # type: ignore[assignment]
        except Exception as error:  # never stop training
            self._fail(f"could not measure step {self._pending[0].step}: {error!r}")

    @torch.no_grad()
    def _flush(
        self, trainer: Any, pending: list[_Pending], activation_rows: Tensor | None
    ) -> None:
        """Rank zero: the step's statistics to the host in one transfer, alerts, writes."""
        step = pending[0].step
        # Everything of the step into one vector, one transfer to the host, then cut into the
        # blocks it was made of (in this order, per entry: weights [n, 4], gradients [m, 4],
        # update norms [n], histogram rows; then the activations).
        parts: list[Tensor] = []
        for entry in pending:
            if not entry.names:
                continue
            parts.append(entry.weight_stats)
            if entry.grad_stats is not None:
                parts.append(entry.grad_stats)
            if entry.weight_batch is not None:
                parts.append(entry.weight_batch.change_norms(entry.weights))
                entry.weight_batch = None
            parts.extend(rows for _, rows in entry.histograms)
        if activation_rows is not None:
            parts.append(activation_rows)
        if not parts:
            return
        device = parts[0].device
        # float64: the activations' sums of squares lose their variance in float32.
        host = torch.cat(
            [p.reshape(-1).to(device=device, dtype=torch.float64) for p in parts]
        ).cpu()
        blocks = iter(
            [chunk.view(part.shape).tolist()
             for chunk, part in zip(host.split([p.numel() for p in parts]), parts, strict=True)]
        )
        self.logged_steps.append(step)
        scalars: dict[str, float] = {}
        histograms: list[tuple[str, list[float], list[float], list[float]]] = []
        bins = self.options.histogram_bins
        for entry in pending:
            if not entry.names:
                continue
            weight = next(blocks)
            grad = next(blocks) if entry.grad_stats is not None else []
            update = next(blocks) if self.options.update_ratio else []
            tags = [self._tags(name) for name in entry.names]
            for tag, numel, row in zip(tags, entry.numels, weight, strict=True):
                mean, std = moments_from_sums(row[NORM], row[SUM], numel, row[EXACT_STD])
                scalars[tag.weight_norm] = row[NORM]
                scalars[tag.weight_std] = std
                scalars[tag.weight_mean] = mean
                scalars[tag.weight_absmax] = row[ABSMAX]
            nonfinite_counts = self._nonfinite_counts(entry, grad)
            for i, row, nonfinite in zip(entry.grad_rows, grad, nonfinite_counts, strict=True):
                tag, numel = tags[i], entry.numels[i]
                _, std = moments_from_sums(row[NORM], row[SUM], numel, row[EXACT_STD])
                scalars[tag.grad_norm] = row[NORM]
                scalars[tag.grad_std] = std
                scalars[tag.grad_absmax] = row[ABSMAX]
                scalars[tag.grad_nonfinite] = float(nonfinite)
                self._check_gradient(step, entry.names[i], row[NORM], nonfinite, numel)
            for i, (tag, previous, change) in enumerate(zip(tags, weight, update, strict=False)):
                if previous[NORM] > 0 and math.isfinite(previous[NORM]):
                    ratio = change / previous[NORM]
                    scalars[tag.update_ratio] = ratio
                    # The ~1e-3 rule of thumb is for weight matrices: vectors (biases, norm
                    # gains) start at 0 or 1 and move by large relative amounts early on.
                    if entry.weights[i].dim() >= 2:
                        self._check_update(step, entry.names[i], ratio)
            for histogram_tags, _ in entry.histograms:
                for tag_name, row in zip(histogram_tags, next(blocks), strict=True):
                    histograms.append(
                        (tag_name, row[:5], row[5 : 5 + bins], row[5 + bins : 5 + 2 * bins])
                    )
        if activation_rows is not None:
            for (name, _), row in zip(self._leaf_modules, next(blocks), strict=True):
                total, total_sq, count, dead, units = row
                if count == 0 or units == 0:
                    continue
                mean = total / count
                variance = (total_sq - total * total / count) / max(count - 1, 1)
                scalars[f"act_mean/{name}"] = mean
                scalars[f"act_std/{name}"] = math.sqrt(max(variance, 0.0))
                scalars[f"act_dead_fraction/{name}"] = dead / units
                if self.options.alerts and units > 0 and dead / units >= self.options.dead_fraction:
                    self._alerts.warn(
                        "dead", name, step,
                        f"dead layer: {dead / units:.0%} of its {int(units)} units output exactly"
                        " 0 on every sample",
                    )
        self._write(trainer, step, scalars, histograms)

    def _reduce_activations(self) -> Tensor | None:
        """``[n_modules, 5]`` float64 rows ``sum, sum_sq, count, dead units, units`` of every
        watched leaf module's output over all ranks' micro-batches of the step.

        Every rank calls this at the same steps; under DDP it makes two collectives: the units
        per module (MAX, so that the per-unit vectors line up), then one SUM of the sums and of
        a per-unit "alive on this rank" indicator: a unit is dead when no rank saw it non-zero.
        A rank whose own part failed contributes zeros, never skips the collectives.
        """
        modules = self._leaf_modules
        if not modules:
            return None
        device = self._device
        sums = torch.zeros(len(modules), 3, dtype=torch.float64, device=device)
        alive: list[Tensor | None] = [None] * len(modules)
        try:
            for i, (name, _) in enumerate(modules):
                record = self._activations.get(name)
                if record is None or record.sum is None or record.unit_absmax is None:
                    continue
                sums[i, 0], sums[i, 1], sums[i, 2] = record.sum, record.sum_sq, record.count
                alive[i] = (record.unit_absmax.reshape(-1) > 0).double().to(device)
        except Exception as error:  # keep the collectives in step with the other ranks
            sums.zero_()
            alive = [None] * len(modules)
            self._hook_error = self._hook_error or error
        units = torch.tensor(
            [0 if a is None else a.numel() for a in alive], dtype=torch.int64, device=device
        )
        distributed = (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1
        )
        if distributed:
            torch.distributed.all_reduce(units, op=torch.distributed.ReduceOp.MAX)
        sizes = units.tolist()
        indicators = [
            torch.zeros(size, dtype=torch.float64, device=device)
            if a is None or a.numel() != size else a
            for a, size in zip(alive, sizes, strict=True)
        ]
        payload = torch.cat([sums.reshape(-1), *indicators])
        if distributed:
            torch.distributed.all_reduce(payload)
        sums = payload[: sums.numel()].view(-1, 3)
        per_module = payload[sums.numel():].split(sizes)
        dead = torch.stack([(part == 0).sum().double() for part in per_module])
        return torch.cat([sums, dead[:, None], units.double()[:, None]], 1)

    def _nonfinite_counts(self, entry: _Pending, grad: list[list[float]]) -> list[int]:
        """NaN/Inf counts; computed (a second transfer) only for non-finite gradients."""
        if entry.grad_nonfinite is not None:
            return [int(count) for count in entry.grad_nonfinite.tolist()]
        bad = [k for k, row in enumerate(grad) if not math.isfinite(row[NORM])]
        counts = [0] * len(grad)
        if bad:
            found = torch.stack(
                [(~torch.isfinite(stored_values(entry.grads[k]))).sum() for k in bad]
            ).cpu().tolist()
            for k, count in zip(bad, found, strict=True):
                counts[k] = int(count)
        return counts

    def _check_gradient(
        self, step: int, name: str, norm: float, nonfinite: int, numel: int
    ) -> None:
        options = self.options
        if not options.alerts:
            return
        if nonfinite:
            self._alerts.warn(
                "nonfinite", name, step, f"gradient has {nonfinite} NaN/Inf values of {numel}"
            )
        elif norm <= options.vanishing_grad_norm:
            self._alerts.warn(
                "vanishing", name, step,
                f"vanishing gradient: norm {norm:.3g} <= {options.vanishing_grad_norm:g}",
            )
        elif norm > options.exploding_grad_norm:
            self._alerts.warn(
                "exploding", name, step,
                f"exploding gradient: norm {norm:.3g} > {options.exploding_grad_norm:g}",
            )

    def _check_update(self, step: int, name: str, ratio: float) -> None:
        low, high = self.options.update_ratio_band
        # A zero update is a skipped step (AMP overflow, zero learning rate), not a bad init.
        if self.options.alerts and ratio > 0 and not low <= ratio <= high:
            self._alerts.warn(
                "update_ratio", name, step,
                f"update ratio ||w_t - w_(t-1)|| / ||w_(t-1)|| = {ratio:.3g} is outside "
                f"[{low:g}, {high:g}] (rule of thumb: about 1e-3)",
            )

    def _write(
        self,
        trainer: Any,
        step: int,
        scalars: dict[str, float],
        histograms: list[tuple[str, list[float], list[float], list[float]]],
    ) -> None:
        for logger in getattr(trainer, "loggers", None) or []:
            key = id(logger)
            if key in self._broken_writers:
                continue
            try:
                writer = self._writers.get(key)
                if writer is None:
                    writer = self._writers[key] = make_writer(logger)
                if key not in self._layout_written:
                    self._layout_written.add(key)
                    writer.layout(self._layout())
                writer.add_scalars(scalars)
                for tag, head, edges, counts in histograms:
                    writer.add_histogram(tag, head, edges, counts)
                writer.write(step)
            except Exception as error:  # a logging failure never stops training
                self._broken_writers.add(key)
                warnings.warn(
                    f"lightning_init diagnostics could not write to {type(logger).__name__} at "
                    f"step {step} ({error!r}); this logger gets no more diagnostics.",
                    DiagnosticsWarning,
                    stacklevel=2,
                )

    def _layout(self) -> dict[str, dict[str, list[Any]]]:
        """One custom-scalars chart per statistic, comparing every layer."""
        groups = {
            "lightning_init: weights": _WEIGHT_STATS,
            "lightning_init: gradients": _GRAD_STATS,
        }
        if self.options.update_ratio:
            groups["lightning_init: updates"] = ("update_ratio",)
        if self.options.activations:
            groups["lightning_init: activations"] = _ACT_STATS
        return {
            group: {stat: ["Multiline", [f"^{stat}/"]] for stat in stats}
            for group, stats in groups.items()
        }
