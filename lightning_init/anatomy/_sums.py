"""The additions that embeddings' outputs flow into, from the traced nodes: which embeddings
each operand carries and both operands' rms just before the add (the check's embedding
verdict judges an embedding's scale by them).

An input projection (a weight layer whose input is the model's input, through ops that learn
nothing: a patch embedding's convolution, a feature projection) plays an embedding's part up to
its first sum with a position table, a lookup or a constant: it is followed through the
reshapes that turn its output into a sequence (flatten, transpose, a ``cat`` with a class
token), and that sum is recorded; the stream after it is no embedding's."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from lightning_init.anatomy._graph import ADDS, SCALINGS
from lightning_init.anatomy._trace import Node
from lightning_init.anatomy.record import EmbeddingSum
from lightning_init.runtime.distributed import rms as rms_of

if TYPE_CHECKING:
    from lightning_init.anatomy._read import Reader

__all__ = ["embedding_sums"]

_MULS = frozenset({"mul", "__mul__", "__rmul__"})
# Ops whose output keeps their first argument's layout and meaning.
_SAME_LAYOUT = frozenset({"dropout", "to", "contiguous", "clone", "type_as", "float", "half",
                          "bfloat16", "double", "expand", "expand_as", "view", "reshape"})
# What turns an input projection's output into a sequence of tokens (a patch embedding's
# ``flatten(2).transpose(1, 2)``, a class token put in front by ``cat``).
_TO_SEQUENCE = _SAME_LAYOUT | {"flatten", "transpose", "permute", "unsqueeze", "squeeze",
                               "cat", "concat", "concatenate"}


def embedding_sums(reader: Reader) -> list[EmbeddingSum]:
    """Each addition an embedding's output reaches through ops that keep it (casts, views,
    dropout, scalings by a number or a one-element parameter) and earlier such additions, in
    pass order. An operand carries the embeddings whose outputs flow into it that way."""
    carried: dict[int, tuple[str, ...]] = {}
    single = _from_one_parameter(reader)
    starts = _input_projections(reader)
    projections = frozenset(starts.values())
    sums: list[EmbeddingSum] = []
    for node in reader.nodes:
        if node.role == "embedding" or node.index in starts:
            carried[node.index] = (reader.site(node.index),)
            continue
        if not any(parent in carried for parent in node.parents):
            continue
        found = _sum(reader, node, carried, single)
        if found is not None:
            names = tuple(dict.fromkeys((*found.stream, *found.other)))
            if projections.isdisjoint(names) or found.other or found.table:
                sums.append(found)  # a projection's sum with a branch is none of its own
            if not set(names) <= projections:  # a projection alone ends at its first sum
                carried[node.index] = names
        else:
            names = _follows(reader, node, carried, projections)
            if names:
                carried[node.index] = names
    return sums


def _input_projections(reader: Reader) -> dict[int, str]:
    """The nodes of weight layers fed by the model's input through ops that learn nothing
    (casts, reshapes, a fixed rescaling: no learned ancestry, ``Reader.learned``), with their
    names."""
    return {node.index: reader.site(node.index) for node in reader.nodes
            if node.role == "weight" and node.parents
            and not any(reader.learned[parent] for parent in node.parents)}


def _sum(reader: Reader, node: Node, carried: dict[int, tuple[str, ...]],
         single: dict[int, str]) -> EmbeddingSum | None:
    """The sum a node makes of a carrying operand and another one (a traced tensor, a
    parameter or a constant), or ``None``; ``single``: the nodes computed from one parameter
    alone (see :func:`_from_one_parameter`)."""
    if node.kind != "op" or node.name not in ADDS:
        return None
    nodes = reader.nodes
    if len(node.parents) == 2:
        first, second = (carried.get(parent, ()) for parent in node.parents)
        stream, other = node.parents if first else node.parents[::-1]
        table = _table(reader, (single[other],)) if other in single else ""
        return EmbeddingSum(first or second, second if first else (), nodes[stream].rms,
                            nodes[other].rms if other in carried else _ungated(reader, other),
                            table)
    if len(node.parents) != 1:
        return None
    if len(node.params) == 1:  # x + self.position (a parameter)
        param = _parameter(reader, node.params[0])
        rms = None if param is None else float(rms_of(param))
        table = _table(reader, node.params)
    elif node.constant_rms is not None:  # x + a constant (a sinusoidal position table)
        rms, table = node.constant_rms, ""
    else:
        return None
    return EmbeddingSum(carried[node.parents[0]], (), nodes[node.parents[0]].rms, rms, table)


def _from_one_parameter(reader: Reader) -> dict[int, str]:
    """The op nodes whose value is computed from one parameter alone, no input and no other
    parameter on the way (``pos[:, :n]``, ``pos.expand(...)``, a table interpolated to the
    image's size and a class position put in front of it), with that parameter's name."""
    single: dict[int, str] = {}
    for node in reader.nodes:
        if node.kind != "op" or not all(parent in single for parent in node.parents):
            continue
        names = {single[parent] for parent in node.parents} | set(node.params)
        if len(names) == 1:
            single[node.index] = names.pop()
    return single


def _table(reader: Reader, params: tuple[str, ...]) -> str:
    """The one parameter ``params`` name, when it is a table over positions (2-D or more, not
    one row: a learned bias of the width is no table), else ``""``."""
    param = _parameter(reader, params[0]) if len(params) == 1 else None
    if param is None or param.dim() < 2 or param.numel() == param.shape[-1]:
        return ""
    return params[0]


def _follows(reader: Reader, node: Node, carried: dict[int, tuple[str, ...]],
             projections: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """The embeddings a node's output still is, at a scale the node sets: a pass-through
    module (dropout), an op that keeps its first argument's layout (a cast, a view, dropout,
    ``expand_as``), a scaling by a number, a one-element tensor or parameter (``* sqrt(d)``, a
    learned scalar); ``()`` for anything else. A permuted or indexed output (an attention bias
    from a lookup) is no longer a sum operand of the stream; an input projection's output is
    followed through what makes it a sequence (``projections``: their names)."""
    sequence = _to_sequence(node, carried, projections)
    if sequence:
        return sequence
    first = carried.get(node.parents[0], ()) if node.parents else ()
    if node.kind == "module":
        return first if node.role == "pass" and len(node.parents) == 1 else ()
    if node.params and node.name not in SCALINGS:
        return ()
    if node.name in _SAME_LAYOUT:
        return first
    if node.name not in SCALINGS:
        return ()
    others = [reader.nodes[index].shape for index in node.parents[1:]]
    others += [tuple(param.shape) if param is not None else (0,)
               for param in (_parameter(reader, name) for name in node.params)]
    return first if all(math.prod(shape) == 1 for shape in others) else ()


def _to_sequence(node: Node, carried: dict[int, tuple[str, ...]],
                 projections: frozenset[str]) -> tuple[str, ...]:
    """An input projection's output made a sequence by ``node`` (a flatten, a transpose, a
    ``cat`` with a class token), or ``()``."""
    if node.kind != "op" or node.name not in _TO_SEQUENCE or node.params:
        return ()
    operands = [carried[parent] for parent in node.parents if parent in carried]
    if len(operands) != 1 or not set(operands[0]) <= projections:
        return ()
    return operands[0]


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
