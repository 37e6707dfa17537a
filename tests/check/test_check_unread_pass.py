"""The check's pass with moved parameters (zero gradients no init changes): its own moves are
no write of the user's, it never crashes a healthy model, and lazy modules are checked."""

from __future__ import annotations

import logging

import torch
from torch import nn

from lightning_init import check_init


class _UnusedBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.unused = nn.Linear(8, 16), nn.Linear(16, 4), nn.Linear(8, 8)

    def forward(self, x):
        return self.b(torch.relu(self.a(x))) + 0 * self.unused(x).sum()


def test_the_checks_own_moves_are_not_reported_as_the_models_writes(caplog) -> None:
    torch.manual_seed(0)
    net = _UnusedBranch()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="lightning_init"):
        report = check_init(net, torch.randn(32, 8))
    assert any("unused.weight" in note for note in report.notes)  # the moved pass ran
    assert not [r.getMessage() for r in caplog.records if "in place" in r.getMessage()]
    for name, tensor in before.items():
        assert torch.equal(net.state_dict()[name], tensor), name


def test_lazy_modules_are_checked() -> None:
    torch.manual_seed(0)
    lazy = nn.Sequential(nn.LazyLinear(16), nn.ReLU(), nn.LazyLinear(3))
    report = check_init(lazy, torch.randn(8, 5))
    assert report.ok, report.problems
    assert lazy[0].weight.shape == (16, 5)


class _GaussianPolicy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 4)
        self.scale = nn.Parameter(torch.ones(4))
        self.value = nn.Linear(8, 1)  # not read by this loss: exactly zero gradient

    def forward(self, x):
        return self.body(x), self.value(x)


def test_a_moved_pass_that_fails_falls_back_to_the_zero_gradient_finding() -> None:
    torch.manual_seed(0)
    net = _GaussianPolicy()
    before = {k: v.clone() for k, v in net.state_dict().items()}

    def loss_fn(out, target):
        mu, value = out
        normal = torch.distributions.Normal(mu, net.scale, validate_args=True)  # moved below 0
        return -normal.log_prob(target).mean() + 0 * value.sum()

    report = check_init(net, torch.randn(16, 8), loss_fn=loss_fn, target=torch.randn(16, 4))
    zero = [p for p in report.problems if "zero gradient" in p.message]
    assert any("value.weight" in p.message for p in zero), (report.problems, report.notes)
    note = [n for n in report.notes if "could not" in n]
    assert len(note) == 1 and "ValueError" in note[0], report.notes
    for name, tensor in before.items():
        assert torch.equal(net.state_dict()[name], tensor), name


def test_the_look_ahead_step_is_not_reported_as_the_models_write(caplog) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                        nn.Linear(16, 3))
    nn.init.zeros_(net[4].weight)  # a zero head: a gate the look-ahead steps
    with caplog.at_level(logging.INFO, logger="lightning_init"):
        report = check_init(net, torch.randn(32, 8), loss_fn=nn.functional.cross_entropy,
                            target=torch.randint(0, 3, (32,)))
    assert any("look-ahead" in note for note in report.notes)  # the step was taken
    assert not [r.getMessage() for r in caplog.records if "in place" in r.getMessage()]
    assert (net[4].weight == 0).all()
