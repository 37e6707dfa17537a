"""The gradient's depth trend is judged below the output layer.

A head drawn at scale s has a grad/weight norm ratio of about 1/s, and multiplies the gradient
of every layer below it by s: a head started small on purpose (``InitPolicy.auto``'s regression
head, outputs of std 0.1 x the target's scale; the check's own advice for a loud classifier,
std 0.01) makes a step of about 1/s^2 between the head and the body, which is no vanishing over
depth. A body whose gradient does vanish is still told. The output layers are found by data
flow: each output the model returns, back through what each module received as is (not
through a sum written in place).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lightning_init import InitPolicy, check_init

_LIMIT = 1000.0  # max_grad_drift's default


def _regression_mlp() -> nn.Sequential:
    """``benchmarks/bench_auto.py``'s ``mlp_reg``: 4 Linear layers, ReLU, one output."""
    return nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))


def _regression_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """32 standardized inputs and a linear target of rms about 1 (a standardized target, as
    the benchmark's diabetes regression)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(32, 10, generator=generator)
    direction = torch.randn(10, 1, generator=generator)
    return inputs, inputs @ direction / direction.norm()


def _ratios(report: object) -> list[float]:
    return [layer.grad_to_weight for layer in report.layers  # type: ignore[attr-defined]
            if layer.type == "Linear"]


@pytest.mark.parametrize("seed", [1, 3])
def test_auto_regression_mlp_with_its_small_head_passes_with_an_mse_loss(seed: int) -> None:
    torch.manual_seed(seed)
    model = _regression_mlp()
    inputs, target = _regression_batch(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        InitPolicy.auto(model, inputs).apply(model, seed=seed)
    report = check_init(model, inputs, loss_fn=F.mse_loss, target=target)
    assert report.ok, [problem.message for problem in report.problems]
    ratios = _ratios(report)
    # The case judged: from the head back to the first layer the ratio falls by more than the
    # limit, while the body's own ratios stay within 10x of each other (no trend over depth).
    assert ratios[-1] / ratios[0] > _LIMIT
    assert max(ratios[:-1]) / min(ratios[:-1]) < 10
    # The head is small on purpose: outputs about 0.1x the target's scale.
    assert report.layers[-1].output_std < 0.2 * float(target.std())


def _sigmoid_mlp(depth: int = 12, head_std: float = 1e-3) -> nn.Sequential:
    """A deep sigmoid net (Glorot & Bengio 2010: sigmoid's slope is at most 1/4, so xavier's
    unit-gain layers shrink the backward signal about 4x per layer) with a small head."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        linear = nn.Linear(64, 64)
        nn.init.xavier_normal_(linear.weight)
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.Sigmoid()]
    head = nn.Linear(64, 1)
    nn.init.normal_(head.weight, std=head_std)
    nn.init.zeros_(head.bias)
    return nn.Sequential(*layers, head)


@pytest.mark.parametrize("head_std", [1e-3, 0.125])
def test_a_vanishing_body_below_a_head_is_still_flagged(head_std: float) -> None:
    torch.manual_seed(0)
    model = _sigmoid_mlp(head_std=head_std)
    inputs, target = torch.randn(64, 64), torch.randn(64, 1)
    report = check_init(model, inputs, loss_fn=F.mse_loss, target=target)
    drift = [problem for problem in report.problems
             if problem.kind == "gradient" and "vanish towards the input" in problem.message]
    assert len(drift) == 1, [problem.message for problem in report.problems]
    # Judged over the 12 body layers, from the first to the last below the head.
    assert drift[0].layers == ("0", "22")
    assert "over 12 weight layers" in drift[0].message
    per_layer = float(drift[0].message.split("x per layer")[0].rsplit(" ", 1)[1])
    assert 2 < 1 / per_layer < 8  # about 4x per layer: sigmoid's slope of 1/4 or less


class _TwoHeads(nn.Module):
    """A body and two small heads whose outputs the loss reads, the second called last: the
    output layers are found by data flow, not as the last weight layer called."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                                  nn.Linear(64, 64), nn.ReLU())
        self.main, self.aux = nn.Linear(64, 1), nn.Linear(64, 1)
        for module in self.body:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)
        for head in (self.main, self.aux):
            nn.init.normal_(head.weight, std=1e-3)
            nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return self.main(features), self.aux(features)


def test_every_output_layer_is_left_out_of_the_depth_trend() -> None:
    torch.manual_seed(0)
    model = _TwoHeads()
    inputs, target = _regression_batch(0)

    def loss(outputs: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs[0], y) + F.mse_loss(outputs[1], y)

    report = check_init(model, inputs, loss_fn=loss, target=target)
    # Two heads at 1e-3 end the weight layers' output std 300x below the body and shrink a
    # random input by 0.008x: the scale and gain verdicts leave the output layers out too
    # (tests/check/test_check_head_scale.py).
    assert report.ok, [problem.message for problem in report.problems]
    assert [layer.name for layer in report.layers if layer.output_layer] == ["main", "aux"]
    ratios = {layer.name: layer.grad_to_weight for layer in report.layers
              if layer.type == "Linear"}
    # Each head's ratio is over the limit above the first layer's, by its own small scale;
    # the body's are within 10x of each other.
    assert min(ratios["main"], ratios["aux"]) / ratios["body.0"] > _LIMIT
    body = [ratios[name] for name in ("body.0", "body.2", "body.4")]
    assert max(body) / min(body) < 10


class _InPlaceResidual(nn.Module):
    """A headless block whose residual sum is written into its branch's output in place
    (``h += x``, as Hugging Face's and torchvision's ResNets do), then activated."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(16, 16), nn.Linear(16, 16), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc2(torch.relu(self.fc1(x)))
        h += x
        return self.act(h)


def test_an_in_place_sum_is_no_output_received_as_is() -> None:
    torch.manual_seed(0)
    report = check_init(_InPlaceResidual(), torch.randn(8, 16))
    layers = {layer.name: layer for layer in report.layers}
    # The activation reads fc2's storage, but only after the sum was written into it.
    assert layers["act"].source is None
    # An in-place activation writes into its input itself: it still receives it as is.
    net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(inplace=True), nn.Linear(16, 4))
    report = check_init(net, torch.randn(8, 16))
    assert [layer.source for layer in report.layers] == [None, 0, 1]
