"""Run by tests/callback/test_sharded.py:
``python tests/helpers/_sharded_script.py OUT_DIR CASE...``.

One ``Trainer.fit`` of a 3-block residual MLP under Lightning's ``ModelParallelStrategy`` on 2
CPU ranks (gloo): ``fsdp`` (``data_parallel_size=2``, ``fully_shard`` per block) or ``tp``
(``tensor_parallel_size=2``, each block's ``up`` column-wise and ``down`` row-wise); or on 4
ranks, ``mesh`` (both sizes 2: ``tp`` over the tensor-parallel submesh, then ``fully_shard``
over the data-parallel one; a launch of its own). Lightning
re-runs this script for rank 1, which runs the same cases in the same order. A probe callback,
after ``InitCallback``, records the full tensors (``.full_tensor()``) at the hooks where the
diagnostics measure them. For each case, each rank writes ``OUT_DIR/<CASE>_rank<r>.json``; an
exception is recorded there, not raised.

Cases: ``<mode>_<variant>`` with mode ``fsdp`` or ``tp`` and variant ``default``
(``InitCallback()``), ``auto`` (``InitCallback(policy="auto")``), ``seeded`` (a seeded policy,
the check and every-step diagnostics),
``empty`` (the seeded policy on a model built under ``trainer.init_module(empty_init=True)``),
``resume`` (``seeded`` with a distributed checkpoint, then a new fit resumed from it with a new
callback), ``failure`` (``seeded``, rank 1's local measurement raising at the second logged
step). After a ``tp`` or ``mesh`` ``seeded`` fit, the callback's cross-rank verification runs
again, as trained and with the last rank's shard of the head perturbed.
"""

from __future__ import annotations

import json
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lightning_init.callback import InitCallback
from lightning_init.policy import InitPolicy

WIDTH, HIDDEN, CLASSES, BLOCKS = 16, 32, 4, 3
STEPS = 3
POLICY = {
    "name": "seeded_kaiming",
    "seed": 1234,
    "rules": [
        {"match": {"type": "Linear"},
         "weight": {"init": "kaiming_normal", "nonlinearity": "relu"}, "bias": "zeros"},
    ],
}


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(WIDTH, HIDDEN)
        self.act = nn.ReLU()
        self.down = nn.Linear(HIDDEN, WIDTH)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs + self.down(self.act(self.up(inputs)))


class ResidualMLP(L.LightningModule):
    """Three residual blocks and a head; sharded in ``configure_model`` per ``mode``."""

    def __init__(self, mode: str = "none", lr: float = 0.05) -> None:
        super().__init__()
        self.mode, self.lr = mode, lr
        self.blocks = nn.ModuleList(Block() for _ in range(BLOCKS))
        self.head = nn.Linear(WIDTH, CLASSES)

    def configure_model(self) -> None:
        if self.mode == "fsdp":
            from torch.distributed._composable.fsdp import fully_shard

            mesh = self.device_mesh["data_parallel"]
            for block in self.blocks:
                fully_shard(block, mesh=mesh)
            fully_shard(self, mesh=mesh)
        elif self.mode in ("tp", "mesh"):
            from torch.distributed.tensor.parallel import (
                ColwiseParallel,
                RowwiseParallel,
                parallelize_module,
            )

            mesh = self.device_mesh["tensor_parallel"]
            for block in self.blocks:
                parallelize_module(block, mesh, {"up": ColwiseParallel(),
                                                 "down": RowwiseParallel()})
            if self.mode == "mesh":
                from torch.distributed._composable.fsdp import fully_shard

                for block in self.blocks:
                    fully_shard(block, mesh=self.device_mesh["data_parallel"])
                fully_shard(self, mesh=self.device_mesh["data_parallel"])

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            inputs = block(inputs)
        return self.head(inputs)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        return nn.functional.cross_entropy(self(inputs), targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(64, WIDTH, generator=generator)
    targets = torch.randint(0, CLASSES, (64,), generator=generator)
    return DataLoader(TensorDataset(inputs, targets), batch_size=8)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    full_tensor = getattr(tensor, "full_tensor", None)
    return (full_tensor() if callable(full_tensor) else tensor).detach().double()


def full_statistics(tensor: torch.Tensor) -> dict[str, float]:
    """norm, std, mean, absmax of the full tensor (collective for a DTensor)."""
    values = _full(tensor).reshape(-1)
    return {"norm": values.norm().item(), "std": values.std().item(),
            "mean": values.mean().item(), "absmax": values.abs().amax().item()}


class Probe(Callback):
    """The full tensors where the diagnostics read them, on every rank (collectives)."""

    def __init__(self, on_error: Any = None) -> None:
        self.on_error = on_error
        self.weights: dict[int, dict[str, dict[str, float]]] = {}
        self.grads: dict[int, dict[str, dict[str, float]]] = {}
        self.updates: dict[int, dict[str, float]] = {}
        self.fingerprint_at_start: str | None = None
        self._before: dict[str, torch.Tensor] = {}

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        # Written now: the strategy's teardown after an exception can end in a segfault.
        if self.on_error is not None:
            self.on_error(exception)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from lightning_init.runtime.distributed import full_fingerprint

        self.fingerprint_at_start = full_fingerprint(pl_module)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: Any) -> None:
        step = trainer.global_step
        named = list(pl_module.named_parameters())
        self.weights[step] = {name: full_statistics(p) for name, p in named}
        self.grads[step] = {name: full_statistics(p.grad) for name, p in named
                            if p.grad is not None}
        self._before = {name: _full(p) for name, p in named}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step - 1
        self.updates[step] = {
            name: ((_full(p) - self._before[name]).norm() / self._before[name].norm()).item()
            for name, p in pl_module.named_parameters()
        }


class _Materializations:
    """Counts ``nn.Linear.reset_parameters`` calls and the elements of plain (unsharded)
    parameters that ``to_empty`` materializes from the meta device, until ``restore``."""

    def __init__(self) -> None:
        self.reset_calls = 0
        self.plain_numel = 0
        self._reset, self._to_empty = nn.Linear.reset_parameters, nn.Module.to_empty
        reset, to_empty = self._reset, self._to_empty

        def counting_reset(module: nn.Linear) -> None:
            self.reset_calls += 1
            reset(module)

        def recording_to_empty(module: nn.Module, *args: Any, recurse: bool = True,
                               **kwargs: Any) -> nn.Module:
            for param in module.parameters(recurse=recurse):
                if param.is_meta and not hasattr(param, "device_mesh"):
                    self.plain_numel += param.numel()
            return to_empty(module, *args, recurse=recurse, **kwargs)

        nn.Linear.reset_parameters = counting_reset  # type: ignore[method-assign]
        nn.Module.to_empty = recording_to_empty  # type: ignore[method-assign]

    def restore(self) -> None:
        nn.Linear.reset_parameters = self._reset  # type: ignore[method-assign]
        nn.Module.to_empty = self._to_empty  # type: ignore[method-assign]


class _FailOnRankOne:
    """Makes rank 1's shard measurement raise from its ``after``-th call on, until ``restore``."""

    def __init__(self, after: int) -> None:
        import lightning_init.runtime.distributed as engine

        self.engine, self.original, self.calls = engine, engine._local_rows, 0

        def failing(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls >= after and torch.distributed.get_rank() == 1:
                raise RuntimeError("rank 1 cannot measure")
            return self.original(*args, **kwargs)

        engine._local_rows = failing

    def restore(self) -> None:
        self.engine._local_rows = self.original


def _trainer(mode: str, out_dir: Path, callbacks: list[Callback], **kwargs: Any) -> L.Trainer:
    sizes = {"fsdp": (2, 1), "tp": (1, 2), "mesh": (2, 2)}[mode]
    return L.Trainer(
        strategy=ModelParallelStrategy(data_parallel_size=sizes[0],
                                       tensor_parallel_size=sizes[1]),
        accelerator="cpu", devices=sizes[0] * sizes[1], num_sanity_val_steps=0, limit_val_batches=0,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=out_dir,
        callbacks=callbacks, **{"max_steps": STEPS, **kwargs},
    )


def _fit(trainer: L.Trainer, model: L.LightningModule, result: dict[str, Any],
         **kwargs: Any) -> bool:
    try:
        trainer.fit(model, loader(), **kwargs)
    except BaseException as error:
        result["error"] = f"{type(error).__name__}: {error}"
        result["traceback"] = traceback.format_exc()[-4000:]
        return False
    return True


def _record(result: dict[str, Any], probe: Probe, callback: InitCallback,
            trainer: L.Trainer) -> None:
    result.update(
        fingerprint_at_start=probe.fingerprint_at_start,
        weights=probe.weights, grads=probe.grads, updates=probe.updates,
        state=callback.state_dict(), log_dir=trainer.log_dir,
    )


def _replica_checks(trainer: L.Trainer, model: L.LightningModule) -> dict[str, str | None]:
    """The callback's cross-rank verification after the fit (``None``: passed, else the error):
    as trained, then with the last rank's piece of ``head.weight`` perturbed (the last rank
    has a data-parallel replica in both ``tp`` and ``mesh``)."""
    from lightning_init.callback._agreement import (
        verify_same_on_all_ranks as _verify_same_on_all_ranks,
    )

    def verify() -> str | None:
        try:
            _verify_same_on_all_ranks(trainer, model, "0" * 16)
        except RuntimeError as error:
            return str(error)
        return None

    checks = {"healthy": verify()}
    if trainer.global_rank == trainer.world_size - 1:
        weight = model.head.weight
        with torch.no_grad():
            (weight.to_local() if hasattr(weight, "to_local") else weight).add_(1e-3)
    checks["perturbed"] = verify()
    return checks


def _callback(variant: str) -> InitCallback:
    if variant == "default":
        return InitCallback()
    if variant == "auto":
        return InitCallback(policy="auto")
    diagnostics = {"every_n_steps": 1, "until_step": STEPS, "histogram_bins": 8}
    return InitCallback(policy=InitPolicy.from_dict(POLICY), diagnostics=diagnostics)  # seeded


def run(case: str, out_dir: Path) -> dict[str, Any]:
    mode, variant = case.split("_", 1)
    result: dict[str, Any] = {"case": case}

    def on_error(error: BaseException) -> None:
        result["error"] = f"{type(error).__name__}: {error}"
        result["traceback"] = "".join(traceback.format_exception(error))[-4000:]
        _write(result, out_dir)

    probe = Probe(on_error)
    callback = _callback(variant)
    logger = TensorBoardLogger(out_dir, name=case, version=0)
    checkpoint = ModelCheckpoint(dirpath=out_dir / f"{case}_ckpt", save_last=True)
    extra = [checkpoint] if variant == "resume" else []
    trainer = _trainer(mode, out_dir, [callback, probe, *extra], logger=logger,
                       enable_checkpointing=variant == "resume")
    materializations = None
    # The same weights on every rank before any policy, as a user's seed gives them: tensor
    # parallel leaves the head a plain tensor, which nothing syncs across ranks.
    torch.manual_seed(0)
    if variant == "empty":
        with trainer.init_module(empty_init=True):
            model = ResidualMLP(mode)
        result["built_on_meta"] = all(p.is_meta for p in model.parameters())
        materializations = _Materializations()
    else:
        model = ResidualMLP(mode)
    result["rss_before_fit_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # The check makes 2 calls, each logged step 2 (weights, gradients): the 5th is at step 1.
    failure = _FailOnRankOne(after=5) if variant == "failure" else None
    finished = _fit(trainer, model, result)
    for patch in (materializations, failure):
        if patch is not None:
            patch.restore()
    if not finished:
        return result
    result["rank"] = trainer.global_rank
    _record(result, probe, callback, trainer)
    if callback._diagnostics is not None:
        result["logged_steps"] = callback._diagnostics.logged_steps
        result["diagnostics_failed"] = callback._diagnostics._failed
    if variant == "seeded" and mode != "fsdp":
        result["replicas"] = _replica_checks(trainer, model)
    if materializations is not None:
        result["reset_parameters_calls"] = materializations.reset_calls
        result["plain_numel_materialized"] = materializations.plain_numel
    if variant != "resume":
        return result
    # Resume: a new model, callback and probe, from the last distributed checkpoint.
    from lightning_init.runtime.distributed import full_fingerprint

    result["fingerprint_at_end"] = full_fingerprint(model)
    resumed_callback = _callback(variant)  # the resumed fit's: the seeded policy
    resumed_probe = Probe()
    resumed = _trainer(mode, out_dir, [resumed_callback, resumed_probe],
                       logger=TensorBoardLogger(out_dir, name=f"{case}_resumed", version=0),
                       enable_checkpointing=False, max_steps=STEPS + 1)
    resumed_result: dict[str, Any] = {}
    ckpt = str(out_dir / f"{case}_ckpt" / "last.ckpt")
    if _fit(resumed, ResidualMLP(mode), resumed_result, ckpt_path=ckpt):
        _record(resumed_result, resumed_probe, resumed_callback, resumed)
    result["resumed"] = resumed_result
    return result


def _write(result: dict[str, Any], out_dir: Path) -> None:
    rank = int(torch.distributed.get_rank()) if torch.distributed.is_initialized() else 0
    result["rank"] = rank
    (out_dir / f"{result['case']}_rank{rank}.json").write_text(json.dumps(result, default=str))


def main() -> None:
    out_dir = Path(sys.argv[1])
    for case in sys.argv[2:]:
        _write(run(case, out_dir), out_dir)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()


def reference_fingerprint() -> str:
    """The unsharded model with the seeded policy: ``weights_fingerprint`` of its weights."""
    from lightning_init.fingerprint import weights_fingerprint

    model = ResidualMLP("none")
    InitPolicy.from_dict(POLICY).apply(model)
    return weights_fingerprint(model)

