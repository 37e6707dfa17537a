"""The embedding verdict: each embedding's output scale against what it is summed with.

An embedding is a lookup: its output enters the network at the scale its table was drawn at,
and nothing in front of it rescales it. Two sums judge that scale:

- **partners**: embeddings summed with each other (words, positions, token types, before the
  embedding LayerNorm of BERT-style encoders or straight into a decoder's stream). When one
  sum operand's root-mean-square is more than ``max_embedding_ratio`` (100) times the other's,
  the smaller carries less than 1e-4 of the sum's variance: a LayerNorm after the sum keeps
  the larger one and the positions (or token types) are lost.
- **the stream**: in a pre-norm network the embedding's output is the residual stream that
  every block adds its branch to, and the final norm hands the head the stream's direction.
  When every branch (two or more) adds less than ``1 / max_embedding_ratio`` of the stream's
  rms, the blocks change nothing the head sees: the model starts as a lookup table, and every
  block must grow its weights by the same factor before it matters.

The sums are read from the check's own pass: a ``TorchFunctionMode`` follows each embedding's
output through additions, scalings by a number (``* sqrt(d)``), dropout and dtype casts, and
records the root-mean-square of both operands of every addition it meets (0-d tensors on the
device, one host transfer with the rest). A branch that adds exactly zero (a zero-init gate)
is left out; a branch multiplied by a learnable scalar or per-channel scale (LayerScale, ReZero)
is judged by what the scale multiplies: the scale is a gate that learns its own size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from lightning_init.check.measure import rms as _rms
from lightning_init.check.records import CheckProblem
from lightning_init.runtime.hooks import HookHandles, forward_hooks

__all__ = ["EmbeddingFlow", "embedding_flow", "embedding_problems"]

_ADDS = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__"})
_SCALES = frozenset({"mul", "mul_", "__mul__", "__rmul__", "__imul__", "div", "div_",
                     "__truediv__", "__itruediv__"})
_PASSES = frozenset({"dropout", "to", "contiguous", "clone", "type_as", "float", "half",
                     "bfloat16", "double", "expand", "expand_as", "view", "reshape"})
_MULS = frozenset({"mul", "__mul__", "__rmul__"})
_EMBEDDINGS = (nn.Embedding,)
_TYPICAL = 1.0  # N(0, 1), the widest textbook embedding draw (T5); above it an output is loud
# Additions into one stream from which it is a residual stream across blocks. A single sum
# normalized right away (XLNet's post-norm first block: LayerNorm(h + attention(h))) is left
# to what follows the norm: the embedding's scale ends there.
_STREAM = 2


@dataclass
class EmbeddingFlow:
    """What the pass's additions did with the embeddings' outputs (0-d tensors until
    :meth:`to_host`).

    Attributes:
        own: each called embedding's name and output rms, in call order.
        tables: each embedding's weight (its ``id``): modules sharing one table are blamed
            once.
        sums: ``(stream, other, stream rms, other rms)`` per addition: the embeddings the
            stream operand carries, those the other operand carries (empty for a branch).
    """

    own: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, int] = field(default_factory=dict)
    sums: list[tuple[tuple[str, ...], tuple[str, ...], Any, Any]] = field(default_factory=list)

    def tensors(self) -> list[torch.Tensor]:
        """Every measured number, in a fixed order (for the check's one host transfer)."""
        return [*self.own.values(), *(value for _, _, a, b in self.sums for value in (a, b))]

    def to_host(self, values: Sequence[float]) -> None:
        """Replace the tensors by ``values`` (as :meth:`tensors` ordered them)."""
        numbers = iter(values)
        self.own = {name: next(numbers) for name in self.own}
        self.sums = [(stream, other, next(numbers), next(numbers))
                     for stream, other, _, _ in self.sums]


def _keeps_scale(name: str, other: Any) -> bool:
    """An op whose output is still the embedding's, at a scale the op sets: a scaling by a
    number (``* sqrt(d)``), dropout, a cast."""
    if name in _SCALES:
        return not isinstance(other, torch.Tensor) or other.numel() == 1
    return name in _PASSES


class _Follow(TorchFunctionMode):
    """Follows the embeddings' outputs through additions and scalings."""

    def __init__(self, flow: EmbeddingFlow) -> None:
        super().__init__()
        self.flow = flow
        self.origin: dict[int, tuple[str, ...]] = {}
        self.gated: dict[int, torch.Tensor] = {}  # a branch times a learnable scale: its rms
        self.alive: list[torch.Tensor] = []  # no id reuse while the pass runs

    def mark(self, tensor: Any, names: tuple[str, ...]) -> None:
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and names:
            self.origin[id(tensor)] = tuple(dict.fromkeys(
                (*self.origin.get(id(tensor), ()), *names)))
            self.alive.append(tensor)

    def _of(self, value: Any) -> tuple[str, ...]:
        return self.origin.get(id(value), ()) if isinstance(value, torch.Tensor) else ()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None
                           ) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if not self.origin or not args:
            return result
        name = getattr(func, "__name__", "")
        other = args[1] if len(args) > 1 else kwargs.get("other")
        first = self._of(args[0])
        if name in _ADDS and isinstance(other, torch.Tensor) and isinstance(args[0], torch.Tensor):
            second = self._of(other)
            if first or second:
                stream, branch = (args[0], other) if first else (other, args[0])
                self.flow.sums.append((first or second, second if first else (),
                                       _rms(stream), self._ungated(branch)))
                self.mark(result, (*first, *second))
        elif first and _keeps_scale(name, other):
            self.mark(result, first)
        elif name in _MULS:
            self._gate(result, args[0], other)
        return result

    def _gate(self, result: Any, one: Any, other: Any) -> None:
        """Remember a branch multiplied by a learnable scale (a scalar or per-channel
        parameter: LayerScale, Touvron et al. 2021; ReZero, Bachlechner et al. 2020)."""
        for scale, value in ((one, other), (other, one)):
            if isinstance(scale, nn.Parameter) and scale.dim() <= 1 \
                    and isinstance(value, torch.Tensor) and not self._of(value):
                self.gated[id(result)] = _rms(scale)
                self.alive.append(result)
                return

    def _ungated(self, branch: torch.Tensor) -> torch.Tensor:
        """A branch's rms before its learnable scale: the scale is a gate that learns its own
        size; what it multiplies is judged against the stream."""
        rms = _rms(branch)
        scale = self.gated.get(id(branch))
        return rms if scale is None else torch.where(scale > 0, rms / scale, rms)


@contextlib.contextmanager
def embedding_flow(model: nn.Module) -> Iterator[EmbeddingFlow | None]:
    """Follow the outputs of ``model``'s embeddings through the pass run inside (``None``:
    the model has no embedding)."""
    named = [(name, module) for name, module in model.named_modules()
             if isinstance(module, _EMBEDDINGS)]
    if not named:
        yield None
        return
    flow = EmbeddingFlow(tables={name: id(module.weight) for name, module in named})
    follow = _Follow(flow)

    def hook_for(name: str, _module: nn.Module) -> Any:
        def hook(_m: nn.Module, _args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.is_floating_point():
                if name not in flow.own:
                    flow.own[name] = _rms(output)
                follow.mark(output, (name,))
        return hook

    hooks: HookHandles = forward_hooks(named, hook_for)
    try:
        with follow:
            yield flow
    finally:
        hooks.remove()
        follow.origin.clear()
        follow.gated.clear()
        follow.alive.clear()


def _loudest(names: Sequence[str], own: dict[str, float]) -> str:
    return max(names, key=lambda name: own.get(name, 0.0))


def _std(value: float) -> str:
    return f"{value:.3g}"


def _partner_problems(flow: EmbeddingFlow, limit: float) -> list[CheckProblem]:
    problems: list[CheckProblem] = []
    blamed: set[Any] = set()
    for stream, other, stream_rms, other_rms in flow.sums:
        if not other or min(stream_rms, other_rms) <= 0:
            continue
        (loud, loud_rms), (quiet, quiet_rms) = sorted(
            [(stream, stream_rms), (other, other_rms)], key=lambda item: -item[1])
        if loud_rms <= limit * quiet_rms:
            continue
        big, small = _loudest(loud, flow.own), _loudest(quiet, flow.own)
        culprit = big if loud_rms > _TYPICAL else small
        if flow.tables.get(culprit, culprit) in blamed:
            continue
        blamed.add(flow.tables.get(culprit, culprit))
        share = (quiet_rms / loud_rms) ** 2
        if culprit == big:
            fix = (f"draw `{big}` from N(0, 0.02) (BERT, GPT-2), or at the scale of "
                   f"`{small}` (std {_std(quiet_rms)})")
        else:
            fix = (f"draw `{small}` at the scale of `{big}` (std {_std(loud_rms)}), or both "
                   "from N(0, 0.02) (BERT, GPT-2)")
        problems.append(CheckProblem(
            "embedding",
            (culprit, *(name for name in (big, small) if name != culprit)),
            f"`{big}` (output std {_std(loud_rms)}) is summed with `{small}` (std "
            f"{_std(quiet_rms)}): {loud_rms / quiet_rms:.3g}x larger, so `{small}` carries "
            f"{share:.1g} of the sum's variance and what it encodes (positions, token types) "
            f"is lost (expected: within {limit:g}x of each other) -> {fix}",
        ))
    return problems


def _stream_problems(flow: EmbeddingFlow, limit: float, blamed: set[Any]
                     ) -> list[CheckProblem]:
    """Streams that no branch moves: every addition into them below 1/limit of their rms."""
    largest: dict[tuple[str, ...], tuple[float, float, int]] = {}
    for stream, other, stream_rms, branch_rms in flow.sums:
        if other or branch_rms <= 0 or stream_rms <= 0:
            continue
        key = tuple(sorted(stream))
        ratio, rms, count = largest.get(key, (0.0, stream_rms, 0))
        largest[key] = (max(ratio, branch_rms / stream_rms), max(rms, stream_rms), count + 1)
    problems = []
    for names, (ratio, stream_rms, count) in largest.items():
        culprit = _loudest(names, flow.own)
        if count < _STREAM or ratio * limit >= 1 or flow.tables.get(culprit, culprit) in blamed:
            continue
        blamed.add(flow.tables.get(culprit, culprit))
        problems.append(CheckProblem(
            "embedding",
            (culprit,),
            f"`{culprit}` (output std {_std(flow.own.get(culprit, stream_rms))}) sets the scale "
            f"of the stream it enters (rms {_std(stream_rms)}), and the {count} branch(es) "
            f"added to that stream add at most {ratio:.2g} of its rms each (expected: at least "
            f"1/{limit:g}): the blocks change nothing that the final norm and the head see, and "
            f"must grow their weights by {1 / ratio:.2g}x before they do -> draw `{culprit}` "
            f"from N(0, 0.02) (GPT-2, BERT, LLaMA), the scale of the branches' outputs",
        ))
    return problems


def embedding_problems(flow: EmbeddingFlow | None, thresholds: dict[str, float]
                       ) -> list[CheckProblem]:
    """The ``embedding`` problems of a pass (``flow`` on the host: :meth:`EmbeddingFlow.to_host`).

    Example:
        >>> flow = EmbeddingFlow(own={"words": 99.0, "positions": 0.017},
        ...                      sums=[(("words",), ("positions",), 99.0, 0.017)])
        >>> [p.layers for p in embedding_problems(flow, {"max_embedding_ratio": 100.0})]
        [('words', 'positions')]
    """
    if flow is None:
        return []
    limit = thresholds["max_embedding_ratio"]
    partners = _partner_problems(flow, limit)
    blamed = {flow.tables.get(problem.layers[0], problem.layers[0]) for problem in partners}
    return partners + _stream_problems(flow, limit, blamed)
