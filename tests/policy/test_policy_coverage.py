"""A preset applied to a model of another family names the weight layers it left alone."""

from __future__ import annotations

import os
import pickle
import warnings

import pytest
from torch import nn

from lightning_init.policy import InitPolicy

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


def _gpt2(n_layer=4):
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=n_layer, n_embd=64, n_head=4, vocab_size=200, n_positions=64))


def _notices(caplog):
    return [r.getMessage() for r in caplog.records if "no rule covers" in r.getMessage()]


def test_bert_preset_on_gpt2_names_the_16_conv1d_weights_it_leaves_alone(caplog):
    model = _gpt2(4)
    with caplog.at_level("INFO", logger="lightning_init"):
        report = InitPolicy.from_preset("bert").apply(model, seed=0)
    [message] = _notices(caplog)  # one line on the lightning_init logger, no source path
    assert message.startswith("preset 'bert' leaves 16 weights that no rule covers: ")
    for layer in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        assert f"transformer.h.*.{layer}.weight (Conv1D, x4)" in message
    assert "written for another family of models" in message
    left = {name for name, reason in report.left_alone if reason == "no rule"}
    assert "transformer.h.3.mlp.c_fc.weight" in left


def test_explain_warns_too_and_a_pickled_preset_keeps_the_warning(caplog):
    policy = pickle.loads(pickle.dumps(InitPolicy.from_preset("llama")))
    with caplog.at_level("INFO", logger="lightning_init"):
        policy.explain(_gpt2(2))
    [message] = _notices(caplog)
    assert message.startswith("preset 'llama' leaves 8 weights")


@pytest.mark.parametrize(("preset", "build"), [
    ("bert", lambda: transformers.BertModel(transformers.BertConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        vocab_size=200))),
    ("llama", lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        vocab_size=200))),
    ("vit", lambda: transformers.ViTModel(transformers.ViTConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        image_size=32, patch_size=8))),
    ("resnet", lambda: transformers.ResNetModel(transformers.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1]))),
])
def test_a_preset_on_its_own_family_covers_every_weight(preset, build, caplog):
    with caplog.at_level("INFO", logger="lightning_init"):
        InitPolicy.from_preset(preset).apply(build(), seed=0)
    assert not _notices(caplog)


def test_a_users_policy_may_cover_only_some_layers():
    policy = InitPolicy.from_dict({"rules": [{"match": {"name": "1"}, "bias": "zeros"}]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy.apply(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
