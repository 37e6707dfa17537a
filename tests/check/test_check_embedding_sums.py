"""The embedding verdict's reading of the sums: what each embedding is summed with, at what
scale, and which additions into the stream count as branches.

These pin what the verdict reads from the pass (the numbers in its messages, tables shared by
several modules, zero-init gates, additions made in place), whichever part of the library
follows the data flow.
"""

from __future__ import annotations

import os
import re

import pytest
import torch
from _models import GatedDecoder
from torch import nn

from lightning_init import check_init
from lightning_init.check.report import InitCheckReport

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

BATCH, SEQ, VOCAB, WIDTH = 8, 16, 500, 32


def _tokens(seed: int = 1) -> torch.Tensor:
    return torch.randint(5, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(seed))


def _embedding_problems(report: InitCheckReport) -> list:
    return [problem for problem in report.problems if problem.kind == "embedding"]


def _longformer() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.LongformerConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        vocab_size=VOCAB, num_labels=3, attention_window=4, max_position_embeddings=66,
        pad_token_id=1)
    return transformers.LongformerForSequenceClassification(config)


def test_partner_message_gives_both_operands_scales() -> None:
    """Words at std 100 summed with positions at std 0.02 (transformers' init): the message
    gives each operand's measured output scale and their ratio."""
    model = _longformer()
    with torch.no_grad():
        model.longformer.embeddings.word_embeddings.weight.normal_(0.0, 100.0)
    (problem,) = _embedding_problems(check_init(model, {"input_ids": _tokens()}))
    found = re.search(r"\(output std ([\d.e+-]+)\) is summed with `([\w.]+)` \(std "
                      r"([\d.e+-]+)\): ([\d.e+-]+)x larger", problem.message)
    assert found, problem.message
    loud, partner, quiet, ratio = (float(found[1]), found[2], float(found[3]),
                                   float(found[4]))
    assert partner == "longformer.embeddings.position_embeddings"
    assert 90 < loud < 110 and 0.015 < quiet < 0.025
    assert ratio == pytest.approx(loud / quiet, rel=0.01)


class _SharedTable(nn.Module):
    """Two lookups sharing one table (an encoder's and a decoder's, like BART's and T5's),
    each summed with its own positions before a LayerNorm; an untied head."""

    def __init__(self) -> None:
        super().__init__()
        self.source = nn.Embedding(VOCAB, WIDTH)
        self.target = nn.Embedding(VOCAB, WIDTH)
        self.target.weight = self.source.weight
        self.source_positions = nn.Embedding(SEQ, WIDTH)
        self.target_positions = nn.Embedding(SEQ, WIDTH)
        for table in (self.source, self.source_positions, self.target_positions):
            nn.init.normal_(table.weight, std=0.02)
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(source.shape[1])
        encoded = self.norm(self.source(source) + self.source_positions(positions))
        decoded = self.norm(self.target(target) + self.target_positions(positions))
        return self.head(encoded + decoded)


def test_a_table_shared_by_two_lookups_is_blamed_once() -> None:
    torch.manual_seed(0)
    model = _SharedTable()
    inputs = (_tokens(1), _tokens(2))
    assert not _embedding_problems(check_init(model, inputs))
    with torch.no_grad():
        model.source.weight.normal_(0.0, 100.0)
    found = _embedding_problems(check_init(model, inputs))
    assert len(found) == 1, [problem.message for problem in found]
    assert found[0].layers[0] in ("source", "target")


def test_branches_that_add_exactly_zero_are_left_out_of_the_stream() -> None:
    """Zero-init gates hide the branches at init: no branch to judge the stream by, so no
    stream finding (the gates' note says they open at the first step)."""
    torch.manual_seed(0)
    model = GatedDecoder(VOCAB, WIDTH, 0.0)  # ReZero: scalar gates at zero
    with torch.no_grad():
        model.embed.weight.normal_(0.0, 100.0)
    report = check_init(model, _tokens())
    assert not _embedding_problems(report), [problem.message for problem in report.problems]
    assert any(note.startswith("deliberate zero-init") for note in report.notes)


def test_a_partner_added_in_place_is_measured_before_the_add() -> None:
    """BigBird adds its positions in place (``embeddings += position_embeddings``): the sum's
    operand is the stream before the add, not the sum (which would hide positions at std 100
    behind their own scale)."""
    torch.manual_seed(0)
    config = transformers.BigBirdConfig(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        vocab_size=VOCAB, num_labels=3, max_position_embeddings=64,
        attention_type="original_full")
    model = transformers.BigBirdForSequenceClassification(config)
    with torch.no_grad():
        model.bert.embeddings.position_embeddings.weight.normal_(0.0, 100.0)
    found = _embedding_problems(check_init(model, {"input_ids": _tokens()}))
    assert found, "positions at std 100 swamp the words: not caught"
    assert found[0].layers[0] == "bert.embeddings.position_embeddings"
    assert "N(0, 0.02)" in found[0].message


def test_a_position_table_drowned_by_the_patch_projection_is_named() -> None:
    """ViT: the patch projection's tokens summed with a learned ``position_embeddings``
    parameter (no ``nn.Embedding`` anywhere) are partners too; at 1e-4 the table is lost."""
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, num_labels=10))
    pixels = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert not _embedding_problems(check_init(model, pixels))  # transformers' own init
    with torch.no_grad():
        model.vit.embeddings.position_embeddings.normal_(0.0, 1e-4)
        model.vit.embeddings.patch_embeddings.projection.weight.normal_(0.0, 0.5)
    (problem,) = _embedding_problems(check_init(model, pixels))
    table = "vit.embeddings.position_embeddings"
    assert problem.layers[0] == table
    assert f"is summed with `{table}`" in problem.message
    assert f"draw `{table}` at the scale of" in problem.message


class _FunctionalLookups(nn.Module):
    """Tables as bare parameters, looked up by ``F.embedding`` (no ``nn.Embedding`` module)."""

    def __init__(self) -> None:
        super().__init__()
        self.words = nn.Parameter(torch.randn(VOCAB, WIDTH) * 100.0)
        self.positions = nn.Parameter(torch.randn(SEQ, WIDTH) * 0.02)
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        words = nn.functional.embedding(tokens, self.words)
        positions = nn.functional.embedding(torch.arange(tokens.shape[1]), self.positions)
        return self.head(self.norm(words + positions).mean(1))


def test_functional_lookups_of_bare_tables_are_traced_and_judged() -> None:
    torch.manual_seed(0)
    (problem,) = _embedding_problems(check_init(_FunctionalLookups(), _tokens()))
    assert problem.layers[0] == "words"
    assert "is summed with `positions`" in problem.message
