"""InitCallback in Lightning programs a user writes beyond one plain ``fit``: a tuner's fit
before the real one, ..."""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.tuner import Tuner
from torch import nn

from lightning_init.callback import InitCallback
from lightning_init.policy import InitPolicy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
from _models import ConfiguredNet, Net
from _models import quiet_trainer as _trainer


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[key], sb[key]) for key in sa)


def _after_lr_find(tmp_path: Path, model: Net) -> tuple[L.Trainer, InitCallback]:
    """A Trainer with a kaiming_relu InitCallback that has run ``Tuner.lr_find`` on
    ``model`` (a fit that stops before ``on_fit_start``); the model's lr then set to 0."""
    callback = InitCallback("kaiming_relu", check=False, diagnostics=False)
    trainer = _trainer(tmp_path, callbacks=[callback])
    Tuner(trainer).lr_find(model, min_lr=1e-6, max_lr=1e-5, num_training=3, update_attr=False)
    model.lr = 0.0
    return trainer, callback


def _fit_without_warnings(trainer: L.Trainer, model: Net) -> None:
    """``trainer.fit(model)`` with any InitCallback warning raised as an error."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="InitCallback")
        trainer.fit(model)


def test_lr_find_before_fit_keeps_the_policy_weights_without_a_loaded_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Tuner.lr_find runs a fit that stops before on_fit_start and puts the weights of its
    setup back (a checkpoint restore, a load): the real fit keeps them as the policy's."""
    model = Net(lr=0.1)
    untouched = copy.deepcopy(model)
    trainer, callback = _after_lr_find(tmp_path, model)
    with caplog.at_level("INFO", logger="lightning_init"):
        _fit_without_warnings(trainer, model)
    expected = copy.deepcopy(untouched)
    InitPolicy.from_preset("kaiming_relu").apply(expected, seed=callback.state_dict()["seed"])
    assert _same_weights(model, expected)
    state = callback.state_dict()
    assert state["applied"] and state["policy_name"] == "kaiming_relu"
    said = [r.getMessage() for r in caplog.records if "policy 'kaiming_relu' set" in r.getMessage()]
    assert len(said) == 1, said


class _SkipsFirstBatch(Net):
    """Skips batch 0 before calling the model (returns None): the auto policy's pass sees no
    module run."""

    def training_step(self, batch: object, batch_idx: int) -> torch.Tensor | None:
        if batch_idx == 0:
            return None
        return super().training_step(batch, batch_idx)


def test_auto_policy_that_sees_no_layer_run_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = _SkipsFirstBatch()
    untouched = copy.deepcopy(model)
    callback = InitCallback("auto", check=False, diagnostics=False)
    with caplog.at_level("INFO", logger="lightning_init"):
        _trainer(tmp_path, callbacks=[callback]).fit(model)
    assert _same_weights(model, untouched)  # nothing to build from: the weights are kept
    said = [r.getMessage() for r in caplog.records if "found no module" in r.getMessage()]
    assert len(said) == 1 and "example_input_array" in said[0], caplog.text


def test_lr_find_before_fit_then_configure_model_modules_get_the_policy(tmp_path: Path) -> None:
    """The tuner's fit builds the modules in configure_model and stops before on_fit_start:
    the real fit initializes them (they are not 'loaded' by the tuner's restore)."""
    model = ConfiguredNet(lr=0.1)
    trainer, callback = _after_lr_find(tmp_path, model)
    _fit_without_warnings(trainer, model)
    expected = ConfiguredNet()
    expected.configure_model()
    InitPolicy.from_preset("kaiming_relu").apply(expected, seed=callback.state_dict()["seed"])
    assert _same_weights(model, expected)
    assert callback.state_dict()["policy_name"] == "kaiming_relu"
