"""The check's verdicts blame only what an init can change, see embeddings, and keep findings.

Each test is a false alarm or a miss measured on a model family outside the first zoo (issue 24),
written before the fix: Funnel's and Longformer's exact zero gradients that no init changes, word
embeddings at std 100 that no head test sees, a loss finding dropped by the look-ahead step,
small-C heads judged by a fixed ratio of ln(C), a zero output layer, an autoencoder's labels.
"""

from __future__ import annotations

import math
import os
from typing import Any

import lightning
import pytest
import torch
from _models import GatedDecoder
from torch import nn

from lightning_init import InitPolicy, check_init
from lightning_init.check import CheckOptions, check_lightning_module
from lightning_init.check.gates import settle
from lightning_init.check.records import CheckProblem, LayerRecord, ParameterRecord
from lightning_init.check.report import InitCheckReport

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

BATCH, SEQ, VOCAB = 8, 16, 500


def _tokens() -> torch.Tensor:
    return torch.randint(5, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(1))


def _funnel() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.FunnelConfig(block_sizes=[1, 1], d_model=64, n_head=4, d_head=16,
                                       d_inner=128, vocab_size=VOCAB, num_labels=3,
                                       num_decoder_layers=1)
    return transformers.FunnelForSequenceClassification(config)


def _longformer() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.LongformerConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        vocab_size=VOCAB, num_labels=3, attention_window=4, max_position_embeddings=66,
        pad_token_id=1)
    return transformers.LongformerForSequenceClassification(config)


def _phi() -> nn.Module:
    """An untied head (with a bias) reading the final LayerNorm."""
    torch.manual_seed(0)
    config = transformers.PhiConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                    intermediate_size=128, vocab_size=VOCAB,
                                    max_position_embeddings=64, partial_rotary_factor=0.5,
                                    use_cache=False)
    return transformers.PhiForCausalLM(config)


def _messages(report: InitCheckReport) -> list[str]:
    return [problem.message for problem in report.problems]


# ------------------------------------------------------------- 1. zero gradients no init changes


def test_funnel_masked_cls_terms_are_a_note_not_a_problem() -> None:
    """Funnel multiplies its relative-position and token-type attention terms by a mask that
    is 0 at <cls>, the one position the classifier reads: exact zeros whatever the init."""
    report = check_init(_funnel(), {"input_ids": _tokens()})
    assert report.ok, _messages(report)
    note = next(note for note in report.notes if "r_r_bias" in note)
    assert "funnel.encoder.blocks.1.0.attention.seg_embed" in note and "No init" in note
    assert "multiply these terms by 0 (a mask)" in note


def test_longformer_local_projections_of_the_last_layer_are_a_note() -> None:
    """<cls> has global attention (query_global, ...): the last layer's local q/k/v feed only
    positions that the classifier does not read."""
    report = check_init(_longformer(), {"input_ids": _tokens()})
    assert report.ok, _messages(report)
    note = next(note for note in report.notes if "exactly zero gradient" in note)
    assert "longformer.encoder.layer.1.attention.self.query.weight" in note
    assert "get no gradient on their outputs" in note


def test_zero_gradient_that_an_init_changes_stays_a_problem() -> None:
    """A ReLU MLP whose middle layer is all zeros: the first layer gets zero gradient, but a
    random middle layer would pass one: a problem, naming the stuck layer."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                        nn.Linear(16, 4))
    with torch.no_grad():
        net[2].weight.zero_()
    report = check_init(net, torch.randn(32, 8))
    assert not report.ok
    assert any(problem.kind == "gradient" and "0" in problem.layers for problem in report.problems)


# ------------------------------------------------------------------- 2. the embedding verdict


def test_untied_decoder_with_word_embeddings_at_std_100_is_caught() -> None:
    """The blocks add about 1e-3 of the stream each and the head reads the final norm's unit
    output: no loss test sees it, the embedding's scale against the stream does."""
    model = _phi()
    with torch.no_grad():
        model.model.embed_tokens.weight.normal_(0.0, 100.0)
    report = check_init(model, {"input_ids": _tokens()})
    found = [problem for problem in report.problems if problem.kind == "embedding"]
    assert found, _messages(report)
    assert "model.embed_tokens" in found[0].layers
    assert "N(0, 0.02)" in found[0].message and "`model.embed_tokens`" in found[0].message
    assert "scale the last layer's weights down" not in found[0].message


def test_healthy_untied_decoder_has_no_embedding_finding() -> None:
    report = check_init(_phi(), {"input_ids": _tokens()})
    assert report.ok, _messages(report)


def test_longformer_word_embeddings_swamping_positions_are_caught() -> None:
    model = _longformer()
    with torch.no_grad():
        model.longformer.embeddings.word_embeddings.weight.normal_(0.0, 100.0)
    report = check_init(model, {"input_ids": _tokens()})
    found = [problem for problem in report.problems if problem.kind == "embedding"]
    assert found, _messages(report)
    assert found[0].layers[0] == "longformer.embeddings.word_embeddings"
    assert "position_embeddings" in found[0].message
    assert "N(0, 0.02)" in found[0].message


def test_tied_embedding_keeps_its_head_advice() -> None:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB,
                                     n_positions=64, use_cache=False, bos_token_id=0,
                                     eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        model.transformer.wte.weight.normal_(0.0, 100.0)
    report = check_init(model, {"input_ids": _tokens()})
    loss = next(problem for problem in report.problems if problem.kind == "loss")
    assert "tied to the embedding `transformer.wte`" in loss.message


# ---------------------------------------------------------------- 3. the initial loss from theory


def _mlp(classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, classes))


@pytest.mark.parametrize("classes", [2, 3])
def test_kaiming_relu_small_class_counts_pass_over_8_seeds(classes: int) -> None:
    """A unit-gain head gives logits of std about 1; for C = 2 that alone is 1.3x ln(2) in
    expectation, and one random head direction spreads a seed's draw further."""
    failed = []
    for seed in range(8):
        torch.manual_seed(seed)
        net = _mlp(classes)
        InitPolicy.from_preset("kaiming_relu").apply(net)
        x, y = torch.randn(64, 20), torch.randint(0, classes, (64,))
        report = check_init(net, x, loss_fn=nn.functional.cross_entropy, target=y)
        if not report.ok:
            failed.append((seed, _messages(report)))
    assert not failed, failed


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_a_truly_over_confident_small_head_still_fails(classes: int) -> None:
    torch.manual_seed(0)
    net = _mlp(classes)
    InitPolicy.from_preset("kaiming_relu").apply(net)
    with torch.no_grad():
        net[4].weight.normal_(0.0, 1.0)  # logits of std about 8
    x, y = torch.randn(64, 20), torch.randint(0, classes, (64,))
    report = check_init(net, x, loss_fn=nn.functional.cross_entropy, target=y)
    assert [problem.kind for problem in report.problems] == ["loss"], _messages(report)
    assert "std" in report.problems[0].message


# ------------------------------------------------------------------------- 4. gates.settle


def test_zero_output_layer_is_a_gate() -> None:
    """docs/policy.md's zero output layer on a 3-layer ReLU MLP: the hidden layers get exactly
    zero gradient at step 0 and a gradient after it."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                        nn.Linear(64, 5))
    InitPolicy.from_preset("kaiming_relu").apply(net)
    with torch.no_grad():
        net[4].weight.zero_()
    x, y = torch.randn(64, 20), torch.randint(0, 5, (64,))
    report = check_init(net, x, loss_fn=nn.functional.cross_entropy, target=y)
    assert report.ok, _messages(report)
    assert any(note.startswith("deliberate zero-init: 4.weight") for note in report.notes)


def _gemma2_sandwich(final_norm_weight: float) -> nn.Module:
    """Gemma2 (norms after each branch, before the add) with zero output projections, whose
    post-norms blow the look-ahead's 1e-3 step to full size."""
    torch.manual_seed(0)
    config = transformers.Gemma2Config(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=64,
        sliding_window=8, query_pre_attn_scalar=16, use_cache=False,
        final_logit_softcapping=None)
    model = transformers.Gemma2ForCausalLM(config)
    with torch.no_grad():
        model.model.norm.weight.fill_(final_norm_weight)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return model


def test_sandwich_norm_decoder_keeps_its_loss_finding() -> None:
    tokens = _tokens()
    report = check_init(_gemma2_sandwich(17.0), {"input_ids": tokens, "labels": tokens},
                        num_classes=VOCAB)
    assert report.loss is not None and report.loss > 3 * math.log(VOCAB)
    assert [problem.kind for problem in report.problems] == ["loss"], report.notes


def _record(name: str, weight: float, grad: float) -> ParameterRecord:
    return ParameterRecord(name, name.rpartition(".")[0], weight, grad)


def _layer(index: int, name: str, dependence: float) -> LayerRecord:
    return LayerRecord(index=index, name=name, type="Linear", shape=(8, 4), output_mean=0.0,
                       output_std=1.0, input_dependence=dependence, dead_fraction=None,
                       saturated_fraction=None, nonfinite=0)


def test_settle_never_drops_a_kind_it_did_not_step() -> None:
    problems = [CheckProblem(kind, ("head",), f"{kind} finding")
                for kind in ("loss", "nonfinite", "embedding", "gain")]
    report = InitCheckReport(problems=list(problems), layers=[_layer(0, "head", 1.0)],
                             parameters=[_record("gate.weight", 0.0, 1.0)])
    ahead = InitCheckReport(problems=[], layers=report.layers, parameters=report.parameters)
    settled = settle(report, ahead, ["gate.weight"], 0.01)
    assert settled.problems == problems


def test_settle_tells_gradient_findings_apart_by_cause_not_words() -> None:
    """A drift at init and a zero gradient ahead on the same layer: different causes, so the
    drift is no persistence of the other and goes to the note, whatever each message says."""
    drift = CheckProblem("gradient", ("head",), "gets exactly zero gradient (drift)",
                         cause="drift")
    zero = CheckProblem("gradient", ("head",), "gradients vanish towards the input",
                        cause="zero")
    report = InitCheckReport(problems=[drift], layers=[_layer(0, "head", 1.0)],
                             parameters=[_record("gate.weight", 0.0, 1.0)])
    ahead = InitCheckReport(problems=[zero], layers=report.layers, parameters=report.parameters)
    settled = settle(report, ahead, ["gate.weight"], 0.01)
    assert settled.problems == []
    assert "gradient at `head`" in settled.notes[0]


def test_settle_judges_zero_gradients_per_parameter() -> None:
    """Behind zero-init gates, 3 parameters open at the look-ahead step; 1 stays stuck: only it
    stays listed."""
    torch.manual_seed(0)
    net = _GatedNet()
    report = check_init(net, torch.randn(32, 8))
    assert not report.ok
    zero = [problem for problem in report.problems if "exactly zero gradient" in problem.message]
    assert len(zero) == 1, _messages(report)
    assert "stuck.0.weight" in zero[0].message
    assert "branch" not in zero[0].message, zero[0].message


class _GatedNet(nn.Module):
    """A residual MLP: one branch behind a ReZero gate (Bachlechner et al. 2020), one branch
    whose two layers are all zeros (stuck: neither gets a gradient, whatever the step)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 16)
        self.branch = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
        self.gate = nn.Parameter(torch.zeros(1))
        self.stuck = nn.Sequential(nn.Linear(16, 16, bias=False), nn.ReLU(),
                                   nn.Linear(16, 16, bias=False))
        self.out = nn.Linear(16, 4)
        with torch.no_grad():
            for layer in self.stuck:
                if isinstance(layer, nn.Linear):
                    layer.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        h = h + self.gate * self.branch(h)
        h = h + self.stuck(h)
        return self.out(h)


# ---------------------------------------------------------- 5. classes only from a class loss


class _AutoEncoder(lightning.LightningModule):
    """(image, label) batches, a summed binary cross-entropy over 64 pixels: no classes."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(64, 16), nn.ReLU())
        self.decoder = nn.Linear(16, 64)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        image, _label = batch
        logits = self.decoder(self.encoder(image.flatten(1)))
        return nn.functional.binary_cross_entropy_with_logits(logits, image.flatten(1),
                                                              reduction="sum")


def test_autoencoder_labels_in_the_batch_are_no_classification() -> None:
    torch.manual_seed(0)
    batch = (torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,)))
    report = check_lightning_module(_AutoEncoder(), batch, CheckOptions())
    assert report.num_classes is None and report.ok, _messages(report)


class _Classifier(lightning.LightningModule):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, classes))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.CrossEntropyLoss()(self.net(x), y)


def test_classes_come_from_the_loss_that_consumes_the_labels() -> None:
    """Labels 0..3 in the batch, but the loss is over 7 classes: C is the loss's."""
    torch.manual_seed(0)
    batch = (torch.randn(32, 12), torch.randint(0, 4, (32,)))
    report = check_lightning_module(_Classifier(7), batch, CheckOptions())
    assert report.num_classes == 7


# ------------------------------------------------------------------------ the parts, in detail


@pytest.mark.parametrize("classes", [2, 10, 1000])
def test_expected_cross_entropy_agrees_with_second_order_theory(classes: int) -> None:
    from lightning_init.check._theory import expected_cross_entropy

    for std in (0.1, 0.3):
        theory = math.log(classes) + (1 - 1 / classes) * std**2 / 2
        assert expected_cross_entropy(classes, std) == pytest.approx(theory, abs=3e-3)
    spreads = [expected_cross_entropy(classes, std) for std in (0.5, 1.0, 2.0, 4.0)]
    assert spreads == sorted(spreads) and spreads[-1] > spreads[0] + 1


def test_classes_only_from_a_mean_classification_loss() -> None:
    from lightning_init.check.classes import ClassificationLosses

    losses = ClassificationLosses()
    logits, labels = torch.zeros(4, 5), torch.tensor([0, 1, 2, 3])
    with losses.recording():
        nn.functional.nll_loss(torch.log_softmax(logits, 1), labels)
    assert losses.classes == 5
    with losses.recording():
        nn.functional.cross_entropy(logits, labels, reduction="sum")
    assert losses.classes is None
    with losses.recording():
        nn.functional.cross_entropy(logits, labels)
        nn.functional.cross_entropy(torch.zeros(4, 3), labels.clamp(max=2))
    assert losses.classes is None  # two different C: no single ln(C)


def test_the_moved_parameters_pass_leaves_no_trace() -> None:
    from lightning_init import weights_fingerprint

    model = _funnel()
    before = weights_fingerprint(model)
    rng = torch.get_rng_state()
    check_init(model, {"input_ids": _tokens()})
    assert weights_fingerprint(model) == before and torch.equal(torch.get_rng_state(), rng)


def test_one_post_norm_sum_is_no_stream() -> None:
    """XLNet normalizes right after its first block's sum (no norm before the first attention):
    its attention adds 0.7% of the raw embedding there, by its own init; the embedding's scale
    ends at that norm, so no stream verdict."""
    torch.manual_seed(0)
    model = transformers.XLNetLMHeadModel(transformers.XLNetConfig(
        vocab_size=VOCAB, d_model=64, n_layer=2, n_head=4, d_inner=128))
    report = check_init(model, {"input_ids": _tokens()})
    assert report.ok, _messages(report)


def test_layer_scale_branches_are_judged_before_their_scale() -> None:
    torch.manual_seed(0)
    model = GatedDecoder(VOCAB, 32, 1e-4, per_channel=True, embed_std=0.02)  # LayerScale
    report = check_init(model, _tokens())
    assert not [problem for problem in report.problems if problem.kind == "embedding"], \
        _messages(report)
    with torch.no_grad():
        model.embed.weight.normal_(0.0, 100.0)
    found = [problem for problem in check_init(model, _tokens()).problems
             if problem.kind == "embedding"]
    assert found and found[0].layers == ("embed",)


def test_an_embedding_finding_can_be_ignored_by_kind() -> None:
    model = _longformer()
    with torch.no_grad():
        model.longformer.embeddings.word_embeddings.weight.normal_(0.0, 100.0)
    report = check_init(model, {"input_ids": _tokens()},
                        ignore="embedding:longformer.embeddings.*")
    assert [problem.kind for problem in report.ignored] == ["embedding"]


class _AuxiliaryAfterHead(nn.Module):
    """A classifier whose head's bias is spread wide, then an auxiliary projection called
    after it and kept aside (a probe for a regularizer): the model returns the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.head = nn.Linear(16, 10)
        self.aux = nn.Linear(16, 4)
        with torch.no_grad():
            self.head.bias.normal_(0.0, 8.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.body(x)
        logits = self.head(hidden)
        self.aux_out = self.aux(hidden)
        return logits


def test_the_loss_advice_blames_the_output_layer_not_the_last_layer_called() -> None:
    torch.manual_seed(0)
    labels = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(0))
    report = check_init(_AuxiliaryAfterHead(), torch.randn(16, 8), num_classes=10,
                        loss_fn=nn.functional.cross_entropy, target=labels)
    (loss,) = [problem for problem in report.problems if problem.kind == "loss"]
    assert "the bias of `head`" in loss.message, loss.message
    assert "`aux`" not in loss.message
    # the logits' scale is read from the output layer by data flow, and it is the one named
    assert loss.layers == ("head",)
    assert "the output layer `head` gives outputs of std" in loss.message
