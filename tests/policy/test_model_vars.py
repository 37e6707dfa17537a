"""Model variables on real Hugging Face models built from configs (nothing downloaded)."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from lightning_init import PolicyError
from lightning_init.policy._expr import parse_expression
from lightning_init.policy._model_vars import (
    count_modules,
    hidden_size,
    known_variables,
    layer_id,
    model_variables,
    parameter_variables,
    parse_variables,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")


def _gpt2(n_layer=4, head=True):
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=n_layer, n_embd=64, n_head=4, vocab_size=200,
                                     n_positions=64, bos_token_id=0, eos_token_id=0)
    return (transformers.GPT2LMHeadModel if head else transformers.GPT2Model)(config)


def _bert():
    return transformers.BertModel(transformers.BertConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        vocab_size=500))


def _llama():
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_hidden_layers=3, hidden_size=128, intermediate_size=256, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=200))


def test_gpt2_n_layer_d_model_and_hf_c_proj_std():
    model = _gpt2(n_layer=4)
    specs = parse_variables({"n_layer": {"count": "transformer.h.*"}})
    values = model_variables(model, specs, needed=["d_model"])
    assert values == {"d_model": 64.0, "n_layer": 4.0}
    std = parse_expression("0.02 / sqrt(2 * n_layer)", variables=known_variables(specs))
    # HF's own _init_weights draws every c_proj.weight at 0.02 / sqrt(2 * n_layer):
    # 4 attention (64x64) + 4 MLP (256x64) projections, 81920 values.
    c_proj = torch.cat([p.detach().flatten() for n, p in model.named_parameters()
                        if n.endswith("c_proj.weight")])
    assert c_proj.numel() == 4 * 64 * 64 + 4 * 256 * 64
    assert c_proj.std().item() == pytest.approx(std.evaluate(values), rel=0.02)
    assert std.evaluate(values) == 0.02 / math.sqrt(8)


def test_gpt2_counts_only_at_the_glob_depth():
    model = _gpt2(n_layer=4)
    assert count_modules(model, "transformer.h.*") == 4
    assert count_modules(model, "transformer.h.*.attn") == 4
    assert count_modules(model, "transformer.h.*.*") == 4 * 4  # ln_1, attn, ln_2, mlp
    assert count_modules(model, "transformer.h.?") == 4
    assert count_modules(model, ["transformer.h.*", "blocks.*", "transformer.h.1"]) == 4


def test_gpt2_parameter_variables_use_the_conv1d_layout():
    model = _gpt2(n_layer=4)
    modules = dict(model.named_modules())
    c_fc = modules["transformer.h.3.mlp.c_fc"]
    assert parameter_variables(c_fc, "transformer.h.3.mlp.c_fc", "weight", c_fc.weight) == {
        "layer_id": 3.0, "fan_in": 64.0, "fan_out": 256.0}
    assert parameter_variables(c_fc, "transformer.h.3.mlp.c_fc", "bias", c_fc.bias) == {
        "layer_id": 3.0}
    wte = modules["transformer.wte"]
    assert parameter_variables(wte, "transformer.wte", "weight", wte.weight) == {
        "fan_in": 64.0, "fan_out": 200.0}


def test_gpt2_without_its_head_suggests_the_glob_that_matches():
    specs = parse_variables({"n_layer": {"count": "transformer.h.*"}})
    with pytest.raises(PolicyError) as info:
        model_variables(_gpt2(n_layer=2, head=False), specs)
    assert str(info.value) == ("variables.n_layer: count 'transformer.h.*' matches no module "
                               "of GPT2Model. Did you mean 'h.*'? Its module lists: h.*.")
    with pytest.raises(PolicyError, match=r"count 'h\.\*' matches no module of GPT2LMHeadModel\. "
                                          r"Did you mean 'transformer\.h\.\*'\?"):
        model_variables(_gpt2(n_layer=2), parse_variables({"n": {"count": "h.*"}}))
    with pytest.raises(PolicyError, match=r"count 'model\.layer\.\*' matches no module of "
                                          r"LlamaForCausalLM\. Did you mean 'model\.layers\.\*'"):
        model_variables(_llama(), parse_variables({"n": {"count": "model.layer.*"}}))


def test_bert_variables():
    model = _bert()
    specs = parse_variables({"n_layer": {"count": "encoder.layer.*"},
                             "std_out": "0.02 / sqrt(2 * n_layer)"})
    values = model_variables(model, specs)
    assert values["n_layer"] == 2.0 and values["d_model"] == 64.0
    assert values["std_out"] == 0.02 / math.sqrt(4)
    name = "encoder.layer.1.intermediate.dense"
    dense = dict(model.named_modules())[name]
    assert parameter_variables(dense, name, "weight", dense.weight) == {
        "layer_id": 1.0, "fan_in": 64.0, "fan_out": 128.0}


def test_llama_variables_on_the_meta_device():
    with torch.device("meta"):
        model = _llama()
    values = model_variables(model, parse_variables({"n_layer": {"count": "model.layers.*"}}))
    assert values == {"d_model": 128.0, "n_layer": 3.0}
    name = "model.layers.2.mlp.down_proj"
    down = dict(model.named_modules())[name]
    assert down.weight.is_meta
    assert parameter_variables(down, name, "weight", down.weight) == {
        "layer_id": 2.0, "fan_in": 256.0, "fan_out": 128.0}
    # depth-scaled init (torchtitan's depth_init): 0.02 / sqrt(2 * (layer_id + 1))
    depth = parse_expression("0.02 / sqrt(2 * (layer_id + 1))")
    assert depth.evaluate(parameter_variables(down, name, "weight", down.weight)) == \
        0.02 / math.sqrt(6)


def test_layer_id_is_the_first_integer_segment():
    assert layer_id("encoder.layer.11.attention.self.query") == 11
    assert layer_id("blocks.2.mlp.fc1.3") == 2
    assert layer_id("conv2") is None
    assert layer_id("") is None


def test_hidden_size_reads_hf_config_names():
    assert hidden_size(_gpt2(n_layer=1)) == 64  # GPT-2 maps hidden_size to n_embd
    assert hidden_size(_llama()) == 128
    plain = nn.Linear(2, 2)
    plain.config = {"d_model": 512}
    assert hidden_size(plain) == 512
    plain.config = {"hidden_size": [64, 128]}  # ResNet's hidden_sizes-like: not a size
    assert hidden_size(plain) is None


def test_declared_d_model_wins_and_a_missing_one_is_explained():
    plain = nn.Sequential(nn.Linear(2, 2))
    assert model_variables(plain, parse_variables({"d_model": 256}),
                           needed=["d_model"]) == {"d_model": 256.0}
    with pytest.raises(PolicyError) as info:
        model_variables(plain, {}, needed=["d_model", "layer_id"])
    assert str(info.value) == ("variables: 'd_model' is needed, but Sequential has no config "
                               "with d_model, hidden_size, n_embd: declare it, e.g. "
                               "variables: {d_model: 512}")


@pytest.mark.parametrize(("spec", "words"), [
    ({"layer_id": 3}, "variables: 'layer_id' is defined for each parameter and cannot be "
                      "declared"),
    ({"sqrt": 3}, "variables: 'sqrt' is a function; choose another variable name"),
    ({"2x": 3}, "variables: variable name '2x' is not a name"),
    ({"n": True}, "variables.n: expected a number, an expression or {count: glob}, got bool"),
    ({"n": float("inf")}, "variables.n: expected a number"),
    ({"n": {"cuont": "h.*"}}, "variables.n: unknown key 'cuont'. Did you mean 'count'?"),
    ({"n": {}}, "variables.n: expected {count: glob}"),
    ({"n": {"count": ""}}, "variables.n: count: '' is not a module-name glob"),
    ({"n": {"count": "h..*"}}, "count: 'h..*' is not a module-name glob"),
    ({"n": {"count": []}}, "count: expected a glob or a list of globs, got []"),
    ({"s": "2 * n", "n": 3}, "variables.s: expression '2 * n', column 5: unknown variable 'n'"),
    ({"n": 3, "s": "2 ** ("}, "variables.s: expression '2 ** (', column 7: expected a number"),
    ([1, 2], "variables: expected a mapping of names to values, got list [1, 2]"),
])
def test_parse_variables_errors(spec, words):
    with pytest.raises(PolicyError) as info:
        parse_variables(spec)
    assert words in str(info.value)


def test_expression_variable_failing_on_the_model_names_the_variable():
    specs = parse_variables({"n": {"count": "*"}, "s": "1 / (n - 1)"})
    with pytest.raises(PolicyError, match=r"^variables\.s: expression '1 / \(n - 1\)', "
                                          r"column 3: division by zero in 1 / 0"):
        model_variables(nn.Sequential(nn.Linear(2, 2)), specs)
