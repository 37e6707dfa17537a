"""InitCallback never stops a valid fit: failed writes, loaded weights, precision plugins,
models the check cannot feed, data made in ``setup``, one-shot streams (issue 14)."""

from __future__ import annotations

import copy
import dataclasses
import errno
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset
from torch.utils.tensorboard import SummaryWriter

from lightning_init import PublishingWarning
from lightning_init.callback import InitCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
from _models import IN_FEATURES, LazyNet, Net, make_loader, make_policy
from _models import quiet_trainer as _trainer

_LOGGER = "lightning_init"


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[key], sb[key]) for key in sa)


def _ours(caught: list[warnings.WarningMessage], category: type[Warning]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, category)]


# ------------------------------------------------------------ case 4: writes never stop a fit


def _no_space(*_args: Any, **_kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _fit_with_tensorboard(tmp_path: Path, **callback_args: Any) -> tuple[int, list[str]]:
    """The optimizer steps the fit made, and the publishing warnings."""
    logger = TensorBoardLogger(tmp_path, name="run", version=0)
    callback = InitCallback(diagnostics=False, **callback_args)
    trainer = _trainer(tmp_path, callbacks=[callback], logger=logger, max_steps=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Net(lr=0.1))
    return trainer.global_step, _ours(caught, PublishingWarning)


@pytest.mark.parametrize("method", ["add_text", "add_figure"])
def test_a_tensorboard_write_that_fails_is_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    monkeypatch.setattr(SummaryWriter, method, _no_space)
    steps, messages = _fit_with_tensorboard(tmp_path)
    assert steps == 3  # training went on
    [message] = messages
    assert "the init check's report" in message and "lightning_init/check" in message
    assert "OSError: [Errno 28] No space left on device" in message
    assert "training goes on" in message
    assert (tmp_path / "run" / "version_0" / "init_check.json").is_file()  # the rest written


def test_an_unwritable_init_check_json_is_one_warning(tmp_path: Path) -> None:
    (tmp_path / "run" / "version_0" / "init_check.json").mkdir(parents=True)  # not a file
    steps, messages = _fit_with_tensorboard(tmp_path)
    assert steps == 3
    [message] = messages
    assert "init_check.json" in message and "IsADirectoryError" in message


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_real_full_device_is_one_warning(tmp_path: Path) -> None:
    """init_check.json links to /dev/full: the kernel answers ENOSPC to the write."""
    log_dir = tmp_path / "run" / "version_0"
    log_dir.mkdir(parents=True)
    (log_dir / "init_check.json").symlink_to("/dev/full")
    steps, messages = _fit_with_tensorboard(tmp_path)
    assert steps == 3
    [message] = messages
    assert "init_check.json (OSError: [Errno 28] No space left on device)" in message


def test_the_policy_table_and_hyperparameters_that_fail_are_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_hyperparams = TensorBoardLogger.log_hyperparams

    def failing(self: TensorBoardLogger, params: Any, *args: Any, **kwargs: Any) -> None:
        if "lightning_init/policy" in dict(params):  # ours only: Lightning writes its own later
            _no_space()
        log_hyperparams(self, params, *args, **kwargs)

    monkeypatch.setattr(TensorBoardLogger, "log_hyperparams", failing)
    monkeypatch.setattr(SummaryWriter, "add_text", _no_space)
    steps, messages = _fit_with_tensorboard(tmp_path, policy=make_policy(), check=False)
    assert steps == 3
    [message] = messages
    assert "the initialization's record" in message
    assert "hyperparameters to TensorBoardLogger (OSError: [Errno 28]" in message
    assert "TensorBoard text 'lightning_init/policy' (OSError: [Errno 28]" in message


# -------------------------------------------------------- case 5: loaded weights are kept


def _policy_callback(**kwargs: Any) -> InitCallback:
    return InitCallback(make_policy(), check=False, diagnostics=False, **kwargs)


def _trained_checkpoint(tmp_path: Path) -> tuple[Net, Path]:
    trained = Net(lr=0.5)
    trainer = _trainer(tmp_path)
    trainer.fit(trained)
    path = tmp_path / "trained.ckpt"
    trainer.save_checkpoint(path)
    return trained, path


def _fit_recording(tmp_path: Path, model: Net, callback: InitCallback) -> list[str]:
    model.lr = 0.0  # the fit keeps the weights it starts with
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, callbacks=[callback]).fit(model)
    return _ours(caught, UserWarning)


@pytest.mark.parametrize("how", ["load_from_checkpoint", "load_state_dict", "trained"])
def test_weights_not_from_the_constructor_are_kept_with_a_warning(tmp_path: Path, how: str) -> None:
    trained, path = _trained_checkpoint(tmp_path)
    if how == "load_from_checkpoint":
        model = Net.load_from_checkpoint(path)
    elif how == "load_state_dict":
        model = Net()
        model.load_state_dict(trained.state_dict())
    else:
        model = trained
    expected = copy.deepcopy(model)
    callback = _policy_callback()
    messages = _fit_recording(tmp_path, model, callback)
    assert _same_weights(model, expected)
    [message] = [m for m in messages if "overwrite_loaded" in m]
    origin = "trained" if how == "trained" else "loaded"
    assert f"Net's weights were {origin}" in message
    assert "policy 'stand_in' is NOT applied" in message
    assert "InitCallback(..., overwrite_loaded=True)" in message
    assert callback.state_dict()["policy_name"] is None


def test_overwrite_loaded_applies_the_policy_with_a_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, path = _trained_checkpoint(tmp_path)
    model = Net.load_from_checkpoint(path)
    callback = _policy_callback(overwrite_loaded=True)
    with caplog.at_level(logging.WARNING, logger=_LOGGER):
        messages = _fit_recording(tmp_path, model, callback)
    expected = Net()
    make_policy().apply(expected, seed=callback.state_dict()["seed"])
    assert _same_weights(model, expected)
    assert not [m for m in messages if "overwrite_loaded" in m]
    assert "policy 'stand_in' overwrites them as asked" in caplog.text
    assert "overwrite_loaded=True" in repr(callback)


def test_a_fresh_model_gets_the_policy_without_a_warning(tmp_path: Path) -> None:
    messages = _fit_recording(tmp_path, Net(), _policy_callback())
    assert not [m for m in messages if "overwrite_loaded" in m]


# ------------------------------------------------- case 6: true-precision plugins and the check


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-true", torch.bfloat16),
                                                  ("64-true", torch.float64)])
def test_the_check_feeds_a_batch_converted_by_the_precision_plugin(
    tmp_path: Path, precision: str, dtype: torch.dtype
) -> None:
    model = Net(lr=0.1)
    callback = InitCallback(check={"on_fail": "raise"}, diagnostics=False)
    trainer = _trainer(tmp_path, callbacks=[callback], precision=precision)
    trainer.fit(model)
    assert trainer.global_step == 2
    assert model.net[0].weight.dtype == dtype
    report = callback.check_report
    assert report is not None and report.loss_source == "training_step"


# --------------------------------------------------- case 8: the check steps aside in one line


class _Gan(L.LightningModule):
    """Manual optimization; ``forward(z)`` takes noise, not the batch's images."""

    latent = 3

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = nn.Linear(self.latent, IN_FEATURES)
        self.discriminator = nn.Linear(IN_FEATURES, 1)
        self.steps = 0

    def forward(self, z: torch.Tensor) -> Any:
        return self.generator(z)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.steps += 1
        real = batch[0]
        d_opt, g_opt = self.optimizers()
        fake = self(torch.randn(len(real), self.latent))
        d_loss = self.discriminator(real).mean() - self.discriminator(fake.detach()).mean()
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()
        g_loss = self.discriminator(self(torch.randn(len(real), self.latent))).mean()
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.SGD(self.discriminator.parameters(), lr=0.01),
                torch.optim.SGD(self.generator.parameters(), lr=0.01)]

    def train_dataloader(self) -> DataLoader:
        return make_loader("tuple")


@dataclasses.dataclass
class _Output:
    logits: torch.Tensor


class _DataclassOutput(Net):
    """Manual optimization whose forward returns a dataclass."""

    def __init__(self) -> None:
        super().__init__(lr=0.1)
        self.automatic_optimization = False

    def forward(self, inputs: torch.Tensor) -> Any:  # type: ignore[override]
        return _Output(self.net(inputs))

    def training_step(self, batch: Any, batch_idx: int) -> None:  # type: ignore[override]
        self.steps += 1
        inputs, targets = batch
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(nn.functional.mse_loss(self(inputs).logits, targets))
        optimizer.step()


class _SkipsFirstBatch(Net):
    """Returns None for batch 0 (Lightning skips the step)."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if batch_idx == 0:
            return None
        return super().training_step(batch, batch_idx)


@pytest.mark.filterwarnings("ignore:`training_step` returned `None`")
@pytest.mark.parametrize("model_class", [_Gan, _DataclassOutput, _SkipsFirstBatch])
def test_a_check_that_cannot_run_steps_aside_in_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, model_class: type[L.LightningModule]
) -> None:
    model = model_class()
    callback = InitCallback(diagnostics=False)  # the default check
    trainer = _trainer(tmp_path, callbacks=[callback], max_steps=4)
    with caplog.at_level(logging.WARNING, logger=_LOGGER):
        trainer.fit(model)
    assert trainer.global_step == 4
    [line] = [r.getMessage() for r in caplog.records if r.name.startswith(_LOGGER)]
    assert line.startswith("InitCallback: the init check did not run (")
    assert line.endswith("); training goes on.") and "\n" not in line
    assert callback.check_report is None


def test_a_check_asked_for_that_cannot_run_warns(tmp_path: Path) -> None:
    model = _Gan()
    callback = InitCallback(check={"on_fail": "raise"}, diagnostics=False)
    trainer = _trainer(tmp_path, callbacks=[callback])
    with pytest.warns(UserWarning, match=r"the init check did not run \(RuntimeError: mat1"):
        trainer.fit(model)
    assert trainer.global_step == 2


# ------------------------------------------------------ case 9: data made in module.setup()


class _LazyDataInSetup(LazyNet):
    """Lazy layers; the training data exists only after ``LightningModule.setup``."""

    def setup(self, stage: str) -> None:
        self.data = make_loader("tuple")

    def train_dataloader(self) -> DataLoader:
        return self.data


def test_lazy_modules_with_data_made_in_setup_are_initialized_in_on_fit_start(
    tmp_path: Path,
) -> None:
    model = _LazyDataInSetup()
    callback = InitCallback(make_policy(), check=True, diagnostics=False)
    trainer = _trainer(tmp_path, callbacks=[callback])
    trainer.fit(model)
    assert trainer.global_step == 2 and tuple(model.net[0].weight.shape) == (8, IN_FEATURES)
    expected = copy.deepcopy(model)
    make_policy().apply(expected, seed=callback.state_dict()["seed"])
    assert _same_weights(model, expected)  # lr 0: the policy's weights, exactly
    assert callback.state_dict()["policy_name"] == "stand_in"
    assert callback.check_report is not None


# ---------------------------------------------------------- case 10: a one-shot stream


class _OneShot(IterableDataset):
    """Four batches from one shared iterator: a second ``iter`` finds it spent."""

    def __init__(self) -> None:
        inputs, targets = make_loader("tuple").dataset.tensors
        self.batches = iter(zip(inputs.split(8), targets.split(8), strict=True))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches


def test_a_one_shot_stream_keeps_every_batch_for_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = Net(lr=0.1)
    loader = DataLoader(_OneShot(), batch_size=None)
    with caplog.at_level(logging.WARNING, logger=_LOGGER):
        _trainer(tmp_path, callbacks=[InitCallback(diagnostics=False)], max_steps=-1,
                 max_epochs=1).fit(model, loader)
    assert model.steps == 4
    [line] = [r.getMessage() for r in caplog.records if r.name.startswith(_LOGGER)]
    assert "_OneShot (an IterableDataset)" in line and "example_input_array" in line


def test_a_one_shot_stream_with_an_example_input_is_checked(tmp_path: Path) -> None:
    model = Net(lr=0.1)
    model.example_input_array = torch.randn(8, IN_FEATURES)
    callback = InitCallback(diagnostics=False)
    _trainer(tmp_path, callbacks=[callback], max_steps=-1, max_epochs=1).fit(
        model, DataLoader(_OneShot(), batch_size=None)
    )
    assert model.steps == 4
    report = callback.check_report
    assert report is not None and report.loss_source is None  # the forward was measured
    assert [layer.name for layer in report.layers][:1] == ["net.0"]


def test_a_map_style_loader_still_gives_the_check_its_batch(tmp_path: Path) -> None:
    callback = InitCallback(diagnostics=False)
    _trainer(tmp_path, callbacks=[callback]).fit(Net(), DataLoader(TensorDataset(
        *make_loader("tuple").dataset.tensors), batch_size=8))
    assert callback.check_report is not None
    assert callback.check_report.loss_source == "training_step"


def test_overwrite_loaded_takes_a_bool_only() -> None:
    with pytest.raises(TypeError, match=r"\(overwrite_loaded=...\) takes True or False, got"):
        InitCallback(overwrite_loaded="yes")  # type: ignore[arg-type]
