"""Small synthetic data sets and models shared by the examples. Nothing is downloaded.

The data are made by a fixed random "teacher", so a model that trains well reaches a low loss
within a few hundred steps on a CPU.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def teacher_classification(
    num_samples: int = 2048, num_features: int = 32, num_classes: int = 10, seed: int = 0
) -> TensorDataset:
    """Inputs from N(0, 1) (drawn from ``seed``); labels from a fixed random two-layer teacher."""
    teacher = torch.Generator().manual_seed(1234)  # the same task whatever the sample seed
    hidden = torch.randn(num_features, 64, generator=teacher) / num_features**0.5
    readout = torch.randn(64, num_classes, generator=teacher) / 8.0
    inputs = torch.randn(num_samples, num_features, generator=torch.Generator().manual_seed(seed))
    labels = (torch.tanh(inputs @ hidden) @ readout).argmax(dim=1)
    return TensorDataset(inputs, labels)


def loader(dataset: TensorDataset, batch_size: int = 64, shuffle: bool = True) -> DataLoader:
    """A single-process loader (the data set is in memory)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0)


def plain_mlp(
    num_features: int, width: int, depth: int, num_classes: int, activation: type[nn.Module]
) -> nn.Sequential:
    """``depth`` Linear layers, each hidden one followed by ``activation``: no normalization."""
    layers: list[nn.Module] = []
    in_features = num_features
    for _ in range(depth - 1):
        layers += [nn.Linear(in_features, width), activation()]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


def deep_tanh_mlp() -> nn.Sequential:
    """30 Linear(64, 64) + Tanh layers and a 10-class head under PyTorch's default init: the
    signal shrinks layer by layer (``lightning-init doctor``'s example in the README)."""
    torch.manual_seed(0)
    return plain_mlp(64, 64, 31, 10, nn.Tanh)


class Classifier(L.LightningModule):
    """Cross-entropy classification around any network; batches are ``(x, y)`` tuples."""

    def __init__(self, net: nn.Module, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__()
        self.net = net
        self.lr = lr
        self.momentum = momentum

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        inputs, labels = batch
        loss = nn.functional.cross_entropy(self(inputs), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        inputs, labels = batch
        logits = self(inputs)
        self.log("val/loss", nn.functional.cross_entropy(logits, labels))
        self.log("val/accuracy", (logits.argmax(dim=1) == labels).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


class MLPClassifier(Classifier):
    """A plain MLP classifier with plain-typed arguments, so LightningCLI can configure it."""

    def __init__(self, depth: int = 8, width: int = 128, lr: float = 0.02) -> None:
        super().__init__(plain_mlp(32, width, depth, 10, nn.ReLU), lr=lr)
        self.save_hyperparameters()


class TeacherDataModule(L.LightningDataModule):
    """The teacher classification task as a datamodule (32 features, 10 classes)."""

    def __init__(self, num_samples: int = 2048, batch_size: int = 64) -> None:
        super().__init__()
        self.num_samples = num_samples
        self.batch_size = batch_size

    def setup(self, stage: str) -> None:
        self.train_set = teacher_classification(self.num_samples, seed=0)
        self.val_set = teacher_classification(max(self.num_samples // 4, 64), seed=1)

    def train_dataloader(self) -> DataLoader:
        return loader(self.train_set, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return loader(self.val_set, self.batch_size, shuffle=False)


def common_parser(description: str, max_steps: int = 200):
    """The arguments every example takes: where to log and how long to train."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--logdir", default="lightning_logs", help="TensorBoard root directory")
    parser.add_argument("--max-steps", type=int, default=max_steps)
    return parser


def trainer_for(name: str, args, callbacks: list) -> L.Trainer:
    """A quiet CPU Trainer that logs to TensorBoard under ``args.logdir/name``."""
    from lightning.pytorch.loggers import TensorBoardLogger

    quiet_third_party()
    return L.Trainer(
        max_steps=args.max_steps,
        callbacks=callbacks,
        logger=TensorBoardLogger(args.logdir, name=name),
        log_every_n_steps=10,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )


def print_final_loss(trainer: L.Trainer) -> None:
    """Print the last logged training loss (the smoke tests read this line)."""
    loss = float(trainer.callback_metrics["train/loss"])
    print(f"train loss after {trainer.global_step} steps: {loss:.3f}")
    logger = trainer.logger
    if logger is not None and logger.log_dir:
        print_tensorboard_hint(logger.save_dir, logger.log_dir)


def quiet_third_party() -> None:
    """Keep the examples' console to what they show: Lightning's info lines (accelerator, the
    litlogger/litmodels tips, "fit stopped"), its ``LeafSpec`` deprecation, and its note that
    a ``validation_step`` has no loader (the examples that train only) are hidden."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    warnings.filterwarnings(
        "ignore", message="You defined a `validation_step` but have no `val_dataloader`"
    )


def tensorboard_command(logdir: str) -> str:
    """A command that starts TensorBoard from this environment: its ``tensorboard`` script
    (``.venv/bin/tensorboard --logdir ...`` from the repository), else this interpreter with
    ``-m tensorboard.main`` (tensorboard is a dependency)."""
    script = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    if os.path.exists(script):
        return f"{_short(script)} --logdir {logdir}"
    return f"{_short(sys.executable)} -m tensorboard.main --logdir {logdir}"


def _short(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def print_tensorboard_hint(logdir: str, run_dir: str | None = None) -> None:
    """Where the logs are, the command that shows them, and the pages to open."""
    if run_dir is not None:
        print(f"TensorBoard logs: {run_dir} (the diagnostics are the run {run_dir}/diagnostics)")
    print(f"See them with:  {tensorboard_command(logdir)}  then open http://localhost:6006")
    print("  TEXT: lightning_init/policy (what was applied), lightning_init/check (the check)")
    print("  IMAGES: lightning_init/check_depth; CUSTOM SCALARS: lightning_init weights, "
          "gradients, updates")
