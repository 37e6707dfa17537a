"""``policy="auto"`` on the zoo of real models: it passes the check and trains as well as
their own init.

Each healthy model of ``tests/zoo.py`` is initialized two ways: by its own ``_init_weights``
(as built) and by ``InitPolicy.auto(model, batch)``. The auto-initialized one must pass the
init check, and after the same 30 AdamW steps on the same batch (the model's own loss: language
modelling, or cross-entropy against fixed labels; a mean-squared error for a bare backbone) its
loss must be at most the own init's, within 5%: the own init's loss after these steps moves by
about 2.5% from one seed to another (ResNet bottleneck, 4 seeds: 0.684 to 0.716), and where
both inits follow the same recipe that spread is all that separates them.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("transformers")

from zoo import BATCH, HEALTHY, ZooCase, build

from lightning_init import InitPolicy, check_init

_STEPS, _LR, _SPREAD = 30, 1e-3, 1.05
_LANGUAGE_MODELS = ("ForCausalLM", "LMHeadModel", "ForMaskedLM", "ForConditionalGeneration")
# Cases where auto trains worse, with what was measured: xfail(strict=True), so a fix flips them.
_WORSE: dict[str, str] = {
    "t5": "T5's own init (N(0, 1) shared embeddings, q scaled by (d_model * d_kv)^-1/2, no "
          "1/sqrt(d) in its attention) memorizes faster: 2.85 against auto's 3.69 after 30 "
          "steps; the gap follows the logits' scale (T5's own init with its embeddings at "
          "N(0, 0.5) ends at 4.30)",
}


def _with_targets(model: torch.nn.Module, inputs: dict) -> dict:
    """The inputs with the labels the model's own loss needs (fixed, seeded)."""
    name = type(model).__name__
    if name.endswith(_LANGUAGE_MODELS):
        if "decoder_input_ids" in inputs:  # teacher forcing: decoder inputs shifted right
            labels = inputs["decoder_input_ids"]
            shifted = torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1]], 1)
            return {**inputs, "decoder_input_ids": shifted, "labels": labels}
        return {**inputs, "labels": inputs["input_ids"]}
    if "Classification" in name:
        generator = torch.Generator().manual_seed(7)
        labels = torch.randint(0, model.config.num_labels, (BATCH,), generator=generator)
        return {**inputs, "labels": labels}
    return inputs


def _loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    output = model(**batch)
    if getattr(output, "loss", None) is not None:
        return output.loss
    features = output.pooler_output
    target = torch.randn(features.shape, generator=torch.Generator().manual_seed(8))
    return F.mse_loss(features, target)


def _trained_loss(model: torch.nn.Module, batch: dict) -> float:
    torch.manual_seed(1)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=_LR)
    for _ in range(_STEPS):
        optimizer.zero_grad()
        _loss(model, batch).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return float(_loss(model, batch))


def _param(case: ZooCase) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=_WORSE[case.name])] \
        if case.name in _WORSE else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in HEALTHY])
def test_auto_passes_the_check(case: ZooCase) -> None:
    model, inputs = build(case)
    InitPolicy.auto(model, inputs, forward=case.forward).apply(model)
    report = check_init(model, inputs, forward=case.forward)
    assert report.ok, [problem.message for problem in report.problems]


@pytest.mark.parametrize("case", [_param(case) for case in HEALTHY])
def test_auto_trains_at_least_as_well_as_the_models_own_init(case: ZooCase) -> None:
    model, inputs = build(case)
    batch = _with_targets(model, inputs)
    auto = copy.deepcopy(model)
    InitPolicy.auto(auto, inputs, forward=case.forward).apply(auto)
    own_loss, auto_loss = _trained_loss(model, batch), _trained_loss(auto, batch)
    assert auto_loss <= _SPREAD * own_loss, (own_loss, auto_loss)


def test_auto_on_a_tied_language_model_measures_its_head_and_stream() -> None:
    case = next(case for case in HEALTHY if case.name == "gpt2")
    model, inputs = build(case)
    policy = InitPolicy.auto(model, inputs)
    # the final LayerNorm's output feeds the tied head: rms about 1
    assert 0.8 < policy.variables["head_input_rms"] < 1.2
    policy.apply(model)
    assert model.lm_head.weight is model.transformer.wte.weight
    head_std = 0.5 / (64 ** 0.5 * policy.variables["head_input_rms"])
    assert abs(float(model.transformer.wte.weight.detach().std()) - head_std) < 0.05 * head_std
    # the stream is the embeddings' sum: the blocks' branches are scaled to it
    stream = policy.variables["stream_rms"]
    assert 0.5 * head_std < stream < 3 * head_std
    c_attn = float(model.transformer.h[0].attn.c_attn.weight.detach().std())
    assert abs(c_attn - stream / 8) < 0.05 * stream / 8
    with torch.no_grad():
        logits = model(**inputs).logits
    assert 0.35 < float(logits.std()) < 0.7
