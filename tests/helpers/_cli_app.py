"""A LightningCLI app for tests/callback/test_callback_cli.py:
``python tests/helpers/_cli_app.py fit ...``.

After ``fit`` it writes what the InitCallback got and did to the JSON file named by the
``INIT_CLI_REPORT`` environment variable.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from _models import DataModule, Net
from lightning.pytorch.cli import LightningCLI

from lightning_init import weights_fingerprint
from lightning_init.callback import InitCallback


class _ReportingCLI(LightningCLI):
    def after_fit(self) -> None:
        callbacks = [c for c in self.trainer.callbacks if isinstance(c, InitCallback)]
        report = {
            "callbacks": [repr(callback) for callback in callbacks],
            "states": [callback.state_dict() for callback in callbacks],
            "fingerprint": weights_fingerprint(self.model),
            "biases": [
                float(m.bias.detach().abs().sum()) for m in self.model.net if hasattr(m, "bias")
            ],
            "steps": self.model.steps,
        }
        Path(os.environ["INIT_CLI_REPORT"]).write_text(json.dumps(report))


if __name__ == "__main__":
    _ReportingCLI(Net, DataModule, save_config_kwargs={"overwrite": True})
