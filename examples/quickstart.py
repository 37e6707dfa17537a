"""Quickstart: train a small MLP with InitCallback, print the init check, write TensorBoard logs.

Run it with ``make demo`` (or ``python examples/quickstart.py``). It takes well under a minute on
a CPU. What it shows:

1. The policy ``kaiming_relu`` (a preset, see ``lightning_init/policy/presets/kaiming_relu.yaml``)
   is applied when ``fit`` starts: one line says how many parameters it set; the table of what
   was applied goes to TensorBoard (TEXT tab).
2. The init check runs one forward and backward pass on the first batch and prints its verdict
   (the per-layer table too when something is wrong).
3. Early-training diagnostics (weights, gradients, update ratios, histograms) go to TensorBoard
   as a run of their own (``<run>/diagnostics``); the console says only when something is off.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import (
    Classifier,
    loader,
    plain_mlp,
    print_tensorboard_hint,
    quiet_third_party,
    teacher_classification,
)

from lightning_init import InitCallback


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="lightning_logs", help="TensorBoard root directory")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)

    quiet_third_party()
    L.seed_everything(0, verbose=False)
    train = teacher_classification(num_samples=2048, seed=0)
    val = teacher_classification(num_samples=512, seed=1)
    model = Classifier(plain_mlp(32, 128, depth=8, num_classes=10, activation=nn.ReLU), lr=0.05)

    init = InitCallback(
        policy="kaiming_relu",  # a preset name, a YAML path, a dict or an InitPolicy
        check=True,  # one forward/backward pass on the first batch, report printed
        diagnostics={"every_n_steps": 10, "until_step": 200, "histograms": True},
    )
    logger = TensorBoardLogger(args.logdir, name="quickstart")
    trainer = L.Trainer(
        max_epochs=args.epochs,
        callbacks=[init],
        logger=logger,
        log_every_n_steps=10,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader(train), loader(val, shuffle=False))
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    print(f"\nfinal validation accuracy: {metrics.get('val/accuracy', float('nan')):.3f}")
    print_tensorboard_hint(args.logdir, logger.log_dir)


if __name__ == "__main__":
    main()
