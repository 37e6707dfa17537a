"""The Lightning glue shared by the callback and the check: one way to feed a module."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn

from lightning_init._lightning import SampleBatch, find_sample_batch, run_sample_forward, to_device
from lightning_init.check import CheckOptions, check_lightning_module


class _Logs:
    """A stand-in for ``self.log`` set on the instance (a user's own logging function)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, name: str, *_args: Any, **_kwargs: Any) -> None:
        self.calls.append(name)


class _Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 3))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        self.log_dict({"train_loss_again": loss})
        return loss


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(16, 5), torch.randint(0, 3, (16,))


def test_sample_forward_restores_a_log_set_on_the_instance() -> None:
    module, logs = _Classifier(), _Logs()
    module.log = logs
    run_sample_forward(module, SampleBatch(_batch(), "train_dataloader"))
    assert module.net[0].weight.shape == (8, 5)  # the training_step ran
    assert logs.calls == []  # muted inside
    assert module.log is logs  # and given back afterwards
    assert "log_dict" not in vars(module)


def test_check_restores_a_log_set_on_the_instance() -> None:
    module, logs = _Classifier(), _Logs()
    module.net(torch.zeros(1, 5))  # materialized
    module.log = logs
    check_lightning_module(module, _batch(), CheckOptions())
    assert logs.calls == []
    assert module.log is logs and "log_dict" not in vars(module)


def test_the_check_does_not_import_lightning() -> None:
    code = (
        "import sys, torch; from lightning_init.check import check_init, lsuv_init; "
        "net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU()); "
        "check_init(net, torch.randn(8, 4)); lsuv_init(net, torch.randn(8, 4)); "
        "print('lightning' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]


class _Manual(L.LightningModule):
    """Manual optimization: training_step would step the optimizers, so it must not run."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = nn.Sequential(nn.LazyLinear(8), nn.ReLU(), nn.Linear(8, 3))
        self.steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> None:  # pragma: no cover - not run
        self.steps += 1


class _KeywordManual(_Manual):
    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x)


def _feed_both_ways(module: _Manual, batch: Any) -> Any:
    """The sample forward (lazy modules), then the check, on the same training batch."""
    run_sample_forward(module, SampleBatch(batch, "train_dataloader"))
    return check_lightning_module(module, batch, CheckOptions())


@pytest.mark.parametrize("kind", ["tensor", "tuple", "dict"])
def test_manual_optimization_feeds_forward_the_batch_input(kind: str) -> None:
    x, y = _batch()
    batch = {"tensor": x, "tuple": (x, y), "dict": {"x": x, "y": y}}[kind]
    module = _KeywordManual() if kind == "dict" else _Manual()
    report = _feed_both_ways(module, batch)
    assert module.net[0].weight.shape == (8, 5) and module.steps == 0
    assert report.loss is None and report.layers[0].name == "net.0"
    assert any(note.startswith("manual optimization: training_step not run") for note in
               report.notes)


def test_manual_optimization_refuses_a_dict_forward_does_not_take_in_both_paths() -> None:
    x, y = _batch()
    message = (r"_Manual\.forward cannot take a training batch of type dict "
               r"\(keywords x, y: .*'y'.*set `_Manual\.example_input_array`")
    module = _Manual()
    with pytest.raises(ValueError, match=rf"^InitCallback: {message}"):
        run_sample_forward(module, SampleBatch({"x": x, "y": y}, "train_dataloader"))
    module.net(x)  # materialized
    with pytest.raises(ValueError, match=rf"^check: {message}"):
        check_lightning_module(module, {"x": x, "y": y}, CheckOptions())
    module.example_input_array = x  # the fix the message names
    assert _feed_both_ways(module, {"x": x, "y": y}).layers[0].shape == (16, 8)


class _Movable:
    """Not a tensor, but has ``.to`` (like a tokenizer's BatchEncoding)."""

    def __init__(self) -> None:
        self.device: torch.device | None = None

    def to(self, device: torch.device, **_kwargs: Any) -> _Movable:
        self.device = device
        return self


def test_example_input_moves_by_lightnings_rule_like_the_check_batch() -> None:
    module = L.LightningModule()
    module.example_input_array = {"ids": _Movable(), "mask": torch.ones(2)}
    found = find_sample_batch(None, module, torch.device("meta"))
    assert found.batch["ids"].device == torch.device("meta") and found.batch["mask"].is_meta
    assert to_device(_Movable(), torch.device("meta")).device == torch.device("meta")


class _KeepsItsState(nn.Module):
    """A recurrent layer that keeps its last state as a plain attribute (RecurrentGemma's
    ``rg_lru.recurrent_states``): after a pass that recorded a graph, no graph leaf."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.Linear(4, 4)
        self.state: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.state = torch.tanh(self.cell(x))
        return self.state


def test_a_model_copy_holds_a_state_left_by_a_pass_detached() -> None:
    from lightning_init import check_init
    from lightning_init._lightning import model_copy

    model = _KeepsItsState()
    model(torch.randn(3, 4))
    assert model.state is not None and model.state.grad_fn is not None
    copied = model_copy(model)
    assert copied.state.grad_fn is None and torch.equal(copied.state, model.state)
    assert copied.state is not model.state and copied.cell.weight is not model.cell.weight
    # the check's suggestion copies the model after the check's pass left such a state
    with torch.no_grad():
        model.cell.weight.normal_(0.0, 10.0)
    report = check_init(model, torch.randn(8, 4))
    assert not report.ok and report.suggest_policy().offered


def test_a_model_copy_holds_states_cached_in_a_list_or_dict_detached() -> None:
    from lightning_init._lightning import model_copy

    model = _KeepsItsState()
    out = model(torch.randn(3, 4))
    model.history, model.by_step = [out * 2], {"last": out + 1}  # caches of past states
    copied = model_copy(model)
    assert copied.history[0].grad_fn is None and copied.by_step["last"].grad_fn is None
    assert torch.equal(copied.history[0], model.history[0])
