"""Each model preset reproduces its source's init, per parameter group, at depths 2, 4 and 12.

The reference is the real module class's own init (Hugging Face models initialize themselves in
their constructor) or, where the source is not installable here (nanoGPT, timm, torchvision,
OLMo, torchtitan, fairseq, Fixup), its init code transcribed in ``tests/helpers/_arch.py``
onto modules named as the source names them. The preset is applied to a fresh copy, built eagerly or
on the meta device, and the group statistics are compared (``tests/helpers/_parity.py``: constants
exact, stds within 2% where the pooled group resolves 2%).

The presets written with ``variables:`` and expressions (``gpt2``'s ``n_layer`` count, the
depth-scaled literature presets) are evaluated by the policy itself for the model at hand.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import _arch
import pytest
import torch
from _parity import apply_quietly, compare, pooled
from torch import nn

from lightning_init.policy import InitPolicy

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

D = 64  # hidden size


@dataclass(frozen=True)
class Family:
    """A preset, the model it is for, and that model's own init."""

    preset: str
    build: Callable[[int], nn.Module]  # depth -> a model (its constructor's init is ignored)
    reference: Callable[[nn.Module, int], None] | None = None  # None: the constructor's init


def _gpt2(depth):
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=depth, n_embd=D, n_head=4, vocab_size=500, n_positions=128))


def _bert(depth):
    return transformers.BertForMaskedLM(transformers.BertConfig(
        num_hidden_layers=depth, hidden_size=D, num_attention_heads=4, intermediate_size=2 * D,
        vocab_size=500))


def _bert_tf_reference(model, depth):
    """google-research/bert modeling.py create_initializer: truncated_normal(stddev=0.02) for
    every dense and embedding kernel; HF's module keeps its padding row at 0."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()


def _llama(depth):
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_hidden_layers=depth, hidden_size=D, num_attention_heads=4, intermediate_size=2 * D,
        vocab_size=500))


def _vit(depth):
    return transformers.ViTForImageClassification(transformers.ViTConfig(
        num_hidden_layers=depth, hidden_size=D, num_attention_heads=4, intermediate_size=2 * D,
        image_size=64, patch_size=8, num_labels=100))


def _hf_resnet(depth, layer_type="basic"):
    return transformers.ResNetForImageClassification(transformers.ResNetConfig(
        embedding_size=32, hidden_sizes=[32, 64], depths=[depth // 2, depth // 2],
        layer_type=layer_type, num_labels=10))


def _hf_resnet_zero_last_reference(layer_type):
    def reference(model, depth):  # torchvision's zero_init_residual on HF's names
        last = "layer.2" if layer_type == "bottleneck" else "layer.1"
        for name, module in model.named_modules():
            if name.endswith(last + ".normalization"):
                nn.init.zeros_(module.weight)
    return reference


def _neox(depth):
    return transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
        num_hidden_layers=depth, hidden_size=D, num_attention_heads=4, intermediate_size=4 * D,
        vocab_size=500))


def _neox_reference(model, depth):
    """gpt-neox init_functions.py small_init_init_method(d) everywhere, wang_init_method(
    n_layers, d) on the residual projections; biases 0 (megatron's linear layers)."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            wang = name.endswith(("attention.dense", "dense_4h_to_h"))
            std = 2 / depth / math.sqrt(D) if wang else math.sqrt(2 / (5 * D))
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


FAMILIES = {
    "gpt2": Family("gpt2", _gpt2),
    "gpt2/nanogpt": Family("gpt2", _arch.NanoGPT, lambda m, d: _arch.nanogpt_reference(m)),
    "bert": Family("bert", _bert),
    "bert_tf": Family("bert_tf", _bert, _bert_tf_reference),
    "llama": Family("llama", _llama),
    "vit": Family("vit", _vit),
    "vit_timm": Family("vit_timm", _arch.TimmViT,
                       lambda m, d: _arch.timm_vit_reference(m, "")),
    "vit_jax": Family("vit_jax", _arch.TimmViT, lambda m, d: _arch.timm_vit_reference(m, "jax")),
    "resnet": Family("resnet", _hf_resnet),
    "resnet/bottleneck": Family("resnet", lambda d: _hf_resnet(d, "bottleneck")),
    "resnet/torchvision": Family(
        "resnet", lambda d: _arch.TorchvisionResNet(d // 2, width=32),
        lambda m, d: _arch.torchvision_resnet_reference(m, zero_init_residual=False)),
    "resnet_zero_init_last": Family("resnet_zero_init_last", _hf_resnet,
                                    _hf_resnet_zero_last_reference("basic")),
    "resnet_zero_init_last/bottleneck": Family(
        "resnet_zero_init_last", lambda d: _hf_resnet(d, "bottleneck"),
        _hf_resnet_zero_last_reference("bottleneck")),
    "resnet_zero_init_last/torchvision": Family(
        "resnet_zero_init_last", lambda d: _arch.TorchvisionResNet(d // 2, width=32),
        lambda m, d: _arch.torchvision_resnet_reference(m, zero_init_residual=True)),
    "resnet_zero_init_last/torchvision-bottleneck": Family(
        "resnet_zero_init_last",
        lambda d: _arch.TorchvisionResNet(d // 2, bottleneck=True, width=32),
        lambda m, d: _arch.torchvision_resnet_reference(m, zero_init_residual=True)),
    "olmo_mitchell": Family("olmo_mitchell", _arch.Olmo,
                            lambda m, d: _arch.olmo_reference(m, "mitchell")),
    "olmo_full_megatron": Family("olmo_full_megatron", _arch.Olmo,
                                 lambda m, d: _arch.olmo_reference(m, "full_megatron")),
    "llama3_depth_init": Family("llama3_depth_init", _arch.TitanLlama3,
                                lambda m, d: _arch.titan_reference(m)),
    "neox": Family("neox", _neox, _neox_reference),
    "deepnet": Family("deepnet", _arch.FairseqEncoder, _arch.deepnet_reference),
    "deepnet/torch": Family("deepnet", _arch.TorchEncoder, _arch.deepnet_reference),
    "t_fixup": Family("t_fixup", _arch.FairseqEncoder, _arch.t_fixup_reference),
    "t_fixup/torch": Family("t_fixup", _arch.TorchEncoder, _arch.t_fixup_reference),
    "fixup": Family("fixup", lambda d: _arch.FixupResNet(d // 2, width=32),
                    lambda m, d: _arch.fixup_reference(m)),
    "fixup/bottleneck": Family(
        "fixup", lambda d: _arch.FixupResNet(d // 2, bottleneck=True, width=32),
        lambda m, d: _arch.fixup_reference(m)),
}

DEPTHS = (2, 4, 12)
DRAWS = {2: 3, 4: 2, 12: 1}  # models pooled per group: deeper models have more values per group


@functools.lru_cache(maxsize=4)
def _reference_groups(key: str, depth: int) -> dict[str, torch.Tensor]:
    family = FAMILIES[key]

    def build(draw: int) -> nn.Module:
        torch.manual_seed(draw)
        model = family.build(depth)
        if family.reference is not None:
            family.reference(model, depth)
        return model

    return pooled(build, DRAWS[depth])


def _ours(family: Family, depth: int, draw: int, *, meta: bool) -> nn.Module:
    torch.manual_seed(1000 + draw)  # what the policy leaves alone keeps this draw
    if meta:
        with torch.device("meta"):
            model = family.build(depth)
    else:
        model = family.build(depth)
    policy = InitPolicy.from_preset(family.preset)
    apply_quietly(policy, model, seed=2000 + draw, device="cpu" if meta else None)
    assert not any(p.is_meta for p in model.parameters())
    return model


def _check(key: str, depth: int) -> None:
    family = FAMILIES[key]
    for meta in (False, True):
        ours = pooled(lambda draw, meta=meta: _ours(family, depth, draw, meta=meta),
                      DRAWS[depth])
        problems = compare(_reference_groups(key, depth), ours)
        assert problems == [], ("meta" if meta else "eager", problems)


def _depths(key: str) -> tuple[int, ...]:
    """Every preset at 2, 4 and 12 layers on its main model; variants (key/...) at 4."""
    return (4,) if "/" in key else DEPTHS


CASES = [pytest.param(key, depth, id=f"{key}-{depth}") for key in FAMILIES
         for depth in _depths(key)]


@pytest.mark.parametrize(("key", "depth"), CASES)
def test_preset_reproduces_the_source_init(key, depth):
    """Eager and meta-device, the policy evaluating the preset's variables and expressions."""
    _check(key, depth)


def test_parity_catches_a_wrong_init():
    """The comparison fails on the old GPT-2 preset's hard-coded 12-layer c_proj std and on
    BERT truncated where HF does not truncate."""
    reference = _reference_groups("gpt2", 4)
    old = InitPolicy.from_dict({"rules": [
        {"match": {"name": "*c_proj"}, "weight": {"init": "normal", "std": 0.0040825},
         "bias": "zeros"},
        {"match": {"name": ["*c_attn", "*c_fc"]}, "weight": {"init": "normal", "std": 0.02},
         "bias": "zeros"},
        {"match": {"type": ["Linear", "Embedding"]}, "weight": {"init": "normal", "std": 0.02}},
        {"match": {"type": "LayerNorm"}, "weight": "ones", "bias": "zeros"}]})

    def old_gpt2(draw):
        torch.manual_seed(draw)
        model = _gpt2(4)
        apply_quietly(old, model, seed=draw)
        return model

    problems = compare(reference, pooled(old_gpt2, DRAWS[4]))
    assert len(problems) == 2 and all("c_proj.weight (2-d): std" in p for p in problems), problems
    reference = _reference_groups("bert", 2)
    truncated = pooled(lambda draw: _ours(FAMILIES["bert_tf"], 2, draw, meta=False), DRAWS[2])
    assert any("word_embeddings.weight (2-d): std" in p for p in compare(reference, truncated))


def test_bert_padding_row_is_zero_and_not_truncated():
    model = _bert(2)
    InitPolicy.from_preset("bert").apply(model, seed=0)
    embedding = model.bert.embeddings.word_embeddings
    assert embedding.padding_idx == 0 and embedding.weight[0].eq(0).all()
    assert embedding.weight.abs().max().item() > 0.06  # 3 std: not cut at 2 std


@pytest.mark.parametrize("key", sorted(FAMILIES))
def test_a_preset_on_its_own_family_applies_without_a_warning(key):
    """The presets' rules are optional and written for several layouts of a family: a key
    another layout has (ViT's ``mask_token``), a tie that two rules fill alike (BERT-MLM's
    decoder bias) and a ``bias=False`` layer warn about nothing."""
    family = FAMILIES[key]
    model = family.build(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        InitPolicy.from_preset(family.preset).apply(model, seed=0)
