"""InitCallback in real single-process Trainer runs: when the policy is applied, and when not."""

from __future__ import annotations

import copy
import pickle
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import nn

from lightning_init import weights_fingerprint
from lightning_init.callback import InitCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
from _models import (
    ConfiguredNet,
    DataModule,
    LazyNet,
    Net,
    make_loader,
    make_policy,
)
from _models import quiet_trainer as _trainer


def _callback(policy: Any = None, **kwargs: Any) -> InitCallback:
    return InitCallback(
        policy=policy,
        check=kwargs.pop("check", False),
        diagnostics=kwargs.pop("diagnostics", False),
        **kwargs,
    )


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[key], sb[key]) for key in sa)


def test_lr0_fit_keeps_exactly_the_policy_weights(tmp_path: Path) -> None:
    policy = make_policy()
    model = Net()
    untouched = copy.deepcopy(model)
    callback = _callback(policy)
    _trainer(tmp_path, callbacks=[callback]).fit(model)
    state = callback.state_dict()
    expected = copy.deepcopy(untouched)
    policy.apply(expected, seed=state["seed"])
    assert model.steps == 2
    assert _same_weights(model, expected)
    assert not _same_weights(model, untouched)
    assert state["applied"] and state["policy_name"] == "stand_in"
    assert state["fingerprint"] == weights_fingerprint(model)


def test_the_policy_seed_makes_runs_reproducible(tmp_path: Path) -> None:
    first, second = Net(), Net()  # different default inits
    _trainer(tmp_path, callbacks=[_callback(make_policy(seed=3))]).fit(first)
    _trainer(tmp_path, callbacks=[_callback(make_policy(seed=3))]).fit(second)
    assert _same_weights(first, second)


def test_policy_none_leaves_the_weights_and_records_them(tmp_path: Path) -> None:
    model = Net()
    untouched = copy.deepcopy(model)
    callback = _callback(None)
    _trainer(tmp_path, callbacks=[callback]).fit(model)
    assert _same_weights(model, untouched)
    assert callback.state_dict()["fingerprint"] == weights_fingerprint(untouched)


@pytest.mark.parametrize("model_class", [Net, ConfiguredNet])
def test_resume_keeps_the_checkpoint_weights(tmp_path: Path, model_class: type[Net]) -> None:
    first = model_class(lr=0.5)
    first_callback = _callback(make_policy())
    trainer = _trainer(tmp_path, callbacks=[first_callback])
    trainer.fit(first)
    checkpoint = tmp_path / "run.ckpt"
    trainer.save_checkpoint(checkpoint)
    saved = torch.load(checkpoint, weights_only=False)["state_dict"]

    resumed = model_class(lr=0.0)
    callback = _callback(make_policy())
    _trainer(tmp_path, callbacks=[callback]).fit(resumed, ckpt_path=checkpoint)
    assert resumed.steps == 0  # max_steps already reached: fit restores and stops
    assert all(torch.equal(resumed.state_dict()[key], saved[key]) for key in saved)
    assert callback.state_dict()["fingerprint"] == first_callback.state_dict()["fingerprint"]


def test_resume_from_a_checkpoint_without_callback_state(tmp_path: Path) -> None:
    first = ConfiguredNet(lr=0.5)
    trainer = _trainer(tmp_path)
    trainer.fit(first)
    checkpoint = tmp_path / "plain.ckpt"
    trainer.save_checkpoint(checkpoint)
    resumed = ConfiguredNet()
    callback = _callback(make_policy())
    _trainer(tmp_path, callbacks=[callback]).fit(resumed, ckpt_path=checkpoint)
    assert _same_weights(resumed, first)  # found by trainer.ckpt_path in on_fit_start
    state = callback.state_dict()
    assert state["applied"] and state["fingerprint"] is None and state["seed"] is None


def test_second_fit_continues_with_the_trained_weights(tmp_path: Path) -> None:
    model = Net(lr=0.5)
    callback = _callback(make_policy())
    _trainer(tmp_path, callbacks=[callback]).fit(model)
    trained = copy.deepcopy(model)
    recorded = callback.state_dict()
    model.lr = 0.0
    _trainer(tmp_path, callbacks=[callback]).fit(model)
    assert model.steps == 4
    assert _same_weights(model, trained)
    assert callback.state_dict() == recorded


def test_validate_test_predict_change_nothing(tmp_path: Path) -> None:
    model = Net()
    untouched = copy.deepcopy(model)
    callback = _callback(make_policy())
    trainer = _trainer(tmp_path, callbacks=[callback], limit_val_batches=1.0)
    trainer.validate(model)
    trainer.predict(model, dataloaders=make_loader("tensor"))
    assert _same_weights(model, untouched)
    assert not callback.state_dict()["applied"]


def test_configure_model_modules_are_initialized(tmp_path: Path) -> None:
    policy = make_policy()
    model = ConfiguredNet()
    callback = _callback(policy)
    _trainer(tmp_path, callbacks=[callback]).fit(model)
    expected = ConfiguredNet()
    expected.configure_model()
    policy.apply(expected, seed=callback.state_dict()["seed"])  # same numbers as in place
    assert _same_weights(model, expected)


@pytest.mark.parametrize("batch_kind", ["tensor", "tuple", "dict", "example_input_array"])
def test_lazy_modules_are_materialized_then_initialized(tmp_path: Path, batch_kind: str) -> None:
    policy = make_policy()
    model = LazyNet(batch_kind="tuple" if batch_kind == "example_input_array" else batch_kind)
    if batch_kind == "example_input_array":
        model.example_input_array = torch.zeros(3, 4)
    callback = _callback(policy)
    _trainer(tmp_path, callbacks=[callback]).fit(model)
    expected = Net()
    policy.apply(expected, seed=callback.state_dict()["seed"])
    assert _same_weights(model, expected)  # materialized to Net's shapes, then the policy's


@pytest.mark.filterwarnings("ignore:You defined a `validation_step`")
@pytest.mark.parametrize("source", ["fit_dataloaders", "datamodule"])
def test_lazy_sample_batch_from_fit_loaders_or_a_datamodule(tmp_path: Path, source: str) -> None:
    class NoOwnLoader(LazyNet):
        train_dataloader = None  # the data comes from fit's arguments only

    policy = make_policy()
    model = NoOwnLoader()
    callback = _callback(policy)
    data = (
        {"train_dataloaders": make_loader("dict")}
        if source == "fit_dataloaders"
        else {"datamodule": DataModule()}
    )
    _trainer(tmp_path, callbacks=[callback]).fit(model, **data)
    expected = Net()
    policy.apply(expected, seed=callback.state_dict()["seed"])
    assert _same_weights(model, expected)


def test_meta_device_model_gets_the_policy_as_its_only_init(tmp_path: Path) -> None:
    policy = make_policy()
    with torch.device("meta"):
        model = Net()
    callback = _callback(policy)
    _trainer(tmp_path, callbacks=[callback]).fit(model)
    expected = Net()
    policy.apply(expected, seed=callback.state_dict()["seed"])
    assert _same_weights(model, expected)


def test_empty_init_model_gets_the_policy(tmp_path: Path) -> None:
    policy = make_policy()
    trainer = _trainer(tmp_path, callbacks=[_callback(policy)])
    with trainer.init_module(empty_init=True):
        model = Net()
    trainer.fit(model)
    expected = Net()
    policy.apply(expected, seed=trainer.callbacks[0].state_dict()["seed"])
    assert _same_weights(model, expected)


def test_meta_tensors_the_policy_leaves_alone_raise_a_clear_error(tmp_path: Path) -> None:
    class SkipsBias:
        name, seed = "weights_only", 0

        def apply(self, model: nn.Module, **kwargs: Any) -> Any:
            for module in model.modules():
                if isinstance(module, nn.Linear):
                    module.weight = nn.Parameter(torch.zeros(module.weight.shape))
            return None

    with torch.device("meta"):
        model = Net()
    with pytest.raises(ValueError, match=r"still on the meta device: net\.0\.bias"):
        _trainer(tmp_path, callbacks=[_callback(SkipsBias())]).fit(model)


def test_pickle_and_state_dict_round_trip(tmp_path: Path) -> None:
    callback = _callback(make_policy(), check={"on_fail": "warn"}, diagnostics=True)
    before = pickle.loads(pickle.dumps(callback))  # what a spawn launcher sends
    assert before.state_dict() == callback.state_dict() and repr(before) == repr(callback)
    _trainer(tmp_path, callbacks=[callback]).fit(Net())
    copied = pickle.loads(pickle.dumps(callback))
    assert copied.state_dict() == callback.state_dict()
    assert copied.state_dict()["applied"] and not before.state_dict()["applied"]
    fresh = _callback(make_policy(), diagnostics=True)
    fresh.load_state_dict(callback.state_dict())
    assert fresh.state_dict() == callback.state_dict()
    assert fresh.state_key == callback.state_key == "InitCallback{'policy': 'stand_in'}"


@pytest.mark.parametrize(
    ("arguments", "error", "words"),
    [
        ({"check": "yes"}, TypeError, "check= takes True, False or a mapping of options (or "
                                      "CheckOptions), got 'yes' of type str"),
        ({"diagnostics": 3}, TypeError, "diagnostics= takes True, False or a mapping of options "
                                        "(or DiagnosticsOptions), got 3 of type int"),
        ({"policy": 42}, TypeError, "a YAML path, a preset name, a mapping"),
    ],
)
def test_bad_arguments_are_refused_at_construction(
    arguments: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        InitCallback(**arguments)


def test_options_objects_are_taken_and_shown_by_what_they_change(tmp_path: Path) -> None:
    from lightning_init.check import CheckOptions
    from lightning_init.diagnostics import DiagnosticsOptions

    check = CheckOptions.from_arg({"on_fail": "raise"})
    callback = InitCallback(
        check=check, diagnostics=DiagnosticsOptions(every_n_steps=1, until_step=0)
    )
    assert repr(callback) == (
        "InitCallback(policy=None, check=CheckOptions(on_fail='raise'), "
        "diagnostics=DiagnosticsOptions(every_n_steps=1, until_step=0))"
    )
    _trainer(tmp_path, callbacks=[callback]).fit(Net())
    assert callback.check_report is not None and callback.check_report.ok


def test_lazy_model_without_any_sample_batch_raises(tmp_path: Path) -> None:
    class NoData(LazyNet):
        def train_dataloader(self) -> Any:
            return []

    with pytest.raises(ValueError, match=r"lazy parameters .*example_input_array"):
        _trainer(tmp_path, callbacks=[_callback(make_policy())]).fit(NoData())


_REAL_POLICY = {
    "name": "relu_zero_bias",
    "seed": 11,
    "rules": [
        {
            "match": {"type": "Linear"},
            "weight": {"init": "kaiming_normal", "nonlinearity": "relu"},
            "bias": "zeros",
        }
    ],
}


@pytest.mark.parametrize("spec_kind", ["path", "mapping", "instance"])
@pytest.mark.parametrize("model_class", [Net, ConfiguredNet])
def test_real_policy_from_every_spec_form(
    tmp_path: Path, spec_kind: str, model_class: type[Net]
) -> None:
    import yaml

    from lightning_init import InitPolicy

    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(_REAL_POLICY))
    spec = {"path": str(path), "mapping": _REAL_POLICY, "instance": InitPolicy.load(path)}
    model = model_class()
    callback = _callback(spec[spec_kind])
    _trainer(tmp_path, callbacks=[callback]).fit(model)
    expected = model_class()
    expected.configure_model()
    InitPolicy.from_dict(_REAL_POLICY).apply(expected)  # the policy's own seed: no override
    assert _same_weights(model, expected)  # configure_model: same numbers as a whole apply
    assert all(
        float(m.bias.detach().abs().sum()) == 0.0 for m in model.net if isinstance(m, nn.Linear)
    )
    assert callback.state_dict()["policy_name"] == "relu_zero_bias"


def test_real_policy_is_the_one_init_of_a_meta_model(tmp_path: Path) -> None:
    from lightning_init import InitPolicy

    with torch.device("meta"):
        model = Net()
    _trainer(tmp_path, callbacks=[_callback(_REAL_POLICY)]).fit(model)
    expected = Net()
    InitPolicy.from_dict(_REAL_POLICY).apply(expected)
    assert _same_weights(model, expected)


class _SparseEmbeddingNet(L.LightningModule):
    """``nn.Embedding(sparse=True)``: a sparse COO gradient, which SGD takes."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(100, 8, sparse=True)
        self.head = nn.Linear(8, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (tokens,) = batch
        return self.head(self.embedding(tokens).sum(1)).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_defaults_train_a_model_with_sparse_gradients(tmp_path: Path) -> None:
    # The defaults: policy none, the check on the first batch, the diagnostics.
    callback = InitCallback()
    tokens = torch.randint(0, 100, (16, 6))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens), batch_size=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, callbacks=[callback]).fit(_SparseEmbeddingNet(), loader)
    assert not [w for w in caught if "stopped" in str(w.message)]
    report = callback.check_report
    embedding = next(p for p in report.parameters if p.name == "embedding.weight")
    assert embedding.grad_norm is not None and embedding.grad_norm > 0
