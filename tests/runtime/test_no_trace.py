"""``no_side_effects``: lazy modules, torch without ``set_stance``, ``param.data = ...``."""

from __future__ import annotations

import logging

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
