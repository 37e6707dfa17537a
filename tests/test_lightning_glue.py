"""The Lightning glue shared by the callback and the check: sample batch, muted logging."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from lightning_init._lightning import SampleBatch, run_sample_forward
from lightning_init.check import CheckOptions, check_lightning_module


class _Logs:
    """A stand-in for ``self.log`` set on the instance (a user's own logging function)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, name: str, *_args: Any, **_kwargs: Any) -> None:
        self.calls.append(name)


class _Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 3))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        self.log_dict({"train_loss_again": loss})
        return loss


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(16, 5), torch.randint(0, 3, (16,))


def test_sample_forward_restores_a_log_set_on_the_instance() -> None:
    module, logs = _Classifier(), _Logs()
    module.log = logs
    run_sample_forward(module, SampleBatch(_batch(), "train_dataloader"))
    assert module.net[0].weight.shape == (8, 5)  # the training_step ran
    assert logs.calls == []  # muted inside
    assert module.log is logs  # and given back afterwards
    assert "log_dict" not in vars(module)


def test_check_restores_a_log_set_on_the_instance() -> None:
    module, logs = _Classifier(), _Logs()
    module.net(torch.zeros(1, 5))  # materialized
    module.log = logs
    check_lightning_module(module, _batch(), CheckOptions())
    assert logs.calls == []
    assert module.log is logs and "log_dict" not in vars(module)
