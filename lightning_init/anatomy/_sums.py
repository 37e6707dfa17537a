"""The additions that embeddings' outputs flow into, from the traced nodes: which embeddings
each operand carries and both operands' rms just before the add (the check's embedding
verdict judges an embedding's scale by them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lightning_init.anatomy._graph import ADDS, SCALINGS
from lightning_init.anatomy._trace import Node
from lightning_init.anatomy.record import EmbeddingSum

if TYPE_CHECKING:
    from lightning_init.anatomy._read import Reader

__all__ = ["embedding_sums"]

_MULS = frozenset({"mul", "__mul__", "__rmul__"})


def embedding_sums(reader: Reader) -> list[EmbeddingSum]:
    """Each addition an embedding's output reaches through pass-throughs (reshapes, casts,
    dropout, scalings by a number or a one-element parameter) and earlier such additions, in
    pass order. An operand carries the embeddings whose outputs flow into it that way."""
    carried: dict[int, tuple[str, ...]] = {}
    sums: list[EmbeddingSum] = []
    for node in reader.nodes:
        if node.role == "embedding":
            carried[node.index] = (reader.site(node.index),)
            continue
        if not any(parent in carried for parent in node.parents):
            continue
        found = _sum(reader, node, carried)
        if found is not None:
            sums.append(found)
            carried[node.index] = tuple(dict.fromkeys((*found.stream, *found.other)))
        elif _keeps_scale(reader, node):
            carried[node.index] = carried[node.parents[0]]
    return sums


def _sum(reader: Reader, node: Node, carried: dict[int, tuple[str, ...]]
         ) -> EmbeddingSum | None:
    """The sum a node makes of a carrying operand and another one (a traced tensor or a
    parameter), or ``None``."""
    if node.kind != "op" or node.name not in ADDS:
        return None
    nodes = reader.nodes
    if len(node.parents) == 2:
        first, second = (carried.get(parent, ()) for parent in node.parents)
        stream, other = node.parents if first else node.parents[::-1]
        return EmbeddingSum(first or second, second if first else (), nodes[stream].rms,
                            nodes[other].rms if other in carried else _ungated(reader, other))
    if len(node.parents) == 1 and len(node.params) == 1:  # x + self.position (a parameter)
        param = _parameter(reader, node.params[0])
        rms = None if param is None else float(param.detach().float().square().mean().sqrt())
        return EmbeddingSum(carried[node.parents[0]], (), nodes[node.parents[0]].rms, rms)
    return None


def _keeps_scale(reader: Reader, node: Node) -> bool:
    """An op whose output is still its one input, at a scale it sets: a pass-through, or a
    scaling by a number or by a one-element parameter (``* sqrt(d)``, a learned scalar)."""
    if reader.graph.is_pass(node.index):
        return True
    if node.kind != "op" or node.name not in SCALINGS or len(node.parents) != 1:
        return False
    params = [_parameter(reader, name) for name in node.params]
    return all(param is not None and param.numel() == 1 for param in params)


def _ungated(reader: Reader, index: int) -> float | None:
    """An operand's rms; for a tensor multiplied by a learnable scale of at most one dimension,
    that of the tensor (the scale is a gate that learns its own size; a closed one, 0)."""
    node = reader.nodes[index]
    if node.kind == "op" and node.name in _MULS and len(node.parents) == 1 \
            and len(node.params) == 1 and node.rms:
        param = _parameter(reader, node.params[0])
        if param is not None and param.dim() <= 1:
            return reader.nodes[node.parents[0]].rms
    return node.rms


def _parameter(reader: Reader, name: str) -> torch.Tensor | None:
    owner, _, leaf = name.rpartition(".")
    module = reader.modules.get(owner)
    value = getattr(module, leaf, None) if module is not None else None
    return value if isinstance(value, torch.Tensor) else None
