"""The check's depth figure: what it draws, read back from the matplotlib figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lightning_init import check_init


def _mlp(init: str, depth: int = 30, width: int = 64) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        linear = nn.Linear(width, width)
        if init == "kaiming":
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
            nn.init.zeros_(linear.bias)
        elif init == "normal":
            nn.init.normal_(linear.weight, std=1.0)
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers)


def _figure(init: str):
    torch.manual_seed(0)
    return check_init(_mlp(init), torch.randn(256, 64)).figure()


def test_healthy_net_is_flat_inside_a_fixed_wide_range() -> None:
    figure = _figure("kaiming")
    forward, backward = figure.axes
    for axis in (forward, backward):
        low, high = axis.get_ylim()
        assert (low, high) == (1e-6, 1e6)  # twelve decades: a factor of 2 reads as flat
        path = np.asarray(axis.lines[0].get_ydata(), dtype=float)
        # He et al. 2015: kaiming keeps the scale within a small factor over 30 layers.
        assert np.all((path > 0.1) & (path < 10)), path
    assert figure.get_size_inches()[0] >= 12  # wide enough to read as a thumbnail


def test_weight_layers_are_named_and_told_apart_and_the_band_is_shaded() -> None:
    figure = _figure("default")
    forward, backward = figure.axes
    names = [label.get_text() for label in forward.get_xticklabels()]
    assert names == [str(i) for i in range(0, 60, 2)]  # the Linear layers, in forward order
    filled, hollow = forward.collections[:2]
    assert len(filled.get_offsets()) == 30 and len(hollow.get_offsets()) == 30
    assert [float(x) for x, _ in filled.get_offsets()] == list(range(0, 60, 2))
    # The accepted band (max_scale_drift = 100 around the first layer) is shaded.
    band = forward.patches[0]
    assert (band.get_y(), band.get_y() + band.get_height()) == pytest.approx((0.01, 100.0))
    # PyTorch's default init: the first layers' gradients are 1e-10 of the last ones'. The
    # reference is the last layer below the output layer (`58`, whose output the model returns
    # through a ReLU), which the check leaves out of its depth trends.
    gradients = np.asarray(backward.lines[0].get_ydata(), dtype=float)
    assert gradients[-2] == pytest.approx(1.0) and gradients[0] < 1e-8
    assert backward.get_ylim()[0] <= 10 ** math.floor(math.log10(gradients.min()))


def test_exploding_net_widens_the_range_to_show_every_layer() -> None:
    figure = _figure("normal")
    forward, _ = figure.axes
    path = np.asarray(forward.lines[0].get_ydata(), dtype=float)
    finite = path[np.isfinite(path)]
    high = forward.get_ylim()[1]
    assert finite.max() > 1e6 and high >= min(finite.max(), 1e12)
