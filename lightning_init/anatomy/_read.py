"""From the traced nodes to the anatomy's sites: layers, branches, norms, heads, embeddings,
attention. Everything here reads the data flow; no name is looked at."""

from __future__ import annotations

from torch import nn

from lightning_init.anatomy._graph import ADDS, SCALINGS, Graph
from lightning_init.anatomy._trace import Node, Trace
from lightning_init.anatomy.layouts import layout_of
from lightning_init.anatomy.record import (
    LOSSES,
    Branch,
    EmbeddingSite,
    Head,
    LayerSite,
)

__all__ = ["Reader"]

_BATCH_NORMS = (nn.modules.batchnorm._NormBase,)
_POWERS = ("pow", "pow_", "__pow__", "__ipow__", "float_power")


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
        activation = next((self._activation(i) for i in after
                           if self.nodes[i].role == "activation"), None)
        if activation is None and norm is not None:  # a norm, then an activation
            activation = next((self._activation(i)
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

    def _activation(self, index: int) -> str | None:
        """The activation node's name in the gain table; a ReLU whose output is squared
        (``square``, ``pow(x, 2)``, ``x ** 2``: RWKV's channel mix, Primer's and Nemotron's
        MLPs) is ``"relu_squared"``, whose gain is not ReLU's."""
        activation = self.nodes[index].activation
        if activation != "relu":
            return activation
        squared = any(self.nodes[i].name == "square" or (
            self.nodes[i].name in _POWERS and self.nodes[i].scalars == (2.0,))
            for i in self.graph.forward_through_passes(index))
        return "relu_squared" if squared else activation

    def _rate(self, index: int) -> bool:
        """Whether the layer's output, through pass-throughs and sums (its bias added apart),
        becomes a positive rate: a softplus or an exp (a state-space model's time step)."""
        stops, _ = self.graph.forward_until(
            index, stop=lambda i: not (self.graph.is_pass(i) or self.is_sum(i)))
        return any(self.nodes[i].activation == "softplus" or self.nodes[i].name == "exp"
                   for i in stops)

    def learned_op(self, index: int) -> bool:
        node = self.nodes[index]
        return node.role in ("weight", "embedding") or bool(node.params)

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
            start, last = self._past_output_activation(read)
            stops, crossed = self.graph.back_until(
                [start], stop=lambda i: self.graph.is_weight(i) or self.nodes[i].role in (
                    "norm", "embedding") or self.nodes[i].kind == "input",
                through=self._squashes_logits)
            crossed = sorted(crossed + last)
            for stop in stops:
                if not self.graph.is_weight(stop):
                    continue
                name = self.site(stop)
                between = tuple(self.nodes[i].name for i in crossed
                                if not self.graph.is_pass(i))
                heads.append(Head(name, keys.get(read, "output"), self._outputs(stop),
                                  between, tied.get(f"{name}.weight", ())))
        return heads

    def _past_output_activation(self, read: int) -> tuple[int, list[int]]:
        """Where the walk back to the heads starts: past a ReLU that is the output's last op
        and reads a weight layer of one output channel (a non-negative map: DPT's depth), else
        at the output itself (a ReLU over many channels ends a feature extractor). Returns the
        start and the activation crossed."""
        last = self.graph.back_through_passes(read)
        node = self.nodes[last]
        if node.role != "activation" or node.activation != "relu" or len(node.parents) != 1:
            return read, []
        layer = self.graph.back_through_passes(node.parents[0])
        if self.graph.is_weight(layer) and self._outputs(layer) == 1:
            return layer, [last]
        return read, []

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
            if not node.shape:
                return 1
            channels_first = node.kind == "op" and node.name.startswith("conv") \
                and len(node.shape) > 2  # a functional convolution's (N, C, ...) output
            return int(node.shape[1] if channels_first else node.shape[-1])
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
                                        tied.get(weight, ()), varies=bool(node.parents),
                                        weight=weight, output_rms=node.rms)
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
