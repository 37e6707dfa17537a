"""Issue 25, item 9: ``lightning-init doctor`` with a batch the model cannot take or a
``--write`` path it cannot write: one line on stderr, exit status 2, nothing else."""

from __future__ import annotations

import pytest
from _models import write_doctor_models

from lightning_init.cli import main


def _write_models(tmp_path, monkeypatch) -> None:
    write_doctor_models(tmp_path, monkeypatch, "doctor_models_25")


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


def _doctor_args(**overrides):
    import argparse

    args = {"model": "doctor_models_25:deep", "input": None, "input_shape": "8,31",
            "write": None, "seed": 0, "table": False}
    return argparse.Namespace(**{**args, **overrides})


def test_doctor_option_errors_are_option_errors_not_policy_errors(tmp_path, monkeypatch):
    from lightning_init.cli import _doctor
    from lightning_init.errors import OptionError, PolicyError

    _write_models(tmp_path, monkeypatch)
    for args, words in [(_doctor_args(), "--input-shape '8,31'"),
                        (_doctor_args(write=str(tmp_path / "no" / "p.yaml")), "does not exist")]:
        with pytest.raises(OptionError, match=words) as info:
            _doctor(args)
        assert not isinstance(info.value, PolicyError)


def test_doctor_blames_the_input_only_for_the_models_forward(tmp_path, monkeypatch, capsys):
    import lightning_init.check

    _write_models(tmp_path, monkeypatch)

    def broken_check(model, sample):
        raise RuntimeError("a fault of the check, not of the batch")

    monkeypatch.setattr(lightning_init.check, "check_init", broken_check)
    with pytest.raises(RuntimeError, match="a fault of the check"):
        main(["doctor", "--model", "doctor_models_25:deep", "--input-shape", "8,32"])
    assert "--input-shape" not in capsys.readouterr().err
