"""``no_side_effects``: lazy modules, torch without ``set_stance``, ``param.data = ...``."""

from __future__ import annotations

import logging

import torch
from torch import nn

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
