"""Run by tests/callback/test_callback_ddp.py: ``python tests/helpers/_ddp_script.py OUT_DIR``.

``strategy="ddp"`` re-runs this script for rank 1, so every rank builds its own models, each
after ``torch.manual_seed(100 + rank)``. Each case writes ``OUT_DIR/<case>_rank<r>.json``.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _models import (
    IN_FEATURES,
    OUT_FEATURES,
    RELU_POLICY,
    ConfiguredNet,
    Net,
    StandInPolicy,
)

from lightning_init import weights_fingerprint
from lightning_init.callback import InitCallback


def _ddp_trainer(out_dir: Path, callback: InitCallback, **options: object) -> L.Trainer:
    """Two gloo ranks on CPU, two steps, nothing but ``callback`` and ``options``."""
    return L.Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_steps=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=out_dir,
        callbacks=[callback],
        **options,
    )


def _run(case: str, model: L.LightningModule, policy: object, out_dir: Path) -> None:
    callback = InitCallback(policy=policy, check=False, diagnostics=False)
    trainer = _ddp_trainer(out_dir, callback, logger=False)
    result: dict[str, object] = {}
    try:
        trainer.fit(model)
    except RuntimeError as error:
        result["error"] = str(error)
    result.update(
        rank=trainer.global_rank,
        fingerprint=weights_fingerprint(model),
        state=callback.state_dict(),
        steps=model.steps,
    )
    rules = getattr(callback._policy, "rules", None)
    if hasattr(rules, "variables"):  # policy="auto": what it measured
        result["variables"] = rules.variables
    (out_dir / f"{case}_rank{trainer.global_rank}.json").write_text(json.dumps(result))


class _MemoryLogger(Logger):
    """Keeps what ``log_metrics`` receives (rank zero is the only rank that logs)."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[int, dict[str, float]] = {}

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.setdefault(int(step or 0), {}).update(metrics)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


class _RankDataNet(Net):
    """Each rank trains on its own data: feature 0 is negative on rank 0, positive on rank 1."""

    def train_dataloader(self) -> DataLoader:
        rank = self.trainer.global_rank
        generator = torch.Generator().manual_seed(rank)
        inputs = torch.randn(16, IN_FEATURES, generator=generator)
        inputs[:, 0] = inputs[:, 0].abs() * (1.0 if rank == 1 else -1.0)
        targets = torch.randn(16, OUT_FEATURES, generator=generator)
        return DataLoader(TensorDataset(inputs, targets), batch_size=8)


def _diagnostics_run(out_dir: Path, *, fail_on_rank_zero: bool = False) -> None:
    """Activations under DDP: each rank records what its own micro-batches of step 0 gave.

    Hidden unit 0 is relu(x0), dead on rank 0 only; unit 1 is relu(-x0), dead on rank 1 only;
    units 2-7 are dead everywhere (bias -1). Over both ranks 6 of 8 units are dead, while the
    mean of the per-rank fractions would be 7/8.
    """
    model = _RankDataNet(lr=0.1)
    with torch.no_grad():
        first = model.net[0]
        first.weight.zero_()
        first.bias.fill_(-1.0)
        first.weight[0, 0], first.weight[1, 0] = 1.0, -1.0
        first.bias[:2] = 0.0
    seen: dict[str, Any] = {"sum": 0.0, "sum_sq": 0.0, "count": 0, "relu_unit_max": None}

    def record(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if model.trainer.global_step == 0 and model.training:
            values = output.detach().double()
            seen["sum"] += float(values.sum())
            seen["sum_sq"] += float(values.square().sum())
            seen["count"] += values.numel()

    def record_relu(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if model.trainer.global_step == 0 and model.training:
            unit_max = output.detach().abs().amax(dim=0)
            previous = seen["relu_unit_max"]
            seen["relu_unit_max"] = (
                unit_max if previous is None else torch.maximum(previous, unit_max)
            )

    if fail_on_rank_zero:  # rank 0's measurement breaks; rank 1 must not wait for it forever
        from lightning_init.diagnostics import TrainingDiagnostics

        def broken(self: Any, step: int, optimizer: Any) -> None:
            raise RuntimeError("measurement broke on rank 0")

        if int(os.environ.get("LOCAL_RANK", "0")) == 0:
            TrainingDiagnostics._measure = broken  # type: ignore[method-assign]
    model.net[0].register_forward_hook(record)
    model.net[1].register_forward_hook(record_relu)
    logger = _MemoryLogger()
    options = {"activations": True, "every_n_steps": 1, "until_step": 2, "update_ratio": False}
    callback = InitCallback(policy=None, check=False, diagnostics=options)
    trainer = _ddp_trainer(out_dir, callback, logger=logger, use_distributed_sampler=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model)
    result = {
        "rank": trainer.global_rank,
        "steps": trainer.global_step,
        "warnings": [str(w.message) for w in caught if "diagnostics" in str(w.message)],
        "sum": seen["sum"],
        "sum_sq": seen["sum_sq"],
        "count": seen["count"],
        "relu_unit_max": seen["relu_unit_max"].tolist(),
        "metrics": {str(step): values for step, values in logger.metrics.items()},
        "hooks_left": sum(len(m._forward_hooks) for m in model.modules()),
    }
    case = "diagnostics_failed" if fail_on_rank_zero else "diagnostics"
    (out_dir / f"{case}_rank{trainer.global_rank}.json").write_text(json.dumps(result))


def main() -> None:
    out_dir = Path(sys.argv[1])
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.manual_seed(100 + rank)
    _run("init", Net(), RELU_POLICY, out_dir)  # the real engine, no seed of its own
    torch.manual_seed(200 + rank)
    _run("configure_model", ConfiguredNet(), RELU_POLICY, out_dir)
    torch.manual_seed(400 + rank)
    _diagnostics_run(out_dir)
    torch.manual_seed(500 + rank)
    _diagnostics_run(out_dir, fail_on_rank_zero=True)
    torch.manual_seed(600 + rank)
    _run("auto", Net(), "auto", out_dir)  # measured on each rank's own first batch
    torch.manual_seed(300 + rank)  # last: the error ends the run
    _run("rank_dependent", ConfiguredNet(), StandInPolicy(ignore_seed=True), out_dir)


if __name__ == "__main__":
    main()
