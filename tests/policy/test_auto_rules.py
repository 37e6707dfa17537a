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
from torch.nn import functional as F

from lightning_init import InitPolicy, check_init
from lightning_init.anatomy import activation_for_function, anatomy_of, kind_of
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
    roles = _roles(rules)
    zeroed = roles["residual branch closer, a norm after the add (post-norm)"]
    mixing = roles["residual branch closer, attention with a norm after the add (post-norm)"]
    # the per-position feed-forward branches start at zero (Fixup), the self-attention ones
    # small (DeepNet's beta = (8 N)^(-1/4), N = 4 self-attention branches), cross-attention drawn
    assert "decoder.layers.0.linear2" in zeroed and "encoder.layers.1.linear2" in zeroed
    assert "encoder.layers.1.self_attn.out_proj" in mixing and not any("self_attn" in name
                                                                        for name in zeroed)
    assert not any("multihead_attn" in name for name in zeroed + mixing)
    rules.policy().apply(model)
    assert not model.decoder.layers[0].linear2.weight.any()
    std = float(model.encoder.layers[1].self_attn.out_proj.weight.detach().std())
    assert std == pytest.approx(32 ** -0.25 / 4, rel=0.15)
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
    # the blocks' names are not indices: 2 stages of 3 blocks add 6 branches to one stream
    assert rules.variables["n_branches"] == 6
    assert rules.variables["stream_rms"] == pytest.approx(float(x.square().mean().sqrt()),
                                                          rel=1e-3)
    plan = rules.policy().explain(model)
    fc2 = next(entry for entry in plan.entries
               if entry.qualified_name == "stages.1.third.fc2.weight")
    assert "n_branches" in fc2.initializer
    rules.policy().apply(model)
    expected = rules.variables["stream_rms"] / math.sqrt(32 * 6)
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


def test_an_untied_head_is_a_small_readout_whatever_its_classes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 256))
    x = torch.randn(512, 32)
    rules = auto_rules(model, x)
    # 256 classes allow sqrt(0.2 ln 256) = 1.05 within the initial-loss promise; an untied
    # head's weight is its own, and it starts at the readout's 0.5 all the same
    assert rules.variables["head_gain"] == 0.5
    assert "small readout" in next(rule.source for rule in rules.rules
                                   if rule.role.startswith("output layer"))
    rules.policy().apply(model)
    with torch.no_grad():
        assert float(model(x).std()) == pytest.approx(0.5, rel=0.1)


def test_mish_has_its_own_gain_and_atanh_is_no_tanh() -> None:
    assert kind_of(nn.Mish()).activation == "mish"
    assert activation_for_function("atanh") is None and kind_of(nn.Tanhshrink()) is None
    model = nn.Sequential(nn.Linear(8, 8), nn.Mish(), nn.Linear(8, 2))
    rules = auto_rules(model, torch.randn(4, 8))
    assert rules.rules[1].rule["weight"]["std"] == "1.486 / sqrt(fan_in)"


class _SquaredReluMlp(nn.Module):
    """A squared-ReLU MLP (Primer; RWKV's channel mix), squared one of three ways."""

    def __init__(self, square: object) -> None:
        super().__init__()
        self.up, self.down, self.square = nn.Linear(256, 512), nn.Linear(512, 4), square

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.square(torch.relu(self.up(x))))


@pytest.mark.parametrize("square", [torch.square, lambda h: h ** 2, lambda h: torch.pow(h, 2)],
                         ids=["square", "power", "pow"])
def test_a_squared_relu_keeps_the_unit_scale_relus_gain_would_inflate(square: object) -> None:
    # ReLU's gain sqrt(2) before a square gives rms 2 sqrt(3/2) = 2.45, not 1
    model, x = _SquaredReluMlp(square), torch.randn(512, 256)
    InitPolicy.auto(model, x).apply(model)
    with torch.no_grad():
        hidden = square(torch.relu(model.up(x)))
    assert float(hidden.square().mean().sqrt()) == pytest.approx(1.0, rel=0.1)
    # a ReLU not squared keeps its own gain
    plain = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    assert auto_rules(plain, torch.randn(4, 8)).rules[1].rule["weight"]["std"] == \
        "sqrt(2) / sqrt(fan_in)"


class _SquaredReluModule(nn.Module):
    """A squared ReLU as one module (a user's own, found by its class name's hint)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).square()


class _NormThenSquaredRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.norm, self.down = nn.Linear(256, 512), nn.LayerNorm(512), nn.Linear(512, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.norm(self.up(x))).square())


def test_a_squared_relu_module_or_after_a_norm_is_seen_as_one() -> None:
    transformers = pytest.importorskip("transformers")
    x = torch.randn(64, 256)
    for act in (transformers.activations.ReLUSquaredActivation(), _SquaredReluModule()):
        model = nn.Sequential(nn.Linear(256, 512), act, nn.Linear(512, 4))  # Nemotron's relu2
        (rule,) = [rule for rule in auto_rules(model, x).rules if rule.layers == ("0",)]
        assert rule.rule["weight"]["std"] == "0.9036 / sqrt(fan_in)"
    # a norm between the layer and the activation: the layer sees no gain, the anatomy still
    # reads the activation the norm feeds as a squared ReLU
    site = auto_rules(_NormThenSquaredRelu(), x).anatomy.layers["up"]
    assert site.followed_by == "relu_squared"


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
    assert "residual branch closer, a norm after the add (post-norm)" not in roles
    assert "convnext.encoder.stages.0.layers.0.pwconv2" in roles["residual branch closer"]
    # each stage's downsampling starts a stream: 2 branches, then 1
    assert (rules.variables["n_branches"], rules.variables["n_branches_1"]) == (2, 1)


_IDS = {"input_ids": torch.randint(0, 256, (8, 32), generator=torch.Generator().manual_seed(1))}
_PIXELS = {"pixel_values": torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))}


def _label_free_loss_ratio(logits: torch.Tensor) -> float:
    z = logits.detach().float().reshape(-1, logits.shape[-1])
    return float((torch.logsumexp(z, -1) - z.mean(-1)).mean()) / math.log(z.shape[-1])


def test_gemma_norms_start_at_their_identity_and_sandwiches_are_not_post_norm() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
        num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, vocab_size=256, final_logit_softcapping=30.0))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.fill_(1.0)  # 1 + w = 2: every norm doubles its input
    rules = auto_rules(model, _IDS)
    text = rules.yaml()
    assert "a probe found it computes (1 + w) * x_hat" in text
    assert "post-norm" not in text  # x + norm(f(x)) is a sandwich, its closers stay drawn
    rules.policy().apply(model)
    layer = model.model.layers[0]
    assert not layer.post_attention_layernorm.weight.any() and not model.model.norm.weight.any()
    assert layer.self_attn.o_proj.weight.detach().std() > 0
    with torch.no_grad():  # soft-capped, tied head found: the initial loss keeps its promise
        assert _label_free_loss_ratio(model(**_IDS).logits) < 1.2


def test_a_tied_decoder_without_learned_positions_starts_near_ln_c() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256, tie_word_embeddings=True))
    rules = auto_rules(model, _IDS)
    # at head_gain = sqrt(0.2 ln 256) each token's own embedding, which is the head's row,
    # dominates the normalized stream: the loss was measured and the gain lowered
    assert rules.variables["head_gain"] < math.sqrt(0.2 * math.log(256))
    assert any(line.startswith("initial loss") for line in rules.measured)
    rules.policy().apply(model)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with torch.no_grad():
        loss = model(**_IDS, labels=_IDS["input_ids"]).loss
    assert float(loss) < 1.2 * math.log(256)


def test_a_patch_embedding_named_proj_is_drawn_and_stages_count_their_own_branches() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.PvtV2ForImageClassification(transformers.PvtV2Config(
        depths=[2, 1], hidden_sizes=[16, 32], num_attention_heads=[1, 2], sr_ratios=[2, 1],
        mlp_ratios=[2, 2], num_encoder_blocks=2, patch_sizes=[7, 3], strides=[4, 2],
        num_labels=5))
    rules = auto_rules(model, _PIXELS, num_classes=5)
    closers = _roles(rules)["residual branch closer"]
    assert "pvt_v2.encoder.layers.0.blocks.0.attention.proj" in closers
    assert not any("patch_embedding" in name for name in closers)
    assert (rules.variables["n_branches"], rules.variables["n_branches_1"]) == (4, 2)
    rules.policy().apply(model)
    patch = model.pvt_v2.encoder.layers[0].patch_embedding.proj.weight.detach()
    assert patch.std() > 0
    assert check_init(model, _PIXELS).ok


def test_deliberate_zero_inits_are_kept_unless_a_check_flags_them() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.ResNetForImageClassification(transformers.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic",
        num_labels=5))
    last = [stage.layers[0].layer[-1].normalization for stage in model.resnet.encoder.stages]
    with torch.no_grad():
        for norm in last:
            norm.weight.zero_()
    inputs = {"pixel_values": torch.randn(8, 3, 32, 32)}
    policy = InitPolicy.auto(model, inputs)
    policy.apply(model)
    assert all(not norm.weight.any() for norm in last)
    assert model.resnet.embedder.embedder.normalization.weight.eq(1).all()
    flagged = {"resnet.encoder.stages.0.layers.0.layer.1.normalization"}
    released = auto_rules(model, inputs, flagged=flagged).policy()
    released.apply(model)
    assert last[0].weight.eq(1).all() and not last[1].weight.any()


def test_a_regression_head_starts_small_next_to_its_target() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 1))
    x, y = torch.randn(256, 10), 3.0 * torch.randn(256, 1)
    rules = auto_rules(model, (x, y), forward=lambda m, batch: F.mse_loss(m(batch[0]), batch[1]))
    assert _roles(rules)["output layer (regression)"] == ("4",)
    assert rules.variables["head_gain"] == pytest.approx(0.1 * float(y.square().mean().sqrt()),
                                                         rel=1e-3)
    rules.policy().apply(model)
    with torch.no_grad():  # one output unit: its offset is a single draw, so only a bound
        out = model(x)
    assert 0.01 < float(out.square().mean().sqrt()) < 0.45  # small next to the target's 3
    # without a loss, one output is read as a regression with a unit target
    assert auto_rules(model, x).variables["head_gain"] == 0.1


def test_each_rule_says_what_the_anatomy_found() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
        vocab_size=256, num_labels=3))
    text = auto_rules(model, _IDS).yaml()
    blocks = text.split("  - match:")
    assert all("  # evidence: " in block for block in blocks[:-1])
    assert "# anatomy: branches by norm place: post 4" in text
    assert "its output is the branch's at an add whose sum only a norm reads" in text


def test_a_learned_position_table_starts_at_the_scale_of_what_it_is_added_to() -> None:
    """ViT's ``position_embeddings`` is added as a whole to the patch projection's tokens:
    auto draws it at their measured rms (here the pixels' scale of 5 carries through the
    projection's 1/sqrt(fan_in)), not at the model's 0.02, where the positions would carry
    1/2500 of the sum; the YAML says what the anatomy found."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, num_labels=10))
    pixels = 5.0 * torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    rules = auto_rules(model, pixels, num_classes=10)
    assert _roles(rules)["learned position table"] == ("vit.embeddings",)
    assert "`vit.embeddings.position_embeddings` is added as a whole" in rules.yaml()
    rules.policy().apply(model, seed=0)
    embeddings = model.vit.embeddings
    with torch.no_grad():
        patches = embeddings.patch_embeddings(pixels)
    patch_rms = float(patches.square().mean().sqrt())
    table_rms = float(embeddings.position_embeddings.square().mean().sqrt())
    assert 3.0 < patch_rms < 7.0
    assert table_rms == pytest.approx(patch_rms, rel=0.15)
    assert check_init(model, pixels, num_classes=10).ok


def test_a_position_parameter_beside_a_lookup_follows_the_lookups_scale() -> None:
    class TinyGPT(nn.Module):  # minGPT: a token lookup and a position parameter
        def __init__(self) -> None:
            super().__init__()
            self.tok_emb = nn.Embedding(40, 16)
            self.pos_emb = nn.Parameter(torch.zeros(1, 8, 16))
            self.norm = nn.LayerNorm(16)
            self.mlp = nn.Linear(16, 16)
            self.head = nn.Linear(16, 40)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            stream = self.tok_emb(tokens) + self.pos_emb[:, : tokens.shape[1]]
            stream = stream + self.mlp(self.norm(stream))
            return self.head(stream)

    torch.manual_seed(0)
    model = TinyGPT()
    tokens = torch.randint(0, 40, (8, 8), generator=torch.Generator().manual_seed(0))
    InitPolicy.auto(model, tokens).apply(model, seed=0)
    assert float(model.tok_emb.weight.std()) == pytest.approx(1.0, rel=0.1)
    assert float(model.pos_emb.std()) == pytest.approx(1.0, rel=0.15)


def test_a_frozen_position_table_is_a_fixed_encoding_and_is_left_alone() -> None:
    """DiT keeps its sin-cos positions in a parameter with ``requires_grad=False``: auto
    must not redraw a fixed encoding."""

    class Patches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(1, 16, 2, stride=2)
            angles = torch.arange(16)[:, None] / 100 ** (torch.arange(16) / 16)
            self.pos_embed = nn.Parameter(torch.sin(angles)[None], requires_grad=False)
            self.head = nn.Linear(16, 3)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            tokens = self.proj(images).flatten(2).transpose(1, 2) + self.pos_embed
            return self.head(tokens.mean(1))

    torch.manual_seed(0)
    model = Patches()
    fixed = model.pos_embed.detach().clone()
    rules = auto_rules(model, torch.randn(4, 1, 8, 8), num_classes=3)
    assert "learned position table" not in _roles(rules)
    rules.policy().apply(model, seed=0)
    assert torch.equal(model.pos_embed, fixed)


def test_a_weight_before_a_batchnorm_keeps_its_own_scale_unless_it_is_unusable() -> None:
    """A BatchNorm divides the scale of the weight before it out; that scale sets only the
    optimizer's step relative to the weight (Adam: about lr / std), so the model's own values
    stay (MobileNetV2's N(0, 0.02), not He fan_out's 1.5-17x); all-equal, non-finite or flagged
    values are drawn over fan_out."""
    def net() -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Flatten(), nn.Linear(8 * 16, 5))

    torch.manual_seed(0)
    model, sample = net(), torch.randn(4, 3, 4, 4)
    with torch.no_grad():
        model[0].weight.normal_(0.0, 0.02)
        model[3].weight.zero_()
    own = model[0].weight.detach().clone()
    rules = auto_rules(model, sample, num_classes=5)
    roles = _roles(rules)
    assert roles["followed by BatchNorm, its own scale kept"] == ("0",)
    assert roles["followed by BatchNorm, then relu"] == ("3",)  # all zero: drawn
    rules.policy().apply(model, seed=1)
    assert torch.equal(model[0].weight, own)
    assert float(model[3].weight.detach().std()) == pytest.approx(math.sqrt(2 / (8 * 9)), rel=0.15)
    assert check_init(model, sample).ok
    flagged = auto_rules(model, sample, num_classes=5, flagged={"0"})
    assert "0" in _roles(flagged)["followed by BatchNorm, then relu"]


def test_a_regression_head_behind_an_output_relu_starts_small() -> None:
    """A non-negative regression output (DPT's depth head: conv, ReLU, 1x1 conv to one
    channel, ReLU): the last layer is the head, behind the output's ReLU, not a hidden layer
    at He's gain, whose one channel of post-ReLU inputs starts at a random offset of several
    times the target and, negative, a dead output for every pixel."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 1, 1),
                          nn.ReLU())
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    anatomy = anatomy_of(model, x)
    assert [head.name for head in anatomy.heads] == ["4"]
    rules = auto_rules(model, x)
    assert _roles(rules)["output layer (regression)"] == ("4",)
    rules.policy().apply(model)
    with torch.no_grad():
        before = model[:5](x)
    assert float(before.square().mean().sqrt()) < 0.3  # a small readout, not He's ~1.5


class _FunctionalDepthHead(nn.Module):
    """The same depth head with its last convolution functional (``F.conv2d`` on a bare
    parameter): its one output channel is the output's dimension 1, not its width."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU())
        self.weight = nn.Parameter(torch.randn(1, 32, 1, 1) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(F.conv2d(self.body(x), self.weight))


def test_a_functional_one_channel_head_behind_an_output_relu_is_the_head() -> None:
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    anatomy = anatomy_of(_FunctionalDepthHead(), x)
    assert [head.outputs for head in anatomy.heads] == [1]
