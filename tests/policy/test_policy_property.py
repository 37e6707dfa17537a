"""Property: over random policy dicts the only exception is PolicyError, and a failed apply
changes no parameter or buffer."""

from __future__ import annotations

import fnmatch
import warnings

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

from lightning_init import PolicyError
from lightning_init.policy import InitPolicy


def fail_on_vectors(tensor, generator=None):
    """A custom initializer that fails on 1-d tensors, after succeeding on others."""
    if tensor.dim() == 1:
        raise RuntimeError("no vectors")
    tensor.fill_(0.5)


WORDS = st.sampled_from(["Linear", "Linaer", "Conv2d", "BatchNorm2d", "Embedding", "Module",
                         "torch.nn.Linear", "nope.Mod", "", 3, None])
SPECS = st.one_of(
    st.sampled_from(["zeros", "ones", "ones_", "orthogonal", "eye", "kaiming_normall", "keep",
                     "default", f"{__name__}:fail_on_vectors", 7, None]),
    st.fixed_dictionaries({"init": st.sampled_from(["normal", "uniform", "kaiming_normal"])},
                          optional={"std": st.floats(-1, 1), "sdt": st.just(1.0),
                                    "mode": st.sampled_from(["fan_in", "fan_inn"])}),
)
PARAM_KEYS = st.sampled_from(["weight", "bias", "*", "weight*", "running_mean", "wieght"])
MATCH = st.dictionaries(st.sampled_from(["type", "name", "typ"]),
                        st.one_of(WORDS, st.lists(WORDS, max_size=2),
                                  st.sampled_from(["0", "1*", "*"])), max_size=2)
RULE = st.one_of(
    st.builds(lambda m, p: {"match": m, **p}, MATCH,
              st.dictionaries(PARAM_KEYS, SPECS, max_size=3)),
    st.sampled_from([None, "rule", {"mtach": {}}]),
)
POLICY = st.dictionaries(
    st.sampled_from(["rules", "seed", "default", "skip", "strict", "name", "rulez"]),
    st.one_of(st.lists(RULE, max_size=4), st.sampled_from([0, 1, "reset", "keep", True,
                                                           ["1*"], "x", None])),
    max_size=5,
)


def _model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 3),
                        nn.Embedding(5, 3, padding_idx=1))
    net[1].running_mean.add_(1.0)
    return net


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(POLICY, st.booleans())
def test_random_policies_raise_only_policy_error_and_fail_atomically(mapping, use_apply):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            policy = InitPolicy.from_dict(mapping)
            if use_apply:
                policy.apply(model)
            else:
                policy.explain(model)
        except PolicyError:
            after = model.state_dict()
            for key, value in before.items():
                assert torch.equal(value, after[key]), key
            return
    if not use_apply:
        after = model.state_dict()
        assert all(torch.equal(value, after[key]) for key, value in before.items())


# ------------------------------------------------- injected failures over random models and plans


class Block(nn.Module):
    """A parent whose ``reset_parameters()`` reaches its children."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.full((3,), 0.5))
        self.inner = inner

    def reset_parameters(self) -> None:
        nn.init.ones_(self.gain)
        for module in self.inner.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()


def _layer(kind: str, wrap: str) -> nn.Module:
    from torch.nn.utils import parametrizations, weight_norm

    if kind == "linear":
        layer: nn.Module = nn.Linear(3, 3)
        if wrap == "orthogonal":
            layer = parametrizations.orthogonal(layer)
        elif wrap == "weight_norm":
            layer = parametrizations.weight_norm(layer)
        elif wrap == "old_weight_norm":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                layer = weight_norm(layer)
        elif wrap == "float8":  # built-in random initializers fail on it
            layer.weight = nn.Parameter(layer.weight.detach().to(torch.float8_e4m3fn),
                                        requires_grad=False)
        return layer
    return {"conv": lambda: nn.Conv2d(2, 3, 3), "layernorm": lambda: nn.LayerNorm(3),
            "lstm": lambda: nn.LSTM(3, 2), "embedding": lambda: nn.Embedding(5, 3, padding_idx=0),
            "batchnorm": lambda: nn.BatchNorm2d(3)}[kind]()


LAYERS = st.tuples(st.sampled_from(["linear", "conv", "layernorm", "lstm", "embedding",
                                    "batchnorm"]),
                   st.sampled_from(["", "", "orthogonal", "weight_norm", "old_weight_norm",
                                    "float8"]),
                   st.booleans())  # inside a Block
MODELS = st.fixed_dictionaries({"layers": st.lists(LAYERS, min_size=1, max_size=5),
                                "tie": st.booleans(), "meta": st.sampled_from([None, 0, 1])})
INITS = st.sampled_from(["zeros", "ones", "keep", "default", "orthogonal", "eye",
                         {"init": "normal", "std": 0.1}, {"init": "uniform", "a": -1, "b": 1},
                         "kaiming_normal", "xavier_uniform", "trunc_normal"])
TYPES = st.sampled_from(["Linear", "Conv2d", "LayerNorm", "LSTM", "Embedding", "BatchNorm2d",
                         "Block"])
PLANS = st.fixed_dictionaries({
    "rules": st.lists(st.builds(lambda t, p: {"match": {"type": t}, **p}, TYPES, st.dictionaries(
        st.sampled_from(["weight", "bias", "*", "weight_*"]), INITS, min_size=1, max_size=2)),
        min_size=1, max_size=4),
    "default": st.sampled_from(["keep", "reset"]),
    "skip": st.lists(st.sampled_from(["0", "1", "2.*", "*.inner", "3"]), max_size=2),
    "seed": st.sampled_from([None, 0]),
})
FAULTS = st.tuples(st.integers(0, 6), st.sampled_from(["before", "after"]),
                   st.sampled_from([RuntimeError, KeyboardInterrupt, SystemExit, PolicyError]))


def _random_model(spec: dict) -> nn.Module:
    torch.manual_seed(0)
    layers = []
    for index, (kind, wrap, in_block) in enumerate(spec["layers"]):
        device = "meta" if spec["meta"] == index else "cpu"
        with torch.device(device):
            layer = _layer(kind, wrap if kind == "linear" and device == "cpu" else "")
            layers.append(Block(layer) if in_block else layer)
    model = nn.Sequential(*layers)
    if spec["tie"]:
        model.append(nn.Linear(3, 5, bias=False))
        model.append(nn.Embedding(5, 3))
        model[-1].weight = model[-2].weight
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if not tensor.is_meta and tensor.is_floating_point() and tensor.dtype.itemsize > 1:
                tensor.add_(0.25)  # values no initializer draws
    return model


class _Fault:
    """Raise ``error`` at the ``at``-th event (a fill, a write, a reset), before or after the
    real work."""

    def __init__(self, at: int, when: str, error: type[BaseException]) -> None:
        self.at, self.when, self.error = at, when, error
        self.seen = 0
        self.fired = False

    def wrap(self, function):
        def wrapper(*args, **kwargs):
            hit = self.seen == self.at
            self.seen += 1
            if hit and self.when == "before":
                self.fired = True
                raise self.error("injected")
            result = function(*args, **kwargs)
            if hit:
                self.fired = True
                raise self.error("injected")
            return result
        return wrapper


def _state(model: nn.Module) -> list[tuple[str, str, torch.Tensor | None]]:
    named = [*model.named_parameters(), *model.named_buffers()]
    return [(name, t.device.type, None if t.is_meta else t.detach().clone()) for name, t in named]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MODELS, PLANS, FAULTS)
def test_a_failure_anywhere_leaves_every_tensor_bit_identical(model_spec, plan, fault_spec):
    from unittest import mock

    from lightning_init import weights_fingerprint
    from lightning_init.policy import apply as apply_module
    from lightning_init.policy.initializers import Initializer

    model = _random_model(model_spec)
    fault = _Fault(*fault_spec)
    for module in model.modules():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters = fault.wrap(module.reset_parameters)
    before, fingerprint = _state(model), weights_fingerprint(model)
    fill, write = Initializer.fill_, apply_module.write
    with warnings.catch_warnings(), \
            mock.patch.object(Initializer, "fill_", lambda self, *a: fault.wrap(fill)(
                self, *a)), \
            mock.patch.object(apply_module, "write", fault.wrap(write)):
        warnings.simplefilter("ignore")
        try:
            InitPolicy.from_dict(plan).apply(model)
        except (Exception, KeyboardInterrupt, SystemExit) as err:
            assert isinstance(err, PolicyError | KeyboardInterrupt | SystemExit), repr(err)
            event("injected failure" if fault.fired else "real failure")
            assert "could not be restored" not in str(err)
            assert weights_fingerprint(model) == fingerprint
            for (name, device, value), (_, now_device, now) in zip(before, _state(model),
                                                                  strict=True):
                assert now_device == device, name
                assert value is None or torch.equal(value, now), name
            return
    assert not fault.fired
    event("applied")
    skipped = [name for name, _, _ in before
               if any(fnmatch.fnmatchcase(name.rpartition(".")[0], glob) or
                      fnmatch.fnmatchcase(name.rpartition(".")[0], glob + ".*")
                      for glob in plan["skip"])]
    after = {name: value for name, _, value in _state(model)}
    for name, _, value in before:  # skip holds, whatever resets ran
        if name in skipped and value is not None:
            assert torch.equal(after[name], value), name
