"""Diagnostics under manual optimization with two optimizers (a GAN): every optimizer measured
in the same batches, each value written at its own optimizer step (issue 14, case 11)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger
from torch import nn

from lightning_init.diagnostics import TrainingDiagnostics

_LATENT, _FEATURES = 3, 4


class _Recorder(Logger):
    """Keeps every scalar by tag: ``{tag: {step: value}}``."""

    name, version = "recorder", 0

    def __init__(self) -> None:
        super().__init__()
        self.scalars: dict[str, dict[int, float]] = defaultdict(dict)

    @property
    def experiment(self) -> None:
        return None

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for tag, value in metrics.items():
            assert step is not None
            self.scalars[tag][step] = value


class _Gan(L.LightningModule):
    """Discriminator then generator, one step each per batch; records each weight's norm
    just before its optimizer's step, by ``global_step``."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = nn.Linear(_LATENT, _FEATURES)
        self.discriminator = nn.Linear(_FEATURES, 1)
        self.norm_before_step: dict[str, dict[int, float]] = defaultdict(dict)

    def _step(self, optimizer: Any, loss: torch.Tensor, name: str) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        weight = getattr(self, name).weight
        self.norm_before_step[name][self.global_step] = float(weight.detach().norm())
        optimizer.step()

    def training_step(self, batch: Any, batch_idx: int) -> None:
        (real,) = batch
        d_opt, g_opt = self.optimizers()
        fake = self.generator(torch.randn(len(real), _LATENT))
        d_loss = self.discriminator(fake.detach()).mean() - self.discriminator(real).mean()
        self._step(d_opt, d_loss, "discriminator")
        g_loss = -self.discriminator(self.generator(torch.randn(len(real), _LATENT))).mean()
        self._step(g_opt, g_loss, "generator")

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.SGD(self.discriminator.parameters(), lr=0.05),
                torch.optim.SGD(self.generator.parameters(), lr=0.05)]


def test_both_optimizers_are_measured_in_the_same_batches_at_their_true_steps() -> None:
    torch.manual_seed(0)
    model, logger = _Gan(), _Recorder()
    diagnostics = TrainingDiagnostics({"every_n_steps": 10, "until_step": 100, "alerts": False})
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(32, _FEATURES)), batch_size=8
    )
    trainer = L.Trainer(
        max_steps=40, logger=logger, callbacks=[diagnostics], accelerator="cpu", devices=1,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        log_every_n_steps=1,
    )
    trainer.fit(model, loader)
    assert trainer.global_step == 40  # 20 batches, two optimizer steps each
    d_steps = sorted(logger.scalars["lightning_init/weight_norm/discriminator.weight"])
    g_steps = sorted(logger.scalars["lightning_init/weight_norm/generator.weight"])
    # Batches start at even steps; a batch is logged when its start is a logged step.
    assert d_steps == [0, 2, 4, 8, 10, 16, 20, 30, 32]
    assert g_steps == [step + 1 for step in d_steps]
    for name, steps in (("discriminator", d_steps), ("generator", g_steps)):
        logged = logger.scalars[f"lightning_init/weight_norm/{name}.weight"]
        truth = model.norm_before_step[name]
        for step in steps:  # the value written at a step is the weight at that very step
            assert abs(logged[step] - truth[step]) <= 1e-6 * truth[step]
        grad_tag = f"lightning_init/grad_norm/{name}.weight"
        assert all(grad_tag in logger.scalars and step in logger.scalars[grad_tag]
                   for step in steps)
    assert diagnostics.logged_steps == sorted(d_steps + g_steps)
