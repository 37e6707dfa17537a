"""The embedding verdict: each embedding's output scale against what it is summed with.

An embedding is a lookup: its output enters the network at the scale its table was drawn at,
and nothing in front of it rescales it. Two sums judge that scale:

- **partners**: embeddings summed with each other (words, positions, token types, before the
  embedding LayerNorm of BERT-style encoders or straight into a decoder's stream), or with a
  learned position table added as a whole parameter, where an input projection's output (a
  patch embedding's convolution) counts as an embedding (ViT's patches and
  ``position_embeddings``). When one
  sum operand's root-mean-square is more than ``max_embedding_ratio`` (100) times the other's,
  the smaller carries less than 1e-4 of the sum's variance: a LayerNorm after the sum keeps
  the larger one and the positions (or token types) are lost.
- **the stream**: in a pre-norm network the embedding's output is the residual stream that
  every block adds its branch to, and the final norm hands the head the stream's direction.
  When every branch (two or more) adds less than ``1 / max_embedding_ratio`` of the stream's
  rms, the blocks change nothing the head sees: the model starts as a lookup table, and every
  block must grow its weights by the same factor before it matters.

The sums are read from the model's anatomy (:mod:`lightning_init.anatomy`), traced in the
check's own pass where the model holds an embedding: each addition that an embedding's output
reaches through scalings by a number (``* sqrt(d)``), dropout, casts and reshapes, with both
operands' root-mean-square just before it (:class:`~lightning_init.anatomy.EmbeddingSum`). A
branch that adds exactly zero (a zero-init gate) is left out; a branch multiplied by a
learnable scalar or per-channel scale (LayerScale, ReZero) is judged by what the scale
multiplies: the scale is a gate that learns its own size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from lightning_init.anatomy import (
    Anatomy,
    EmbeddingSum,
    anatomy_of_pass,
    is_embedding,
    kind_of,
)
from lightning_init.check.records import CheckProblem

__all__ = ["embedding_problems", "traced_pass"]

_TYPICAL = 1.0  # N(0, 1), the widest textbook embedding draw (T5); above it an output is loud
# Additions into one stream from which it is a residual stream across blocks. A single sum
# normalized right away (XLNet's post-norm first block: LayerNorm(h + attention(h))) is left
# to what follows the norm: the embedding's scale ends there.
_STREAM = 2


def traced_pass(model: nn.Module, inputs: Any,
                run: Callable[[], tuple[Any, str, Any]]) -> tuple[Anatomy | None, Any]:
    """Make the check's pass ``run()`` (``(loss or None, source, output)``), traced by the
    anatomy where ``model`` holds an embedding or a table (a parameter of 2 or more dimensions
    that no weight layer owns: a learned position table); ``(anatomy or None, what run
    returned)``."""
    if not any(is_embedding(module) or _holds_table(module) for module in model.modules()):
        return None, run()

    def pass_() -> tuple[Any, tuple[Any, str, Any]]:
        result = run()
        return (result[2] if result[0] is None else result[0]), result

    return anatomy_of_pass(model, inputs, pass_)


def _holds_table(module: nn.Module) -> bool:
    """Whether a module of no registered kind owns a parameter of 2 or more dimensions."""
    return kind_of(module) is None and any(
        param.dim() >= 2 for param in module.parameters(recurse=False))


def _loudest(names: Sequence[str], own: dict[str, float]) -> str:
    return max(names, key=lambda name: own.get(name, 0.0))


def _std(value: float) -> str:
    return f"{value:.3g}"


class _Sums:
    """The anatomy's embedding facts the verdict reads, on the host."""

    def __init__(self, anatomy: Anatomy) -> None:
        sites = anatomy.embeddings
        self.own = {name: site.output_rms or 0.0 for name, site in sites.items()}
        self.sums: list[EmbeddingSum] = anatomy.embedding_sums
        self._tables = {name: site.table for name, site in sites.items()}

    def table(self, name: str) -> Any:
        """What identifies the embedding's table: modules sharing one are blamed once."""
        return self._tables.get(name, name)


def _partner_problems(read: _Sums, limit: float) -> list[CheckProblem]:
    problems: list[CheckProblem] = []
    blamed: set[Any] = set()
    for found in read.sums:
        stream_rms, other_rms = found.stream_rms or 0.0, found.other_rms or 0.0
        other = found.other or ((found.table,) if found.table else ())
        if not other or min(stream_rms, other_rms) <= 0:
            continue
        (loud, loud_rms), (quiet, quiet_rms) = sorted(
            [(found.stream, stream_rms), (other, other_rms)], key=lambda item: -item[1])
        if loud_rms <= limit * quiet_rms:
            continue
        big, small = _loudest(loud, read.own), _loudest(quiet, read.own)
        culprit = _culprit(read, found, big, small, loud_rms)
        if read.table(culprit) in blamed:
            continue
        blamed.add(read.table(culprit))
        share = (quiet_rms / loud_rms) ** 2
        if culprit == big:
            fix = (f"draw `{big}` from N(0, 0.02) (BERT, GPT-2), or at the scale of "
                   f"`{small}` (std {_std(quiet_rms)})")
        else:
            fix = f"draw `{small}` at the scale of `{big}` (std {_std(loud_rms)})" + (
                ", or both from N(0, 0.02) (BERT, GPT-2)" if _drawn(read, found, big) else "")
        problems.append(CheckProblem(
            "embedding",
            (culprit, *(name for name in (big, small) if name != culprit)),
            f"`{big}` (output std {_std(loud_rms)}) is summed with `{small}` (std "
            f"{_std(quiet_rms)}): {loud_rms / quiet_rms:.3g}x larger, so `{small}` carries "
            f"{share:.1g} of the sum's variance and what it encodes (positions, token types) "
            f"is lost (expected: within {limit:g}x of each other) -> {fix}",
        ))
    return problems


def _drawn(read: _Sums, found: EmbeddingSum, name: str) -> bool:
    """Whether ``name`` is drawn as a table (a lookup, a position parameter), not an input
    projection whose output's scale the input sets."""
    return name in read.own or name == found.table


def _culprit(read: _Sums, found: EmbeddingSum, big: str, small: str, loud_rms: float) -> str:
    """The louder operand when it is louder than any textbook table, else the quieter; never
    an input projection when the other operand is a table."""
    culprit = big if loud_rms > _TYPICAL else small
    if not _drawn(read, found, culprit):
        return small if culprit == big else big
    return culprit


def _stream_problems(read: _Sums, limit: float, blamed: set[Any]) -> list[CheckProblem]:
    """Streams that no branch moves: every addition into them below 1/limit of their rms."""
    largest: dict[tuple[str, ...], tuple[float, float, int]] = {}
    for found in read.sums:
        stream_rms, branch_rms = found.stream_rms or 0.0, found.other_rms or 0.0
        if found.other or found.table or branch_rms <= 0 or stream_rms <= 0:
            continue
        key = tuple(sorted(found.stream))
        ratio, rms, count = largest.get(key, (0.0, stream_rms, 0))
        largest[key] = (max(ratio, branch_rms / stream_rms), max(rms, stream_rms), count + 1)
    problems = []
    for names, (ratio, stream_rms, count) in largest.items():
        culprit = _loudest(names, read.own)
        if count < _STREAM or ratio * limit >= 1 or read.table(culprit) in blamed:
            continue
        blamed.add(read.table(culprit))
        problems.append(CheckProblem(
            "embedding",
            (culprit,),
            f"`{culprit}` (output std {_std(read.own.get(culprit, stream_rms))}) sets the scale "
            f"of the stream it enters (rms {_std(stream_rms)}), and the {count} branch(es) "
            f"added to that stream add at most {ratio:.2g} of its rms each (expected: at least "
            f"1/{limit:g}): the blocks change nothing that the final norm and the head see, and "
            f"must grow their weights by {1 / ratio:.2g}x before they do -> draw `{culprit}` "
            f"from N(0, 0.02) (GPT-2, BERT, LLaMA), the scale of the branches' outputs",
        ))
    return problems


def embedding_problems(anatomy: Anatomy | None, thresholds: dict[str, float]
                       ) -> list[CheckProblem]:
    """The ``embedding`` problems of a pass, read from its anatomy (``None``: no embedding).

    Example:
        >>> from lightning_init.anatomy import EmbeddingSite
        >>> anatomy = Anatomy(
        ...     embeddings={"words": EmbeddingSite("words", 64, ("positions",), output_rms=99.0),
        ...                 "positions": EmbeddingSite("positions", 64, ("words",),
        ...                                            output_rms=0.017)},
        ...     embedding_sums=[EmbeddingSum(("words",), ("positions",), 99.0, 0.017)])
        >>> [p.layers for p in embedding_problems(anatomy, {"max_embedding_ratio": 100.0})]
        [('words', 'positions')]
    """
    if anatomy is None:
        return []
    read = _Sums(anatomy)
    limit = thresholds["max_embedding_ratio"]
    partners = _partner_problems(read, limit)
    blamed = {read.table(problem.layers[0]) for problem in partners}
    return partners + _stream_problems(read, limit, blamed)
