"""The initializer catalogue against theory: fan formulas, KS tests, orthogonality, errors."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from lightning_init.errors import PolicyError
from lightning_init.policy.initializers import Initializer, known_initializers, resolve_initializer


def _filled(spec, shape, *, seed=0, dtype=torch.float32) -> torch.Tensor:
    tensor = torch.empty(shape, dtype=dtype)
    resolve_initializer(spec).fill_(tensor, torch.Generator().manual_seed(seed))
    return tensor


def _sample(tensor: torch.Tensor, count: int = 20_000):
    return tensor.flatten()[:count].double().numpy()


# --------------------------------------------------------------------------------------------
# std and mean against the formulas
# --------------------------------------------------------------------------------------------

RELU_GAIN = math.sqrt(2.0)
STAT_CASES = [
    ("kaiming_normal relu fan_in", {"init": "kaiming_normal", "nonlinearity": "relu"},
     (512, 256), RELU_GAIN / math.sqrt(256)),
    ("kaiming_normal fan_out conv", {"init": "kaiming_normal_", "mode": "fan_out",
                                     "nonlinearity": "relu"},
     (64, 32, 3, 3), RELU_GAIN / math.sqrt(64 * 9)),
    ("kaiming_uniform leaky a", {"init": "kaiming_uniform", "a": math.sqrt(5)},
     (400, 300), math.sqrt(2 / (1 + 5)) / math.sqrt(300)),
    ("xavier_uniform", "xavier_uniform", (300, 500), math.sqrt(2 / 800)),
    ("xavier_normal gain", {"init": "xavier_normal", "gain": 5 / 3}, (300, 500),
     5 / 3 * math.sqrt(2 / 800)),
    ("uniform", {"init": "uniform", "a": -2, "b": 4}, (500, 500), 6 / math.sqrt(12)),
    ("normal", {"init": "normal", "mean": 1.0, "std": 0.02}, (500, 500), 0.02),
    ("trunc_normal", {"init": "trunc_normal", "std": 1.0, "a": -1.0, "b": 1.5}, (500, 500),
     float(stats.truncnorm(-1.0, 1.5).std())),
    ("lecun_normal", "lecun_normal", (256, 400), 1 / math.sqrt(400)),
    ("variance_scaling trunc fan_avg", {"init": "variance_scaling", "scale": 2.0,
                                        "mode": "fan_avg", "distribution": "truncated_normal"},
     (300, 500), math.sqrt(2.0 / 400)),
    ("variance_scaling uniform fan_out", {"init": "variance_scaling", "mode": "fan_out",
                                          "distribution": "uniform"},
     (400, 300), math.sqrt(1 / 400)),
    ("variance_scaling normal", "variance_scaling", (400, 300), math.sqrt(1 / 300)),
    ("orthogonal gain", {"init": "orthogonal", "gain": 2.0}, (200, 500), 2.0 / math.sqrt(500)),
    ("sparse", {"init": "sparse", "sparsity": 0.3, "std": 0.5}, (400, 300),
     0.5 * math.sqrt(1 - 120 / 400)),
    ("orthogonal chunks", {"init": "orthogonal", "chunks": 4}, (1024, 256), 1 / math.sqrt(256)),
    ("kaiming chunks per block fan", {"init": "kaiming_normal", "mode": "fan_out",
                                      "nonlinearity": "relu", "chunks": 4},
     (1024, 256), RELU_GAIN / math.sqrt(256)),
]


@pytest.mark.parametrize(("spec", "shape", "theory"), [c[1:] for c in STAT_CASES],
                         ids=[c[0] for c in STAT_CASES])
def test_std_matches_formula_and_measurement(spec, shape, theory):
    init = resolve_initializer(spec)
    assert init.expected_std(torch.Size(shape)) == pytest.approx(theory, rel=1e-6)
    tensor = _filled(spec, shape)
    # the sample std of n values has relative error ~ 1/sqrt(2n) ~ 0.2 %; allow 2 %.
    assert tensor.std().item() == pytest.approx(theory, rel=0.02)
    mean = init.expected_mean(shape)
    assert abs(tensor.mean().item() - mean) < 6 * theory / math.sqrt(tensor.numel())


def test_fans_follow_torch_semantics():
    for shape in [(7, 5), (8, 3, 5), (16, 4, 3, 3), (6, 2, 2, 3, 1)]:
        fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
        init = resolve_initializer({"init": "kaiming_normal", "nonlinearity": "linear"})
        assert init.expected_std(shape) == pytest.approx(1 / math.sqrt(fan_in))


def test_bounds_of_uniform_family():
    w = _filled({"init": "kaiming_uniform", "nonlinearity": "relu"}, (300, 200))
    bound = math.sqrt(2) * math.sqrt(3 / 200)
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.99 * bound
    w = _filled("xavier_uniform", (300, 200))
    bound = math.sqrt(6 / 500)
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.99 * bound
    w = _filled({"init": "uniform", "a": -0.5, "b": 0.25}, (300, 200))
    assert w.min().item() >= -0.5 and w.max().item() <= 0.25
    w = _filled({"init": "trunc_normal", "mean": 0.1, "std": 1.0, "a": -0.5, "b": 0.5},
                (300, 200))
    assert w.min().item() >= -0.5 and w.max().item() <= 0.5
    w = _filled({"init": "variance_scaling", "distribution": "truncated_normal"}, (300, 200))
    raw = math.sqrt(1 / 200) / 0.87962566103423978
    assert w.abs().max().item() <= 2 * raw


# --------------------------------------------------------------------------------------------
# KS tests with fixed seeds
# --------------------------------------------------------------------------------------------

KS_CASES = [
    ("uniform", {"init": "uniform", "a": -1, "b": 3}, (200, 200), stats.uniform(-1, 4)),
    ("normal", {"init": "normal", "mean": 0.5, "std": 2.0}, (200, 200), stats.norm(0.5, 2.0)),
    ("kaiming_normal", {"init": "kaiming_normal", "nonlinearity": "relu"}, (200, 128),
     stats.norm(0, math.sqrt(2 / 128))),
    ("kaiming_uniform", {"init": "kaiming_uniform", "nonlinearity": "tanh"}, (200, 128),
     stats.uniform(-5 / 3 * math.sqrt(3 / 128), 2 * 5 / 3 * math.sqrt(3 / 128))),
    ("xavier_normal", "xavier_normal", (200, 300), stats.norm(0, math.sqrt(2 / 500))),
    ("xavier_uniform", "xavier_uniform", (200, 300),
     stats.uniform(-math.sqrt(6 / 500), 2 * math.sqrt(6 / 500))),
    ("trunc_normal", {"init": "trunc_normal", "mean": 0.2, "std": 0.5, "a": -0.3, "b": 1.0},
     (200, 200), stats.truncnorm((-0.3 - 0.2) / 0.5, (1.0 - 0.2) / 0.5, loc=0.2, scale=0.5)),
    ("trunc_normal narrow", {"init": "trunc_normal", "std": 1.0, "a": 0.5, "b": 0.9},
     (200, 200), stats.truncnorm(0.5, 0.9)),
    ("variance_scaling truncated", {"init": "variance_scaling", "scale": 2.0,
                                    "distribution": "truncated_normal"}, (200, 100),
     stats.truncnorm(-2, 2, scale=math.sqrt(2 / 100) / 0.87962566103423978)),
    ("lecun_normal", "lecun_normal", (200, 100),
     stats.truncnorm(-2, 2, scale=math.sqrt(1 / 100) / 0.87962566103423978)),
    ("variance_scaling uniform", {"init": "variance_scaling", "distribution": "uniform",
                                  "mode": "fan_out"}, (100, 200),
     stats.uniform(-math.sqrt(3 / 100), 2 * math.sqrt(3 / 100))),
]


@pytest.mark.parametrize(("spec", "shape", "law"), [c[1:] for c in KS_CASES],
                         ids=[c[0] for c in KS_CASES])
def test_ks_against_scipy(spec, shape, law):
    values = _sample(_filled(spec, shape, seed=7))
    assert stats.kstest(values, law.cdf).pvalue > 1e-3
    # and the test has power: a 10 % wider law is rejected
    wider = stats.norm(law.mean(), 1.1 * law.std())
    assert stats.kstest(values, wider.cdf).pvalue < 1e-3


def test_truncated_std_correction_gives_requested_variance():
    init = resolve_initializer({"init": "variance_scaling", "distribution": "truncated_normal"})
    raw = 1.0 / 0.87962566103423978
    assert stats.truncnorm(-2, 2, scale=raw).std() == pytest.approx(1.0, rel=1e-9)
    assert init.expected_std((10, 1)) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# structure: orthogonal, eye, dirac, sparse, chunks, prior_bias
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 64), (32, 96), (96, 32), (16, 8, 3, 3)])
def test_orthogonal_is_orthogonal_with_gain(shape):
    w = _filled({"init": "orthogonal", "gain": 1.5}, shape, dtype=torch.float64)
    flat = w.reshape(shape[0], -1)
    small = min(flat.shape)
    gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
    torch.testing.assert_close(gram, 2.25 * torch.eye(small, dtype=torch.float64))


def test_orthogonal_matches_torch_draws_in_float32():
    ours = _filled("orthogonal", (20, 30), seed=3)
    reference = torch.nn.init.orthogonal_(torch.empty(20, 30),
                                          generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, reference)


def test_eye_and_dirac_are_identities():
    w = _filled("eye", (5, 7))
    torch.testing.assert_close(w, torch.eye(5, 7))
    x = torch.randn(2, 6, 9, 9)
    conv = torch.nn.Conv2d(6, 6, 3, padding=1, bias=False)
    resolve_initializer("dirac").fill_(conv.weight, None)
    torch.testing.assert_close(conv(x), x)
    grouped = torch.nn.Conv1d(4, 4, 5, padding=2, groups=2, bias=False)
    resolve_initializer({"init": "dirac", "groups": 2}).fill_(grouped.weight, None)
    x1 = torch.randn(3, 4, 11)
    torch.testing.assert_close(grouped(x1), x1)
    init = resolve_initializer("eye")
    assert init.expected_std((5, 7)) == pytest.approx(torch.eye(5, 7).std(unbiased=False).item())
    assert resolve_initializer("dirac").expected_std((6, 6, 3, 3)) == pytest.approx(
        conv.weight.std(unbiased=False).item())


def test_sparse_zero_fraction_per_column_and_generator():
    w = _filled({"init": "sparse", "sparsity": 0.25, "std": 1.0}, (50, 40))
    zeros_per_column = (w == 0).sum(dim=0)
    assert zeros_per_column.tolist() == [math.ceil(0.25 * 50)] * 40
    torch.manual_seed(1)
    a = _filled({"init": "sparse", "sparsity": 0.25}, (50, 40), seed=5)
    torch.manual_seed(2)  # the global RNG must not matter
    b = _filled({"init": "sparse", "sparsity": 0.25}, (50, 40), seed=5)
    assert torch.equal(a, b)


def test_chunks_each_block_orthogonal_separately():
    hidden = 32
    lstm = torch.nn.LSTM(16, hidden)
    weight = lstm.weight_hh_l0
    identity = id(weight)
    init = resolve_initializer({"init": "orthogonal", "chunks": 4})
    init.check_shape(weight.shape, where="weight_hh_l0")
    init.fill_(weight, torch.Generator().manual_seed(0))
    assert id(lstm.weight_hh_l0) == identity and isinstance(weight, torch.nn.Parameter)
    for gate in weight.detach().chunk(4, dim=0):
        torch.testing.assert_close(gate.T @ gate, torch.eye(hidden), atol=1e-5, rtol=0)
    whole = weight.detach()
    assert (whole.T @ whole - 4 * torch.eye(hidden)).abs().max() < 1e-4  # each block orthonormal
    assert not torch.allclose(whole[:hidden], whole[hidden:2 * hidden])


def test_chunks_list_sets_lstm_forget_gate_bias():
    lstm = torch.nn.LSTM(8, 5)
    init = resolve_initializer({"chunks": ["zeros", "ones", "zeros", "zeros"]})
    assert init.chunks == 4 and init.name == "chunks"
    init.fill_(lstm.bias_ih_l0, None)
    expected = torch.tensor([0.0] * 5 + [1.0] * 5 + [0.0] * 10)
    assert torch.equal(lstm.bias_ih_l0.detach(), expected)
    assert init.expected_mean((20,)) == pytest.approx(0.25)
    assert init.expected_std((20,)) == pytest.approx(expected.std(unbiased=False).item())
    assert init.describe() == "chunks[zeros, ones, zeros, zeros]"


def test_chunks_list_keep_block_and_nested_specs():
    bias = torch.full((6,), 3.0)
    init = resolve_initializer({"chunks": ["keep", {"init": "constant", "val": 2.0},
                                           {"init": "prior_bias", "prob": 0.5}]})
    init.fill_(bias, None)
    assert bias.tolist() == [3.0, 3.0, 2.0, 2.0, 0.0, 0.0]
    assert init.expected_std((6,)) is None  # a kept block promises nothing


def test_prior_bias_value():
    b = _filled({"init": "prior_bias", "prob": 0.01}, (10,))
    assert b.tolist() == pytest.approx([-math.log(0.99 / 0.01)] * 10)
    assert _filled("prior_bias", (3,)).tolist() == pytest.approx([-math.log(99)] * 3)
    assert resolve_initializer("prior_bias").expected_std((3,)) == 0.0


def test_constants_and_zero_std():
    assert _filled({"init": "constant", "val": 0.3}, (4, 4)).unique().tolist() == \
        pytest.approx([0.3])
    assert _filled("ones_", (3,)).tolist() == [1.0, 1.0, 1.0]
    for spec in ("zeros", "ones", {"init": "constant", "val": 2}):
        assert resolve_initializer(spec).expected_std((3, 3)) == 0.0


def test_special_kinds():
    keep = resolve_initializer("keep")
    tensor = torch.arange(4.0)
    keep.fill_(tensor, None)
    assert keep.kind == "keep" and tensor.tolist() == [0.0, 1.0, 2.0, 3.0]
    reset = resolve_initializer("default")
    assert reset.kind == "reset" and reset.expected_std((3, 3)) is None
    with pytest.raises(PolicyError, match="reset_parameters"):
        reset.fill_(tensor, None)


# --------------------------------------------------------------------------------------------
# custom initializers by import path
# --------------------------------------------------------------------------------------------


def test_custom_initializer_with_generator_and_kwargs():
    init = resolve_initializer({"init": "tests._custom_inits:scaled_normal", "scale": 2.0})
    assert init.describe() == "tests._custom_inits:scaled_normal(scale=2.0)"
    assert init.expected_std((4, 4)) is None
    a, b = torch.empty(300, 400), torch.empty(300, 400)
    init.fill_(a, torch.Generator().manual_seed(0))
    init.fill_(b, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.std().item() == pytest.approx(2 / 20, rel=0.02)


def test_custom_initializer_without_generator_and_returning_new_tensor():
    w = torch.empty(3, 3)
    resolve_initializer({"init": "tests._custom_inits:fill_value", "value": 4.0}).fill_(w, None)
    assert w.unique().tolist() == [4.0]
    identity = id(w)
    resolve_initializer("tests._custom_inits:returns_new").fill_(w, None)
    assert id(w) == identity and w.unique().tolist() == [7.0]
    resolve_initializer({"init": "tests._custom_inits:flexible", "x": 1, "y": 2}).fill_(w, None)
    assert w.unique().tolist() == [3.0]


@pytest.mark.parametrize(("spec", "words"), [
    ("tests._no_such_module:f", ["cannot import", "tests._no_such_module"]),
    ("tests._custom_inits:scaled_normall", ["no attribute", "scaled_normall",
                                             "Did you mean 'scaled_normal'"]),
    ("tests._custom_inits:not_callable", ["not callable"]),
    ({"init": "tests._custom_inits:scaled_normal", "scael": 2}, ["scael",
                                                                 "Did you mean 'scale'"]),
    ("tests._custom_inits:fill_value", ["needs the argument", "'value'"]),
    ("tests._custom_inits.scaled_normal", ["Did you mean 'tests._custom_inits:scaled_normal'"]),
    ("my_init", ["unknown initializer", "import path"]),
])
def test_custom_initializer_errors(spec, words):
    with pytest.raises(PolicyError) as info:
        resolve_initializer(spec, where="rules[2].weight")
    for word in words:
        assert word in str(info.value)
    assert info.value.where == "rules[2].weight"


@pytest.mark.parametrize(("spec", "words"), [
    ("tests._custom_inits:positional_only", ["tests._custom_inits:positional_only",
                                             "needs the argument 'scale'"]),
    ({"init": "tests._custom_inits:positional_only", "scale": 1.0},
     ["unknown argument 'scale' for tests._custom_inits:positional_only"]),
    ("tests._custom_inits:keyword_only", ["needs the argument 'value'"]),
    ({"init": "tests._custom_inits:keyword_only", "value": 1.0, "generator": 3},
     ["unknown argument 'generator'"]),
    ({"init": "tests._custom_inits:scaled_normal", "scale": 1.0, "generator": None},
     ["unknown argument 'generator'", "valid: chunks, init, scale"]),
])
def test_custom_initializer_arguments_bind_to_its_signature_at_resolve_time(spec, words):
    with pytest.raises(PolicyError) as info:
        resolve_initializer(spec, where="rules[1].weight")
    for word in words:
        assert word in str(info.value)
    assert str(info.value).startswith("rules[1].weight: ")


def test_custom_initializer_with_keyword_only_argument_fills():
    w = torch.empty(2, 2)
    resolve_initializer({"init": "tests._custom_inits:keyword_only", "value": 5.0}).fill_(
        w, torch.Generator().manual_seed(0))
    assert w.unique().tolist() == [5.0]


# --------------------------------------------------------------------------------------------
# errors in the user's words
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "words"), [
    ("kaiming_normall", ["'kaiming_normall'", "Did you mean 'kaiming_normal'", "xavier_uniform"]),
    ({"init": "kaiming_normal", "mode": "fan_inn"}, ["fan_inn", "fan_in, fan_out",
                                                     "Did you mean 'fan_in'"]),
    ({"init": "kaiming_uniform", "nonlinearity": "rleu"}, ["rleu", "Did you mean 'relu'"]),
    ({"init": "normal", "sdt": 0.1}, ["'sdt'", "mean, std", "Did you mean 'std'"]),
    ({"init": "normal", "std": "abc"}, ["std", "must be a number", "'abc'"]),
    ({"init": "normal", "std": -1.0}, ["std", ">= 0"]),
    ({"init": "uniform", "a": 2.0}, ["a <= b"]),
    ({"init": "trunc_normal", "a": 1.0, "b": 0.0}, ["a < b"]),
    ({"init": "trunc_normal", "mean": 10.0}, ["more than 2 std"]),
    ("constant", ["constant", "'val'"]),
    ({"init": "sparse"}, ["sparse", "'sparsity'"]),
    ({"init": "sparse", "sparsity": 1.5}, ["sparsity", "<= 1"]),
    ({"init": "prior_bias", "prob": 1.0}, ["prob", "< 1"]),
    ({"init": "dirac", "groups": 1.5}, ["groups", "integer"]),
    ({"init": "xavier_normal", "gain": True}, ["gain", "number"]),
    ({"init": "variance_scaling", "distribution": "truncated"}, ["truncated_normal"]),
    ({"init": "orthogonal", "chunks": "four"}, ["chunks", "integer"]),
    ({"init": "zeros", "chunks": 0}, ["chunks"]),
    ({"chunks": ["zeros", "default"]}, ["default", "keep"]),
    ({"chunks": ["zeros"], "init": "ones"}, ["chunks", "no other keys"]),
    ({"chunks": []}, ["at least one"]),
    ({"int": "zeros"}, ["'init'", "Did you mean 'init'"]),
    ({"init": 3}, ["'init'"]),
    ({"init": "keep", "x": 1}, ["takes no arguments"]),
    ({"init": "keep", "chunks": 2}, ["chunks"]),
    (3.5, ["name", "mapping"]),
    (None, ["name", "mapping"]),
])
def test_spec_errors_name_the_culprit(spec, words):
    with pytest.raises(PolicyError) as info:
        resolve_initializer(spec, where="rules[0].weight", source="policy.yaml", line=12)
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert message.startswith("policy.yaml, line 12: rules[0].weight")


@pytest.mark.parametrize(("spec", "shape", "words"), [
    ("orthogonal", (10,), ["orthogonal", "at least 2", "(10,)"]),
    ("eye", (3, 3, 3), ["eye", "exactly 2", "(3, 3, 3)"]),
    ("dirac", (4, 4), ["dirac", "3, 4 or 5"]),
    ("dirac", (4, 4, 1, 1, 1, 1), ["3, 4 or 5"]),
    ({"init": "dirac", "groups": 3}, (4, 4, 3), ["groups=3", "divisible"]),
    ("kaiming_normal", (16,), ["kaiming_normal", "at least 2", "(16,)"]),
    ("xavier_uniform", (), ["at least 2", "()"]),
    ("lecun_normal", (5,), ["at least 2"]),
    ("variance_scaling", (5,), ["at least 2"]),
    ({"init": "sparse", "sparsity": 0.1}, (4, 4, 4), ["exactly 2"]),
    ({"init": "orthogonal", "chunks": 4}, (10, 3), ["4 equal blocks", "(10, 3)"]),
    ({"init": "orthogonal", "chunks": 2}, (8,), ["at least 2", "block 0 of 2"]),
    ({"chunks": ["zeros", "eye"]}, (4,), ["eye", "exactly 2", "block 1 of 2"]),
])
def test_bad_shapes_are_policy_errors(spec, shape, words):
    init = resolve_initializer(spec, source="p.yaml", line=4)
    with pytest.raises(PolicyError) as info:
        init.check_shape(torch.Size(shape), where="net.0.weight")
    for word in words:
        assert word in str(info.value), str(info.value)
    assert info.value.where == "net.0.weight" and info.value.line == 4
    with pytest.raises(PolicyError):  # fill_ refuses too, before writing anything
        init.fill_(torch.empty(shape), None)


@pytest.mark.parametrize("name", [n for n in known_initializers() if n not in ("keep", "default")])
def test_zero_element_tensors_are_fine(name):
    spec = {"init": name, **({"val": 1.0} if name == "constant" else {}),
            **({"sparsity": 0.1} if name == "sparse" else {})}
    init = resolve_initializer(spec)
    shape = (0, 4, 3) if name == "dirac" else (0, 4)
    init.check_shape(shape, where="w")
    init.fill_(torch.empty(shape), None)
    assert init.expected_std(shape) is None


# --------------------------------------------------------------------------------------------
# names, identity, description, reproducibility, precision
# --------------------------------------------------------------------------------------------


def test_names_with_or_without_underscore_and_catalogue():
    torch_names = ["uniform", "normal", "trunc_normal", "constant", "ones", "zeros", "eye",
                   "dirac", "xavier_uniform", "xavier_normal", "kaiming_uniform",
                   "kaiming_normal", "orthogonal", "sparse"]
    extra = ["lecun_normal", "variance_scaling", "prior_bias", "default", "keep"]
    assert sorted(torch_names + extra) == known_initializers()
    assert resolve_initializer("xavier_uniform_") == resolve_initializer("xavier_uniform")
    assert resolve_initializer("Orthogonal").name == "orthogonal"


def test_every_torch_keyword_is_accepted():
    import inspect

    for name in known_initializers():
        function = getattr(torch.nn.init, name + "_", None)
        if function is None:
            continue
        parameters = [p for p in inspect.signature(function).parameters
                      if p not in ("tensor", "generator")]
        defaults = {"val": 1.0, "sparsity": 0.1, "mode": "fan_out", "nonlinearity": "relu",
                    "groups": 1, "a": 0.0, "b": 1.0, "std": 1.0, "mean": 0.0, "gain": 1.0}
        init = resolve_initializer({"init": name, **{p: defaults[p] for p in parameters}})
        assert list(init.kwargs) == parameters


def test_frozen_hashable_picklable_and_described():
    spec = {"init": "kaiming_normal", "mode": "fan_in", "nonlinearity": "relu"}
    init = resolve_initializer(spec, source="a.yaml", line=3)
    same = resolve_initializer(dict(reversed(list(spec.items()))))
    assert init == same and hash(init) == hash(same) and len({init, same}) == 1
    assert pickle.loads(pickle.dumps(init)) == init
    assert init.describe() == "kaiming_normal(mode=fan_in, nonlinearity=relu)" == str(init)
    assert init.kwargs == {"mode": "fan_in", "nonlinearity": "relu"}
    with pytest.raises(TypeError):
        init.kwargs["mode"] = "fan_out"
    with pytest.raises(AttributeError):
        init.name = "zeros"  # type: ignore[misc]
    blocks = resolve_initializer({"chunks": ["zeros", {"init": "orthogonal", "chunks": 2}]})
    assert pickle.loads(pickle.dumps(blocks)) == blocks and hash(blocks) == hash(blocks)
    assert blocks.describe() == "chunks[zeros, orthogonal×2 chunks]"
    assert resolve_initializer(init) is init
    assert isinstance(init, Initializer)
    assert resolve_initializer({"init": "normal", "std": "1e-2"}).kwargs["std"] == 0.01


RANDOM_SPECS = [
    "uniform", "normal", "trunc_normal", "xavier_uniform", "xavier_normal", "kaiming_uniform",
    "kaiming_normal", "orthogonal", {"init": "sparse", "sparsity": 0.2}, "lecun_normal",
    {"init": "variance_scaling", "distribution": "truncated_normal"},
    {"init": "variance_scaling", "distribution": "uniform"}, {"init": "orthogonal", "chunks": 2},
]


@pytest.mark.parametrize("spec", RANDOM_SPECS, ids=str)
def test_generator_reproducibility(spec):
    torch.manual_seed(0)
    a = _filled(spec, (16, 12), seed=11)
    torch.manual_seed(99)
    b = _filled(spec, (16, 12), seed=11)
    c = _filled(spec, (16, 12), seed=12)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", ["kaiming_normal", "kaiming_uniform", "xavier_normal",
                                  "xavier_uniform", "normal", "uniform", "trunc_normal"])
def test_same_draws_as_torch_nn_init(name):
    ours = _filled(name, (30, 20), seed=4)
    reference = getattr(torch.nn.init, name + "_")(torch.empty(30, 20),
                                                   generator=torch.Generator().manual_seed(4))
    assert torch.equal(ours, reference)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("spec", [*RANDOM_SPECS, "eye", "zeros", "prior_bias",
                                  {"init": "constant", "val": 0.5}])
def test_half_precision_in_place(spec, dtype):
    init = resolve_initializer(spec)
    parameter = torch.nn.Parameter(torch.full((64, 32), float("nan"), dtype=dtype))
    identity = parameter.data_ptr()
    init.fill_(parameter, torch.Generator().manual_seed(0))
    assert parameter.dtype == dtype and parameter.data_ptr() == identity
    assert torch.isfinite(parameter).all() and parameter.requires_grad
    expected = init.expected_std(parameter.shape)
    assert parameter.float().std().item() == pytest.approx(expected, rel=0.1, abs=1e-3)


def test_half_precision_orthogonal_is_orthogonal():
    w = _filled("orthogonal", (32, 32), dtype=torch.float16).float()
    torch.testing.assert_close(w.T @ w, torch.eye(32), atol=5e-3, rtol=0)


def test_meta_tensors_are_left_alone():
    w = torch.empty(8, 4, device="meta")
    for spec in RANDOM_SPECS:
        resolve_initializer(spec).fill_(w, None)
    assert w.is_meta


# --------------------------------------------------------------------------------------------
# property: random specs only ever raise PolicyError
# --------------------------------------------------------------------------------------------

_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10),
    st.floats(allow_nan=True, allow_infinity=True, min_value=None, max_value=None, width=32),
    st.floats(-3, 3), st.sampled_from(["fan_in", "fan_out", "fan_avg", "relu", "tanh", "abc",
                                       "uniform", "normal", "truncated_normal", "1e-2", ""]),
    st.lists(st.sampled_from(["zeros", "ones", "keep", "orthogonal", "eye"]), max_size=4),
)
_KEYS = st.sampled_from(["a", "b", "mean", "std", "val", "gain", "groups", "mode",
                         "nonlinearity", "sparsity", "scale", "distribution", "prob", "chunks",
                         "sdt", "init"])
_NAMES = st.sampled_from([*known_initializers(), "kaiming_normall", "foo", "os:path",
                          "tests._custom_inits:scaled_normal", "x:y:z", ":"])
_SPECS = st.one_of(
    _NAMES,
    st.builds(lambda name, extra: {"init": name, **extra}, _NAMES,
              st.dictionaries(_KEYS, _VALUES, max_size=4)),
    st.dictionaries(_KEYS, _VALUES, max_size=3),
    _VALUES,
)
_SHAPES = st.lists(st.integers(0, 6), min_size=0, max_size=5).map(tuple)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=_SPECS, shape=_SHAPES)
def test_random_specs_only_raise_policy_error(spec, shape):
    try:
        init = resolve_initializer(spec, where="rules[0].weight")
    except PolicyError as err:
        assert err.where is not None and err.where.startswith("rules[0].weight")
        return
    assert isinstance(init, Initializer) and isinstance(init.describe(), str)
    hash(init)
    tensor = torch.zeros(shape)
    try:
        init.check_shape(shape, where="w")
    except PolicyError:
        before = tensor.clone()
        with pytest.raises(PolicyError):
            init.fill_(tensor, None)
        assert torch.equal(tensor, before)
        return
    std = init.expected_std(shape)
    assert std is None or (std >= 0 and not math.isnan(std))
    if init.kind == "reset":
        return
    if ":" in init.describe():  # a custom function may fail on odd shapes: as a PolicyError
        try:
            init.fill_(tensor, torch.Generator().manual_seed(0))
        except PolicyError as err:
            assert "failed on a tensor of shape" in str(err)
        return
    init.fill_(tensor, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("spec", ["eye", "orthogonal", {"init": "sparse", "sparsity": 0.5},
                                  {"chunks": ["eye", "zeros"]}, {"init": "orthogonal",
                                                                 "chunks": 2}])
def test_non_contiguous_tensors_are_filled_in_place(spec):
    storage = torch.zeros(6, 4)
    view = storage.T  # (4, 6), non-contiguous
    resolve_initializer(spec).fill_(view, torch.Generator().manual_seed(0))
    assert storage.abs().sum() > 0 and view.data_ptr() == storage.data_ptr()
    if spec == "orthogonal":
        torch.testing.assert_close(view @ view.T, torch.eye(4), atol=1e-5, rtol=0)


def test_trunc_normal_one_sided_bound_std():
    init = resolve_initializer({"init": "trunc_normal", "a": 0.0, "b": float("inf")})
    half_normal = stats.halfnorm()
    assert init.expected_std((3,)) == pytest.approx(half_normal.std(), rel=1e-9)
    assert init.expected_mean((3,)) == pytest.approx(half_normal.mean(), rel=1e-9)
    values = _sample(_filled({"init": "trunc_normal", "a": 0.0, "b": "inf"}, (200, 100)))
    assert stats.kstest(values, half_normal.cdf).pvalue > 1e-3


def test_is_random_tells_deterministic_fills_apart():
    assert not any(resolve_initializer(spec).is_random for spec in
                   ["zeros", "ones", "eye", "dirac", "prior_bias", "keep", "default",
                    {"init": "constant", "val": 1}, {"chunks": ["zeros", "ones"]}])
    assert all(resolve_initializer(spec).is_random for spec in
               [*RANDOM_SPECS, {"chunks": ["zeros", "normal"]},
                "tests._custom_inits:returns_new"])


@pytest.mark.parametrize("prob", [1e-310, 5e-324, 1e-300])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_prior_bias_of_a_tiny_prob_is_its_finite_logit(prob, dtype):
    logit = math.log(prob) - math.log1p(-prob)  # -713.8 for 1e-310, not -inf
    bias = _filled({"init": "prior_bias", "prob": prob}, (4,), dtype=dtype)
    assert torch.isfinite(bias).all()
    assert bias.double().tolist() == pytest.approx([logit] * 4, rel=1e-3)
    mean = resolve_initializer({"init": "prior_bias", "prob": prob}).expected_mean((4,))
    assert mean == pytest.approx(logit, rel=1e-12)


# --------------------------------------------------------------------------------------------
# trunc_normal's promised std at other scales than 1
# --------------------------------------------------------------------------------------------

TRUNC_CASES = [
    ("std 0.02, torch's default bounds", {"std": 0.02}, 0.0, 0.02, -2.0, 2.0),
    ("std 0.02, cut at 2 std", {"std": 0.02, "a": -0.04, "b": 0.04}, 0.0, 0.02, -0.04, 0.04),
    ("std 0.5, mean 0.1, asymmetric", {"mean": 0.1, "std": 0.5, "a": -0.3, "b": 1.2},
     0.1, 0.5, -0.3, 1.2),
    ("std 3, one-sided", {"std": 3.0, "a": 0.0, "b": math.inf}, 0.0, 3.0, 0.0, math.inf),
]


@pytest.mark.parametrize(("kwargs", "mean", "std", "low", "high"),
                         [c[1:] for c in TRUNC_CASES], ids=[c[0] for c in TRUNC_CASES])
def test_trunc_normal_promises_scipys_moments(kwargs, mean, std, low, high):
    law = stats.truncnorm((low - mean) / std, (high - mean) / std, loc=mean, scale=std)
    init = resolve_initializer({"init": "trunc_normal", **kwargs})
    assert init.expected_std((300, 200)) == pytest.approx(law.std(), rel=1e-9)
    assert init.expected_mean((300, 200)) == pytest.approx(law.mean(), rel=1e-9, abs=1e-12)
    filled = _filled({"init": "trunc_normal", **kwargs}, (300, 200))
    assert filled.std().item() == pytest.approx(law.std(), rel=0.02)
