"""The Lightning glue: check_lightning_module and publish_check_report in real Trainer runs."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import lightning
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_init import InitCheckError
from lightning_init.check import (
    CheckOptions,
    check_lightning_module,
    publish_check_report,
    raise_or_warn,
)

CLASSES = 6


class Classifier(lightning.LightningModule):
    """The common case: (x, y) batches, a cross-entropy training_step that calls self.log."""

    def __init__(self, dict_batches: bool = False, last_layer_gain: float = 1.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 32), nn.BatchNorm1d(32), nn.ReLU(),
                                 nn.Linear(32, CLASSES))
        with torch.no_grad():
            self.net[3].weight.mul_(last_layer_gain)
        self.dict_batches = dict_batches
        self.steps_run = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.steps_run += 1
        x, y = (batch["x"], batch["y"]) if self.dict_batches else batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        self.log_dict({"also": loss})
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _DictDataset(TensorDataset):
    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x, y = super().__getitem__(index)
        return {"x": x, "y": y}


def _loader(dict_batches: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 12, generator=generator)
    y = torch.randint(0, CLASSES, (64,), generator=generator)
    dataset = _DictDataset(x, y) if dict_batches else TensorDataset(x, y)
    return DataLoader(dataset, batch_size=32)


class CheckingCallback(lightning.Callback):
    """What InitCallback does with the check: on_fit_start, first training batch, publish."""

    def __init__(self, batch: Any, options: CheckOptions) -> None:
        self.batch, self.options = batch, options
        self.report = None

    def on_fit_start(self, trainer: lightning.Trainer, pl_module: Any) -> None:
        self.report = check_lightning_module(pl_module, self.batch, self.options)
        publish_check_report(self.report, trainer)
        raise_or_warn(self.report, self.options)


def _trainer(tmp_path, callback: lightning.Callback, logger: Any = False) -> lightning.Trainer:
    return lightning.Trainer(
        max_steps=2, logger=logger, callbacks=[callback], enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
        accelerator="cpu", devices=1, log_every_n_steps=1,
    )


def test_trainer_run_publishes_table_figure_and_json(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    model, loader = Classifier(), _loader()
    batch = next(iter(loader))
    expected_loss = nn.functional.cross_entropy(model.train()(batch[0]), batch[1]).item()
    callback = CheckingCallback(batch, CheckOptions())
    logger = TensorBoardLogger(tmp_path, name="run")
    _trainer(tmp_path, callback, logger).fit(model, loader)

    report = callback.report
    assert report.ok, [str(p) for p in report.problems]
    assert report.loss_source == "training_step" and report.num_classes == CLASSES
    assert report.loss == pytest.approx(expected_loss, rel=1e-5)
    assert report.expected_loss == pytest.approx(math.log(CLASSES))
    assert [layer.name for layer in report.layers] == ["net.0", "net.1", "net.2", "net.3"]
    assert all(p.grad_norm is not None for p in report.parameters)
    # self.log was muted during the check and restored: training logged normally after it.
    assert "log" not in vars(model) and "log_dict" not in vars(model)
    assert "train_loss" in lightning_metrics(model)
    assert model.steps_run == 1 + 2  # the check's training_step, then two real steps

    console = capsys.readouterr().out
    assert "init check: OK" in console and "net.3" in console
    with open(os.path.join(logger.log_dir, "init_check.json"), encoding="utf-8") as file:
        saved = json.load(file)
    assert saved["layers"][3]["name"] == "net.3" and saved["loss"] == pytest.approx(report.loss)
    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0, "images": 0})
    events.Reload()
    assert "lightning_init/check_depth" in events.Tags()["images"]
    assert "lightning_init/check/text_summary" in events.Tags()["tensors"]
    text = events.Tensors("lightning_init/check/text_summary")[0].tensor_proto.string_val[0]
    assert b"| net.3 | Linear |" in text


def lightning_metrics(model: lightning.LightningModule) -> dict[str, Any]:
    return dict(model.trainer.callback_metrics)


def test_raise_stops_before_the_first_training_step(tmp_path) -> None:
    torch.manual_seed(0)
    model, loader = Classifier(last_layer_gain=60.0), _loader()
    callback = CheckingCallback(next(iter(loader)), CheckOptions.from_arg({"on_fail": "raise"}))
    with pytest.raises(InitCheckError, match=r"initial loss .* ln\(6\) = 1\.792") as caught:
        _trainer(tmp_path, callback).fit(model, loader)
    assert model.steps_run == 1  # only the check's own call of training_step
    assert caught.value.report.problems[0].kind == "loss"
    assert caught.value.report.problems[0].layers == ("net.3",)


def test_dict_batches_and_no_side_effects(tmp_path) -> None:
    torch.manual_seed(0)
    model = Classifier(dict_batches=True)
    batch = next(iter(_loader(dict_batches=True)))
    model.net[3].weight.grad = torch.ones_like(model.net[3].weight)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    report = check_lightning_module(model, batch, CheckOptions())
    assert report.loss_source == "training_step" and report.num_classes == CLASSES
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert torch.equal(model.net[3].weight.grad, torch.ones_like(model.net[3].weight))
    assert model.net[0].weight.grad is None
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and "log" not in vars(model)


def test_example_input_array_path_uses_the_surrogate_loss() -> None:
    torch.manual_seed(0)
    model = Classifier()
    model.example_input_array = torch.randn(16, 12)
    report = check_lightning_module(model, None, CheckOptions())
    assert report.ok and report.loss is None and model.steps_run == 0
    assert any("surrogate" in note for note in report.notes)
    assert report.layers[0].name == "net.0"
    with pytest.raises(ValueError, match="example_input_array"):
        check_lightning_module(Classifier(), None, CheckOptions())


def test_num_classes_option_and_no_logger_console_only(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    model, loader = Classifier(), _loader()
    batch = next(iter(loader))
    report = check_lightning_module(model, batch, CheckOptions.from_arg({"num_classes": 3}))
    assert report.num_classes == 3 and report.expected_loss == pytest.approx(math.log(3))
    trainer = lightning.Trainer(logger=False, default_root_dir=tmp_path,
                                enable_progress_bar=False)
    publish_check_report(report, trainer)
    assert "lightning_init: init check" in capsys.readouterr().out
    assert not list(tmp_path.rglob("init_check.json"))


class Failing(Classifier):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.log("before", 1.0)  # muted, must not raise outside the loop
        raise RuntimeError("step failed")


class ReturnsNothing(Classifier):
    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.log("loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))


def test_failing_training_step_leaves_no_hooks_and_restores_log() -> None:
    model = Failing().eval()
    with pytest.raises(RuntimeError, match="step failed"):
        check_lightning_module(model, next(iter(_loader())), CheckOptions())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    assert "log" not in vars(model) and not model.training
    with pytest.raises(ValueError, match=r"training_step returned NoneType.*example_input_array"):
        check_lightning_module(ReturnsNothing(), next(iter(_loader())), CheckOptions())
