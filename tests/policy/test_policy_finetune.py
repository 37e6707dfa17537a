"""Fine-tuning: the policy initializes only what a checkpoint lacks, the rest stays bit-identical.

A small BERT is saved with ``save_pretrained`` and reloaded with a new head (another number of
labels, or a head the saved model never had); the head is initialized by the policy, every
loaded tensor keeps the saved bits.
"""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch
from _models import quiet_trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_init import InitCallback, PolicyError
from lightning_init.policy import InitPolicy, missing_parameters

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

CONFIG = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
          "intermediate_size": 128, "vocab_size": 500}
HEAD_POLICY = {"rules": [{"match": {"type": ["Linear", "Embedding"]},
                          "weight": "ones", "bias": {"init": "constant", "val": 0.5}},
                         {"match": {"type": "LayerNorm"}, "optional": True, "weight": "zeros",
                          "bias": "zeros"}]}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A 3-label classifier and a bare encoder, saved; their state dicts."""
    root = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    classifier = transformers.BertForSequenceClassification(
        transformers.BertConfig(**CONFIG, num_labels=3))
    classifier.save_pretrained(root / "classifier")
    body = transformers.BertModel(transformers.BertConfig(**CONFIG))
    body.save_pretrained(root / "body")
    return root, classifier.state_dict(), body.state_dict()


def _new_head(root):
    """The 3-label classifier reloaded with 5 labels: the head's shapes change."""
    return transformers.BertForSequenceClassification.from_pretrained(
        root / "classifier", num_labels=5, ignore_mismatched_sizes=True)


def _assert_body_identical(model, state, prefix=""):
    for name, tensor in model.state_dict().items():
        if name.startswith(prefix + "classifier"):
            continue
        assert torch.equal(tensor, state[name.removeprefix(prefix)]), name


def test_only_missing_keys_from_loading_info(saved):
    root, _, body_state = saved
    model, info = transformers.BertForSequenceClassification.from_pretrained(
        root / "body", num_labels=4, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    report = InitPolicy.from_dict(HEAD_POLICY).apply(model, only=info["missing_keys"], seed=0)
    assert sorted(r.qualified_name for r in report.records) == ["classifier.bias",
                                                                "classifier.weight"]
    assert model.classifier.weight.eq(1).all() and model.classifier.bias.eq(0.5).all()
    for name, tensor in model.bert.state_dict().items():
        assert torch.equal(tensor, body_state[name]), name
    assert ("bert.embeddings.word_embeddings.weight", "not in only") in report.left_alone


def test_hf_loading_marks_name_the_new_head(saved):
    root, classifier_state, _ = saved
    model = _new_head(root)
    missing = missing_parameters(model, True)
    assert missing == ["classifier.weight", "classifier.bias"]
    InitPolicy.from_preset("bert").apply(model, only=missing, seed=0)
    _assert_body_identical(model, classifier_state)
    assert model.classifier.bias.eq(0).all()
    assert model.classifier.weight.std().item() == pytest.approx(0.02, rel=0.25)  # 320 values


def test_only_from_a_state_dict_or_a_checkpoint_file(saved, tmp_path):
    _, _, body_state = saved
    model = transformers.BertForSequenceClassification(transformers.BertConfig(**CONFIG))
    model.bert.load_state_dict(body_state)
    wrapped = {f"bert.{name}": tensor for name, tensor in body_state.items()}
    assert missing_parameters(model, wrapped) == ["classifier.weight", "classifier.bias"]
    torch.save({"state_dict": wrapped, "epoch": 3}, tmp_path / "last.ckpt")
    assert missing_parameters(model, tmp_path / "last.ckpt") == ["classifier.weight",
                                                                 "classifier.bias"]
    with pytest.raises(PolicyError, match=r"relative to the module the checkpoint was saved "
                                          r"from. Did you mean 'bert.embeddings.LayerNorm.bias'"):
        missing_parameters(model, body_state)  # keys of model.bert, not of model


def test_only_rejects_unknown_names_with_a_suggestion_and_accepts_buffers():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    policy = InitPolicy.from_dict(HEAD_POLICY)
    with pytest.raises(PolicyError, match=r"only: 1 name\(s\) are no parameter of Sequential: "
                                          r"'0.wieght'. Did you mean '0.weight'\?"):
        policy.apply(net, only=["0.wieght"])
    before = net[0].weight.detach().clone()
    report = policy.apply(net, only=["0.bias", "1.running_mean"])
    assert [r.qualified_name for r in report.records] == ["0.bias"]
    assert torch.equal(net[0].weight, before) and net[0].bias.eq(0.5).all()


def test_only_keeps_a_tied_parameter_named_by_its_alias():
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=1, n_embd=32, n_head=4, vocab_size=50, n_positions=16))
    report = InitPolicy.from_dict(HEAD_POLICY).apply(model, only=["lm_head.weight"])
    assert [r.qualified_name for r in report.records] == ["transformer.wte.weight"]
    assert model.lm_head.weight.eq(1).all()


def test_hf_marks_absent_is_an_error_not_a_full_reinit():
    model = transformers.BertModel(transformers.BertConfig(**CONFIG))
    with pytest.raises(PolicyError, match="no parameter of BertModel carries Hugging Face's "
                                          "loading mark"):
        missing_parameters(model, True)


class _Classifier(L.LightningModule):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.seen: dict[str, torch.Tensor] = {}

    def training_step(self, batch, batch_idx):
        ids, labels = batch
        return self.model(input_ids=ids, labels=labels).loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Snapshot(L.Callback):
    """The weights as the first training step sees them (after InitCallback's setup)."""

    def on_train_start(self, trainer, pl_module):
        pl_module.seen = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def test_callback_only_missing_initializes_the_head_alone(saved, tmp_path):
    root, classifier_state, _ = saved
    module = _Classifier(_new_head(root))
    ids = torch.randint(500, (8, 12), generator=torch.Generator().manual_seed(0))
    data = DataLoader(TensorDataset(ids, torch.randint(5, (8,))), batch_size=4)
    callback = InitCallback(policy=HEAD_POLICY, only_missing=True, check=False,
                            diagnostics=False)
    quiet_trainer(tmp_path, max_steps=1, callbacks=[callback, _Snapshot()]).fit(module, data)
    seen = module.seen
    assert seen["model.classifier.weight"].eq(1).all()
    assert seen["model.classifier.bias"].eq(0.5).all()
    for name, tensor in classifier_state.items():
        if not name.startswith("classifier"):
            assert torch.equal(seen["model." + name], tensor), name
    assert "only_missing=True" in repr(callback)
