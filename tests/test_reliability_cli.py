"""Issue 25, item 9: ``lightning-init doctor`` with a batch the model cannot take or a
``--write`` path it cannot write: one line on stderr, exit status 2, nothing else."""

from __future__ import annotations

from lightning_init.cli import main


def _write_models(tmp_path, monkeypatch) -> None:
    (tmp_path / "doctor_models_25.py").write_text(
        "import torch\n"
        "def deep():\n"
        "    torch.manual_seed(0)\n"
        "    layers = []\n"
        "    for _ in range(30):\n"
        "        layers += [torch.nn.Linear(32, 32), torch.nn.ReLU()]\n"
        "    return torch.nn.Sequential(*layers)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def test_item9_doctor_input_shape_the_model_cannot_take(tmp_path, monkeypatch, capsys):
    _write_models(tmp_path, monkeypatch)
    status = main(["doctor", "--model", "doctor_models_25:deep", "--input-shape", "8,31"])
    captured = capsys.readouterr()
    assert status == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("lightning-init: error: --input-shape '8,31'")
    assert "RuntimeError" in lines[0] and "Traceback" not in captured.err
    assert captured.out == ""


def test_item9_doctor_write_to_a_missing_directory(tmp_path, monkeypatch, capsys):
    _write_models(tmp_path, monkeypatch)
    target = tmp_path / "missing" / "policy.yaml"
    status = main(["doctor", "--model", "doctor_models_25:deep", "--input-shape", "64,32",
                   "--write", str(target)])
    captured = capsys.readouterr()
    assert status == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert f"--write {str(target)!r}" in lines[0] and "does not exist" in lines[0]
    assert captured.out == ""  # refused before the analysis
    assert not target.exists()
