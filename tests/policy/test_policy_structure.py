"""Atomicity, tied parameters, padding_idx, weight_norm/spectral_norm, meta and per-module init."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from lightning_init import PolicyError
from lightning_init.policy import InitPolicy, TiedParameterWarning

CALLS: list[tuple[int, ...]] = []


def boom(tensor, generator=None):
    """A custom initializer that fails on the last layer's weight (shape 2x16)."""
    CALLS.append(tuple(tensor.shape))
    if tuple(tensor.shape) == (2, 16):
        raise RuntimeError("boom")
    tensor.fill_(5.0)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_failure_late_in_the_plan_changes_nothing():
    net = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.Linear(16, 16), nn.Linear(16, 2))
    net(torch.randn(8, 4))  # running stats move away from their reset values
    before = _state(net)
    policy = InitPolicy.from_dict({"default": "reset", "rules": [
        {"match": {"type": "Linear"}, "weight": f"{__name__}:boom", "bias": "ones"}]})
    CALLS.clear()
    with pytest.raises(PolicyError, match=r"'3.weight'.*boom.*restored"):
        policy.apply(net)
    assert (16, 4) in CALLS and (2, 16) in CALLS  # earlier fills did happen, then got undone
    after = net.state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key


def test_shape_error_before_any_write():
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    before = _state(net)
    policy = InitPolicy.from_dict({"rules": [
        {"match": {"type": "Linear"}, "weight": "zeros", "bias": "orthogonal"}]})
    with pytest.raises(PolicyError, match=r"rules\[0\]\.bias.*0\.bias.*orthogonal"):
        policy.apply(net)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight


def test_tied_parameter_initialized_once_and_stays_tied():
    model = Tied()
    policy = InitPolicy.from_dict({"seed": 0, "rules": [
        {"match": {"type": "Embedding"}, "weight": {"init": "normal", "std": 0.02}}]})
    report = policy.apply(model)
    assert model.head.weight is model.embed.weight
    assert [r.qualified_name for r in report.records] == ["embed.weight"]
    assert model.embed.weight.std().item() == pytest.approx(0.02, rel=0.3)
    two = InitPolicy.from_dict({"rules": [
        {"match": {"type": "Embedding"}, "weight": "zeros"},
        {"match": {"type": "Linear"}, "weight": "ones"}]})
    with pytest.warns(TiedParameterWarning, match=r"rules\[0\].*rules\[1\]"):
        report = two.apply(model)
    assert model.head.weight is model.embed.weight and model.embed.weight.abs().sum() == 0
    assert len(report.records) == 1


def test_embedding_padding_row_stays_zero():
    embed = nn.Embedding(6, 3, padding_idx=2)
    InitPolicy.from_dict({"rules": [{"match": {"type": "Embedding"}, "weight": "ones"}]}).apply(
        embed)
    assert embed.weight[2].abs().sum() == 0 and embed.weight[[0, 1, 3, 4, 5]].eq(1).all()


def _weight_rule(value=3.0):
    return InitPolicy.from_dict({"rules": [
        {"match": {"type": "Linear"}, "weight": {"init": "constant", "val": value}}]})


def test_weight_norm_parametrizations_sets_effective_weight():
    layer = parametrizations.weight_norm(nn.Linear(4, 3))
    g, v = layer.parametrizations.weight.original0, layer.parametrizations.weight.original1
    report = _weight_rule().apply(layer)
    assert torch.allclose(layer.weight, torch.full((3, 4), 3.0))
    assert layer.parametrizations.weight.original0 is g and g.flatten().allclose(
        torch.full((3,), 6.0))  # ||(3,3,3,3)|| = 6
    assert v.allclose(torch.full((3, 4), 3.0))
    assert [r.qualified_name for r in report.records] == ["weight"]


def test_weight_norm_old_form_sets_effective_weight():
    with pytest.warns(FutureWarning):
        layer = torch.nn.utils.weight_norm(nn.Linear(4, 3))
    g = layer.weight_g
    _weight_rule().apply(layer)
    assert layer.weight_g is g and g.flatten().allclose(torch.full((3,), 6.0))
    assert layer.weight_v.allclose(torch.full((3, 4), 3.0))
    assert layer(torch.ones(1, 4)).sub(layer.bias).allclose(torch.full((1, 3), 12.0))


def test_spectral_norm_sets_weight_before_normalization():
    layer = parametrizations.spectral_norm(nn.Linear(4, 3))
    _weight_rule().apply(layer)
    assert layer.parametrizations.weight.original.allclose(torch.full((3, 4), 3.0))
    assert parametrize.is_parametrized(layer, "weight")
    old = torch.nn.utils.spectral_norm(nn.Linear(4, 3))
    _weight_rule(2.0).apply(old)
    assert old.weight_orig.allclose(torch.full((3, 4), 2.0))


def test_meta_model_is_materialized_and_fully_initialized():
    with torch.device("meta"):
        net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    report = InitPolicy.from_dict({"seed": 0, "rules": [
        {"match": {"type": "Linear"}, "weight": {"init": "normal", "std": 0.5}}]}).apply(net)
    assert not any(p.is_meta for p in net.parameters())
    assert net[1].weight.eq(1).all() and net[1].bias.eq(0).all()  # reset_parameters fallback
    assert net[0].bias.abs().max() <= 0.5  # Linear.reset_parameters bound 1/sqrt(4)
    rules = {r.qualified_name: r.rule for r in report.records}
    assert rules["0.weight"].startswith("rules[0]") and rules["0.bias"].startswith("meta")


def test_init_module_does_not_recurse():
    with torch.device("meta"):
        net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    policy = InitPolicy.from_dict({"seed": 1, "rules": [
        {"match": {"type": "Linear"}, "weight": "ones", "bias": "zeros"}]})
    report = policy.init_module(net[1], prefix="1")
    assert net[0].weight.is_meta and not net[1].weight.is_meta
    assert net[1].weight.eq(1).all() and net[1].bias.eq(0).all()
    assert [r.qualified_name for r in report.records] == ["1.weight", "1.bias"]
    policy.init_module(net[0], prefix="0")
    assert net[0].weight.eq(1).all()


def test_parameters_are_written_in_place():
    net = nn.Sequential(nn.Linear(4, 4))
    ids = [id(p) for p in net.parameters()]
    InitPolicy.from_dict({"rules": [{"match": {"type": "Linear"}, "weight": "ones"}]}).apply(net)
    assert ids == [id(p) for p in net.parameters()]


def test_dtensor_parameters_get_the_unsharded_values(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs a fresh torch.distributed")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    policy = InitPolicy.from_dict({"seed": 0, "rules": [
        {"match": {"type": "Linear"}, "weight": {"init": "normal", "std": 1.0},
         "bias": "ones"}]})
    reference = nn.Linear(8, 4)
    policy.apply(reference)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        sharded = nn.Linear(8, 4)
        sharded.weight = nn.Parameter(distribute_tensor(sharded.weight.detach(), mesh,
                                                        [Shard(0)]))
        weight = sharded.weight
        report = policy.apply(sharded)
        assert sharded.weight is weight and type(weight).__name__ == "DTensor"
        assert torch.equal(weight.to_local(), reference.weight)
        assert report.records[0].measured_std == pytest.approx(
            reference.weight.std(correction=0).item(), rel=1e-5)
    finally:
        dist.destroy_process_group()


def test_meta_model_with_ties_and_batchnorm_buffers():
    with torch.device("meta"):
        model = Tied()
        norm = nn.BatchNorm1d(4)
    InitPolicy.from_dict({"seed": 0, "rules": [
        {"match": {"type": "Embedding"}, "weight": "ones"}]}).apply(model, device="cpu")
    assert model.head.weight is model.embed.weight and model.embed.weight.eq(1).all()
    InitPolicy.from_dict({"rules": [
        {"match": {"type": "BatchNorm1d"}, "weight": "zeros", "bias": "zeros"}]}).apply(norm)
    assert norm.running_mean.eq(0).all() and norm.running_var.eq(1).all()
    assert norm.weight.eq(0).all() and not norm.running_mean.is_meta


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(3, 3)


def test_init_module_per_module_does_not_warn_about_other_modules_rules():
    import warnings

    policy = InitPolicy.from_dict({"strict": True, "rules": [
        {"match": {"type": "Wrapper"}, "weight": "zeros"},
        {"match": {"type": "Linear", "name": "inner"}, "weight": "ones", "bias": "zeros"},
        {"match": {"type": "Conv2d"}, "weight": "zeros"}]})
    model = Wrapper()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name, module in model.named_modules():
            policy.init_module(module, prefix=name)
    assert model.inner.weight.eq(1).all() and model.inner.bias.eq(0).all()


def test_a_tied_parameter_warning_names_the_two_different_rules():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 3))
    model[1].weight = model[2].weight = model[0].weight
    policy = InitPolicy.from_dict({"rules": [
        {"match": {"name": ["0", "1"]}, "weight": "zeros"},
        {"match": {"type": "Linear"}, "weight": "ones"}]})
    with pytest.warns(TiedParameterWarning) as record:
        policy.apply(model)
    [warning] = record
    assert "by rules[0] (name=0,1) as '0.weight' and by rules[1] (type=Linear) as '2.weight'" in (
        str(warning.message))
    assert model[2].weight.abs().sum() == 0
