"""The command line, run as `python -m lightning_init` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_init.policy.presets import list_presets

ROOT = Path(__file__).resolve().parent.parent


def _run(*args, tmp_path):
    (tmp_path / "cli_models.py").write_text(
        "import torch\n"
        "def mlp():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),"
        " torch.nn.Linear(8, 2))\n"
    )
    paths = [str(ROOT), str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run([sys.executable, "-m", "lightning_init", *args], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_presets_lists_every_preset(tmp_path):
    result = _run("presets", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == list_presets()  # every preset, sorted
    assert {"bert", "dcgan", "gpt2", "kaiming_relu", "lecun_selu", "lstm", "pytorch_default",
            "xavier"} <= set(names)


def test_explain_prints_the_plan(tmp_path):
    result = _run("explain", "kaiming_relu", "--model", "cli_models:mlp", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "0.weight" in result.stdout and "kaiming_normal" in result.stdout
    assert "2.bias" in result.stdout and "zeros" in result.stdout


def test_explain_error_exits_2_with_file_line_and_suggestion(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("rules:\n  - match: {type: Linaer}\n    bias: zeros\n")
    result = _run("explain", str(path), "--model", "cli_models:mlp", tmp_path=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "p.yaml, line 2" in result.stderr and "Did you mean 'Linear'?" in result.stderr


@pytest.mark.parametrize(
    ("model", "words"),
    [("torch.nn:Nothing", "has no attribute 'Nothing'"), ("no_such_pkg_q:f", "cannot import"),
     ("torch.nn", "expected 'pkg.module:factory'"), ("builtins:dict", "not a torch.nn.Module")],
)
def test_bad_model_argument(capsys, model, words):
    from lightning_init.cli import main

    assert main(["explain", "xavier", "--model", model]) == 2
    assert words in capsys.readouterr().err


def test_explain_markdown_in_process(capsys):
    from lightning_init.cli import main

    assert main(["explain", "xavier", "--model", "test_cli:_tiny", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| parameter |") and "xavier_uniform" in out


def _tiny():
    import torch

    return torch.nn.Sequential(torch.nn.Linear(3, 3))


_HOSTILE = {
    "laughs.yaml": ("a0: &a0 [" + ", ".join(["lol"] * 9) + "]\n" + "".join(
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 9))).encode(),
    "recursive.yaml": b"rules: &r [*r]\n",
    "deep.yaml": b"rules: " + b"[" * 5000 + b"]" * 5000 + b"\n",
    "latin1.yaml": "name: café\nrules: []\n".encode("latin-1"),
    "utf16.yaml": "name: x\nrules: []\n".encode("utf-16"),
    "nul.yaml": b"name: x\x00\nrules: []\n",
    "dots.yaml": b"rules:\n  - match: {type: '..Linear'}\n    weight: zeros\n",
}


@pytest.mark.parametrize("name", sorted(_HOSTILE))
def test_hostile_policy_file_is_one_line_and_exit_2(capsys, tmp_path, name):
    from lightning_init.cli import main

    path = tmp_path / name
    path.write_bytes(_HOSTILE[name])
    assert main(["explain", str(path), "--model", "test_cli:_tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"lightning-init: error: {path}")


def test_hostile_file_in_a_real_process_prints_no_traceback(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(_HOSTILE["latin1.yaml"])
    result = _run("explain", str(path), "--model", "cli_models:mlp", tmp_path=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "not UTF-8" in result.stderr


@pytest.mark.parametrize(
    ("source", "spec", "words"),
    [("def make():\n    raise RuntimeError('no GPU here')\n", "user_models:make",
      ["the factory raised RuntimeError: no GPU here", "user_models.py:2"]),
     ("import torch\nraise ValueError('bad config')\n", "user_models:make",
      ["importing 'user_models' raised ValueError: bad config", "user_models.py:2"]),
     ("def make(:\n", "user_models:make",
      ["importing 'user_models' raised SyntaxError", "user_models.py:1"]),
     ("import no_such_dependency_q\n", "user_models:make",
      ["cannot import 'user_models'", "no_such_dependency_q"])],
)
def test_model_factory_or_import_failure_is_one_line_and_exit_2(
        capsys, tmp_path, monkeypatch, source, spec, words):
    from lightning_init.cli import main

    (tmp_path / "user_models.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "user_models", raising=False)
    assert main(["explain", "xavier", "--model", spec]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lightning-init: error: --model 'user_models")
    for word in words:
        assert word in err


def _console_script(tmp_path: Path) -> Path:
    """A launcher like the `lightning-init` console script: its folder, not the current
    directory, is on sys.path."""
    launcher = tmp_path / "bin" / "lightning_init_launcher.py"
    launcher.parent.mkdir()
    launcher.write_text("import sys\nfrom lightning_init.cli import main\nsys.exit(main())\n")
    return launcher


def test_model_from_the_current_directory_through_the_console_script(tmp_path):
    (tmp_path / "tiny.py").write_text(
        "import torch\ndef make_model():\n    return torch.nn.Sequential(torch.nn.Linear(4, 8))\n"
    )
    result = subprocess.run(
        [sys.executable, str(_console_script(tmp_path)), "explain", "kaiming_relu", "--model",
         "tiny:make_model"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "0.weight" in result.stdout and "kaiming_normal" in result.stdout


def test_misspelled_factory_gets_a_did_you_mean(capsys):
    from lightning_init.cli import main

    assert main(["explain", "xavier", "--model", "torch.nn:Linaer"]) == 2
    err = capsys.readouterr().err
    assert "has no attribute 'Linaer'. Did you mean 'Linear'?" in err and err.count("\n") == 1


def test_closed_pipe_is_quiet(tmp_path):
    (tmp_path / "wide.py").write_text(
        "import torch\ndef make():\n"
        "    return torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(3000)])\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "lightning_init", "explain", "xavier", "--model", "wide:make",
         "--markdown"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )
    assert process.stdout.readline().startswith(b"| parameter |")
    process.stdout.close()  # what `| head -1` does
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 1
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_explain_table_is_narrow_with_rule_index_and_label_once(tmp_path):
    result = _run("explain", "kaiming_relu", "--model", "cli_models:mlp", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100, result.stdout
    # the output layer's rule (linear gain) and the hidden layer's: a weight and a bias each
    assert sum("0: Linear +6" in line for line in lines) == 2
    assert sum("1: Linear +6" in line for line in lines) == 2
    legend = [line for line in lines if line.startswith("rules[0]: type=Linear,Conv1d")]
    assert len(legend) == 1


def test_presets_have_a_one_line_description(tmp_path):
    result = _run("presets", tmp_path=tmp_path)
    rows = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    assert rows["kaiming_relu"].startswith("ReLU nets: He normal N(0, 2/fan_in)")
    assert rows["gpt2"].startswith("GPT-2:") and rows["xavier"].startswith("tanh/sigmoid nets")
    assert all(len(description) > 20 for description in rows.values())
