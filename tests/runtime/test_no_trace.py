"""``no_side_effects``: lazy modules, torch without ``set_stance``, ``param.data = ...``."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from torch import nn

from lightning_init import check_init
from lightning_init.runtime.no_trace import no_side_effects


def test_lazy_modules_run_inside_and_materialize() -> None:
    lazy = nn.Sequential(nn.LazyLinear(3), nn.ReLU(), nn.LazyBatchNorm1d())
    with no_side_effects(lazy):
        out = lazy(torch.randn(4, 5))
    assert out.shape == (4, 3)
    assert lazy[0].weight.shape == (3, 5)  # materialized as without the mode


def test_torch_without_set_stance_still_runs_a_compiled_module_eagerly(monkeypatch) -> None:
    monkeypatch.delattr(torch.compiler, "set_stance")  # torch < 2.6
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    compiled = torch.compile(net, backend="eager")
    x = torch.randn(16, 4)
    try:
        with no_side_effects(compiled):
            out = compiled(x)
    finally:
        torch._dynamo.reset()
    assert torch.equal(out, net(x))


def test_data_assignment_is_undone_and_named(caplog) -> None:
    class Reassigns(nn.Linear):
        def forward(self, x):
            self.weight.data = torch.zeros_like(self.weight)  # no version bump, no operator
            return super().forward(x)

    net = nn.Sequential(Reassigns(2, 2), nn.ReLU(), nn.Linear(2, 2))
    before = net[0].weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="lightning_init"), no_side_effects(net):
        net(torch.randn(3, 2))
    assert torch.equal(net[0].weight, before)
    said = [r.getMessage() for r in caplog.records if "0.weight" in r.getMessage()]
    assert len(said) == 1 and "restored" in said[0], said


class _EvalCache(nn.Module):
    """Caches a weight-derived tensor in eval mode and drops it in ``train()``, as LeViT's
    attention biases do: the cached tensor holds the graph of the pass that made it."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(4, 4))
        self.cache: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True) -> _EvalCache:
        super().train(mode)
        if mode:
            self.cache = {}
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return x @ (2 * self.table)
        if "table" not in self.cache:
            self.cache["table"] = 2 * self.table
        return x @ self.cache["table"]


def test_a_cache_that_eval_mode_keeps_is_dropped_and_the_modes_restored() -> None:
    model = nn.Sequential(nn.Linear(4, 4), _EvalCache())
    model[0].eval()  # a mixed mode, restored flag by flag
    for _ in range(2):  # the second pass builds its own graph: no backward through a freed one
        with no_side_effects(model):
            model(torch.randn(3, 4)).sum().backward()
        assert model[1].cache == {}
    assert [module.training for module in model.modules()] == [True, False, True]
    report = check_init(model, torch.randn(8, 4))  # its look-ahead pass is a second pass
    assert report.layers


class _MergingLora(nn.Module):
    """A LoRA layer as loralib's: ``eval()`` merges the low-rank update into the weight and
    ``train()`` takes it out again (float rounding included), with a flag saying which."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 8))
        self.down = nn.Parameter(torch.randn(2, 8) * 0.3)
        self.up = nn.Parameter(torch.randn(8, 2) * 0.3)
        self.merged = False

    def train(self, mode: bool = True) -> _MergingLora:
        super().train(mode)
        with torch.no_grad():
            if mode and self.merged:
                self.weight -= self.up @ self.down
            elif not mode and not self.merged:
                self.weight += self.up @ self.down
        self.merged = not mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight if self.merged else self.weight + self.up @ self.down
        return x @ weight.T


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_what_a_modules_train_or_eval_writes_is_restored_with_its_mode(training: bool) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(_MergingLora(), nn.ReLU(), nn.Linear(8, 2)).train(training)
    before = [param.detach().clone() for param in model.parameters()]
    check_init(model, torch.randn(16, 8))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert model[0].merged is not training and model[0].training is training


def test_the_sample_forward_keeps_a_submodule_frozen_in_eval_mode() -> None:
    from lightning_init._lightning import SampleBatch, run_sample_forward

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).eval()
            self.head = nn.LazyLinear(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.backbone(x))

    net = Net()
    run_sample_forward(net, SampleBatch(torch.randn(3, 4), "example_input_array"))
    assert net.training and not net.backbone.training and not net.backbone[1].training
    assert tuple(net.head.weight.shape) == (2, 4)
