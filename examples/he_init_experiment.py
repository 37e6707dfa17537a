"""He et al. (2015) on a CPU: a 30-layer plain ReLU MLP trained from three initializations.

"Delving Deep into Rectifiers" (He, Zhang, Ren, Sun, ICCV 2015) shows that with ReLU the
variance of the activations is preserved across layers only when Var[w] = 2 / fan_in. This
script trains the same 30-layer plain ReLU network (no normalization, no residuals) three times:

- ``xavier``: Var[w] = 2 / (fan_in + fan_out): activations shrink by about 1/sqrt(2) per layer.
- ``kaiming_relu``: Var[w] = 2 / fan_in: activations keep their scale.
- ``pytorch_default``: kaiming_uniform(a=sqrt(5)), Var[w] = 1 / (3 fan_in), and a bias
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)): the signal shrinks until the biases alone set the output,
  which then no longer depends on the input.

The init check flags two of them before training starts; the three runs sit side by side in
TensorBoard (HParams and scalars), and kaiming is the one that trains.
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
    quiet_third_party,
    teacher_classification,
    tensorboard_command,
)

from lightning_init import InitCallback

POLICIES = ("xavier", "kaiming_relu", "pytorch_default")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="lightning_logs")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--depth", type=int, default=30)
    args = parser.parse_args(argv)

    quiet_third_party()
    train = teacher_classification(num_samples=4096, seed=0)
    results = []
    for policy in POLICIES:
        print(f"\n--- policy {policy!r} ---")
        L.seed_everything(0, verbose=False)
        net = plain_mlp(32, 64, depth=args.depth, num_classes=10, activation=nn.ReLU)
        model = Classifier(net, lr=0.01)
        init = InitCallback(policy=policy, check=True, diagnostics={"until_step": args.max_steps})
        trainer = L.Trainer(
            max_steps=args.max_steps,
            callbacks=[init],
            logger=TensorBoardLogger(args.logdir, name="he_init", version=policy),
            log_every_n_steps=10,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
        trainer.fit(model, loader(train))
        report = init.check_report
        results.append(
            (
                policy,
                "passed" if report is not None and report.ok else "FLAGGED",
                float(trainer.callback_metrics["train/loss"]),
            )
        )

    print(f"\n{'policy':<18}{'init check':<12}{'train loss after ' + str(args.max_steps):>22}")
    for policy, verdict, loss in results:
        print(f"{policy:<18}{verdict:<12}{loss:>22.3f}")
    print("\nchance level: ln(10) = 2.303.  See the runs with:  "
          f"{tensorboard_command(args.logdir)}")
    print("  HPARAMS: the three runs side by side; TEXT: lightning_init/check of each run")


if __name__ == "__main__":
    main()
