"""Residual branches from the traced nodes: an add of a branch's output and the stream that
entered the branch, its stream and depth, its norms' places, first and closing layers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightning_init.anatomy._trace import Node
from lightning_init.anatomy.record import Branch

if TYPE_CHECKING:
    from lightning_init.anatomy._read import Reader

__all__ = ["BranchReader"]


class BranchReader:
    """Reads the residual branches of one trace through a :class:`Reader`."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.graph = reader.graph
        self.nodes = reader.nodes

    def site(self, index: int) -> str:
        return self.reader.site(index)

    def is_norm(self, index: int) -> bool:
        return self.reader.is_norm(index)

    def norm_kind(self, index: int) -> str:
        return self.reader.norm_kind(index)

    def learned_op(self, index: int) -> bool:
        return self.reader.learned_op(index)

    def branches(self) -> list[Branch]:
        branches: list[Branch] = []
        ends: dict[int, tuple[int, int]] = {}  # add node -> (stream, depth)
        for node in self.nodes:
            if not self.graph.is_add(node.index) or len(node.parents) != 2:
                continue
            found = self._split(node)
            if found is None:
                continue
            stream, out, inside, entry = found
            chain, depth = self._chain(entry, ends, len({s for s, _ in ends.values()}))
            ends[node.index] = (chain, depth)
            branches.append(self._branch(node, (stream, entry), out, inside, (chain, depth)))
        return branches

    def _split(self, node: Node) -> tuple[int, int, set[int], int] | None:
        """(stream, branch output, nodes inside, the node the branch starts from) of a
        residual add, or ``None``."""
        low, high = sorted(node.parents)
        shape = node.shape
        if self.nodes[low].shape != shape or self.nodes[high].shape != shape:
            return None
        inside = self.graph.between(low, high)
        if inside is not None:
            members = inside | {high}
            return (low, high, members, self.graph.back_through_passes(low)) \
                if any(self.graph.is_weight(i) for i in members) else None
        return self._shortcut(low, high)

    def _shortcut(self, low: int, high: int) -> tuple[int, int, set[int], int] | None:
        """Both sides descend from one node (a shortcut, with or without a projection): the
        side with more weight layers is the branch, the other the stream; two sides with as
        many (two heads averaged) are no residual add."""
        common = self.graph.live([low]) & self.graph.live([high])
        if not common:
            return None
        source = max(common)
        sides = []
        for side in (low, high):
            inside = (self.graph.between(source, side) or set()) | {side}
            sides.append((sum(self.graph.is_weight(i) for i in inside), side, inside))
        sides.sort(key=lambda item: (item[0], item[1]))
        if sides[1][0] == sides[0][0]:
            return None
        return sides[0][1], sides[1][1], sides[1][2], source

    def _chain(self, stream: int, ends: dict[int, tuple[int, int]], count: int
               ) -> tuple[int, int]:
        """Which stream a branch continues, by walking back from its stream input through
        pass-throughs, norms and activations to an earlier residual add."""
        stops, _ = self.graph.back_until(
            [stream], stop=lambda i: i in ends,
            through=lambda i: self.graph.is_pass(i) or self.nodes[i].role in (
                "norm", "activation") or (len(self.nodes[i].parents) == 1
                                          and not self.learned_op(i)))
        if stops:
            chain, depth = ends[max(stops)]
            return chain, depth + 1
        return count, 0

    def _branch(self, add: Node, ends: tuple[int, int], out: int, inside: set[int],
                place_in_stream: tuple[int, int]) -> Branch:
        stream, entry = ends
        chain, depth = place_in_stream
        layers = tuple(dict.fromkeys(self.site(i) for i in sorted(inside)
                                     if self.graph.is_weight(i)))
        last_stops, _ = self.graph.back_until(
            [out], stop=self.graph.is_weight,
            through=lambda i: i in inside and len(self.nodes[i].parents) == 1)
        norms = self._norm_places(add, entry, out, inside)
        place = self._place(norms)
        return Branch(
            stream=chain, depth=depth, layers=layers,
            first=self._first(entry, inside),
            last=tuple(dict.fromkeys(self.site(i) for i in last_stops)),
            place=place,
            norms={p: tuple(dict.fromkeys(self.nodes[i].name for i in found))
                   for p, found in norms.items() if found},
            reads=self._reads(entry, inside),
            stream_rms=self.nodes[stream].rms, branch_rms=self.nodes[out].rms,
            evidence=f"an add of `{self.site(out)}`'s branch output and the stream "
                     f"(`{self.site(entry)}`) that entered it")

    def _place(self, norms: dict[str, list[int]]) -> str:
        """The branch's place: a token norm closing it makes a sandwich; else a norm reading
        the stream, pre; else norms inside, inner (a BatchNorm closing a conv branch too);
        else a norm reading the sum, post."""
        if any(self.norm_kind(i) == "token" for i in norms["sandwich"]):
            return "sandwich"
        if norms["pre"]:
            return "pre"
        if norms["inner"] or norms["sandwich"]:
            return "inner"
        return "post" if norms["post"] else "none"

    def _norm_places(self, add: Node, entry: int, out: int, inside: set[int]
                     ) -> dict[str, list[int]]:
        """The branch's norms by place: ``pre`` (reads the stream), ``sandwich`` (closes the
        branch), ``inner``, and ``post``: the norms that are all that reads the sum."""
        places: dict[str, list[int]] = {"pre": [], "sandwich": [], "post": [], "inner": []}
        closing = self.graph.back_through_passes(out)
        for index in sorted(inside):
            if not self.is_norm(index):
                continue
            reads_stream = any(self.graph.back_through_passes(p) == entry
                               for p in self.nodes[index].parents)
            if index == closing and not reads_stream:
                places["sandwich"].append(index)
            elif reads_stream:
                places["pre"].append(index)
            else:
                places["inner"].append(index)
        readers = self.graph.forward_through_passes(add.index)
        if readers and all(self.is_norm(i) for i in readers):
            places["post"] = readers
        return places

    def _first(self, entry: int, inside: set[int]) -> tuple[str, ...]:
        found: list[str] = []
        for index in sorted(inside):
            if not self.graph.is_weight(index):
                continue
            stops, _ = self.graph.back_until(
                self.nodes[index].parents,
                stop=lambda i: self.graph.back_through_passes(i) == entry,
                through=lambda i: i in inside and (self.graph.is_pass(i) or self.is_norm(i)))
            if stops:
                found.append(self.site(index))
        return tuple(dict.fromkeys(found))

    def _reads(self, entry: int, inside: set[int]) -> tuple[str, ...]:
        """Learned inputs of the branch from outside it and its stream."""
        found: list[str] = []
        for index in sorted(inside):
            for parent in self.nodes[index].parents:
                if parent in inside or not self.reader.learned[parent] \
                        or self.graph.back_through_passes(parent) == entry:
                    continue
                found.append(self.site(self.graph.back_through_passes(parent)))
        return tuple(dict.fromkeys(found))
