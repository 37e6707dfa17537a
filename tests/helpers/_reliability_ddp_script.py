"""Run by tests/callback/test_reliability_ddp.py:
``python tests/helpers/_reliability_ddp_script.py OUT_DIR``.

Issue 25 under 2-process gloo DDP (``strategy="ddp"`` re-runs this script for rank 1; each rank
seeds its global RNG differently before building its model). Each case writes
``OUT_DIR/<case>_rank<r>.json``.
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
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lightning_init import weights_fingerprint
from lightning_init.callback import InitCallback

CONSTANT = {"seed": 3, "rules": [{"match": {"type": "Linear"}, "weight": "ones",
                                  "bias": {"init": "constant", "val": 0.5}}]}


def _trainer(out_dir: Path, callback: InitCallback, **kwargs: Any) -> L.Trainer:
    return L.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_steps=2, logger=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
                     default_root_dir=out_dir, callbacks=[callback], **kwargs)


class _FineTuner(L.LightningModule):
    """A backbone loaded from a checkpoint in ``__init__``, a new head."""

    def __init__(self, pretrained: dict[str, torch.Tensor]):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)
        self.backbone.load_state_dict(pretrained)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.head(self.backbone(x)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class _TwoSources(L.LightningModule):
    """Lazy first layer, trained on a dict of two loaders."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, 3))

    def training_step(self, batch, batch_idx):
        return sum(nn.functional.cross_entropy(self.net(x), y) for x, y in batch.values())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _data(seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 6, generator=generator)
    return DataLoader(TensorDataset(x, torch.randint(0, 3, (32,), generator=generator)),
                      batch_size=8)


def _write(out_dir: Path, case: str, rank: int, result: dict[str, Any]) -> None:
    (out_dir / f"{case}_rank{rank}.json").write_text(json.dumps(result))


def loaded_part(out_dir: Path, rank: int) -> None:
    pretrained = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
    with torch.no_grad():
        for index, param in enumerate(pretrained.parameters()):
            param.copy_(torch.linspace(-1, 1, param.numel()).view_as(param) * (index + 1))
    torch.manual_seed(10 + rank)  # the ranks' own draws differ
    model = _FineTuner(pretrained.state_dict())
    callback = InitCallback(CONSTANT, check=False, diagnostics=False)
    trainer = _trainer(out_dir, callback)
    result: dict[str, Any] = {}
    try:
        trainer.fit(model, _data(1))
    except Exception as error:  # reported to the test
        result["error"] = f"{type(error).__name__}: {error}"
    result.update(
        backbone_kept=all(torch.equal(a, b) for a, b in zip(
            model.backbone.state_dict().values(), pretrained.state_dict().values(),
            strict=True)),
        head_constant=bool(model.head.weight.eq(1).all()),
        fingerprint=weights_fingerprint(model),
    )
    _write(out_dir, "loaded_part", trainer.global_rank, result)


def two_loaders_lazy(out_dir: Path, rank: int) -> None:
    torch.manual_seed(20 + rank)
    model = _TwoSources()
    callback = InitCallback("kaiming_relu", check={"on_fail": "warn"}, diagnostics=False)
    trainer = _trainer(out_dir, callback)
    result: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trainer.fit(model, {"a": _data(2), "b": _data(3)})
        except Exception as error:  # reported to the test
            result["error"] = f"{type(error).__name__}: {error}"
    result.update(
        checked=callback.check_report is not None,
        stepped_aside=[str(w.message) for w in caught if "did not run" in str(w.message)],
        fingerprint=weights_fingerprint(model),
        shape=list(model.net[0].weight.shape),
    )
    _write(out_dir, "two_loaders_lazy", trainer.global_rank, result)


def main() -> None:
    out_dir = Path(sys.argv[1])
    rank = int(os.environ.get("LOCAL_RANK", "0"))
    loaded_part(out_dir, rank)
    two_loaders_lazy(out_dir, rank)


if __name__ == "__main__":
    main()
