"""``policy="auto"`` on the zoo of real models: it passes the check and trains as well as
their own init.

Each healthy model of ``tests/helpers/zoo.py`` is initialized two ways: by its own ``_init_weights``
(as built) and by ``InitPolicy.auto(model, batch)``. The auto-initialized one must pass the
init check, and after the same 30 AdamW steps on the same batch (the model's own loss: language
modelling, or cross-entropy against fixed labels; a mean-squared error for a bare backbone) its
loss, averaged over three seeds (of the init draw and of training), must be at most the own
init's, within 5%. One seed is not enough: on MobileNetV2 the loss after 30 steps moves by 3x
from one draw to the next, and on the ResNet bottleneck, where both inits follow the same
recipe (Kaiming fan_out before BatchNorm), the own init alone spreads from 0.684 to 0.716.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("transformers")

from zoo import BATCH, HEALTHY, ZooCase, build, check

from lightning_init import InitPolicy, check_init

_STEPS, _LR, _SPREAD, _SEEDS = 30, 1e-3, 1.05, (0, 1, 2)
_LANGUAGE_MODELS = ("ForCausalLM", "LMHeadModel", "ForMaskedLM", "ForConditionalGeneration")

# The wider zoo (tests/helpers/zoo.py's second block) on the library as it stands: what fails,
# and why (xfail(strict=True): a fix shows as a flip).
_CHECK_FAILS: dict[str, str] = {}
_OWN_LOSS_CHECK_FAILS: dict[str, str] = {}
# Both below: auto's head. Its logits start at std head_gain = 0.5 (an untied head's small
# readout), the own inits' larger (Funnel 0.73, kaiming_relu's linear-gain head 0.96:
# 1.16x ln 3 and 1.33x ln 2); under Adam the logits move through the hidden layers in proportion
# to the head's weights, and a 30-step loss on one batch reads that speed. Putting back the own
# head's scale alone closes each gap (Funnel 0.0089, the MLP 0.373 over 20 draws).
_TRAINS_WORSE: dict[str, str] = {
    "funnel": "issue 23: auto's head (logits of std 0.5 against 0.73) and its tanh pooler at "
              "gain 5/3 on a unit-scale input: 0.0219 against 0.0092 over 12 seeds, 0.0007 "
              "against 0.0005 at 400 steps",
    "mlp-2-class-kaiming-relu-seed-0": "issue 23: auto's head (logits of std 0.5 against "
                                       "kaiming_relu's 0.96): over 20 draws of each, 0.428 "
                                       "against 0.378 at 30 steps, yet 0.045 against 0.055 at "
                                       "100 and 0.0020 against 0.0029 at 300",
    # The second text block (tests/helpers/zoo_text2.py): both own inits are hotter than auto's
    # where the forward pass does not pin the scale, and a 30-step loss on one batch reads that.
    "mamba2": "issue 23: auto's untied head (logits of std 0.5 against the own N(0, 0.1)'s 0.8) "
              "and unit embeddings (own std 0.1): 2.45 against 0.65 at 30 steps; the own head "
              "put back 1.47, the own embeddings 1.98, both 0.91, auto's head at logits std "
              "1.6 0.37; 0.14 against 0.062 at 100 steps, 0.018 against 0.012 at 300; on "
              "real data (bench_auto.py's Mamba-2 byte LM, 600 steps) auto ends lower in "
              "each of 3 seeds, 1.615 against 1.638 nats/byte",
    "rwkv": "issue 23: RWKV's SmallInit embeddings (std 1e-4 straight into a LayerNorm, which "
            "Adam moves 1e4 times faster relative to their size than auto's unit ones): 2.72 "
            "against 1.97 at 30 steps, 2.08 with the own embeddings put back; auto's squared-"
            "ReLU keys at unit output (2.53 with ReLU's gain, a hidden rms of 2.45); "
            "0.139 against 0.133 at 100 steps, 0.0166 against 0.0177 at 300",
    # A bare backbone trained through its pooler (the mean-squared error of pooler_output):
    # auto's sample pass reads last_hidden_state, so the pooler is no head but a layer
    # "followed by tanh" at gain 5/3 (pre-activations of std 1.7, against the own init's 0.16).
    # Putting back the own pooler alone closes the gap (0.274 against the own 0.262).
    "yolos": "issue 23: its tanh pooler, the output the loss reads, at gain 5/3 (as Funnel's): "
             "0.312 against 0.262",
    # GLPN's depth is 10 sigmoid(z): both inits start it at 5 against a target in [0, 1], and
    # 30 steps read how fast its mean comes down. Over 12 seeds: auto 0.3135 +- 0.003, own
    # 0.2999 +- 0.004; auto with the own decoder.stages.0.convolution alone (a 1x1 conv, no
    # activation, whose upsampled output the selective fusion mixes with the encoder's skip
    # features) 0.2998: auto draws it at 1 / sqrt(fan_in), a unit-scale global branch; the own
    # N(0, 0.02) (gain 0.11) leaves the skip features dominant.
    "glpn": "issue 23: decoder.stages.0.convolution at LeCun's scale against the own gain "
            "0.11: 0.319 against 0.300 over 3 seeds (1.06x), 1.045x over 12",
}
# MobileNetV2's 30-step loss is read in eval mode, through BatchNorm running statistics that 30
# steps leave behind the weights: one draw ends anywhere from 0.04 to 0.9 (its loss in training
# mode, batch statistics, averages 0.006), so three seeds cannot tell two inits apart and its
# comparison takes 32. Over 48 seeds (one thread), the mean and its standard error: own init
# 0.246 +- 0.026, auto 0.209 +- 0.021; auto's former He fan_out draw before each BatchNorm
# (1.5-17x the own init's std 0.02, so Adam's steps were that much smaller relative to the
# weights) 0.376 +- 0.028; over these 32 seeds 0.349 against the own init's 0.239, a failure.
_SEEDS_OF = {"mobilenet-v2": tuple(range(32))}
# The own-loss check: the decoders of the wider zoo. The training test: every case but these of
# the wider zoo (MobileViT's 30-step runs take 14 s; HuBERT and Gemma3 repeat Wav2Vec2 and
# Gemma2; Data2Vec-Audio, 5 s, repeats Wav2Vec2 with LayerNorm in its convs, and trained once
# to 0.0036 against its own init's 0.64; the kaiming_relu MLPs run for seed 0 only: the
# preset's own draw does not vary with the test's seeds, so eight of them compare one draw
# each).
_OWN_LOSS_CASES = ("gemma", "gemma2", "gemma3", "olmo2", "falcon", "bloom", "phi", "gptj",
                   "gpt-neo", "biogpt", "mamba",
                   # the second text block (tests/helpers/zoo_text2.py)
                   "mixtral", "qwen2-moe", "olmoe", "gpt-neox", "phi3", "qwen3", "cohere",
                   "stablelm", "starcoder2", "mamba2", "recurrent-gemma", "rwkv", "mpnet",
                   "esm", "pegasus", "led")
# Of the second text block, Mixtral and OLMoE repeat Qwen2-MoE's routed experts, Phi3 and StableLM
# the dense decoders (auto's 30-step loss at 0.57x and 0.60x their own inits').
_NOT_TRAINED = {"mobilevit", "hubert", "gemma3", "mixtral", "olmoe", "phi3", "stablelm",
                "data2vec-audio"} | {
    f"mlp-{classes}-class-kaiming-relu-seed-{seed}" for classes in (2, 3) for seed in range(1, 8)}
_TRAINED = {case.name for case in HEALTHY} - _NOT_TRAINED


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


def _trained_loss(case: ZooCase, model: torch.nn.Module, batch: Any, seed: int) -> float:
    loss = case.extra.get("loss", _loss)  # the case's own loss where it is not transformers'
    torch.manual_seed(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=_LR)
    for _ in range(_STEPS):
        optimizer.zero_grad()
        loss(model, batch).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return float(loss(model, batch))


def _param(case: ZooCase, known: dict[str, str]) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=known[case.name])] if case.name in known \
        else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(case, _CHECK_FAILS) for case in HEALTHY])
def test_auto_passes_the_check(case: ZooCase) -> None:
    model, inputs = build(case)
    InitPolicy.auto(model, inputs, forward=case.forward).apply(model)
    report = check(case, model, inputs)
    assert report.ok, [problem.message for problem in report.problems]


@pytest.mark.parametrize("case", [_param(case, _OWN_LOSS_CHECK_FAILS) for case in HEALTHY
                                  if case.name in _OWN_LOSS_CASES])
def test_auto_passes_the_check_with_the_models_own_loss(case: ZooCase) -> None:
    """The language models of the wider zoo judged by their own cross-entropy after ``auto``:
    the initial loss shows a head whose logits a tied embedding inflates."""
    model, inputs = build(case)
    InitPolicy.auto(model, inputs, forward=case.forward).apply(model)
    report = check_init(model, _with_targets(model, inputs), forward=case.forward)
    assert report.loss_source == "model_output"
    assert report.ok, [problem.message for problem in report.problems]


@pytest.fixture
def one_thread():
    """Training on one intra-op thread: a 30-step loss depends on the reduction order, so the
    comparison (MobileNetV2's especially) must not change with the machine's core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", [_param(case, _TRAINS_WORSE) for case in HEALTHY
                                  if case.name in _TRAINED])
@pytest.mark.usefixtures("one_thread")
def test_auto_trains_at_least_as_well_as_the_models_own_init(case: ZooCase) -> None:
    model, inputs = build(case)
    batch = inputs if "loss" in case.extra else _with_targets(model, inputs)
    policy = InitPolicy.auto(model, inputs, forward=case.forward)
    own, auto = [], []
    for seed in _SEEDS_OF.get(case.name, _SEEDS):
        torch.manual_seed(seed)
        model, _ = case.make()
        own.append(_trained_loss(case, copy.deepcopy(model), batch, seed))
        policy.apply(model, seed=seed)
        auto.append(_trained_loss(case, model, batch, seed))
    own_loss, auto_loss = sum(own) / len(own), sum(auto) / len(auto)
    assert auto_loss <= _SPREAD * own_loss, (own, auto)


def test_auto_on_a_tied_language_model_measures_its_head_and_stream() -> None:
    case = next(case for case in HEALTHY if case.name == "gpt2")
    model, inputs = build(case)
    policy = InitPolicy.auto(model, inputs)
    # the final LayerNorm's output feeds the tied head: rms about 1
    assert 0.8 < policy.variables["head_input_rms"] < 1.2
    policy.apply(model)
    assert model.lm_head.weight is model.transformer.wte.weight
    # 500 logits: std sqrt(0.2 ln 500) = 1.115, an initial loss within 10% of ln 500
    gain = policy.variables["head_gain"]
    assert gain == pytest.approx(math.sqrt(0.2 * math.log(500)), rel=1e-3)
    head_std = gain / (64 ** 0.5 * policy.variables["head_input_rms"])
    assert abs(float(model.transformer.wte.weight.detach().std()) - head_std) < 0.05 * head_std
    # the stream is the embeddings' sum: the blocks' branches are scaled to it
    stream = policy.variables["stream_rms"]
    assert 0.5 * head_std < stream < 3 * head_std
    # the branch's scale is set once, by its closer: c_attn reads the norm's unit scale and
    # keeps it (1 / sqrt(64)); c_proj brings the branch to the stream's, over sqrt(4 branches)
    c_attn = float(model.transformer.h[0].attn.c_attn.weight.detach().std())
    assert abs(c_attn - 1 / 8) < 0.05 / 8
    c_proj = float(model.transformer.h[0].attn.c_proj.weight.detach().std())
    assert abs(c_proj - stream / 16) < 0.05 * stream / 16
    with torch.no_grad():
        logits = model(**inputs).logits
    assert 0.8 * gain < float(logits.std()) < 1.2 * gain
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 500),
                                             inputs["input_ids"][:, 1:].reshape(-1))
    # ln 500 + 1.115^2 / 2 = 6.84, and a little more: the tied head scores the current token
    # high (its own embedding is in the hidden state)
    assert math.log(500) < float(loss) < 1.25 * math.log(500)


def test_attention_without_its_scale_gets_it_in_the_query_init() -> None:
    case = next(case for case in HEALTHY if case.name == "t5")
    model, inputs = build(case)
    policy = InitPolicy.auto(model, inputs)
    # T5 computes q k^T with no 1/sqrt(d_kv): the logits are measured and the queries scaled
    assert policy.variables["attention_logit_rms"] > 2
    policy.apply(model)
    q = model.encoder.block[0].layer[0].SelfAttention.q.weight.detach()
    k = model.encoder.block[0].layer[0].SelfAttention.k.weight.detach()
    ratio = float(k.std() / q.std())
    assert ratio == pytest.approx(policy.variables["attention_logit_rms"], rel=0.1)
    # and where attention is scaled (BERT's SDPA), the queries keep the keys' scale
    bert = next(case for case in HEALTHY if case.name == "bert")
    bert_model, bert_inputs = build(bert)
    assert InitPolicy.auto(bert_model, bert_inputs).variables["attention_logit_rms"] < 1.5


def test_post_norm_blocks_start_as_the_identity_but_cross_attention_does_not() -> None:
    case = next(case for case in HEALTHY if case.name == "bart")
    model, inputs = build(case)
    rules = InitPolicy.auto(model, inputs)
    rules.apply(model)
    layer = model.model.decoder.layers[0]
    # BART is post-norm (norm(x + f(x))): its feed-forward branches' output projections start
    # at zero, its self-attention's small (DeepNet's beta = (8 N)^(-1/4), N = 4 of them) ...
    assert not layer.fc2.weight.any() and not model.model.encoder.layers[1].fc2.weight.any()
    std = float(layer.self_attn.out_proj.weight.detach().std())
    assert std == pytest.approx(32 ** -0.25 / 8, rel=0.1)
    # ... except cross-attention's, which carries the encoder to the loss
    assert layer.encoder_attn.out_proj.weight.detach().std() > 0
    report = check_init(model, inputs)
    assert report.ok, [problem.message for problem in report.problems]
    assert any(note.startswith("deliberate zero-init") for note in report.notes)
    # GPT-2 is pre-norm: nothing is zeroed
    gpt2, gpt2_inputs = build(next(case for case in HEALTHY if case.name == "gpt2"))
    InitPolicy.auto(gpt2, gpt2_inputs).apply(gpt2)
    assert all(param.detach().std() > 0 for name, param in gpt2.named_parameters()
               if name.endswith("c_proj.weight"))
