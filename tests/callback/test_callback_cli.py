"""InitCallback configured from LightningCLI (a real ``fit`` run in a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

_ROOT = Path(__file__).resolve().parents[2]
_TRAINER_ARGS = [
    "--trainer.max_steps=2",
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.enable_checkpointing=false",
    "--model.lr=0.0",
]

pytest.importorskip("jsonargparse")


def _run_cli(tmp_path: Path, *arguments: str) -> dict[str, Any]:
    report = tmp_path / "report.json"
    environment = {**os.environ, "PYTHONPATH": str(_ROOT), "INIT_CLI_REPORT": str(report)}
    completed = subprocess.run(
        [sys.executable, str(_ROOT / "tests" / "helpers" / "_cli_app.py"), "fit", *_TRAINER_ARGS,
         *arguments],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(report.read_text())


@pytest.mark.slow
def test_yaml_trainer_callbacks(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: lightning_init.InitCallback\n"
        "      init_args:\n"
        "        policy: null\n"
        "        check: false\n"
        "        diagnostics: {every_n_steps: 10}\n"
    )
    result = _run_cli(tmp_path, f"--config={config}")
    assert result["callbacks"] == [
        "InitCallback(policy=None, check=False, diagnostics={'every_n_steps': 10})"
    ]
    [state] = result["states"]
    assert result["steps"] == 2 and state["applied"]
    assert state["fingerprint"] == result["fingerprint"]  # policy None, lr=0: unchanged


def test_trainer_callbacks_append_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["app"])
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # restored after the test
        monkeypatch.delenv(name, raising=False)
    from _models import DataModule, Net
    from lightning.pytorch.cli import LightningCLI

    from lightning_init.callback import InitCallback

    appended = {
        "class_path": "lightning_init.InitCallback",
        "init_args": {"check": {"on_fail": "warn"}, "diagnostics": False},
    }
    cli = LightningCLI(
        Net,
        DataModule,
        run=False,
        save_config_callback=None,
        seed_everything_default=False,
        args=[
            *_TRAINER_ARGS,
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.callbacks+=lightning.pytorch.callbacks.LearningRateMonitor",
            f"--trainer.callbacks+={json.dumps(appended)}",
        ],
    )
    [callback] = [c for c in cli.trainer.callbacks if isinstance(c, InitCallback)]
    assert repr(callback) == (
        "InitCallback(policy=None, check={'on_fail': 'warn'}, diagnostics=False)"
    )
    assert any(type(c).__name__ == "LearningRateMonitor" for c in cli.trainer.callbacks)


def test_nested_option_keys_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["app"])
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # restored after the test
        monkeypatch.delenv(name, raising=False)
    from _models import DataModule, Net
    from lightning.pytorch.cli import LightningCLI

    from lightning_init.callback import InitCallback

    def callbacks(*arguments: str) -> list[str]:
        cli = LightningCLI(
            Net, DataModule, run=False, save_config_callback=None, seed_everything_default=False,
            args=[
                *_TRAINER_ARGS, f"--trainer.default_root_dir={tmp_path}",
                "--trainer.callbacks+=lightning_init.InitCallback", *arguments,
            ],
        )
        return [repr(c) for c in cli.trainer.callbacks if isinstance(c, InitCallback)]

    assert callbacks(
        "--trainer.callbacks.check.on_fail=raise", "--trainer.callbacks.diagnostics.until_step=9"
    ) == ["InitCallback(policy=None, check={'on_fail': 'raise'}, diagnostics={'until_step': 9})"]
    with pytest.raises(ValueError, match=r"unknown diagnostics option 'until_steps'\. Did you"):
        callbacks("--trainer.callbacks.diagnostics.until_steps=9")


@pytest.mark.slow
def test_yaml_policy_path_is_applied(tmp_path: Path) -> None:
    policy = tmp_path / "zero_bias.yaml"
    policy.write_text("name: zero_bias\nrules:\n  - match: {type: Linear}\n    bias: zeros\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        "trainer:\n"
        "  callbacks:\n"
        "    - class_path: lightning_init.InitCallback\n"
        "      init_args:\n"
        f"        policy: {policy}\n"
        "        check: false\n"
        "        diagnostics: {every_n_steps: 10}\n"
    )
    result = _run_cli(tmp_path, f"--config={config}")
    [state] = result["states"]
    assert state["policy_name"] == "zero_bias" and state["fingerprint"] == result["fingerprint"]
    assert result["biases"] == [0.0, 0.0]
