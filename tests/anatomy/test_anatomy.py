"""The anatomy reads a model's parts from its data flow: real transformers classes whose names
mislead (a patch embedding named ``proj``, sandwich norms, a ``1 + w`` RMSNorm, two heads, a
soft-capped head, a tied head) and the kinds registry that the library's modules share."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from lightning_init.anatomy import (
    anatomy_of,
    gain_of,
    is_weight_layer,
    kind_of,
    kinds,
    layer_fans,
    register_hint,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

_IDS = {"input_ids": torch.randint(0, 200, (4, 12), generator=torch.Generator().manual_seed(0))}
_PIXELS = {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))}


def _gpt2() -> nn.Module:
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=200, n_positions=64))


def test_gpt2_pre_norm_stream_with_a_tied_head_and_summed_embeddings() -> None:
    anatomy = anatomy_of(_gpt2(), _IDS)
    assert [(b.stream, b.depth, b.place) for b in anatomy.branches] == [
        (0, 0, "pre"), (0, 1, "pre"), (0, 2, "pre"), (0, 3, "pre")]
    assert anatomy.residual_projections() == [
        "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_proj",
        "transformer.h.1.attn.c_proj", "transformer.h.1.mlp.c_proj"]
    assert anatomy.branches[0].first == ("transformer.h.0.attn.c_attn",)
    (head,) = anatomy.heads
    assert (head.name, head.outputs, head.tied) == ("lm_head", 200, ("transformer.wte.weight",))
    assert ("lm_head.weight", "transformer.wte.weight") in anatomy.tied
    assert anatomy.summed_with("transformer.wte") == ("transformer.wpe",)
    assert not anatomy.embeddings["transformer.wpe"].varies  # positions: constant indices
    assert anatomy.norms["transformer.ln_f"].place == "final"
    assert anatomy.layers["transformer.h.0.mlp.c_fc"].followed_by == "gelu"
    assert anatomy.reaches_output("transformer.h.1.mlp.c_proj.weight") is True
    assert anatomy.gates == []


def test_llama_queries_from_the_data_flow_and_an_untied_head() -> None:
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=200))
    anatomy = anatomy_of(model, _IDS)
    assert anatomy.query_layers() == ["model.layers.0.self_attn.q_proj",
                                      "model.layers.1.self_attn.q_proj"]
    assert anatomy.attention[0].keys == ("model.layers.0.self_attn.k_proj",)
    assert anatomy.layers["model.layers.0.mlp.gate_proj"].followed_by == "silu"
    assert anatomy.layers["model.layers.0.mlp.up_proj"].followed_by == "linear"
    assert anatomy.heads[0].tied == () and anatomy.tied == []
    assert {n.offset for n in anatomy.norms.values()} == {0.0}  # w * x_hat


def test_gemma2_sandwich_norms_scale_by_one_plus_w_and_the_head_is_soft_capped() -> None:
    torch.manual_seed(0)
    model = transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, vocab_size=200, final_logit_softcapping=30.0))
    anatomy = anatomy_of(model, _IDS)
    assert [b.place for b in anatomy.branches] == ["sandwich"] * 4
    post = anatomy.norms["model.layers.0.post_attention_layernorm"]
    assert (post.place, post.offset, post.identity) == ("sandwich", 1.0, 0.0)
    assert anatomy.norms["model.layers.0.input_layernorm"].place == "pre"
    assert anatomy.gates == []  # weight 0 is Gemma's identity, not a gate
    (head,) = anatomy.heads
    assert head.name == "lm_head" and "tanh" in head.ops_after


def test_bert_is_post_norm_and_its_embeddings_are_summed() -> None:
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
        vocab_size=200, num_labels=3))
    anatomy = anatomy_of(model, _IDS)
    assert [b.place for b in anatomy.branches] == ["post"] * 4
    assert anatomy.branches[1].last == ("bert.encoder.layer.0.output.dense",)
    assert set(anatomy.summed_with("bert.embeddings.word_embeddings")) == {
        "bert.embeddings.token_type_embeddings", "bert.embeddings.position_embeddings"}
    assert anatomy.norms["bert.embeddings.LayerNorm"].place == "embedding"
    assert anatomy.heads[0].name == "classifier"


def test_a_hierarchical_vit_patch_embedding_named_proj_is_no_residual_projection() -> None:
    torch.manual_seed(0)
    model = transformers.PvtV2ForImageClassification(transformers.PvtV2Config(
        depths=[1, 1], hidden_sizes=[16, 32], num_attention_heads=[1, 2], sr_ratios=[2, 1],
        mlp_ratios=[2, 2], num_encoder_blocks=2, patch_sizes=[7, 3], strides=[4, 2],
        num_labels=5))
    anatomy = anatomy_of(model, _PIXELS)
    projections = anatomy.residual_projections()
    assert "pvt_v2.encoder.layers.0.blocks.0.attention.proj" in projections
    assert not any("patch_embedding" in name for name in projections)
    # a stage is not a block: each stage's patch embedding starts a stream of 2 branches
    assert [(b.stream, b.depth) for b in anatomy.branches] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_deit_has_two_heads_averaged_and_no_residual_between_them() -> None:
    torch.manual_seed(0)
    model = transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8, num_labels=5))
    anatomy = anatomy_of(model, _PIXELS)
    assert anatomy.head_names() == ["cls_classifier", "distillation_classifier"]
    assert len(anatomy.branches) == 4


def test_resnet_zero_init_last_gammas_are_gates_and_blocks_span_stages() -> None:
    torch.manual_seed(0)
    model = transformers.ResNetForImageClassification(transformers.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic",
        num_labels=5))
    with torch.no_grad():
        for stage in model.resnet.encoder.stages:
            stage.layers[0].layer[-1].normalization.weight.zero_()
    anatomy = anatomy_of(model, {"pixel_values": torch.randn(4, 3, 32, 32)})
    assert [gate.kind for gate in anatomy.gates] == ["norm", "norm"]
    assert anatomy.gates[0].param == \
        "resnet.encoder.stages.0.layers.0.layer.1.normalization.weight"
    # the projection shortcut's side is the stream; the branch holds the two convolutions
    second = anatomy.branches[1]
    assert second.last == ("resnet.encoder.stages.1.layers.0.layer.1.convolution",)
    assert "resnet.encoder.stages.1.layers.0.shortcut.convolution" not in second.layers
    layer = anatomy.layers["resnet.embedder.embedder.convolution"]
    assert (layer.normalized_by, layer.norm_kind) == ("resnet.embedder.embedder.normalization",
                                                      "batch")


def test_functional_activations_and_a_zero_head_gate() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.head = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)
            nn.init.zeros_(self.head.weight)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.b(nn.functional.relu(self.a(x)))))

    anatomy = anatomy_of(Net(), torch.randn(8, 4))
    assert anatomy.layers["a"].followed_by == "relu"
    assert anatomy.layers["b"].followed_by == "tanh"
    assert anatomy.layers["head"].followed_by is None
    assert [(g.param, g.kind) for g in anatomy.gates] == [("head.weight", "head")]


def test_kinds_registry_fans_and_hints(monkeypatch: pytest.MonkeyPatch) -> None:
    convt = nn.ConvTranspose2d(4, 6, 3, groups=2)
    assert layer_fans(convt) == (18, 27)  # one input channel feeds 3 outputs x 9 taps
    gpt2 = _gpt2()
    assert is_weight_layer(gpt2.transformer.h[0].attn.c_attn)
    assert layer_fans(gpt2.transformer.h[0].attn.c_attn) == (32, 96)
    assert kind_of(nn.Embedding(3, 2)).role == "embedding"
    assert gain_of("relu").expression == "sqrt(2)" and gain_of(None).expression == "1"

    class FancyNorm(nn.Module):  # named a norm, but scales with its input
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight

    assert kind_of(FancyNorm()).source == "hint"
    net = nn.Sequential(nn.Linear(4, 8), FancyNorm(), nn.Linear(8, 2))
    assert "1" not in anatomy_of(net, torch.randn(8, 4)).norms  # the data flow overrules
    monkeypatch.setattr(kinds, "_HINTS", list(kinds._HINTS))
    register_hint("fancynorm", "pass")
    assert kind_of(FancyNorm()).role == "pass"


def test_the_check_reads_fans_and_weight_layers_from_the_one_registry() -> None:
    from lightning_init import check_init
    from lightning_init.anatomy.layouts import register_layout
    from lightning_init.check import roles

    convt = nn.ConvTranspose2d(4, 6, 3, groups=2)
    # one input channel reaches 6 / 2 output channels through 3 x 3 taps: fan_out 27, as the
    # policy's fans count it (the check's own copy said 54)
    assert (roles.fan_in(convt), roles.fan_out(convt)) == layer_fans(convt) == (18, 27)

    class Kernel(nn.Module):  # the user's layer, its weight stored (in, out)
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(16, 8) * 30)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x @ self.weight

    register_layout(Kernel, {"in": 0, "out": 1})
    assert roles.fan_in(Kernel()) == 16
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), Kernel(), nn.Linear(8, 2))
    report = check_init(net, torch.randn(32, 4))
    assert any(problem.kind == "gain" and "1" in problem.layers for problem in report.problems)
    assert report.layers[1].transforms


def test_mamba_functional_conv_through_a_weight_view_and_its_time_step_rate() -> None:
    from lightning_init.policy.auto import auto_rules

    torch.manual_seed(0)
    model = transformers.MambaForCausalLM(transformers.MambaConfig(
        num_hidden_layers=2, hidden_size=32, state_size=8, expand=2, conv_kernel=4,
        vocab_size=200, use_cache=False))
    anatomy = anatomy_of(model, _IDS)
    # the mixer calls F.conv1d on `conv1d.weight.view(...)`: a weight layer all the same
    assert anatomy.layers["backbone.layers.0.mixer.conv1d"].followed_by == "silu"
    assert anatomy.uncalled == []
    assert anatomy.layers["backbone.layers.0.mixer.dt_proj"].rate  # softplus(dt_proj(x))
    assert not anatomy.layers["backbone.layers.0.mixer.x_proj"].rate
    bias = model.backbone.layers[0].mixer.dt_proj.bias.detach().clone()
    auto_rules(model, _IDS).policy().apply(model)
    assert torch.equal(model.backbone.layers[0].mixer.dt_proj.bias, bias)  # its range kept


def test_masked_attention_logits_are_left_out_of_their_std() -> None:
    class Attention(nn.Module):  # Funnel's convention: masked logits at -1e6
        def __init__(self) -> None:
            super().__init__()
            self.q, self.k = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            q, k = self.q(x).unsqueeze(1), self.k(x).unsqueeze(1)
            scores = q @ k.transpose(-1, -2) / 8 ** 0.5
            mask = torch.ones(scores.shape[-1])
            mask[-2:] = 0
            scores = scores - 1e6 * (1 - mask)
            return torch.softmax(scores, dim=-1) @ x.unsqueeze(1)

    torch.manual_seed(0)
    (site,) = anatomy_of(Attention(), torch.randn(4, 6, 8)).attention
    assert (site.queries, site.keys) == (("q",), ("k",))
    assert site.logit_std < 1


def test_scales_beyond_float32_squares_are_measured_not_infinite() -> None:
    """An output of 1e20 has a float32 square of inf: the trace's rms scales by the peak
    first, so the next layer's input rms reads 1e20·sqrt(4), not inf."""
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1e20)
    anatomy = anatomy_of(model, torch.ones(3, 4))
    assert anatomy.layers["1"].input_rms == pytest.approx(4e20, rel=1e-5)


def test_the_zero_gate_scan_reads_every_parameter_in_one_transfer(monkeypatch) -> None:
    """The all-zero tests of every parameter come to the host together: no tensor is turned
    into a Python bool one at a time (a device sync each on an accelerator)."""
    import lightning_init.anatomy as anatomy_module

    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(6)])
    with torch.no_grad():
        model[5].weight.zero_()
    anatomy = anatomy_of(model, torch.randn(2, 4))
    live = {name for name, _ in model.named_parameters()}
    transfers = []
    real_tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda self: pytest.fail("one bool each"))
    monkeypatch.setattr(torch.Tensor, "tolist",
                        lambda self: transfers.append(self.shape) or real_tolist(self))
    gates = anatomy_module._gates(model, anatomy, live, {}, {"5"})
    assert [(gate.param, gate.kind) for gate in gates] == [("5.weight", "head")]
    assert transfers == [torch.Size([6])]
