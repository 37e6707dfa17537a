"""The policy's promises under faults: a failed apply changes nothing (whatever failed, wherever,
``KeyboardInterrupt`` included), ``skip`` and ``keep`` hold against a parent's reset, the
report tells what was done."""

from __future__ import annotations

import warnings

import pytest
import torch
from _models import Net, quiet_trainer
from torch import nn

from lightning_init import PolicyError, weights_fingerprint
from lightning_init.callback import InitCallback
from lightning_init.policy import InitPolicy
from lightning_init.policy._snapshot import same_bits

NORMAL = {"init": "normal", "std": 0.1}


def bits(model: nn.Module) -> dict[str, tuple[str, torch.Tensor | None]]:
    """Every parameter and buffer: device type and a copy (sparse ones included)."""
    named = [*model.named_parameters(), *model.named_buffers()]
    return {name: (t.device.type, None if t.is_meta else t.detach().clone()) for name, t in named}


def assert_unchanged(before: dict[str, tuple[str, torch.Tensor | None]], model: nn.Module) -> None:
    after = bits(model)
    assert after.keys() == before.keys()
    for name, (device, value) in before.items():
        assert after[name][0] == device, name
        if value is not None:
            assert same_bits(value, after[name][1]), name


def policy(mapping: dict) -> InitPolicy:
    return InitPolicy.from_dict(mapping)


# ------------------------------------------------------------------ built-in initializers fail


def _float8() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = nn.Parameter(model[1].weight.detach().to(torch.float8_e4m3fn),
                                   requires_grad=False)
    return model


def _complex() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = nn.Parameter(torch.randn(4, 4, dtype=torch.complex64))
    return model


def _expanded() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = nn.Parameter(torch.randn(1, 4).expand(4, 4))
    return model


def _sparse() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = nn.Parameter(torch.randn(4, 4).to_sparse())
    return model


def _inference() -> nn.Module:
    first = nn.Linear(4, 4)
    with torch.inference_mode():
        second = nn.Linear(4, 4)
    return nn.Sequential(first, second)


@pytest.mark.parametrize("build", [_float8, _complex, _expanded, _sparse, _inference],
                         ids=["float8", "complex", "expanded", "sparse", "inference"])
def test_a_built_in_initializer_failing_on_a_later_parameter_restores_the_earlier_ones(build):
    torch.manual_seed(0)
    model = build()
    before = bits(model)
    rule = {"match": {"type": "Linear"}, "bias": "zeros", "weight": {"init": "trunc_normal",
                                                                     "std": 0.1}}
    with pytest.raises(PolicyError, match=r"'1\.weight'.*every parameter was restored"):
        policy({"rules": [rule]}).apply(model)
    assert_unchanged(before, model)


def test_a_fingerprint_is_identical_after_a_failed_built_in_initializer():
    torch.manual_seed(0)
    model = _float8()
    fingerprint = weights_fingerprint(model)
    with pytest.raises(PolicyError):
        policy({"rules": [{"match": {"type": "Linear"}, "weight": NORMAL}]}).apply(model)
    assert weights_fingerprint(model) == fingerprint


class Block(nn.Module):
    """A parent whose ``reset_parameters()`` resets its children too (as many models do)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.a = nn.Linear(4, 4)
        self.b = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.scale, 2.0)
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()


def _block_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(Block(), nn.Linear(4, 4))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(1.0)  # far from anything a reset draws
        model[0].b[1].running_mean.add_(3.0)
    return model


def test_children_a_parent_reset_reaches_are_restored_when_a_later_rule_fails():
    model = _block_model()
    before = bits(model)
    mapping = {"default": "reset", "skip": ["0.b"], "rules": [
        {"match": {"name": "1"}, "weight": "orthogonal",
         "bias": "tests.policy.test_policy_atomic:boom"}]}
    with pytest.raises(PolicyError, match=r"'1\.bias'.*boom.*every parameter was restored"):
        policy(mapping).apply(model)
    assert_unchanged(before, model)


def boom(tensor, generator=None):
    raise RuntimeError("boom")


def test_a_tensor_that_could_not_be_restored_is_named_instead_of_claimed_restored(monkeypatch):
    from lightning_init.policy import _snapshot

    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    monkeypatch.setattr(_snapshot, "_put_back",
                        lambda tensor, value: tensor is not model[0].weight)
    with pytest.raises(PolicyError) as info:
        policy({"rules": [{"match": {"name": "0"}, "weight": "ones"},
                          {"match": {"name": "1"},
                           "weight": "tests.policy.test_policy_atomic:boom"}]}
               ).apply(model)
    message = str(info.value)
    assert "1 tensor(s) could not be restored" in message and "0.weight" in message
    assert "every parameter was restored" not in message


# ------------------------------------------------------------ KeyboardInterrupt, SystemExit, meta


def interrupt_on_vectors(tensor, generator=None):
    if tensor.dim() == 1:
        raise KeyboardInterrupt
    tensor.fill_(3.0)


def exit_on_vectors(tensor, generator=None):
    if tensor.dim() == 1:
        raise SystemExit(3)
    tensor.fill_(3.0)


@pytest.mark.parametrize(("function", "kind"), [("interrupt_on_vectors", KeyboardInterrupt),
                                                ("exit_on_vectors", SystemExit)])
def test_keyboard_interrupt_and_system_exit_restore_and_propagate_unchanged(function, kind):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    before = bits(model)
    with pytest.raises(kind) as info:
        policy({"rules": [{"match": {"type": "Linear"},
                           "*": f"tests.policy.test_policy_atomic:{function}"}]}).apply(model)
    assert_unchanged(before, model)
    if hasattr(info.value, "__notes__"):
        assert "every parameter was restored" in info.value.__notes__[0]


def test_a_failed_apply_on_a_model_mixing_meta_and_cpu_tensors_leaves_meta_tensors_meta():
    torch.manual_seed(0)
    with torch.device("meta"):
        late = nn.Linear(4, 4)
    model = nn.Sequential(nn.Linear(4, 4), late)
    before = bits(model)
    with pytest.raises(PolicyError, match="every parameter was restored"):
        policy({"default": "reset", "rules": [
            {"match": {"name": "0"}, "bias": "tests.policy.test_policy_atomic:boom"}]}).apply(model)
    assert model[1].weight.is_meta and model[1].bias.is_meta
    assert_unchanged(before, model)


def test_materializing_a_module_replaces_only_its_meta_tensors():
    with torch.device("meta"):
        layer = nn.Linear(4, 4)
    layer.bias = nn.Parameter(torch.arange(4.0))
    policy({"rules": [{"match": {"type": "Linear"}, "weight": "ones"}]}).apply(layer)
    assert layer.bias.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert layer.weight.sum().item() == 16.0


class Scale(nn.Module):
    """A parameter without ``reset_parameters()``."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


class MetaNet(Net):
    def build(self) -> None:
        super().build()
        self.net.append(Scale())


def test_an_uncovered_meta_parameter_shows_the_policy_error_through_a_trainer(tmp_path):
    with torch.device("meta"):
        model = MetaNet()
    callback = InitCallback(policy={"seed": 0, "rules": [{"match": {"type": "Linear"},
                                                          "*": "zeros"}]},
                            check=False, diagnostics=False)
    with pytest.raises(PolicyError, match=r"'net\.3\.gain' is on the meta device.*Scale has no"):
        quiet_trainer(tmp_path, callbacks=[callback]).fit(model)


# --------------------------------------------------------------- skip and keep against reset


@pytest.mark.parametrize("how", ["skip", "keep"])
def test_skip_and_keep_hold_against_a_parent_reset(how):
    model = _block_model()
    protected = {name: value.clone() for name, value in model[0].a.state_dict().items()}
    protected.update({f"b.{k}": v.clone() for k, v in model[0].b.state_dict().items()})
    mapping: dict = {"default": "reset", "seed": 0}
    if how == "skip":
        mapping["skip"] = ["0.a", "0.b"]
    else:
        mapping["rules"] = [{"match": {"name": ["0.a", "0.b.*"]}, "*": "keep"}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = policy(mapping).apply(model)
    now = {**model[0].a.state_dict(), **{f"b.{k}": v for k, v in model[0].b.state_dict().items()}}
    for name, value in protected.items():
        assert torch.equal(now[name], value), name
    assert model[0].scale.tolist() == [2.0] * 4  # the parent's own tensor was reset
    reasons = dict(report.left_alone)
    assert reasons["0.a.weight"].startswith(how) and reasons["0.b.1.bias"].startswith(how)
    assert {r.qualified_name for r in report.records} == {"0.scale", "1.weight", "1.bias"}


# ------------------------------------------------------------------- case 16: policy parts


def to_other_shape(tensor, generator=None):
    tensor.data = torch.zeros(2, 2)


def to_other_dtype(tensor, generator=None):
    tensor.data = torch.zeros(tensor.shape, dtype=torch.float64)


@pytest.mark.parametrize(("function", "words"), [
    ("to_other_shape", r"shape \(4, 4\) float32 on cpu became shape \(2, 2\) float32"),
    ("to_other_dtype", r"shape \(4, 4\) float32 on cpu became shape \(4, 4\) float64")])
def test_an_initializer_replacing_data_is_caught_and_rolled_back(function, words):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4))
    before = bits(model)
    path = f"tests.policy.test_policy_atomic:{function}"
    with pytest.raises(PolicyError, match=rf"'0\.weight'.*{path} replaced the data of "
                                          rf"'0\.weight': {words}"):
        policy({"rules": [{"match": {"type": "Linear"}, "weight": path}]}).apply(model)
    assert_unchanged(before, model)


def test_an_initializer_replacing_the_data_of_a_parametrized_weight_is_caught():
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    model = nn.Sequential(parametrizations.weight_norm(nn.Linear(4, 4)))
    before = bits(model)
    with pytest.raises(PolicyError, match=r"replaced the data of '0\.weight'"):
        policy({"rules": [{"match": {"type": "Linear"},
                           "weight": "tests.policy.test_policy_atomic:to_other_shape"}]}
               ).apply(model)
    assert_unchanged(before, model)


def test_the_measured_std_of_a_large_mean_normal_keeps_its_digits():
    torch.manual_seed(0)
    layer = nn.Linear(256, 256)
    report = policy({"seed": 0, "rules": [{"match": {"type": "Linear"}, "weight": {
        "init": "normal", "mean": 100, "std": 0.01}}]}).apply(layer)
    true_std = layer.weight.double().std(correction=0).item()
    measured = report.records[0].measured_std
    assert abs(measured - true_std) < 1e-4 * true_std
    assert abs(measured - 0.01) < 3e-4


def test_an_orthogonal_parametrization_is_restored_with_its_base_buffer():
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    model = nn.Sequential(parametrizations.orthogonal(nn.Linear(3, 3)))
    with torch.no_grad():
        model[0].parametrizations.weight[0].base.add_(0.25)
    base = model[0].parametrizations.weight[0].base
    before, fingerprint = bits(model), weights_fingerprint(model)
    with pytest.raises(PolicyError, match="every parameter was restored"):
        policy({"rules": [{"match": {"type": "Linear"}, "weight": "zeros",
                           "bias": "tests.policy.test_policy_atomic:boom"}]}).apply(model)
    assert weights_fingerprint(model) == fingerprint
    assert_unchanged(before, model)
    assert model[0].parametrizations.weight[0].base is base


class Reassigns(nn.Module):
    """A parent whose ``reset_parameters()`` gives a child new Parameter objects."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(3))
        self.child = nn.Linear(3, 3)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.gain)
        self.child.weight = nn.Parameter(torch.zeros(3, 3))


def test_a_skipped_child_keeps_its_parameter_objects_when_a_parent_reset_replaces_them():
    model = nn.Sequential(Reassigns())
    weight = model[0].child.weight
    value = weight.detach().clone()
    report = policy({"default": "reset", "skip": ["0.child"]}).apply(model)
    assert model[0].child.weight is weight and torch.equal(weight, value)
    assert model[0].gain.tolist() == [0.0] * 3
    assert ("0.child.weight", "skip") in report.left_alone


class AssignsThroughParametrization(nn.Linear):
    """A reset that assigns its weight, so that the parametrization's ``right_inverse`` runs."""

    def reset_parameters(self) -> None:
        if hasattr(self, "parametrizations"):
            with torch.no_grad():
                self.weight = torch.eye(3).flip(0)
        else:
            super().reset_parameters()


def test_a_reset_through_a_parametrization_keeps_what_it_wrote():
    from torch.nn.utils import parametrizations

    torch.manual_seed(0)
    model = nn.Sequential(parametrizations.orthogonal(AssignsThroughParametrization(3, 3)))
    policy({"default": "reset", "rules": [{"match": {"name": "0"}, "bias": "zeros"}]}).apply(model)
    assert torch.allclose(model[0].weight, torch.eye(3).flip(0), atol=1e-6)
