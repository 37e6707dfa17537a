"""Every preset applies cleanly to a representative model; the values follow the preset."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from _preset_models import GPT, MODELS, Bert, LSTMNet, cnn

from lightning_init.policy import InitPolicy, list_presets


def test_models_cover_every_preset():
    assert set(MODELS) == set(list_presets())


@pytest.mark.parametrize("preset", sorted(MODELS))
def test_preset_applies_cleanly(preset):
    model = MODELS[preset]()
    policy = InitPolicy.from_preset(preset)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unused-rule or tie warnings
        report = policy.apply(model)
    covered = {r.qualified_name for r in report.records}
    assert covered == {name for name, _ in model.named_parameters()}, report.left_alone
    assert all(math.isfinite(r.measured_std) for r in report.records)


def test_gpt2_residual_projections_are_scaled():
    model = GPT(n_layer=12)
    InitPolicy.from_preset("gpt2").apply(model, seed=0)
    proj = torch.cat([b.c_proj.weight.flatten() for b in model.h])
    fc = torch.cat([b.c_fc.weight.flatten() for b in model.h])
    assert proj.std().item() == pytest.approx(0.02 / math.sqrt(2 * 12), rel=0.05)
    assert fc.std().item() == pytest.approx(0.02, rel=0.05)


def test_lstm_forget_gate_bias_and_orthogonal_gates():
    model = LSTMNet()
    InitPolicy.from_preset("lstm").apply(model, seed=0)
    bias = model.lstm.bias_ih_l0.view(4, 32)
    assert bias[1].eq(1).all() and bias[[0, 2, 3]].eq(0).all()
    for gate in model.lstm.weight_hh_l1.view(4, 32, 32):
        assert torch.allclose(gate @ gate.T, torch.eye(32), atol=1e-5)


def test_dcgan_and_bert_statistics():
    model = cnn()
    InitPolicy.from_preset("dcgan").apply(model, seed=0)
    assert model[1].weight.mean().item() == pytest.approx(1.0, abs=0.02)
    assert model[3].weight.std().item() == pytest.approx(0.02, rel=0.1)
    bert = Bert()  # the truncated variant is TF BERT's; HF's BERT does not truncate (issue 16)
    InitPolicy.from_preset("bert_tf").apply(bert, seed=0)
    weight = bert.layers[0][0].weight
    assert weight.abs().max().item() <= 0.04 and bert.word_embeddings.weight[0].eq(0).all()
