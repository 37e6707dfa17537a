"""The automatic policy's construction on model shapes that the zoo does not cover.

Each test builds a small model whose structure calls for one decision of
``lightning_init.policy.auto`` (a cross-attention, a sigmoid head, named or nested blocks, a
LayerNorm stack with no skip path, a transposed-convolution head, a meta model) and asserts the
rule it gets and the values it leaves in the weights.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict

import pytest
import torch
from torch import nn

from lightning_init import InitPolicy, check_init
from lightning_init.policy._auto_pass import activation_kind as _activation_kind
from lightning_init.policy.auto import auto_rules

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _roles(rules) -> dict[str, tuple[str, ...]]:
    """Role -> the layers of every rule with that role (encoder and decoder each have one)."""
    roles: dict[str, tuple[str, ...]] = {}
    for rule in rules.rules:
        roles[rule.role] = roles.get(rule.role, ()) + rule.layers
    return roles


def test_torch_transformer_keeps_its_cross_attention_and_zeroes_the_post_norm_branches() -> None:
    torch.manual_seed(0)
    model = nn.Transformer(d_model=16, nhead=2, num_encoder_layers=2, num_decoder_layers=2,
                           dim_feedforward=32, dropout=0.0, batch_first=True)
    sample = (torch.randn(4, 6, 16), torch.randn(4, 5, 16))
    rules = auto_rules(model, sample)
    zeroed = _roles(rules)["residual output projection, a norm after the add (post-norm)"]
    assert "decoder.layers.0.linear2" in zeroed and "encoder.layers.1.self_attn.out_proj" in zeroed
    assert not any("multihead_attn" in name for name in zeroed)
    rules.policy().apply(model)
    assert not model.decoder.layers[0].linear2.weight.any()
    assert model.decoder.layers[0].multihead_attn.out_proj.weight.detach().std() > 0
    report = check_init(model, sample)
    assert report.ok, [problem.message for problem in report.problems]


class _Block(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(self.norm(x))))


def test_named_blocks_and_nested_stages_count_every_block() -> None:
    stages = nn.ModuleList([nn.Sequential(OrderedDict(first=_Block(), second=_Block(),
                                                      third=_Block())) for _ in range(2)])

    class Staged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stages, self.head = stages, nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for stage in self.stages:
                x = stage(x)
            return self.head(x)

    model = Staged()
    x = 0.1 * torch.randn(32, 16)
    rules = auto_rules(model, x)
    # the blocks' names are not indices, and 2 stages of 3 blocks count 6 blocks
    assert rules.variables["n_blocks"] == {"count": "stages.*.*"}
    assert rules.variables["stream_rms"] == pytest.approx(float(x.square().mean().sqrt()),
                                                          rel=1e-3)
    plan = rules.policy().explain(model)
    fc2 = next(entry for entry in plan.entries
               if entry.qualified_name == "stages.1.third.fc2.weight")
    assert "n_blocks" in fc2.initializer
    rules.policy().apply(model)
    expected = rules.variables["stream_rms"] / math.sqrt(32 * 2 * 6)
    assert float(model.stages[1].third.fc2.weight.detach().std()) == pytest.approx(expected,
                                                                                   rel=0.1)


def test_a_layernorm_stack_without_a_skip_path_keeps_its_activation_gains() -> None:
    model = nn.Sequential(*[nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16), nn.ReLU())
                            for _ in range(3)], nn.Linear(16, 2))
    rules = auto_rules(model, 0.01 * torch.randn(32, 16))
    assert "stream_rms" not in rules.variables
    assert _roles(rules)["followed by relu"] == ("0.0", "1.0", "2.0")


def test_a_sigmoid_head_takes_the_prior_and_a_headless_model_refuses_it() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid())
    x = torch.randn(256, 8)
    InitPolicy.auto(model, x, prior=0.05).apply(model)
    assert float(model[2].bias) == pytest.approx(math.log(0.05 / 0.95), rel=1e-5)
    with torch.no_grad():
        assert 0.02 < float(model(x).mean()) < 0.1
    headless = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
    with pytest.raises(ValueError, match=r"prior= sets the output layer's bias, but the sample "
                                         r"pass found no output layer"):
        InitPolicy.auto(headless, x, prior=0.05)


def test_a_transposed_convolution_head_counts_its_output_channels() -> None:
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
                          nn.ConvTranspose2d(64, 3, 2, stride=2))
    rules = auto_rules(model, torch.randn(2, 3, 8, 8))
    assert rules.variables["head_gain"] == 0.5  # 3 outputs: sqrt(0.2 ln 3) < 0.5


def test_mish_has_its_own_gain_and_atanh_is_no_tanh() -> None:
    assert _activation_kind("Mish") == "mish"
    assert _activation_kind("atanh") is None and _activation_kind("Tanhshrink") is None
    model = nn.Sequential(nn.Linear(8, 8), nn.Mish(), nn.Linear(8, 2))
    rules = auto_rules(model, torch.randn(4, 8))
    assert rules.rules[1].rule["weight"]["std"] == "1.486 / sqrt(fan_in)"


def test_a_meta_model_is_refused_in_words() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"`0.weight` is on the meta device.*materialize"):
        InitPolicy.auto(model, torch.randn(2, 4))


def test_a_pre_norm_block_that_starts_with_a_convolution_is_not_post_norm() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[2, 1],
                                         num_labels=4, image_size=32)
    torch.manual_seed(0)
    model = transformers.ConvNextForImageClassification(config)
    rules = auto_rules(model, {"pixel_values": torch.randn(2, 3, 32, 32)})
    roles = _roles(rules)
    assert "residual output projection, a norm after the add (post-norm)" not in roles
    assert "convnext.encoder.stages.0.layers.0.pwconv2" in roles["residual output projection"]
    assert rules.variables["n_blocks"] == {"count": "convnext.encoder.stages.*.layers.*"}
