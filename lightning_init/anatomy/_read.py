"""From the traced nodes to the anatomy's sites: layers, branches, norms, heads, embeddings,
attention. Everything here reads the data flow; no name is looked at."""

from __future__ import annotations

from torch import nn

from lightning_init._layouts import layout_of
from lightning_init.anatomy._graph import ADDS, SCALINGS, Graph
from lightning_init.anatomy._trace import Node, Trace
from lightning_init.anatomy.record import (
    AttentionSite,
    Branch,
    EmbeddingSite,
    Head,
    LayerSite,
)

__all__ = ["CLASS_LOSSES", "LOSSES", "Reader"]

_MATMULS = frozenset({"matmul", "__matmul__", "bmm", "einsum", "baddbmm"})
#: Loss functions, class losses first.
CLASS_LOSSES = frozenset({"cross_entropy", "nll_loss", "binary_cross_entropy",
                          "binary_cross_entropy_with_logits", "multilabel_soft_margin_loss",
                          "multi_margin_loss", "kl_div"})
LOSSES = CLASS_LOSSES | {"mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
                         "gaussian_nll_loss", "poisson_nll_loss"}
_BATCH_NORMS = (nn.modules.batchnorm._NormBase,)


class Reader:
    """Reads one trace; ``model`` only gives shapes, norm types and parameter owners."""

    def __init__(self, trace: Trace, model: nn.Module) -> None:
        self.trace = trace
        self.graph = Graph(trace.nodes)
        self.nodes = trace.nodes
        self.modules = dict(model.named_modules())
        self.learned = self._learned()

    # ---------------------------------------------------------------- naming
    def site(self, index: int) -> str:
        """A node's name as a site: the module, the owner of a functional weight, the input."""
        node = self.nodes[index]
        if node.kind == "input":
            return f"input:{node.name}"
        if node.kind == "op" and node.role in ("weight", "embedding") and node.params:
            big = node.params[-1] if node.role == "weight" else node.params[0]
            return big.rpartition(".")[0] or big
        return node.name

    def is_norm(self, index: int) -> bool:
        return self.nodes[index].role == "norm"

    def norm_kind(self, index: int) -> str:
        module = self.modules.get(self.nodes[index].name)
        return "batch" if isinstance(module, _BATCH_NORMS) else "token"

    def _learned(self) -> list[bool]:
        out: list[bool] = []
        for node in self.nodes:
            out.append(node.role in ("weight", "embedding") or bool(node.params)
                       or any(out[p] for p in node.parents))
        return out

    # ---------------------------------------------------------------- layers
    def layers(self) -> dict[str, LayerSite]:
        sites: dict[str, LayerSite] = {}
        calls: dict[str, int] = {}
        for node in self.nodes:
            if node.role != "weight":  # MultiheadAttention and LSTMs have rules of their own
                continue
            name = self.site(node.index)
            calls[name] = calls.get(name, 0) + 1
            if name not in sites:
                sites[name] = self._layer(node, name)
        return {name: LayerSite(**{**site.__dict__, "calls": calls[name]})
                for name, site in sites.items()}

    def _layer(self, node: Node, name: str) -> LayerSite:
        after = self.graph.forward_through_passes(node.index)
        inputs = tuple(dict.fromkeys(self.site(self.graph.back_through_passes(p))
                                     for p in node.parents))
        norm = next((i for i in after if self.is_norm(i)), None)
        activation = next((self.nodes[i].activation for i in after
                           if self.nodes[i].role == "activation"), None)
        if activation is None and norm is not None:  # a norm, then an activation
            activation = next((self.nodes[i].activation
                               for i in self.graph.forward_through_passes(norm)
                               if self.nodes[i].role == "activation"), None)
        first = next((p for p in node.parents if self.nodes[p].rms is not None), None)
        return LayerSite(
            name=name, calls=1, inputs=inputs,
            consumers=tuple(dict.fromkeys(self.site(i) for i in after)),
            followed_by=activation if activation else ("linear" if after else None),
            normalized_by=self.nodes[norm].name if norm is not None else None,
            norm_kind=self.norm_kind(norm) if norm is not None else None,
            input_rms=self.nodes[first].rms if first is not None else None,
            output_rms=node.rms, rate=self._rate(node.index))

    def _rate(self, index: int) -> bool:
        """Whether the layer's output, through pass-throughs and sums (its bias added apart),
        becomes a positive rate: a softplus or an exp (a state-space model's time step)."""
        stops, _ = self.graph.forward_until(
            index, stop=lambda i: not (self.graph.is_pass(i) or self.is_sum(i)))
        return any(self.nodes[i].activation == "softplus" or self.nodes[i].name == "exp"
                   for i in stops)

    # ---------------------------------------------------------------- branches
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

    def learned_op(self, index: int) -> bool:
        node = self.nodes[index]
        return node.role in ("weight", "embedding") or bool(node.params)

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
                if parent in inside or not self.learned[parent] \
                        or self.graph.back_through_passes(parent) == entry:
                    continue
                found.append(self.site(self.graph.back_through_passes(parent)))
        return tuple(dict.fromkeys(found))

    # ---------------------------------------------------------------- outputs and heads
    def reads(self) -> tuple[list[int], str | None]:
        """The output nodes the loss reads, and the loss's key if the pass returned a loss."""
        floats = [(key, index) for key, index in self.trace.outputs
                  if self.nodes[index].rms is not None]
        loss = next(((key, i) for key, i in floats if self.nodes[i].shape == ()), None)
        if loss is not None:
            return [loss[1]], loss[0]
        return ([floats[0][1]] if floats else []), None

    def loss_op(self, reads: list[int], heads: list[Head]) -> tuple[str | None, float | None]:
        """The loss function the read output comes from (``cross_entropy``, ``mse_loss``) and
        the rms of its target (its input with no learned ancestry)."""
        if not reads:
            return None, None
        stops, _ = self.graph.back_until(
            reads, stop=lambda i: self.nodes[i].name in LOSSES,
            through=lambda i: not self.learned_op(i))
        if not stops:
            return None, None
        node = self.nodes[max(stops)]
        targets = [self.nodes[p].rms for p in node.parents if not self.learned[p]]
        return node.name, next((rms for rms in targets if rms is not None), None)

    def heads(self, reads: list[int], tied: dict[str, tuple[str, ...]]) -> list[Head]:
        keys = {index: key for key, index in self.trace.outputs}
        heads: list[Head] = []
        for read in reads:
            stops, crossed = self.graph.back_until(
                [read], stop=lambda i: self.graph.is_weight(i) or self.nodes[i].role in (
                    "norm", "embedding") or self.nodes[i].kind == "input",
                through=self._squashes_logits)
            for stop in stops:
                if not self.graph.is_weight(stop):
                    continue
                name = self.site(stop)
                between = tuple(self.nodes[i].name for i in crossed
                                if not self.graph.is_pass(i))
                heads.append(Head(name, keys.get(read, "output"), self._outputs(stop),
                                  between, tied.get(f"{name}.weight", ())))
        return heads

    def _squashes_logits(self, index: int) -> bool:
        """Whether the walk from an output back to its heads crosses this node: anything but
        an activation, except a sigmoid (a sigmoid head) and a soft-capping tanh (its output
        multiplied by a constant: ``tanh(z / cap) * cap``)."""
        node = self.nodes[index]
        if node.role != "activation":
            return True
        if node.activation == "sigmoid":
            return True
        return node.activation == "tanh" and any(
            self.nodes[child].scalars and self.nodes[child].name in SCALINGS
            for child in self.graph.children[index])

    def _outputs(self, index: int) -> int:
        node = self.nodes[index]
        module = self.modules.get(node.name) if node.kind == "module" else None
        weight = getattr(module, "weight", None)
        if module is None or weight is None or weight.dim() < 2:
            return int(node.shape[-1]) if node.shape else 1
        layout, groups = layout_of(module, "weight")
        count = int(weight.shape[layout.out_dim])
        return count * groups if layout.grouped == "in" else count

    # ---------------------------------------------------------------- embeddings
    def embeddings(self, tied: dict[str, tuple[str, ...]]) -> dict[str, EmbeddingSite]:
        sites: dict[str, EmbeddingSite] = {}
        for node in self.nodes:
            if node.role != "embedding" or self.site(node.index) in sites:
                continue
            name = self.site(node.index)
            others = tuple(s for s in self._summed(node.index) if s != name)
            weight = f"{name}.weight" if node.kind == "module" else node.params[0]
            sites[name] = EmbeddingSite(name, int(node.shape[-1]) if node.shape else 0, others,
                                        tied.get(weight, ()), varies=bool(node.parents))
        return sites

    def is_sum(self, index: int) -> bool:
        node = self.nodes[index]
        return node.kind == "op" and node.name in ADDS and \
            len(node.parents) + len(node.params) >= 2

    def _summed(self, index: int) -> list[str]:
        top = index
        while True:
            after = self.graph.forward_through_passes(top)
            if len(after) == 1 and self.is_sum(after[0]):
                top = after[0]
                continue
            break
        if top == index:
            return []
        stops, crossed = self.graph.back_until(
            [top], stop=lambda i: not (self.graph.is_pass(i) or self.is_sum(i)))
        found = [self.site(i) for i in stops]
        found += [p for i in crossed for p in self.nodes[i].params]
        return list(dict.fromkeys(found))

    # ---------------------------------------------------------------- attention
    def attention(self) -> list[AttentionSite]:
        sites = []
        for call in self.trace.attention:
            if call["op"] == "softmax":
                query, key = self._score_operands(call.get("scores"))
            else:
                query, key = call.get("query"), call.get("key")
            sites.append(AttentionSite(call["op"], float(call["std"]), self._makers(query),
                                       self._makers(key)))
        return sites

    def _score_operands(self, scores: int | None) -> tuple[int | None, int | None]:
        if scores is None:
            return None, None
        stops, _ = self.graph.back_until(
            [scores], stop=lambda i: self.nodes[i].name in _MATMULS
            and len(self.nodes[i].parents) == 2 and not self.nodes[i].params,
            through=lambda i: not self.graph.is_weight(i))
        if not stops:
            return None, None
        parents = self.nodes[max(stops)].parents
        return parents[0], parents[1]

    def _makers(self, index: int | None) -> tuple[str, ...]:
        if index is None:
            return ()
        stops, _ = self.graph.back_until([index], stop=self.graph.is_weight,
                                         through=lambda i: self.nodes[i].kind != "input")
        return tuple(dict.fromkeys(self.site(i) for i in stops))

    # ---------------------------------------------------------------- activations
    def activations(self) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {}
        for node in self.nodes:
            if node.role == "activation" and node.activation:
                out.setdefault(node.activation, []).append(node.name)
        return {kind: tuple(dict.fromkeys(names)) for kind, names in out.items()}

    def norm_places(self, branches: list[Branch], heads: list[Head]) -> dict[str, str]:
        """Each called norm's place: from the branches (pre, sandwich, inner before post:
        the norm after a pre-norm stack's last add is its final norm), then final / embedding /
        after-layer / inner by what feeds it and what reads it."""
        places: dict[str, str] = {}
        for place in ("pre", "sandwich", "inner"):
            for branch in branches:
                for name in branch.norms.get(place, ()):
                    places.setdefault(name, place)
        head_names = {head.name for head in heads}
        for node in self.nodes:
            if node.role != "norm" or node.name in places:
                continue
            place = self._norm_place(node, head_names)
            posts = any(node.name in branch.norms.get("post", ()) for branch in branches)
            places[node.name] = "post" if posts and (place != "final" or all(
                branch.place == "post" for branch in branches)) else place
        return places

    def _norm_place(self, node: Node, heads: set[str]) -> str:
        after = self.graph.forward_through_passes(node.index)
        if any(self.site(i) in heads for i in after) or any(
                index in after for _, index in self.trace.outputs):
            return "final"
        before = [self.graph.back_through_passes(p) for p in node.parents]
        if any(self.is_sum(i) or self.nodes[i].role == "embedding" for i in before):
            return "embedding"
        if any(self.graph.is_weight(i) for i in before):
            return "after-layer"
        return "inner"

    def used_and_live(self, reads: list[int], module_params: dict[str, list[str]]
                      ) -> tuple[set[str], set[str]]:
        """Parameters the pass used, and those on a path to what the loss reads."""
        live = self.graph.live(reads)
        used: set[str] = set()
        alive: set[str] = set()
        for node in self.nodes:
            names = list(node.params) + (module_params.get(node.name, [])
                                         if node.kind == "module" else [])
            used.update(names)
            if node.index in live:
                alive.update(names)
        return used, alive
