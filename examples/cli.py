"""LightningCLI with InitCallback chosen from a YAML config.

Run, from the repository root::

    python examples/cli.py fit --config configs/cli/kaiming.yaml
    python examples/cli.py fit --config configs/cli/xavier.yaml --trainer.max_steps=50

The trainer YAML adds the callback the way Lightning users add any callback::

    trainer:
      callbacks:
        - class_path: lightning_init.InitCallback
          init_args: {policy: kaiming_relu, diagnostics: {every_n_steps: 10}}
"""

from __future__ import annotations

import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import MLPClassifier, TeacherDataModule


def main() -> None:
    LightningCLI(MLPClassifier, TeacherDataModule, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
