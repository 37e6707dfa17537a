"""InitCallback's wiring: the check, the diagnostics hooks, the logger (real Trainer runs).

The check and the diagnostics are stood in for (monkeypatched where the callback looks them up:
its own module), so these tests read the callback's side of the contracts in
docs/architecture.md only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from _models import Net, make_policy
from _models import quiet_trainer as _trainer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import lightning_init.callback._engines as callback_module
from lightning_init import InitCheckError
from lightning_init.callback import InitCallback


@dataclass
class _CheckOptions:
    on_fail: str = "warn"

    @classmethod
    def from_arg(cls, arg: Any) -> _CheckOptions | None:
        if arg is False:
            return None
        return cls(**arg) if isinstance(arg, dict) else cls()


@pytest.fixture
def check_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    calls: dict[str, list[Any]] = {"check": [], "publish": []}

    def check_lightning_module(pl_module: Any, batch: Any, options: Any) -> Any:
        calls["check"].append(
            {"batch": batch, "steps": pl_module.steps, "weights": pl_module.net[0].weight.clone()}
        )
        return SimpleNamespace(ok=False, problems=["net.0: dead"])

    def raise_or_warn(report: Any, options: Any) -> None:
        if options.on_fail == "raise":
            raise InitCheckError("net.0: dead", report=report)
        pytest.warns  # noqa: B018 - the warning below is what the test looks for
        import warnings

        warnings.warn("net.0: dead", UserWarning, stacklevel=2)

    monkeypatch.setattr(callback_module, "CheckOptions", _CheckOptions)
    monkeypatch.setattr(callback_module, "check_lightning_module", check_lightning_module)
    monkeypatch.setattr(
        callback_module, "publish_check_report", lambda r, t, *_: calls["publish"].append(r)
    )
    monkeypatch.setattr(callback_module, "raise_or_warn", raise_or_warn)
    return calls


def test_check_on_fail_raise_stops_before_the_first_step(
    tmp_path: Path, check_calls: dict[str, list[Any]]
) -> None:
    model = Net()
    callback = InitCallback(make_policy(), check={"on_fail": "raise"}, diagnostics=False)
    with pytest.raises(InitCheckError, match=r"net\.0: dead"):
        _trainer(tmp_path, callbacks=[callback]).fit(model)
    assert model.steps == 0
    [call] = check_calls["check"]
    inputs, targets = call["batch"]  # the first training batch, an (x, y) tuple
    assert inputs.shape == (8, 4) and targets.shape == (8, 2)
    assert call["steps"] == 0  # the check ran before training
    assert not torch.equal(call["weights"], Net().net[0].weight)  # after the policy
    assert len(check_calls["publish"]) == 1


def test_check_warns_once_and_training_goes_on(
    tmp_path: Path, check_calls: dict[str, list[Any]]
) -> None:
    model = Net()
    callback = InitCallback(make_policy(), check=True, diagnostics=False)
    trainer = _trainer(tmp_path, callbacks=[callback])
    with pytest.warns(UserWarning, match=r"net\.0: dead"):
        trainer.fit(model)
    _trainer(tmp_path, callbacks=[callback]).fit(model)  # a second fit: no second check
    assert model.steps == 4 and len(check_calls["check"]) == 1


def test_check_false_never_runs(tmp_path: Path, check_calls: dict[str, list[Any]]) -> None:
    _trainer(tmp_path, callbacks=[InitCallback(make_policy(), check=False, diagnostics=False)]).fit(
        Net()
    )
    assert check_calls["check"] == []


class _RecordingDiagnostics:
    def __init__(self, options: Any) -> None:
        self.options, self.hooks = options, []

    def __getattr__(self, hook: str) -> Any:
        if not hook.startswith(("on_", "setup", "teardown")):
            raise AttributeError(hook)
        return lambda *args: self.hooks.append(hook)

    def state_dict(self) -> dict[str, Any]:
        return {"hooks_seen": len(self.hooks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded = state


def test_diagnostics_hooks_are_forwarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(callback_module, "DiagnosticsOptions", _CheckOptions)
    monkeypatch.setattr(callback_module, "TrainingDiagnostics", _RecordingDiagnostics)
    callback = InitCallback(None, check=False, diagnostics={"on_fail": "x"})
    _trainer(tmp_path, callbacks=[callback], max_steps=1).fit(Net())
    hooks = callback._diagnostics.hooks
    assert hooks == [
        "setup",
        "on_train_start",
        "on_train_batch_start",
        "on_before_optimizer_step",
        "on_train_batch_end",
        "teardown",
    ]
    assert callback._diagnostics.options == _CheckOptions(on_fail="x")
    assert callback.state_dict()["diagnostics"] == {"hooks_seen": 6}


def test_logger_gets_hparams_and_the_applied_table(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="run")
    callback = InitCallback(make_policy(), check=False, diagnostics=False)
    _trainer(tmp_path, callbacks=[callback], logger=logger, log_every_n_steps=1).fit(Net(lr=0.0))
    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0})
    events.Reload()
    assert "lightning_init/policy/text_summary" in events.Tags()["tensors"]
    [text] = events.Tensors("lightning_init/policy/text_summary")
    assert "net.0.weight" in text.tensor_proto.string_val[0].decode()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["lightning_init/policy"].string_value == "stand_in"
    assert (
        hparams["lightning_init/fingerprint"].string_value == callback.state_dict()["fingerprint"]
    )
    assert hparams["lr"].number_value == 0.0  # the module's own hparams are kept alongside
