"""Policy schema, matching and errors, through the public API."""

from __future__ import annotations

import dataclasses
import pickle
import textwrap
import warnings

import pytest
import torch
from torch import nn

from lightning_init import PolicyError
from lightning_init.policy import InitPolicy, UnusedRuleWarning, list_presets


def _policy(*rules, **top):
    return InitPolicy.from_dict({"rules": list(rules), **top})


def _write(tmp_path, text):
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text))
    return path


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)


class MyLinear(nn.Linear):
    pass


def _net():
    return nn.ModuleDict({
        "encoder": nn.Sequential(nn.Linear(4, 4), nn.ReLU(), MyLinear(4, 4)),
        "decoder": nn.Sequential(nn.Linear(4, 4)),
        "block": Block(),
    })


def test_first_matching_rule_wins_per_parameter():
    net = _net()
    report = _policy(
        {"match": {"type": "Linear", "name": "encoder.*"}, "weight": "ones"},
        {"match": {"type": "Linear"}, "weight": "zeros", "bias": {"init": "constant", "val": 3}},
    ).apply(net)
    assert torch.equal(net["encoder"][0].weight, torch.ones(4, 4))
    assert torch.equal(net["encoder"][2].weight, torch.ones(4, 4))  # subclass matches
    assert torch.equal(net["decoder"][0].weight, torch.zeros(4, 4))
    assert torch.equal(net["encoder"][0].bias, torch.full((4,), 3.0))  # rule 0 has no bias key
    by_name = {r.qualified_name: r for r in report.records}
    assert by_name["encoder.0.weight"].rule_index == 0
    assert by_name["encoder.0.bias"].rule_index == 1
    assert by_name["encoder.0.weight"].measured_mean == pytest.approx(1.0)
    assert by_name["decoder.0.weight"].measured_std == pytest.approx(0.0)


def test_type_by_model_class_dotted_path_and_list():
    net = _net()
    _policy({"match": {"type": "MyLinear"}, "weight": "ones"}).apply(net)
    assert torch.equal(net["encoder"][2].weight, torch.ones(4, 4))
    assert not torch.equal(net["encoder"][0].weight, torch.ones(4, 4))
    _policy({"match": {"type": ["torch.nn.LayerNorm", "Block"]}, "bias": {"init": "constant",
                                                                         "val": 2}}).apply(net)
    assert torch.equal(net["block"].norm.bias, torch.full((4,), 2.0))
    assert net["block"].proj.bias.ne(2.0).all()  # Block has no own bias; proj's bias untouched


def test_name_globs_and_parameter_key_globs():
    lstm = nn.LSTM(3, 5, num_layers=2)
    _policy({"match": {"type": "LSTM"}, "weight_hh_*": "zeros", "bias_*_l1": "ones"}).apply(lstm)
    assert lstm.weight_hh_l0.abs().sum() == 0 and lstm.weight_hh_l1.abs().sum() == 0
    assert lstm.bias_ih_l1.eq(1).all() and lstm.bias_hh_l1.eq(1).all()
    assert lstm.bias_ih_l0.ne(1).any()
    net = _net()
    _policy({"match": {"name": ["decoder.*", "block.norm"]}, "weight": "zeros"}).apply(net)
    assert net["decoder"][0].weight.abs().sum() == 0 and net["block"].norm.weight.abs().sum() == 0
    assert net["encoder"][0].weight.abs().sum() > 0


def test_skip_wins_over_rules():
    net = _net()
    before = net["encoder"][0].weight.clone()
    report = _policy({"match": {"type": "Linear"}, "weight": "zeros"},
                     skip=["encoder"]).apply(net)
    assert torch.equal(net["encoder"][0].weight, before)
    assert net["decoder"][0].weight.abs().sum() == 0
    assert ("encoder.0.weight", "skip") in report.left_alone


def test_default_keep_and_reset():
    net = _net()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(7.0)
    keep = _policy({"match": {"name": "decoder.*"}, "weight": "zeros"}).apply(net)
    assert net["encoder"][0].weight.eq(7).all()
    assert ("encoder.0.weight", "no rule") in keep.left_alone
    reset = _policy({"match": {"name": "decoder.*"}, "weight": "ones"}, default="reset",
                    seed=0).apply(net)
    assert not net["encoder"][0].weight.eq(7).any()  # reset_parameters() ran
    assert net["decoder"][0].weight.eq(1).all()  # the rule still wins in a reset module
    assert not net["decoder"][0].bias.eq(7).any()  # ... and the unmatched bias was reset
    assert net["block"].norm.weight.eq(1).all()  # LayerNorm.reset_parameters -> ones
    assert {r.rule for r in reset.records} >= {"default: reset"}


def test_unused_rule_warns_and_strict_raises():
    net = _net()
    with pytest.warns(UnusedRuleWarning, match=r"rules\[1\] \(type=Conv2d\)"):
        _policy({"match": {"type": "Linear"}, "bias": "zeros"},
                {"match": {"type": "Conv2d"}, "weight": "zeros"}).apply(net)
    with pytest.raises(PolicyError, match=r"rules\[0\].*matches no parameter.*strict"):
        _policy({"match": {"type": "Conv2d"}, "weight": "zeros"}, strict=True).apply(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _policy({"match": {"type": "Conv2d"}, "optional": True, "weight": "zeros"}).apply(net)


@pytest.mark.parametrize(
    ("mapping", "words"),
    [
        ({"rulez": []}, ["unknown policy key 'rulez'", "Did you mean 'rules'?"]),
        ({"rules": [{"match": {"type": "Linaer"}, "weight": "zeros"}]},
         ["'Linaer'", "Did you mean 'Linear'?", "rules[0].match.type"]),
        ({"rules": [{"match": {"typ": "Linear"}, "weight": "zeros"}]},
         ["unknown match key 'typ'", "Did you mean 'type'?"]),
        ({"rules": [{"mtach": {"type": "Linear"}, "weight": "zeros"}]},
         ["no 'match' key", "did you mean 'match'?"]),
        ({"rules": [{"match": {"type": "Linear"}, "weight": "kaiming_normall"}]},
         ["kaiming_normall", "Did you mean 'kaiming_normal'?", "rules[0].weight"]),
        ({"rules": [{"match": {"type": "Linear"}, "bias": "orthogonal"}]},
         ["orthogonal", "bias"]),
        ({"default": "rest"}, ["'default'", "'rest'", "Did you mean 'reset'?"]),
        ({"seed": "zero"}, ["'seed' must be an integer"]),
        ({"strict": "yes"}, ["'strict' must be true or false"]),
        ({"rules": {"match": {}}}, ["'rules' must be a list"]),
        ({"rules": [{"match": {"type": "Linear"}}]}, ["rule names no parameter"]),
        ({"rules": [{"match": {"type": "nopkg_xyz.Layer"}, "weight": "zeros"}]},
         ["cannot be imported"]),
        ({"rules": [{"match": {"type": "collections.OrderedDict"}, "weight": "zeros"}]},
         ["not a torch.nn.Module class"]),
    ],
)
def test_errors_name_the_culprit(mapping, words):
    with pytest.raises(PolicyError) as info:
        InitPolicy.from_dict(mapping).apply(_net())
    for word in words:
        assert word in str(info.value)


def test_errors_carry_file_and_line(tmp_path):
    path = _write(tmp_path, """\
        name: t
        rules:
          - match: {type: Linear}
            bias: zeros
          - match: {type: Linear}
            weight: {init: kaiming_normall, mode: fan_in}
        """)
    with pytest.raises(PolicyError) as info:
        InitPolicy.from_yaml(path)
    assert info.value.source == str(path) and info.value.line == 6
    assert f"{path}, line 6" in str(info.value)
    path = _write(tmp_path, "name: t\nrulez: []\n")
    with pytest.raises(PolicyError, match=r"line 2.*'rulez'.*'rules'"):
        InitPolicy.from_yaml(path)
    path = _write(tmp_path, "rules:\n  - match: {type: Linaer}\n    bias: zeros\n")
    with pytest.raises(PolicyError, match=r"policy.yaml, line 2.*Linaer.*'Linear'"):
        InitPolicy.from_yaml(path).apply(_net())


def test_yaml_syntax_error_gives_line(tmp_path):
    path = _write(tmp_path, "name: t\nrules:\n  - match: {type: Linear\n    bias: zeros\n")
    with pytest.raises(PolicyError, match="YAML syntax error") as info:
        InitPolicy.from_yaml(path)
    assert info.value.line in (3, 4)
    with pytest.raises(PolicyError, match="duplicate key 'rules'"):
        InitPolicy.from_yaml(_write(tmp_path, "rules: []\nrules: []\n"))


def test_python_tags_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    text = (f"name: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path"
            f" ['{marker}']]\nrules: []\n")
    with pytest.raises(PolicyError, match=r"line 1.*python/object/apply.*not allowed"):
        InitPolicy.from_yaml(_write(tmp_path, text))
    assert not marker.exists()
    with pytest.raises(PolicyError, match="not allowed"):
        InitPolicy.from_yaml(_write(tmp_path, "rules: !!python/name:os.system\n"))


def test_seed_reproducible_whatever_the_global_rng():
    policy = _policy({"match": {"type": "Linear"}, "weight": {"init": "normal", "std": 1.0},
                      "bias": {"init": "uniform", "a": -1, "b": 1}}, seed=3)
    torch.manual_seed(1)
    a = _net()
    policy.apply(a)
    torch.manual_seed(99)
    torch.rand(17)
    b = _net()
    policy.apply(b)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        if "norm" not in name:
            assert torch.equal(pa, pb), name
    other = _net()
    policy.apply(other, seed=4)  # the override changes everything
    assert not torch.equal(other["decoder"][0].weight, a["decoder"][0].weight)


def test_adding_a_layer_leaves_the_others_alone():
    policy = _policy({"match": {"type": "Linear"}, "weight": {"init": "normal", "std": 1.0}},
                     seed=0)
    small = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    big = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 8))
    policy.apply(small)
    policy.apply(big)
    assert torch.equal(small[0].weight, big[0].weight)
    assert torch.equal(small[1].weight, big[1].weight)
    assert not torch.equal(small[0].weight, small[1].weight)


def test_explain_changes_nothing_and_lists_everything():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.warns(UnusedRuleWarning):
        plan = _policy({"match": {"type": "Linear", "name": "encoder.*"}, "weight": "zeros"},
                       {"match": {"type": "GRU"}, "weight_hh_*": "zeros"},
                       name="demo").explain(net)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [e.qualified_name for e in plan.entries] == ["encoder.0.weight", "encoder.2.weight"]
    assert ("decoder.0.weight", "no rule") in plan.left_alone
    assert plan.unused_rules == ["rules[1] (type=GRU)"]
    text = str(plan)
    assert "encoder.0.weight" in text and "zeros" in text and "rules[1] (type=GRU)" in text
    assert plan.to_markdown().startswith("| parameter |")


def test_report_table_markdown_fingerprint():
    from lightning_init import weights_fingerprint

    net = _net()
    report = _policy({"match": {"type": "Linear"},
                      "weight": {"init": "kaiming_normal", "nonlinearity": "relu"}},
                     name="k", seed=0).apply(net)
    record = report.records[0]
    assert record.expected_std == pytest.approx((2 / 4) ** 0.5)
    assert report.fingerprint == weights_fingerprint(net)
    assert "kaiming_normal" in str(report) and "| encoder.0.weight |" in report.to_markdown()
    assert report.policy_name == "k" and "InitReport" in repr(report)


def test_load_forms_pickle_repr_and_presets(tmp_path):
    path = _write(tmp_path, "name: from-file\nrules:\n  - {match: {type: Linear}, bias: zeros}\n")
    assert InitPolicy.load(path).name == "from-file"
    assert InitPolicy.load(str(path)).name == "from-file"
    assert InitPolicy.load("kaiming_relu").name == "kaiming_relu"
    mapping_policy = InitPolicy.load({"name": "m", "seed": 2, "default": "reset"})
    assert InitPolicy.load(mapping_policy) is mapping_policy
    with pytest.raises(PolicyError, match="Did you mean 'kaiming_relu'"):
        InitPolicy.load("kaiming_rel")
    restored = pickle.loads(pickle.dumps(InitPolicy.load(path)))
    assert restored == InitPolicy.load(path) and restored.source == str(path)
    assert "from-file" in repr(restored)
    assert set(list_presets()) >= {"pytorch_default", "kaiming_relu", "xavier", "lecun_selu",
                                   "dcgan", "lstm", "gpt2", "bert"}  # issue 16 adds presets


def test_measured_statistics_match_torch_on_large_and_small_tensors():
    net = nn.Sequential(nn.Linear(512, 256), nn.LayerNorm(256))
    report = _policy({"match": {"type": "Linear"}, "weight": {"init": "normal", "std": 0.5},
                      "bias": "ones"},
                     {"match": {"type": "LayerNorm"}, "weight": {"init": "normal", "std": 0.1}},
                     seed=0).apply(net)
    by_name = {r.qualified_name: r for r in report.records}
    for name, tensor in [("0.weight", net[0].weight), ("0.bias", net[0].bias),
                         ("1.weight", net[1].weight)]:
        std, mean = torch.std_mean(tensor.double(), correction=0)
        assert by_name[name].measured_mean == pytest.approx(mean.item(), abs=1e-6)
        assert by_name[name].measured_std == pytest.approx(std.item(), rel=1e-4, abs=1e-7)
    assert by_name["0.bias"].measured_std == 0.0


def test_a_parameter_key_no_matched_module_has_warns_with_suggestion():
    policy = _policy({"match": {"type": "Linear"}, "weight": "ones", "wieght": "zeros"})
    with pytest.warns(UnusedRuleWarning, match=r"rules\[0\].*'wieght'.*Did you mean 'weight'"):
        policy.apply(_net())
    strict = _policy({"match": {"type": "Linear"}, "bias": "ones", "wieght": "zeros"},
                     strict=True)
    net = _net()
    before = net["decoder"][0].bias.clone()
    with pytest.raises(PolicyError, match=r"rules\[0\]\.wieght.*strict"):
        strict.apply(net)
    assert torch.equal(net["decoder"][0].bias, before)


def test_rule_level_default_and_keep_initializers():
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(9.0)
    report = _policy({"match": {"name": "0"}, "weight": "default", "bias": "keep"},
                     {"match": {"name": "1"}, "*": "keep"}, seed=0).apply(net)
    assert not net[0].weight.eq(9).any() and net[0].bias.eq(9).all()  # reset spared the bias
    assert net[1].weight.eq(9).all()
    assert [r.qualified_name for r in report.records] == ["0.weight"]
    assert ("0.bias", "keep by rules[0] (name=0)") in report.left_alone
    again = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    _policy({"match": {"name": "0"}, "weight": "default"}, seed=0).apply(again)
    assert torch.equal(again[0].weight, net[0].weight)  # seeded reset_parameters is reproducible


def test_skip_globs_cover_descendants_and_lists():
    net = nn.ModuleDict({"backbone": nn.Sequential(nn.Sequential(nn.Linear(2, 2))),
                         "head": nn.Linear(2, 2), "aux": nn.Linear(2, 2)})
    report = _policy({"match": {"type": "Linear"}, "weight": "zeros"},
                     skip=["backbone.*", "au?"]).apply(net)
    assert net["backbone"][0][0].weight.abs().sum() > 0 and net["aux"].weight.abs().sum() > 0
    assert net["head"].weight.abs().sum() == 0
    assert [r.qualified_name for r in report.records] == ["head.weight"]
    assert {name for name, reason in report.left_alone if reason == "skip"} == {
        "backbone.0.0.weight", "backbone.0.0.bias", "aux.weight", "aux.bias"}


def test_a_skip_glob_that_matches_no_module_warns_with_the_full_name():
    """Skip globs are over full qualified names: "backbone.*" misses "net.backbone.0"."""
    net = nn.ModuleDict({"net": nn.ModuleDict({"backbone": nn.Sequential(nn.Linear(2, 2)),
                                               "head": nn.Linear(2, 2)})})
    before = net["net"]["backbone"][0].weight.clone()
    rule = {"match": {"type": "Linear"}, "weight": "zeros"}
    with pytest.warns(UnusedRuleWarning, match=r"'backbone\.\*' matches no module.*"
                      r"Did you mean 'net\.backbone\.\*'\?"):
        _policy(rule, skip=["backbone.*"]).apply(net)
    assert net["net"]["backbone"][0].weight.abs().sum() == 0  # the warning told why
    with pytest.warns(UnusedRuleWarning, match=r"'net\.backbon' .*Did you mean 'net\.backbone'"):
        _policy(rule, skip=["net.backbon"]).explain(net)
    with pytest.raises(PolicyError, match=r"'net\.backbon' matches no module.*strict"):
        _policy(rule, skip=["net.backbon"], strict=True).apply(net)
    net["net"]["backbone"][0].weight.data.copy_(before)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _policy(rule, skip=["net.backbone"]).apply(net)
    assert torch.equal(net["net"]["backbone"][0].weight, before)


def test_warnings_point_at_the_line_that_called_the_policy():
    rule = {"match": {"type": "Conv2d"}, "weight": "zeros"}
    for call in (lambda net: _policy(rule).apply(net), lambda net: _policy(rule).explain(net)):
        with pytest.warns(UnusedRuleWarning, match="matches no parameter") as record:
            call(nn.Linear(2, 2))
        assert [warning.filename for warning in record] == [__file__]


@pytest.mark.parametrize("type_name", ["..Linear", ".Linear", "torch..nn.Linear"])
def test_relative_or_malformed_type_path_is_a_policy_error(type_name):
    policy = InitPolicy.from_dict({"rules": [{"match": {"type": type_name}, "weight": "zeros"}]})
    with pytest.raises(PolicyError, match=r"cannot be imported: .*absolute dotted path") as info:
        policy.explain(_net())
    assert info.value.where == "rules[0].match.type" and repr(type_name) in str(info.value)


@pytest.mark.parametrize("strict", [False, True])
def test_a_misspelled_key_alone_in_its_rule_gets_a_did_you_mean(strict):
    policy = InitPolicy.from_dict(
        {"strict": strict, "rules": [{"match": {"type": "Linear"}, "wieght": "zeros"}]})
    words = ["rule matches no parameter", "rules[0]", "'wieght'", "Did you mean 'weight'?",
             "Their parameters: bias, weight"]
    if strict:
        with pytest.raises(PolicyError) as info:
            policy.apply(_net())
        message = str(info.value)
    else:
        with pytest.warns(UnusedRuleWarning) as caught:
            policy.apply(_net())
        message = str(caught[0].message)
    for word in words:
        assert word in message


def test_report_markdown_headline_checks_the_std_against_the_formula():
    net = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 8))
    report = _policy({"match": {"type": "Linear"},
                      "weight": {"init": "kaiming_normal", "nonlinearity": "relu"},
                      "bias": "zeros"}, name="k", seed=0).apply(net)
    markdown = report.to_markdown()
    headline = markdown.splitlines()[0]
    # A long initializer on two lines, so that TensorBoard does not squeeze the short columns.
    assert "| 0: Linear | kaiming_normal<br>(nonlinearity=relu) |" in markdown
    assert markdown.rstrip().endswith("rules[0]: type=Linear")  # the full match, once
    assert headline == ("**init policy 'k': 4 parameter(s) set, 0 left alone; every std as its "
                        "formula promises**")
    with torch.no_grad():
        net[0].weight.mul_(3.0)  # what a second, forgotten init would do
    report.records[0] = dataclasses.replace(
        report.records[0], measured_std=float(net[0].weight.detach().std(unbiased=False))
    )
    assert "std off its formula's: 0.weight (0.264 for 0.0884)" in report.to_markdown()
