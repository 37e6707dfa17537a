"""Every example runs end to end on CPU (shortened), as a user would start it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]


def run_example(args: list[str], cwd: Path, timeout: float = 240) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    completed = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    return output


def scalar_tags(logdir: Path) -> set[str]:
    tags: set[str] = set()
    for events in logdir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    return tags


def test_quickstart_trains_prints_the_check_and_writes_tensorboard(tmp_path: Path) -> None:
    output = run_example(
        [str(ROOT / "examples/quickstart.py"), "--epochs", "1", "--logdir", str(tmp_path)], tmp_path
    )
    assert "tensorboard --logdir" in output
    assert "net.0" in output  # the check's table names the layers
    tags = scalar_tags(tmp_path)
    assert "train/loss" in tags
    assert "lightning_init/grad_norm/net.0.weight" in tags, sorted(tags)  # the diagnostics
    # `make demo` in a few lines: what was applied, the verdict, where to look; no noise.
    lines = output.strip().splitlines()
    assert len(lines) < 40, output
    assert "lightning_init: policy 'kaiming_relu' set 16 parameters, left 0 alone" in output
    assert "init check: OK" in output and "full table:" in output
    assert "-m tensorboard.main --logdir" in output or "bin/tensorboard --logdir" in output
    assert "TEXT: lightning_init/policy" in output and "CUSTOM SCALARS" in output
    for noise in ("Tip:", "LeafSpec", "val_dataloader", "Warning", "Traceback", "diagnostics,"):
        assert noise not in output, noise


@pytest.mark.parametrize(
    "script",
    ["cnn_dcgan.py", "lstm_classifier.py", "finetune.py", "gpt_small.py"],
)
def test_preset_examples_run(script: str, tmp_path: Path) -> None:
    output = run_example(
        [str(ROOT / "examples" / script), "--max-steps", "3", "--logdir", str(tmp_path)], tmp_path
    )
    assert "train loss after 3 steps" in output
    if script in ("cnn_dcgan.py", "gpt_small.py"):  # healthy runs: no alert
        assert "lightning_init diagnostics" not in output, output
    assert "bin/tensorboard --logdir" in output or "-m tensorboard.main --logdir" in output


def test_he_experiment_flags_the_two_bad_inits(tmp_path: Path) -> None:
    output = run_example(
        [
            str(ROOT / "examples/he_init_experiment.py"),
            "--max-steps",
            "2",
            "--logdir",
            str(tmp_path),
        ],
        tmp_path,
    )
    table = {
        line.split()[0]: line.split()[1]
        for line in output.splitlines()
        if line.split()[:1] and line.split()[0] in {"xavier", "kaiming_relu", "pytorch_default"}
    }
    assert table == {"xavier": "FLAGGED", "kaiming_relu": "passed", "pytorch_default": "FLAGGED"}


def test_lightning_cli_example_with_a_config(tmp_path: Path) -> None:
    run_example(
        [
            str(ROOT / "examples/cli.py"),
            "fit",
            "--config",
            str(ROOT / "configs/cli/kaiming.yaml"),
            "--trainer.max_steps=3",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ],
        ROOT,
    )
    assert "lightning_init/grad_norm/net.0.weight" in scalar_tags(tmp_path)
