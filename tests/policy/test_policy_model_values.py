"""Policies that read the model: fan layouts per layer type, variables and expressions,
parameters a module was built without, and the output layer."""

from __future__ import annotations

import math
import os
import pickle
import warnings

import pytest
import torch
from torch import nn

from lightning_init import PolicyError
from lightning_init.anatomy.layouts import TORCH_LAYOUT, Layout
from lightning_init.policy import InitPolicy, UnusedRuleWarning
from lightning_init.policy.initializers import resolve_initializer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

CONV1D = "transformers.pytorch_utils.Conv1D"


def _gpt2(n_layer: int = 2, n_embd: int = 128) -> nn.Module:
    config = transformers.GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=4, vocab_size=200,
                                     n_positions=64, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def _record(report, name):
    return next(record for record in report.records if record.qualified_name == name)


def _write(tmp_path, text: str):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# Fan layouts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "theory"), [
    ({"init": "kaiming_normal", "nonlinearity": "relu"}, math.sqrt(2 / 128)),
    ({"init": "kaiming_normal", "mode": "fan_out", "nonlinearity": "relu"}, math.sqrt(2 / 512)),
    ({"init": "kaiming_uniform", "nonlinearity": "linear"}, 1 / math.sqrt(128)),
    ("lecun_normal", 1 / math.sqrt(128)),
    ({"init": "variance_scaling", "scale": 2.0}, math.sqrt(2 / 128)),
], ids=["kaiming fan_in", "kaiming fan_out", "kaiming_uniform", "lecun", "variance_scaling"])
def test_conv1d_fans_are_read_in_first(spec, theory):
    # GPT-2's c_fc is a Conv1D with weight (n_embd, 4 n_embd) = (in, out): fan_in is 128.
    model = _gpt2(n_embd=128)
    assert tuple(model.transformer.h[0].mlp.c_fc.weight.shape) == (128, 512)
    policy = InitPolicy.from_dict({"seed": 0, "rules": [
        {"match": {"type": CONV1D, "name": "*c_fc"}, "weight": spec}]})
    planned = policy.explain(model)
    assert planned.entries[0].expected_std == pytest.approx(theory, rel=1e-12)
    report = policy.apply(model)
    record = _record(report, "transformer.h.0.mlp.c_fc.weight")
    assert record.expected_std == pytest.approx(theory, rel=1e-12)
    assert record.measured_std == pytest.approx(theory, rel=0.02)
    assert model.transformer.h[1].mlp.c_fc.weight.std().item() == pytest.approx(theory, rel=0.02)


def test_kaiming_on_c_fc_is_0_125_not_torchs_0_0625():
    model = _gpt2(n_embd=128)
    report = InitPolicy.from_dict({"rules": [{"match": {"name": "*c_fc"}, "weight": {
        "init": "kaiming_normal", "nonlinearity": "relu"}}]}).apply(model)
    assert _record(report, "transformer.h.0.mlp.c_fc.weight").expected_std == 0.125
    weight = model.transformer.h[0].mlp.c_fc.weight
    assert weight.std().item() == pytest.approx(0.125, rel=0.02)
    torch_reading = torch.empty_like(weight)
    nn.init.kaiming_normal_(torch_reading, nonlinearity="relu")
    assert torch_reading.std().item() == pytest.approx(0.0625, rel=0.02)


@pytest.mark.parametrize(("name", "spec"), [
    ("kaiming_normal_", {"a": 0.1, "mode": "fan_out", "nonlinearity": "leaky_relu"}),
    ("kaiming_uniform_", {"a": math.sqrt(5)}),
    ("xavier_uniform_", {"gain": 1.3}),
    ("xavier_normal_", {}),
])
def test_torch_layout_draws_exactly_what_torch_draws(name, spec):
    for shape in [(48, 32), (16, 8, 3, 3)]:
        ours, theirs = torch.empty(shape), torch.empty(shape)
        init = resolve_initializer({"init": name, **spec}).bind({}, layout=TORCH_LAYOUT)
        init.fill_(ours, torch.Generator().manual_seed(3))
        getattr(nn.init, name)(theirs, **spec, generator=torch.Generator().manual_seed(3))
        assert torch.equal(ours, theirs)


def test_conv_transpose_fans_count_its_inputs():
    # (in=8, out/groups=3, 3, 3) with groups=2: fan_in = 8/2 * 9 = 36 (torch says 27).
    layer = nn.ConvTranspose2d(8, 6, kernel_size=3, groups=2)
    report = InitPolicy.from_dict({"rules": [{"match": {"type": "ConvTranspose2d"}, "weight": {
        "init": "kaiming_normal", "nonlinearity": "linear"}}]}).apply(layer)
    assert report.records[0].expected_std == pytest.approx(1 / math.sqrt(36))


class _Kernel(nn.Module):
    """A layer of the user's that stores its weight as (in, out)."""

    def __init__(self, fan_in: int, fan_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(fan_in, fan_out))


def test_fan_layout_in_a_rule_overrides_torchs_reading(tmp_path):
    model = nn.Sequential(_Kernel(400, 100), _Kernel(400, 100))
    path = _write(tmp_path, """\
seed: 0
rules:
  - match: {name: "0"}
    fan_layout: {in: 0, out: 1}
    weight: {init: kaiming_normal, nonlinearity: relu}
  - match: {name: "1"}
    weight: {init: kaiming_normal, nonlinearity: relu}
""")
    report = InitPolicy.from_yaml(path).apply(model)
    assert report.records[0].expected_std == pytest.approx(math.sqrt(2 / 400))
    assert report.records[1].expected_std == pytest.approx(math.sqrt(2 / 100))
    assert model[0].weight.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    assert model[1].weight.std().item() == pytest.approx(math.sqrt(2 / 100), rel=0.02)


@pytest.mark.parametrize(("layout", "words"), [
    ("{in: 0, ouy: 1}", ["rules[0].fan_layout", "'ouy'", "Did you mean 'out'"]),
    ("{in: 0}", ["rules[0].fan_layout", "'out' is missing"]),
    ("{in: 1, out: 1}", ["rules[0].fan_layout", "both dimension 1"]),
    ("[0, 1]", ["rules[0].fan_layout", "{in: 0, out: 1}"]),
])
def test_a_bad_fan_layout_names_the_file_and_line(tmp_path, layout, words):
    path = _write(tmp_path, f"rules:\n  - match: {{type: Linear}}\n    fan_layout: {layout}\n"
                            "    weight: xavier_uniform\n")
    with pytest.raises(PolicyError) as info:
        InitPolicy.from_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 3: ")
    for word in words:
        assert word in message, message


def test_a_fan_layout_beyond_the_weights_dimensions_fails_before_writing():
    layer = nn.Linear(4, 3)
    before = layer.weight.clone()
    policy = InitPolicy.from_dict({"rules": [{"match": {"type": "Linear"},
                                              "fan_layout": {"in": 0, "out": 2},
                                              "weight": "xavier_uniform"}]})
    with pytest.raises(PolicyError) as info:
        policy.apply(layer)
    message = str(info.value)
    assert "rules[0].weight -> weight" in message and "dimension 2" in message, message
    assert torch.equal(layer.weight, before)


def test_bound_initializer_keeps_its_layout_through_chunks():
    init = resolve_initializer({"init": "kaiming_normal", "nonlinearity": "linear", "chunks": 2})
    bound = init.bind({}, layout=Layout(in_dim=0, out_dim=1))
    # blocks of (50, 30): fan_in is 50 under the (in, out) layout, 30 under torch's
    assert bound.expected_std((100, 30)) == pytest.approx(1 / math.sqrt(50))
    assert init.expected_std((100, 30)) == pytest.approx(1 / math.sqrt(30))
    assert pickle.loads(pickle.dumps(bound)) == bound


# --------------------------------------------------------------------------------------------
# Variables and expressions
# --------------------------------------------------------------------------------------------

GPT2_DEPTH = {
    "seed": 0,
    "variables": {"n_layer": {"count": "transformer.h.*"}},
    "rules": [{"match": {"name": "*c_proj"},
               "weight": {"init": "normal", "std": "0.02 / sqrt(2 * n_layer)"}}],
}


@pytest.mark.parametrize("n_layer", [2, 4])
def test_depth_scaled_std_follows_the_model(n_layer):
    model = _gpt2(n_layer=n_layer)
    policy = InitPolicy.from_dict(GPT2_DEPTH)
    theory = 0.02 / math.sqrt(2 * n_layer)
    planned = policy.explain(model)
    assert planned.variables == {"n_layer": float(n_layer)}
    assert all(entry.expected_std == pytest.approx(theory, rel=1e-12)
               for entry in planned.entries)
    assert len(planned.entries) == 2 * n_layer  # attn.c_proj and mlp.c_proj per block
    text = str(planned)
    assert f"variables: n_layer = {n_layer}" in text
    assert f"normal(std=0.02 / sqrt(2 * n_layer) -> {theory:.6g})" in text
    report = policy.apply(model)
    assert f"variables: n_layer = {n_layer}" in str(report)
    values = torch.cat([record_tensor.flatten() for name, record_tensor
                        in model.named_parameters() if name.endswith("c_proj.weight")])
    assert values.std().item() == pytest.approx(theory, rel=0.02)


def test_per_parameter_variables_layer_id_fan_in_and_d_model():
    model = _gpt2(n_layer=3, n_embd=64)
    policy = InitPolicy.from_dict({"seed": 0, "rules": [
        {"match": {"name": "*attn.c_proj"},
         "weight": {"init": "normal", "std": "0.02 / sqrt(2 * (layer_id + 1))"}},
        {"match": {"name": "*mlp.c_proj"}, "weight": {"init": "normal", "std": "1 / sqrt(fan_in)"}},
        {"match": {"name": "*c_attn"}, "weight": {"init": "normal", "std": "d_model ** -0.5"}},
    ]})
    stds = {entry.qualified_name: entry.expected_std for entry in policy.explain(model).entries}
    for layer in range(3):
        assert stds[f"transformer.h.{layer}.attn.c_proj.weight"] == pytest.approx(
            0.02 / math.sqrt(2 * (layer + 1)))
        # mlp.c_proj is a Conv1D (256, 64) = (in, out): fan_in 256
        assert stds[f"transformer.h.{layer}.mlp.c_proj.weight"] == pytest.approx(1 / 16)
        assert stds[f"transformer.h.{layer}.attn.c_attn.weight"] == pytest.approx(1 / 8)
    assert policy.explain(model).variables == {"d_model": 64.0}


def test_variables_chain_and_numbers():
    model = nn.Sequential(*[nn.Linear(8, 8) for _ in range(4)])
    policy = InitPolicy.from_dict({"variables": {"n": {"count": "*"}, "base": 0.5,
                                                 "std_out": "base / sqrt(n)"},
                                   "rules": [{"match": {"type": "Linear"},
                                              "weight": {"init": "normal", "std": "std_out"},
                                              "bias": {"init": "constant", "val": "n - 4"}}]})
    planned = policy.explain(model)
    assert planned.variables == {"n": 4.0, "base": 0.5, "std_out": 0.25}
    assert planned.entries[0].expected_std == 0.25
    assert planned.entries[1].initializer == "constant(val=n - 4 -> 0)"


def test_expression_policies_pickle_and_compare():
    policy = InitPolicy.from_dict(GPT2_DEPTH)
    clone = pickle.loads(pickle.dumps(policy))
    assert clone == policy
    assert clone.rules[0].params[0][1] == policy.rules[0].params[0][1]
    assert clone.explain(_gpt2(n_layer=2)).variables == {"n_layer": 2.0}


def test_an_unknown_variable_fails_at_load_with_file_line_column_and_suggestion(tmp_path):
    path = _write(tmp_path, """\
variables:
  n_layer: {count: "transformer.h.*"}
rules:
  - match: {name: "*c_proj"}
    weight: {init: normal, std: "0.02 / sqrt(2 * n_layr)"}
""")
    with pytest.raises(PolicyError) as info:
        InitPolicy.from_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 5: rules[0].weight.std: "), message
    for words in ["column 17", "unknown variable 'n_layr'", "Did you mean 'n_layer'",
                  "^^^^^^", "must be a number or an expression"]:
        assert words in message, message


@pytest.mark.parametrize(("variables", "line", "words"), [
    ('  n_layer: {cuont: "h.*"}\n', 2, ["variables.n_layer", "'cuont'", "Did you mean 'count'"]),
    ('  a: 2\n  b: "3 * c"\n', 3, ["variables.b", "unknown variable 'c'"]),
    ("  fan_in: 3\n", 2, ["'fan_in' is defined for each parameter"]),
    ("  sqrt: 3\n", 2, ["'sqrt' is a function"]),
])
def test_bad_variables_name_the_file_and_line(tmp_path, variables, line, words):
    path = _write(tmp_path, "variables:\n" + variables + "rules: []\n")
    with pytest.raises(PolicyError) as info:
        InitPolicy.from_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line {line}: "), message
    for word in words:
        assert word in message, message


def test_a_count_that_matches_nothing_suggests_the_models_names():
    model = _gpt2(n_layer=2)
    policy = InitPolicy.from_dict({"variables": {"n_layer": {"count": "h.*"}}, "rules": [
        {"match": {"name": "*c_proj"}, "weight": {"init": "normal", "std": "0.1 / n_layer"}}]})
    with pytest.raises(PolicyError) as info:
        policy.explain(model)
    message = str(info.value)
    assert "variables.n_layer" in message and "Did you mean 'transformer.h.*'" in message


def test_a_count_no_matched_parameter_needs_is_no_error():
    # a policy written for GPT-2 on another family: its depth rule matches nothing there
    policy = InitPolicy.from_dict({**GPT2_DEPTH, "rules": [
        {**GPT2_DEPTH["rules"][0], "optional": True},
        {"match": {"type": "Linear"}, "weight": {"init": "normal", "std": 0.02}}]})
    planned = policy.explain(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
    assert [entry.qualified_name for entry in planned.entries] == ["0.weight", "2.weight"]
    assert planned.variables == {}


@pytest.mark.parametrize(("spec", "words"), [
    ({"init": "normal", "std": "0.02 - n_layer"},
     ["rules[0].weight -> transformer.h.0.attn.c_proj.weight", "std must be >= 0",
      "'0.02 - n_layer'"]),
    ({"init": "uniform", "a": "n_layer", "b": 0},
     ["rules[0].weight -> transformer.h.0.attn.c_proj.weight", "a <= b"]),
    ({"init": "normal", "std": "1 / (n_layer - 2)"},
     ["rules[0].weight -> transformer.h.0.attn.c_proj.weight", "division by zero"]),
])
def test_expression_values_are_checked_per_parameter(spec, words):
    model = _gpt2(n_layer=2)
    before = model.transformer.h[0].attn.c_proj.weight.clone()
    policy = InitPolicy.from_dict({"variables": {"n_layer": {"count": "transformer.h.*"}},
                                   "rules": [{"match": {"name": "*c_proj"}, "weight": spec}]})
    with pytest.raises(PolicyError) as info:
        policy.apply(model)
    for word in words:
        assert word in str(info.value), str(info.value)
    assert torch.equal(model.transformer.h[0].attn.c_proj.weight, before)


def test_fan_in_of_a_bias_is_an_error_that_names_the_parameter():
    policy = InitPolicy.from_dict({"rules": [{"match": {"type": "Linear"},
                                              "bias": {"init": "normal", "std": "1/fan_in"}}]})
    with pytest.raises(PolicyError) as info:
        policy.explain(nn.Linear(3, 2))
    message = str(info.value)
    assert "rules[0].bias -> bias" in message and "no value for 'fan_in'" in message, message


def test_d_model_without_a_config_asks_for_a_declaration():
    policy = InitPolicy.from_dict({"rules": [{"match": {"type": "Linear"},
                                              "weight": {"init": "normal",
                                                         "std": "d_model ** -0.5"}}]})
    with pytest.raises(PolicyError) as info:
        policy.explain(nn.Linear(3, 2))
    assert "'d_model' is needed" in str(info.value) and "declare it" in str(info.value)


def test_unbound_expression_cannot_fill_alone():
    init = resolve_initializer({"init": "normal", "std": "1 / sqrt(fan_in)"})
    assert init.expected_std((4, 4)) is None
    with pytest.raises(PolicyError, match="evaluates its expressions"):
        init.fill_(torch.empty(4, 4))
    assert resolve_initializer({"init": "normal", "std": "0.02 / sqrt(24)"}).kwargs["std"] == \
        pytest.approx(0.02 / math.sqrt(24))


def test_meta_device_model_gets_expression_values():
    with torch.device("meta"):
        model = _gpt2(n_layer=4)
    spec = {**GPT2_DEPTH, "rules": [*GPT2_DEPTH["rules"], {
        "match": {"type": CONV1D}, "weight": {"init": "normal", "std": 0.02}, "bias": "zeros"}]}
    report = InitPolicy.from_dict(spec).apply(model, device="cpu")
    record = _record(report, "transformer.h.3.mlp.c_proj.weight")
    assert record.expected_std == pytest.approx(0.02 / math.sqrt(8))
    assert record.measured_std == pytest.approx(0.02 / math.sqrt(8), rel=0.02)


# --------------------------------------------------------------------------------------------
# Parameters a module was built without
# --------------------------------------------------------------------------------------------


def _conv_net(bias: bool | list[bool]) -> nn.Module:
    biases = bias if isinstance(bias, list) else [bias, bias]
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=biases[0]), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.ConvTranspose2d(8, 3, 3, bias=biases[1]), nn.Flatten(),
                         nn.Linear(3 * 8 * 8, 10, bias=False))


@pytest.mark.parametrize("preset", ["dcgan", "kaiming_relu", "xavier"])
def test_presets_are_silent_on_bias_free_conv_nets(preset):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = InitPolicy.from_preset(preset).apply(_conv_net(bias=False))
    assert report.unused_rules == []
    assert not any(name.endswith("bias") and "Conv" in name for name, _ in report.left_alone)


def test_a_key_set_elsewhere_is_not_unused():
    policy = InitPolicy.from_dict({"rules": [{"match": {"type": ["Conv2d", "ConvTranspose2d"]},
                                              "weight": "xavier_uniform", "bias": "zeros"}]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = policy.apply(_conv_net(bias=[False, True]))
    assert "3.bias" in [record.qualified_name for record in report.records]


def test_a_required_rule_says_the_parameter_was_built_without():
    policy = InitPolicy.from_dict({"rules": [{"match": {"type": "Conv2d"},
                                              "weight": "xavier_uniform", "bias": "zeros"}]})
    with pytest.warns(UnusedRuleWarning, match=r"key 'bias' names a parameter that every "
                                               r"module the rule matches was built without"):
        policy.apply(_conv_net(bias=False))


def test_a_typo_in_an_optional_rule_still_warns():
    policy = InitPolicy.from_dict({"rules": [{"match": {"type": "Conv2d"}, "optional": True,
                                              "weight": "xavier_uniform", "bais": "zeros"}]})
    with pytest.warns(UnusedRuleWarning, match=r"'bais' names no parameter.*Did you mean 'bias'"):
        policy.apply(_conv_net(bias=True))


# --------------------------------------------------------------------------------------------
# The output layer
# --------------------------------------------------------------------------------------------


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 128), nn.GELU(), nn.LayerNorm(128), nn.Linear(128, 10))


def _unit_logit_cross_entropy(classes: int = 10, samples: int = 400_000) -> float:
    """E[CE] of logits drawn from N(0, I): what a head of unit gain after LayerNorm gives."""
    logits = torch.randn(samples, classes, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean().item()


def test_kaiming_relu_gives_the_output_layer_linear_gain():
    model = _mlp()
    planned = InitPolicy.from_preset("kaiming_relu").explain(model)
    stds = {entry.qualified_name: entry.expected_std for entry in planned.entries}
    rules = {entry.qualified_name: entry.rule for entry in planned.entries}
    assert stds["0.weight"] == pytest.approx(math.sqrt(2 / 784))
    assert stds["3.weight"] == pytest.approx(1 / math.sqrt(128))
    assert "last" in rules["3.weight"] and "last" not in rules["0.weight"]


def test_kaiming_relu_initial_loss_is_that_of_unit_logits():
    theory = _unit_logit_cross_entropy()
    ratios = []
    for seed in range(4):
        model = _mlp()
        InitPolicy.from_preset("kaiming_relu").apply(model, seed=seed)
        generator = torch.Generator().manual_seed(100 + seed)
        inputs = torch.randn(2048, 784, generator=generator)
        labels = torch.randint(0, 10, (2048,), generator=generator)
        with torch.no_grad():
            ratios.append(nn.functional.cross_entropy(model(inputs), labels).item() / theory)
    # a head of unit gain on LayerNorm outputs has logits of variance 1: E[CE] = theory
    assert sum(ratios) / len(ratios) == pytest.approx(1.0, abs=0.04)
    assert theory < 1.2 * math.log(10)  # the check flags 1.5x ln(10); ReLU gain gave 1.35x


def test_check_no_longer_flags_kaiming_relus_initial_loss():
    from lightning_init import check_init

    torch.manual_seed(0)
    model = _mlp()
    InitPolicy.from_preset("kaiming_relu").apply(model, seed=0)
    inputs, labels = torch.randn(512, 784), torch.randint(0, 10, (512,))
    report = check_init(model, inputs, loss_fn=nn.functional.cross_entropy, target=labels)
    assert not [problem for problem in report.problems if problem.kind == "loss"]


def test_last_follows_registration_order_and_needs_the_whole_model():
    policy = InitPolicy.from_dict({"rules": [{"match": {"type": "Linear", "last": True},
                                              "weight": "zeros"}]})
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2), nn.LayerNorm(2))
    assert [entry.qualified_name for entry in policy.explain(model).entries] == ["2.weight"]
    assert policy.explain(model).entries[0].rule == "rules[0] (type=Linear last)"
    # one module alone (init_module) has no output layer: the rule matches nothing there
    assert policy.explain(model[2], recurse=False).entries == []


def test_last_must_be_a_boolean(tmp_path):
    path = _write(tmp_path, "rules:\n  - match: {last: yes please}\n    weight: zeros\n")
    with pytest.raises(PolicyError, match=r"line 2: rules\[0\].match.last: 'last' must be true"):
        InitPolicy.from_yaml(path)


def test_a_custom_initializer_with_fans_gets_them_by_layout():
    model = _gpt2(n_embd=64)
    policy = InitPolicy.from_dict({"seed": 0, "rules": [{"match": {"name": "*c_fc"}, "weight": {
        "init": "tests._custom_inits:fan_in_normal", "gain": 2.0}}]})
    policy.apply(model)
    # c_fc's weight is (64, 256) = (in, out): fan_in is 64
    assert model.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.25, rel=0.02)
    with pytest.raises(PolicyError, match="unknown argument 'fans'"):
        InitPolicy.from_dict({"rules": [{"match": {"name": "*c_fc"}, "weight": {
            "init": "tests._custom_inits:fan_in_normal", "fans": [1, 2]}}]})
