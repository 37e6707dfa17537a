"""Issue 25, items 8, 10 and 11: policies that would write non-finite values, empty policy
files, the ``lstm`` preset's embedding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_init import PolicyError
from lightning_init.policy import InitPolicy


def _policy(spec):
    return InitPolicy.from_dict({"rules": [{"match": {"type": "Linear"}, "weight": spec}]})


@pytest.mark.parametrize("spec", [
    {"init": "normal", "std": 1e300},
    {"init": "xavier_normal", "gain": 1e300},
    {"init": "kaiming_uniform", "a": 1e-300},  # gain sqrt(2 / (1 + a^2)): finite; kept below
    {"init": "uniform", "a": -1e39, "b": 1e39},
    {"init": "trunc_normal", "std": 1e300, "a": -1e300, "b": 1e300},
    {"init": "orthogonal", "gain": 1e39},
    {"init": "variance_scaling", "scale": 1e300},
])
def test_item8_a_rule_that_overflows_float32_is_refused_before_writing(spec):
    net = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    policy = _policy(spec)
    if spec["init"] == "kaiming_uniform":  # a finite gain: nothing to refuse
        policy.apply(net)
        assert all(torch.isfinite(p).all() for p in net.parameters())
        return
    with pytest.raises(PolicyError) as caught:
        policy.apply(net)
    message = str(caught.value)
    assert "rules[0]" in message and "'0.weight'" in message, message
    assert "torch.float32" in message and "3.40282e+38" in message, message
    for name, tensor in before.items():
        assert torch.equal(net.state_dict()[name], tensor), name


def test_item8_half_precision_has_its_own_range():
    net = nn.Linear(8, 4).half()
    with pytest.raises(PolicyError, match=r"torch.float16.*65504"):
        _policy({"init": "normal", "std": 1e5}).apply(net)
    _policy({"init": "normal", "std": 1e5}).apply(nn.Linear(8, 4))  # float32 holds it


@pytest.mark.parametrize("text", ["", "\n\n", "# an init policy, to be written\n# later\n",
                                  "name: later\n", "rules:\n", "rules: []\n",
                                  "name: x\nrules: []\ndefault: keep\n"])
def test_item10_an_empty_policy_file_is_an_error(tmp_path, text):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=r"policy\.yaml: the policy has no rules: the file"):
        InitPolicy.load(path)


@pytest.mark.parametrize("mapping", [{}, {"rules": []}, {"name": "x", "default": "keep"}])
def test_an_empty_policy_mapping_is_an_error(mapping):
    with pytest.raises(PolicyError, match=r"^the policy has no rules: the mapping"):
        InitPolicy.from_dict(mapping)
    assert InitPolicy.from_dict({**mapping, "default": "reset"}).default == "reset"


def test_an_auto_policy_of_a_model_without_weight_layers_is_built():
    import pickle

    policy = InitPolicy.auto(nn.Sequential(nn.ReLU()), torch.randn(2, 3))
    assert policy.rules == () and pickle.loads(pickle.dumps(policy)).rules == ()


def test_item10_default_reset_alone_is_said_once(tmp_path, caplog):
    path = tmp_path / "reset.yaml"
    path.write_text("# reset everything\ndefault: reset\n")
    with caplog.at_level("INFO", logger="lightning_init"):
        policy = InitPolicy.load(path)
    said = [r.getMessage() for r in caplog.records if "has no rules" in r.getMessage()]
    assert len(said) == 1 and "reset.yaml" in said[0] and "default: reset" in said[0]
    net = nn.Linear(3, 3)
    assert policy.apply(net, seed=0).records


def test_a_shipped_preset_with_default_reset_alone_says_nothing(caplog):
    with caplog.at_level("INFO", logger="lightning_init"):
        policy = InitPolicy.from_preset("pytorch_default")
    assert policy.rules == () and policy.default == "reset"
    assert not [r for r in caplog.records if "has no rules" in r.getMessage()]


class _LSTMClassifier(nn.Module):
    """The usual LSTM classifier: Embedding, LSTM, head."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(500, 32, padding_idx=0)
        self.lstm = nn.LSTM(32, 64, batch_first=True)
        self.head = nn.Linear(64, 5)


def test_item11_the_lstm_preset_covers_the_embedding_that_feeds_the_lstm(caplog):
    import warnings

    model = _LSTMClassifier()
    with warnings.catch_warnings(), caplog.at_level("INFO", logger="lightning_init"):
        warnings.simplefilter("error")
        report = InitPolicy.from_preset("lstm").apply(model, seed=0)
    assert {r.qualified_name for r in report.records} == {
        name for name, _ in model.named_parameters()}
    assert not [r for r in caplog.records if "no rule covers" in r.getMessage()]
    weight = model.emb.weight.detach()
    assert weight.abs().max().item() <= 0.1 and weight[0].eq(0).all()  # padding row kept 0
    assert weight[1:].std().item() == pytest.approx(0.2 / 12 ** 0.5, rel=0.05)


def test_item11_a_coverage_notice_is_a_lightning_init_log_line_without_a_path(caplog):
    import warnings

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(8, 8)
            self.conv = nn.Conv1d(8, 8, 3)

    with warnings.catch_warnings(record=True) as caught, \
            caplog.at_level("INFO", logger="lightning_init"):
        warnings.simplefilter("always")
        InitPolicy.from_preset("lstm").apply(Net(), seed=0)
    said = [r for r in caplog.records if "no rule covers" in r.getMessage()]
    assert len(said) == 1 and said[0].name.startswith("lightning_init")
    assert said[0].getMessage().startswith("preset 'lstm' leaves 1 weight that no rule covers:"
                                           " conv.weight (Conv1d)")
    assert not [w for w in caught if "no rule covers" in str(w.message)]
