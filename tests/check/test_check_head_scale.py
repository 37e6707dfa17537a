"""The forward depth trend and the gain's lower limit leave the output layers out.

A head drawn at scale s scales the model's output by s and nothing below it: a head started
small on purpose (``InitPolicy.auto``'s regression head, outputs of 0.1x the target's rms; a
zero-ish classifier) ends the weight layers' output std s below the body, which is no trend
over depth, and its gain of about s both ways makes it a gate, not an inert branch (a zero
head is one, see :mod:`lightning_init.check.gates`). A body that shrinks, or a layer in the
body drawn that small, is still told. The displays (the depth figure, ``check_metrics``) draw
and fit the series the verdicts judge.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lightning_init import InitPolicy, check_init
from lightning_init.check.metrics import check_metrics

_WORST = "lightning_init/check/worst_drift"


def _regression_mlp() -> nn.Sequential:
    """``benchmarks/bench_auto.py``'s ``mlp_reg``: 4 Linear layers, ReLU, one output."""
    return nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))


def _auto_regression(rms: float, seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The regression MLP under ``policy="auto"``, given the target through ``forward=`` so
    that it measures the target's rms (``rms``) and starts the head at 0.1x of it."""
    torch.manual_seed(seed)
    model = _regression_mlp()
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(256, 10, generator=generator)
    target = rms * torch.randn(256, 1, generator=generator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = InitPolicy.auto(model, (inputs, target),
                                 forward=lambda m, batch: F.mse_loss(m(batch[0]), batch[1]))
    policy.apply(model, seed=seed)
    return model, inputs, target


@pytest.mark.parametrize(("rms", "seed"), [(0.1, 1), (0.1, 2), (0.01, 0), (0.01, 1)])
def test_auto_regression_head_small_next_to_a_small_target_passes(rms: float, seed: int) -> None:
    model, inputs, target = _auto_regression(rms, seed)
    report = check_init(model, inputs, loss_fn=F.mse_loss, target=target)
    assert report.ok, [problem.message for problem in report.problems]
    stds = [layer.output_std for layer in report.layers if layer.type == "Linear"]
    # The case judged: the head's output is far below the body's (about 0.1x the target's rms,
    # the body's near 1), while the body itself holds its scale (kaiming: He et al. 2015).
    assert stds[-1] < 0.3 * rms and stds[-1] / stds[0] < 0.01
    assert max(stds[:-1]) / min(stds[:-1]) < 3
    # The displays fit the body's series too: nothing near the limits.
    assert check_metrics(report)[_WORST] < 10
    assert [layer.name for layer in report.layers if layer.output_layer] == ["6"]


def _relu_mlp(depth: int, init: str, head_std: float | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        linear = nn.Linear(64, 64)
        if init == "xavier":
            nn.init.xavier_normal_(linear.weight)
        else:
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()]
    if head_std is not None:
        head = nn.Linear(64, 1)
        nn.init.normal_(head.weight, std=head_std)
        nn.init.zeros_(head.bias)
        layers.append(head)
    return nn.Sequential(*layers)


def test_a_shrinking_body_below_a_small_head_is_still_flagged() -> None:
    # Xavier on ReLU: 0.71x per layer (He et al. 2015), 20 layers ~ 700x, below a 1e-3 head.
    torch.manual_seed(0)
    report = check_init(_relu_mlp(20, "xavier", head_std=1e-3), torch.randn(256, 64),
                        loss_fn=F.mse_loss, target=torch.randn(256, 1))
    scale = [problem for problem in report.problems if problem.kind == "scale"]
    assert len(scale) == 1, [problem.message for problem in report.problems]
    assert scale[0].layers == ("0", "38")  # the body's first and last, not the head "40"
    assert "shrink" in scale[0].message and "over 20 weight layers" in scale[0].message
    per_layer = float(scale[0].message.split("about ")[1].split("x")[0])
    assert 0.6 < per_layer < 0.8


def test_a_broken_deep_tanh_net_is_still_flagged_by_scale() -> None:
    # Weights of std 0.01 at width 64: each layer multiplies the scale by about 0.08 (tanh's
    # slope is 1 near 0), 12 layers below a classifier.
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(12):
        linear = nn.Linear(64, 64)
        nn.init.normal_(linear.weight, std=0.01)
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.Tanh()]
    layers.append(nn.Linear(64, 10))
    report = check_init(nn.Sequential(*layers), torch.randn(128, 64), loss_fn=F.cross_entropy,
                        target=torch.randint(0, 10, (128,)))
    scale = [problem for problem in report.problems if problem.kind == "scale"]
    assert len(scale) == 1 and "shrink" in scale[0].message, \
        [problem.message for problem in report.problems]
    assert scale[0].layers == ("0", "22")  # the body's, not the classifier "24"
    assert "over 12 weight layers" in scale[0].message


class _SmallLayers(nn.Module):
    """A kaiming ReLU body with one layer drawn at ``body_std`` and a head at ``head_std``."""

    def __init__(self, body_std: float | None, head_std: float) -> None:
        super().__init__()
        self.body = _relu_mlp(4, "kaiming")
        self.head = nn.Linear(64, 1)
        if body_std is not None:
            nn.init.normal_(self.body[4].weight, std=body_std)
        nn.init.normal_(self.head.weight, std=head_std)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _gain(report: object) -> list:
    return [problem for problem in report.problems  # type: ignore[attr-defined]
            if problem.kind == "gain"]


def test_a_small_head_is_a_gate_not_an_inert_branch() -> None:
    # std 1e-3 on 64 inputs, 1 output: gains of 0.008 forward and 0.001 backward, both under
    # min_layer_gain = 0.01, as the body layer below.
    torch.manual_seed(0)
    inputs, target = torch.randn(256, 64), torch.randn(256, 1)
    report = check_init(_SmallLayers(None, 1e-3), inputs, loss_fn=F.mse_loss, target=target)
    assert report.ok, [problem.message for problem in report.problems]
    # The same scale in the body leaves its branch inert: still told, the head still not.
    torch.manual_seed(0)
    report = check_init(_SmallLayers(1e-3, 1e-3), inputs, loss_fn=F.mse_loss, target=target)
    gain = _gain(report)
    assert len(gain) == 1 and gain[0].layers == ("body.4",), \
        [problem.message for problem in report.problems]
    assert "shrinks" in gain[0].message


def test_a_huge_head_is_still_flagged_by_gain() -> None:
    torch.manual_seed(0)
    inputs, target = torch.randn(256, 64), torch.randn(256, 1)
    report = check_init(_SmallLayers(None, 10.0), inputs, loss_fn=F.mse_loss, target=target)
    gain = _gain(report)
    assert len(gain) == 1 and gain[0].layers == ("head",) and "multiplies" in gain[0].message


def test_the_depth_figure_draws_the_body_against_its_own_last_layer() -> None:
    model, inputs, target = _auto_regression(0.01, 0)
    report = check_init(model, inputs, loss_fn=F.mse_loss, target=target)
    forward, backward = report.figure().axes
    gradients = np.asarray(backward.lines[0].get_ydata(), dtype=float)
    # The body (layers 0, 2, 4) in the band around the last layer below the head; the head,
    # its own scale's 1/s^2 above, is drawn apart and named as left out of the trend.
    assert gradients[2] == pytest.approx(1.0)
    assert np.all((gradients[:3] > 0.1) & (gradients[:3] < 10)), gradients
    assert gradients[3] > 1e3
    labels = {text for axis in (forward, backward)
              for text in axis.get_legend_handles_labels()[1]}
    assert any("output layer" in label for label in labels), labels
