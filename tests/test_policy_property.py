"""Property: over random policy dicts the only exception is PolicyError, and a failed apply
changes no parameter or buffer."""

from __future__ import annotations

import warnings

import torch
from hypothesis import HealthCheck, given, settings
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
