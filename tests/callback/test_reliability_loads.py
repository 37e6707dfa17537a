"""Issue 25, item 1: weights loaded into a submodule before the fit are never re-initialized."""

from __future__ import annotations

import logging
import os

import lightning as L
import pytest
import torch
from _models import quiet_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_init import InitCallback

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONSTANT = {"rules": [{"match": {"type": ["Linear", "Embedding"]}, "weight": "ones",
                       "bias": {"init": "constant", "val": 0.5}},
                      {"match": {"type": "LayerNorm"}, "optional": True, "weight": "ones",
                       "bias": "zeros"}]}


class _Snapshot(L.Callback):
    """The weights as training starts (after the InitCallback's setup and on_fit_start)."""

    def on_train_start(self, trainer, pl_module):
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


class _FineTuner(L.LightningModule):
    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.net = nn.Sequential()
        self.net.add_module("backbone", backbone)
        self.net.add_module("head", head)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _loader():
    x = torch.randn(16, 8)
    return DataLoader(TensorDataset(x, torch.randint(0, 3, (16,))), batch_size=8)


def _fit(tmp_path, model, **callback_args):
    snapshot = _Snapshot()
    callback = InitCallback(CONSTANT, check=False, diagnostics=False, **callback_args)
    quiet_trainer(tmp_path, max_steps=1, callbacks=[callback, snapshot]).fit(model, _loader())
    return snapshot.state


def test_item1_submodule_load_state_dict_is_kept_and_the_rest_initialized(tmp_path, caplog):
    pretrained = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
    model = _FineTuner(nn.Sequential(nn.Linear(8, 16), nn.ReLU()), nn.Linear(16, 3))
    model.net.backbone.load_state_dict(pretrained.state_dict())  # the fine-tuning pattern
    with caplog.at_level(logging.INFO, logger="lightning_init"):
        state = _fit(tmp_path, model)
    assert torch.equal(state["net.backbone.0.weight"], pretrained[0].weight)
    assert torch.equal(state["net.backbone.0.bias"], pretrained[0].bias)
    assert state["net.head.weight"].eq(1).all() and state["net.head.bias"].eq(0.5).all()
    said = [r.getMessage() for r in caplog.records if "loaded before this fit" in r.getMessage()]
    assert len(said) == 1 and "net.backbone (load_state_dict)" in said[0], said
    assert "overwrite_loaded=True" in said[0]


def test_item1_submodule_load_with_overwrite_loaded_is_initialized(tmp_path):
    model = _FineTuner(nn.Sequential(nn.Linear(8, 16), nn.ReLU()), nn.Linear(16, 3))
    model.net.backbone.load_state_dict(nn.Sequential(nn.Linear(8, 16)).state_dict())
    state = _fit(tmp_path, model, overwrite_loaded=True)
    assert state["net.backbone.0.weight"].eq(1).all()


def test_item1_a_load_of_the_whole_model_through_its_child_keeps_everything(tmp_path):
    model = _FineTuner(nn.Linear(8, 16), nn.Linear(16, 3))
    source = nn.Sequential()
    source.add_module("backbone", nn.Linear(8, 16))
    source.add_module("head", nn.Linear(16, 3))
    model.net.load_state_dict(source.state_dict())
    with pytest.warns(UserWarning, match=r"were loaded .* is NOT applied"):
        state = _fit(tmp_path, model)
    assert torch.equal(state["net.head.weight"], source.head.weight)


def test_item1_from_pretrained_inside_init_is_kept(tmp_path):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100)
    transformers.BertModel(config).save_pretrained(tmp_path / "body")
    body = transformers.BertModel.from_pretrained(tmp_path / "body").state_dict()

    class Classifier(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = transformers.BertForSequenceClassification.from_pretrained(
                tmp_path / "body", num_labels=3)

        def training_step(self, batch, batch_idx):
            ids, labels = batch
            return self.model(input_ids=ids, labels=labels).loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    model = Classifier()
    data = TensorDataset(torch.randint(0, 100, (8, 6)), torch.randint(0, 3, (8,)))
    snapshot = _Snapshot()
    callback = InitCallback(CONSTANT, check=False, diagnostics=False)
    quiet_trainer(tmp_path, max_steps=1, callbacks=[callback, snapshot]).fit(
        model, DataLoader(data, batch_size=4))
    for name, tensor in body.items():
        assert torch.equal(snapshot.state[f"model.bert.{name}"], tensor), name
    assert snapshot.state["model.classifier.weight"].eq(1).all()


# Review of issue 25 (items 2 and 5): what a load filled, tensor by tensor; plain torch modules
# carry no reference to the library.


def test_a_partial_load_leaves_the_new_head_to_the_policy(tmp_path, caplog):
    pretrained = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
    model = _FineTuner(nn.Sequential(nn.Linear(8, 16), nn.ReLU()), nn.Linear(16, 3))
    loaded = {f"net.backbone.{k}": v for k, v in pretrained.state_dict().items()}
    result = model.load_state_dict(loaded, strict=False)  # pretrained backbone, new head
    assert result.missing_keys == ["net.head.weight", "net.head.bias"]
    with caplog.at_level(logging.INFO, logger="lightning_init"):
        state = _fit(tmp_path, model)
    assert torch.equal(state["net.backbone.0.weight"], pretrained[0].weight)
    assert state["net.head.weight"].eq(1).all() and state["net.head.bias"].eq(0.5).all()
    said = [r.getMessage() for r in caplog.records if "loaded before this fit" in r.getMessage()]
    assert len(said) == 1 and "net.backbone (load_state_dict)" in said[0], said
    assert "net.head" not in said[0]


def test_a_load_that_raised_marks_nothing(tmp_path):
    model = _FineTuner(nn.Linear(8, 16), nn.Linear(16, 3))
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.net.head.load_state_dict({"weight": torch.zeros(3, 9), "bias": torch.zeros(3)})
    with pytest.raises(RuntimeError, match="Missing key"):
        model.net.head.load_state_dict({"weight": torch.zeros(3, 16)})
    state = _fit(tmp_path, model)
    assert state["net.head.weight"].eq(1).all() and state["net.head.bias"].eq(0.5).all()


def test_a_load_into_a_module_of_buffers_only_is_seen():
    from lightning_init.callback._provenance import loaded_tensors

    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("scale", torch.ones(3))

    model = _FineTuner(nn.Linear(8, 16), nn.Linear(16, 3))
    model.norm = Scale()
    model.norm.load_state_dict({"scale": torch.full((3,), 2.0)})
    assert loaded_tensors(model) == {"norm.scale": "load_state_dict"}


def test_a_plain_torch_module_pickles_without_the_library():
    import pickle

    blob = pickle.dumps(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))  # built after the import
    assert b"lightning_init" not in blob
    model = _FineTuner(nn.Linear(8, 16), nn.Linear(16, 3))
    model.net.add_module("extra", nn.Linear(3, 3))  # registered later under a watched module
    model.net.extra.load_state_dict(nn.Linear(3, 3).state_dict())
    from lightning_init.callback._provenance import loaded_tensors
    assert loaded_tensors(model) == {"net.extra.weight": "load_state_dict",
                                     "net.extra.bias": "load_state_dict"}


def _work(parts: int) -> int:
    """The Python and builtin calls ``loaded_parts`` makes on ``parts`` loaded blocks."""
    import sys

    from lightning_init.callback._provenance import loaded_parts, loaded_tensors

    model = _FineTuner(nn.Linear(8, 16), nn.Linear(16, 3))
    model.blocks = nn.ModuleList(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
                                 for _ in range(parts))
    for block in list(model.blocks)[:-1]:  # all but the last: each block is a part
        block.load_state_dict(block.state_dict())
    loaded = loaded_tensors(model)
    calls = [0]

    def count(_frame, event, _arg):
        calls[0] += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        found = loaded_parts(model, loaded)
    finally:
        sys.setprofile(None)
    assert found == [f"blocks.{i} (load_state_dict)" for i in range(parts - 1)], found[:3]
    return calls[0]


def test_loaded_parts_is_one_walk():
    # linear in the modules: three times the parts, three times the work (it was quadratic)
    assert _work(300) < 3.5 * _work(100)
