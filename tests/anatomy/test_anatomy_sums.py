"""The anatomy's embedding sums (each addition an embedding's output flows into, with both
operands' scales) and its reading of a pass the caller makes (the check's own forward)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from lightning_init.anatomy import EmbeddingSum, anatomy_of, anatomy_of_pass
from lightning_init.check.measure import recording
from lightning_init.runtime.no_trace import no_side_effects

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

_IDS = {"input_ids": torch.randint(0, 200, (4, 12), generator=torch.Generator().manual_seed(0))}


def _gpt2() -> nn.Module:
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=200, n_positions=64))


def _rms(tensor: torch.Tensor) -> float:
    return float(tensor.detach().float().square().mean().sqrt())


def test_gpt2_words_and_positions_then_four_branches_on_their_stream() -> None:
    model = _gpt2()
    anatomy = anatomy_of(model, _IDS)
    words, positions = ("transformer.wte",), ("transformer.wpe",)
    first, *branches = anatomy.embedding_sums
    assert (first.stream, first.other) == (words, positions)
    assert [(s.stream, s.other) for s in branches] == [(words + positions, ())] * 4
    with torch.no_grad():
        word_rms = _rms(model.transformer.wte(_IDS["input_ids"]))
        position_rms = _rms(model.transformer.wpe(torch.arange(12)))
    assert first.stream_rms == pytest.approx(word_rms, rel=1e-4)
    assert first.other_rms == pytest.approx(position_rms, rel=1e-4)
    site = anatomy.embeddings["transformer.wte"]
    assert site.output_rms == pytest.approx(word_rms, rel=1e-4)
    assert site.table == ("lm_head.weight", "transformer.wte.weight")
    # each branch against the stream it enters: the anatomy's branches say the same
    assert [(s.stream_rms, s.other_rms) for s in branches] == [
        (b.stream_rms, b.branch_rms) for b in anatomy.branches]


class _Scaled(nn.Module):
    """Words times sqrt(d), positions broadcast onto them (``expand_as``, XLM), a constant
    sinusoidal table added (a buffer, XGLM), then two branches behind LayerScale (1e-4 per
    channel) and one behind a closed scalar gate."""

    def __init__(self, width: int = 16, length: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, width)
        self.positions = nn.Embedding(length, width)
        angles = torch.arange(length)[:, None] / 100 ** (torch.arange(width) / width)
        self.register_buffer("table", torch.sin(angles))
        self.branches = nn.ModuleList(nn.Linear(width, width) for _ in range(3))
        self.scales = nn.ParameterList([nn.Parameter(torch.full((width,), 1e-4)),
                                        nn.Parameter(torch.full((width,), 1e-4)),
                                        nn.Parameter(torch.zeros(()))])
        self.width = width

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        stream = self.embed(tokens) * self.width ** 0.5
        positions = torch.arange(tokens.shape[1])[None]
        stream = stream + self.positions(positions).expand_as(stream)
        stream = stream + self.table[: tokens.shape[1]]
        for branch, scale in zip(self.branches, self.scales, strict=True):
            stream = stream + scale * branch(stream)
        return stream


def test_scalings_constants_and_gated_branches() -> None:
    torch.manual_seed(0)
    model = _Scaled()
    tokens = torch.randint(0, 50, (4, 6))
    sums = anatomy_of(model, tokens).embedding_sums
    both = ("embed", "positions")
    assert [(s.stream, s.other) for s in sums] == [
        (("embed",), ("positions",)), (both, ()), (both, ()), (both, ()), (both, ())]
    with torch.no_grad():
        words = model.embed(tokens) * 4.0
        stream = words + model.positions(torch.arange(6)) + model.table
        branch = model.branches[0](stream)
    assert sums[0].stream_rms == pytest.approx(_rms(words), rel=1e-4)
    assert sums[1].other_rms == pytest.approx(_rms(model.table), rel=1e-4)  # the constant
    assert sums[2].stream_rms == pytest.approx(_rms(stream), rel=1e-4)
    assert sums[2].other_rms == pytest.approx(_rms(branch), rel=1e-4)  # not 1e-4 of it
    assert sums[4].other_rms == 0.0  # a closed gate adds exactly zero


def test_the_callers_pass_is_read_as_a_pass_of_its_own() -> None:
    """Traced inside the check's pass (grad on, the check's hooks measuring every module),
    the anatomy is the one its own pass reads: the hooks' arithmetic is not the model's."""
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=200))
    alone = anatomy_of(model, _IDS)

    def run() -> tuple[object, torch.Tensor]:
        output = model(**_IDS)
        return output, output.logits

    with no_side_effects(model), recording(model):
        inside, logits = anatomy_of_pass(model, _IDS, run)
    assert logits.requires_grad
    assert len(inside._nodes) == len(alone._nodes)
    assert inside.describe() == alone.describe()
    assert inside.embedding_sums == alone.embedding_sums
    assert isinstance(inside.embedding_sums[0], EmbeddingSum)


# ------------------------------------------------------------------ position tables
def _vit() -> nn.Module:
    torch.manual_seed(0)
    return transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, num_labels=10))


class _TinyGPT(nn.Module):
    """minGPT's layout: a token lookup, a learned position table added as a parameter, then
    pre-norm blocks of one branch each."""

    def __init__(self, width: int = 16, length: int = 8, blocks: int = 2) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(40, width)
        self.pos_emb = nn.Parameter(torch.zeros(1, length, width).normal_(0.0, 0.02))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(blocks))
        self.mlps = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.head = nn.Linear(width, 40)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        stream = self.tok_emb(tokens) + self.pos_emb[:, : tokens.shape[1]]
        for norm, mlp in zip(self.norms, self.mlps, strict=True):
            stream = stream + mlp(norm(stream))
        return self.head(stream)


class _Mixer(nn.Module):
    """A patch projection whose output is the stream itself: branches added to it, no table."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 2, stride=2)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(2))
        self.mlps = nn.ModuleList(nn.Linear(width, width) for _ in range(2))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        stream = self.stem(images).flatten(2).transpose(1, 2)
        for norm, mlp in zip(self.norms, self.mlps, strict=True):
            stream = stream + mlp(norm(stream))
        return stream.mean(1)


def test_a_patch_projection_and_the_position_table_added_to_it() -> None:
    """ViT: the patch convolution's output, made a sequence (flatten, transpose, a class token
    in front by ``cat``), plus ``position_embeddings`` as a whole parameter: one sum, with
    the table named and both scales; the stream after it is no embedding's."""
    model = _vit()
    images = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    anatomy = anatomy_of(model, images)
    (found,) = anatomy.embedding_sums
    table = "vit.embeddings.position_embeddings"
    assert found.stream == ("vit.embeddings.patch_embeddings.projection",)
    assert (found.other, found.table) == ((), table)
    assert anatomy.position_tables() == [found]
    embeddings = model.vit.embeddings
    with torch.no_grad():
        patches = embeddings.patch_embeddings(images)
        tokens = torch.cat([embeddings.cls_token.expand(4, -1, -1), patches], dim=1)
    assert found.stream_rms == pytest.approx(_rms(tokens), rel=1e-4)
    assert found.other_rms == pytest.approx(_rms(embeddings.position_embeddings), rel=1e-4)
    assert f"position table {table} added to" in anatomy.describe()


def test_a_position_parameter_summed_with_a_lookup_is_a_table_not_a_branch() -> None:
    model = _TinyGPT()
    tokens = torch.randint(0, 40, (2, 8), generator=torch.Generator().manual_seed(0))
    sums = anatomy_of(model, tokens).embedding_sums
    assert [(s.stream, s.other, s.table) for s in sums] == [
        (("tok_emb",), (), "pos_emb"), (("tok_emb",), (), ""), (("tok_emb",), (), "")]
    assert sums[0].other_rms == pytest.approx(_rms(model.pos_emb), rel=1e-4)


def test_a_projection_that_starts_the_stream_has_no_sum_of_its_own() -> None:
    """A mixer's stem: its output is the residual stream, and the branches added to it are
    no position table; a projection's carry ends where its first sum is with a branch."""
    anatomy = anatomy_of(_Mixer(), torch.randn(2, 1, 8, 8))
    assert anatomy.embedding_sums == []
    assert len(anatomy.branches) == 2


class _Interpolated(nn.Module):
    """DINOv2's layout: the position table, a class position and a 4x4 grid, interpolated to
    the image's grid and put back together before it is added to the patches."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, width, 2, stride=2)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.randn(1, 17, width) * 0.02)
        self.head = nn.Linear(width, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = self.proj(images).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(images), -1, -1), patches], dim=1)
        grid = self.pos[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
        grid = nn.functional.interpolate(grid, size=(8, 8), mode="bicubic")
        table = torch.cat([self.pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 64, -1)], 1)
        return self.head((tokens + table).mean(1))


def test_a_table_interpolated_to_the_image_is_still_the_table() -> None:
    (found,) = anatomy_of(_Interpolated(), torch.randn(2, 1, 16, 16)).embedding_sums
    assert (found.stream, found.table) == (("proj",), "pos")
