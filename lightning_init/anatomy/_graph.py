"""Walks over the traced nodes: parents, children, pass-through ops, ancestry."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from lightning_init.anatomy._trace import ADDS, Node

__all__ = ["ADDS", "SCALINGS", "Graph"]

# One-input ops that change neither what a tensor is nor its scale's meaning.
_PASS_OPS = frozenset({
    "view", "reshape", "transpose", "permute", "contiguous", "flatten", "unflatten", "dropout",
    "to", "float", "half", "bfloat16", "type", "type_as", "clone", "expand", "expand_as",
    "squeeze", "unsqueeze", "__getitem__", "chunk", "split", "narrow", "select", "t",
    "movedim", "view_as", "reshape_as", "detach", "dropout1d", "dropout2d", "dropout3d",
    "alpha_dropout", "feature_alpha_dropout", "pad", "roll", "unbind", "tensor_split",
    "split_with_sizes", "swapaxes", "mT", "repeat", "tile"})
SCALINGS = frozenset({"mul", "__mul__", "__rmul__", "div", "__truediv__", "mul_", "div_",
                       "__imul__", "__itruediv__"})


class Graph:
    """The nodes with their children, and the walks the anatomy needs."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.children: list[list[int]] = [[] for _ in nodes]
        for node in nodes:
            for parent in node.parents:
                self.children[parent].append(node.index)

    def is_pass(self, index: int) -> bool:
        """A node that hands its one input on unchanged in meaning: a reshape, dropout, a cast,
        a scaling by a constant, a pass-through module."""
        node = self.nodes[index]
        if len(node.parents) != 1 or node.role in ("weight", "norm", "embedding", "activation"):
            return False
        if node.kind == "module":
            return node.role == "pass"
        if node.params:
            return False
        return node.name in _PASS_OPS or node.name in SCALINGS

    def is_weight(self, index: int) -> bool:
        """A node that transforms with a weight matrix: a weight layer, a functional use of a
        weight, or a module that holds its own (``MultiheadAttention``, an LSTM)."""
        return self.nodes[index].role in ("weight", "attention", "recurrent")

    def is_add(self, index: int) -> bool:
        node = self.nodes[index]
        return node.kind == "op" and node.name in ADDS and len(node.parents) >= 2

    def forward_through_passes(self, index: int) -> list[int]:
        """The first nodes after ``index`` that are not pass-throughs (in index order)."""
        return self.forward_until(index, lambda child: not self.is_pass(child))[0]

    def forward_until(self, index: int, stop: Callable[[int], bool]
                      ) -> tuple[list[int], list[int]]:
        """Walk children from ``index`` until nodes where ``stop`` holds (collected, not
        crossed). Returns (stops, crossed)."""
        stops: list[int] = []
        crossed: list[int] = []
        queue = deque(self.children[index])
        seen: set[int] = set()
        while queue:
            child = queue.popleft()
            if child in seen:
                continue
            seen.add(child)
            if stop(child):
                stops.append(child)
            else:
                crossed.append(child)
                queue.extend(self.children[child])
        return sorted(stops), sorted(crossed)

    def back_through_passes(self, index: int) -> int:
        """The first node before ``index`` (itself included) that is not a pass-through."""
        while self.is_pass(index):
            index = self.nodes[index].parents[0]
        return index

    def back_until(self, start: Iterable[int], stop: Callable[[int], bool],
                   through: Callable[[int], bool] | None = None) -> tuple[list[int], list[int]]:
        """Walk parents from ``start`` until nodes where ``stop`` holds (collected, not
        crossed); ``through`` limits which other nodes are crossed. Returns (stops, crossed)."""
        stops: list[int] = []
        crossed: list[int] = []
        queue = deque(start)
        seen: set[int] = set()
        while queue:
            index = queue.popleft()
            if index in seen:
                continue
            seen.add(index)
            if stop(index):
                stops.append(index)
                continue
            if through is not None and not through(index):
                continue
            crossed.append(index)
            queue.extend(self.nodes[index].parents)
        return sorted(set(stops)), sorted(crossed)

    def between(self, source: int, target: int) -> set[int] | None:
        """The nodes on paths from ``source`` to ``target`` (both excluded), or ``None`` when
        ``source`` is not an ancestor of ``target``."""
        ancestors: set[int] = set()
        queue = deque([target])
        while queue:
            index = queue.popleft()
            for parent in self.nodes[index].parents:
                if parent >= source and parent not in ancestors:
                    ancestors.add(parent)
                    queue.append(parent)
        if source not in ancestors:
            return None
        inside = {source}
        for index in sorted(ancestors | {target}):
            if index != source and any(p in inside for p in self.nodes[index].parents):
                inside.add(index)
        inside.discard(source)
        inside.discard(target)
        return inside

    def live(self, reads: Iterable[int]) -> set[int]:
        """Every node with a path to one of ``reads`` (themselves included)."""
        out: set[int] = set()
        queue = deque(reads)
        while queue:
            index = queue.popleft()
            if index in out:
                continue
            out.add(index)
            queue.extend(self.nodes[index].parents)
        return out
