"""The anatomy's record: what one traced pass found, by data flow, and the questions it answers.

Every entry names its evidence (what in the data flow showed it), so that a policy rule or a
check's verdict built on it can say why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lightning_init.anatomy._trace import Node

__all__ = ["CLASS_LOSSES", "LOSSES", "Anatomy", "AttentionSite", "Branch", "EmbeddingSite",
           "EmbeddingSum", "Gate", "Head", "LayerSite", "NormSite"]


#: Loss functions, class losses first.
CLASS_LOSSES = frozenset({"cross_entropy", "nll_loss", "binary_cross_entropy",
                          "binary_cross_entropy_with_logits", "multilabel_soft_margin_loss",
                          "multi_margin_loss", "kl_div"})
LOSSES = CLASS_LOSSES | {"mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
                         "gaussian_nll_loss", "poisson_nll_loss"}


@dataclass(frozen=True)
class LayerSite:
    """A weight layer (or a functional use of a weight) as the pass saw it.

    Attributes:
        name: the module's qualified name.
        calls: how many times the pass called it.
        inputs: the nearest sources of its input: modules, ``"input:<key>"``, or parameters.
        consumers: the nearest modules or ops that read its output (pass-through ops skipped).
        followed_by: the activation its output goes into (through reshapes and dropout), else
            ``None`` (``"linear"``: something else reads it first).
        normalized_by: the norm its output goes straight into, if any.
        norm_kind: that norm's kind: ``"batch"`` (statistics over the batch: BatchNorm,
            InstanceNorm) or ``"token"`` (over features: LayerNorm, RMSNorm, GroupNorm).
        input_rms: the rms of its (first) input in the pass.
        output_rms: the rms of its output in the pass.
        rate: its output becomes a positive rate (through a softplus or an exp: a
            state-space model's time step), whose offset its bias sets.
    """

    name: str
    calls: int
    inputs: tuple[str, ...]
    consumers: tuple[str, ...]
    followed_by: str | None
    normalized_by: str | None = None
    norm_kind: str | None = None
    input_rms: float | None = None
    output_rms: float | None = None
    rate: bool = False


@dataclass(frozen=True)
class Branch:
    """A residual branch: an add of a branch's output and the stream that entered it.

    Attributes:
        stream: which stream (0, 1...: one per chain of adds, e.g. encoder and decoder).
        depth: the branch's position on its stream (0 first).
        layers: the weight layers inside the branch, in call order.
        first: the weight layers that read the stream (through a norm in a pre-norm branch).
        last: the weight layers whose output the add receives (the residual projections).
        place: where its norms sit: ``"pre"`` (``x + f(norm(x))``), ``"post"``
            (``norm(x + f(x))``), ``"sandwich"`` (``x + norm(f(x))``, possibly with a pre-norm
            too), ``"inner"`` (a norm inside only) or ``"none"``.
        norms: the norms of the branch by place (``{"pre": ("ln_1",)}``).
        reads: learned inputs from outside its stream (a cross-attention's encoder states).
        stream_rms: the rms of the stream entering the add.
        branch_rms: the rms of the branch's output at the add.
        evidence: what showed it.
    """

    stream: int
    depth: int
    layers: tuple[str, ...]
    first: tuple[str, ...]
    last: tuple[str, ...]
    place: str
    norms: dict[str, tuple[str, ...]]
    reads: tuple[str, ...]
    stream_rms: float | None
    branch_rms: float | None
    evidence: str

    @property
    def ratio(self) -> float | None:
        """The branch's rms over the stream's at the add."""
        if not self.stream_rms or self.branch_rms is None:
            return None
        return self.branch_rms / self.stream_rms


@dataclass(frozen=True)
class NormSite:
    """A normalization layer: its place and its formula, found by a probe.

    Attributes:
        name: qualified name.
        place: ``"pre"``, ``"post"``, ``"sandwich"``, ``"final"`` (before a head or the output),
            ``"embedding"`` (after the embeddings' sum), ``"after-layer"`` (right after a weight
            layer, e.g. a conv's BatchNorm) or ``"inner"``.
        kind: ``"batch"`` or ``"token"``.
        offset: the probe's ``c`` in ``y = (c + w) * x_hat``: 0 for ``w * x_hat``, 1 for
            Gemma's ``(1 + w) * x_hat``; ``None`` when it has no weight or the probe failed.
        identity: the weight value at which it is the identity on scale (``1 - offset``).
        scale_invariant: whether its output stayed the same when its input was tripled (the
            data flow's test of a norm).
    """

    name: str
    place: str
    kind: str
    offset: float | None
    identity: float | None
    scale_invariant: bool


@dataclass(frozen=True)
class Head:
    """A last weight layer before an output that reaches the loss.

    Attributes:
        name: qualified name.
        output: the output's key (``"logits"``, ``"loss"``, ``"0"``).
        outputs: its number of output units (logits).
        ops_after: the ops between it and the output (``("div", "tanh", "mul")`` for
            soft-capping).
        tied: other parameters that are the head's weight (a tied embedding).
    """

    name: str
    output: str
    outputs: int
    ops_after: tuple[str, ...]
    tied: tuple[str, ...] = ()


@dataclass(frozen=True)
class EmbeddingSite:
    """An embedding (a lookup, a module or functional) and what it is summed with.

    Attributes:
        name: qualified name (a module's, or a parameter's for a functional lookup).
        width: its embedding dimension.
        summed_with: the sources added to it before anything else reads it (other embeddings,
            a patch projection, a position parameter).
        tied: other parameter names that are its weight.
        varies: whether its indices come from the input (token ids) rather than from
            constants (positions).
        weight: the qualified name of its table (the parameter it looks up).
        output_rms: the rms of its output at its first call in the pass.
    """

    name: str
    width: int
    summed_with: tuple[str, ...]
    tied: tuple[str, ...] = ()
    varies: bool = True
    weight: str = ""
    output_rms: float | None = None

    @property
    def table(self) -> tuple[str, ...]:
        """Every name of its table, sorted: equal for the embeddings that share one."""
        return tuple(sorted({self.weight or self.name, *self.tied}))


@dataclass(frozen=True)
class EmbeddingSum:
    """An addition that embeddings' outputs flow into (through scalings by a number, casts,
    reshapes and dropout), with both operands' rms measured just before it.

    Attributes:
        stream: the embeddings one operand carries (the first operand that carries any).
        other: the embeddings the other operand carries; ``()`` when it carries none (a
            residual branch, a position parameter, a constant).
        stream_rms: the rms of the ``stream`` operand.
        other_rms: the rms of the other operand; for an operand that is a tensor multiplied
            by a learnable scale of at most one dimension (LayerScale, Touvron et al. 2021;
            ReZero, Bachlechner et al. 2020), the rms of what the scale multiplies (0 when the
            product is exactly 0: a closed gate).
        table: the parameter the other operand is, when it is one added as a whole (a learned
            position table: ViT's ``position_embeddings``, minGPT's ``pos_emb``), else ``""``.
    """

    stream: tuple[str, ...]
    other: tuple[str, ...]
    stream_rms: float | None
    other_rms: float | None
    table: str = ""


@dataclass(frozen=True)
class Gate:
    """A deliberate zero-init: an all-zero parameter on a path to the loss (it receives a
    gradient, so training opens it).

    Attributes:
        param: the parameter's qualified name.
        kind: ``"norm"`` (a zero norm weight, ``zero_init_last``), ``"scale"`` (a layer scale
            multiplied in), ``"added"`` (a token or position parameter added or concatenated
            in), ``"head"`` (a zero output layer) or ``"weight"`` (another weight layer).
    """

    param: str
    kind: str


@dataclass(frozen=True)
class AttentionSite:
    """One attention call: its logits' measured std and the layers that make its queries and
    keys.

    Attributes:
        op: ``"scaled_dot_product_attention"`` or ``"softmax"``.
        logit_std: the std of ``q k^T * scale`` (masked entries left out for a softmax).
        queries: the weight layers its queries come from.
        keys: the weight layers its keys come from.
    """

    op: str
    logit_std: float
    queries: tuple[str, ...]
    keys: tuple[str, ...]


@dataclass
class Anatomy:
    """What one traced pass of a model found, by data flow. Built by
    :func:`~lightning_init.anatomy.anatomy_of`.

    Attributes:
        layers: weight layers by name.
        branches: residual branches, in call order.
        norms: normalization layers by name.
        heads: the last weight layers before the outputs the loss reads.
        embeddings: embeddings by name.
        embedding_sums: the additions the embeddings' outputs flow into, in pass order; an
            input projection's output (a weight layer that reads the input: a patch
            embedding) counts as an embedding up to its first sum with a position table.
        tied: groups of parameter names that are one parameter.
        gates: deliberate zero-inits.
        attention: attention calls.
        activations: activation name -> the modules or ops that apply it.
        loss: the key of the loss the pass returned, if it returned one.
        loss_op: the loss function the read output comes from (``"cross_entropy"``,
            ``"mse_loss"``), where the pass computed one.
        target_rms: the rms of that loss's target (its input with no learned ancestry).
        uncalled: weight layers the pass never called.
        called: every module the pass saw as one node (weight layers, norms, activations,
            attention and recurrent modules...).
    """

    layers: dict[str, LayerSite] = field(default_factory=dict)
    branches: list[Branch] = field(default_factory=list)
    norms: dict[str, NormSite] = field(default_factory=dict)
    heads: list[Head] = field(default_factory=list)
    embeddings: dict[str, EmbeddingSite] = field(default_factory=dict)
    embedding_sums: list[EmbeddingSum] = field(default_factory=list)
    tied: list[tuple[str, ...]] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)
    attention: list[AttentionSite] = field(default_factory=list)
    activations: dict[str, tuple[str, ...]] = field(default_factory=dict)
    loss: str | None = None
    loss_op: str | None = None
    target_rms: float | None = None
    uncalled: list[str] = field(default_factory=list)
    called: set[str] = field(default_factory=set)
    _nodes: list[Node] = field(default_factory=list, repr=False)
    _live_params: frozenset[str] = field(default_factory=frozenset, repr=False)
    _used_params: frozenset[str] = field(default_factory=frozenset, repr=False)

    # ---------------------------------------------------------------- questions
    def summed_with(self, embedding: str) -> tuple[str, ...]:
        """What the embedding (module or parameter name) is summed with before anything reads
        it; ``()`` when it is read alone or is no embedding the pass saw."""
        site = self.embeddings.get(embedding) or self.embeddings.get(
            embedding.removesuffix(".weight"))
        return site.summed_with if site is not None else ()

    def reaches_output(self, param: str) -> bool | None:
        """Whether parameter ``param`` (qualified name) lies on a path to what the loss reads;
        ``None`` when the pass never used it."""
        if param not in self._used_params:
            return None
        return param in self._live_params

    def residual_projections(self) -> list[str]:
        """The weight layers that close a residual branch (their output is the add's)."""
        return _unique(name for branch in self.branches for name in branch.last)

    def branches_on(self, stream: int) -> list[Branch]:
        """The branches of one stream, in order."""
        return [branch for branch in self.branches if branch.stream == stream]

    def streams(self) -> list[int]:
        """The streams (chains of residual adds) by index."""
        return sorted({branch.stream for branch in self.branches})

    def branch_of(self, layer: str) -> Branch | None:
        """The innermost residual branch a weight layer belongs to (the last one listing it)."""
        return next((branch for branch in reversed(self.branches) if layer in branch.layers),
                    None)

    def query_layers(self) -> list[str]:
        """Weight layers that make attention queries (and not keys of the same call)."""
        return _unique(name for site in self.attention for name in site.queries
                       if name not in site.keys)

    def gate_params(self) -> set[str]:
        """The parameter names of the deliberate zero-inits."""
        return {gate.param for gate in self.gates}

    @property
    def regression(self) -> bool:
        """Whether the loss is no class loss (``mse_loss``...) or the only head has one
        output and no class loss is seen."""
        if self.loss_op is not None:
            return self.loss_op not in CLASS_LOSSES
        return bool(self.heads) and all(head.outputs == 1 for head in self.heads)

    def position_tables(self) -> list[EmbeddingSum]:
        """The sums of an embedding (or an input projection) with a learned table added as a
        whole parameter, one per table, in pass order."""
        found: dict[str, EmbeddingSum] = {}
        for summed in self.embedding_sums:
            if summed.table:
                found.setdefault(summed.table, summed)
        return list(found.values())

    def head_names(self) -> list[str]:
        """The heads' names, in order."""
        return _unique(head.name for head in self.heads)

    def describe(self) -> str:
        """A few lines a person reads: streams, branches by place, heads, norms' formulas."""
        lines = [f"{len(self.layers)} weight layers, {len(self.branches)} residual branches on "
                 f"{len(self.streams())} stream(s)"]
        places = _counts(branch.place for branch in self.branches)
        if places:
            lines.append("branches by norm place: " + ", ".join(f"{k} {v}"
                                                                for k, v in places.items()))
        for head in self.heads:
            after = f" then {' '.join(head.ops_after)}" if head.ops_after else ""
            tied = f", tied to {', '.join(head.tied)}" if head.tied else ""
            lines.append(f"head {head.name} -> {head.output} ({head.outputs} outputs{after}{tied})")
        offsets = [n for n in self.norms.values() if n.offset and abs(n.offset - 1) < 0.05]
        if offsets:
            lines.append(f"norms scaling by 1 + w: {len(offsets)} (identity at w = 0)")
        for found in self.position_tables():
            lines.append(f"position table {found.table} added to {', '.join(found.stream)} "
                         f"(rms {_rms(found.other_rms)} against {_rms(found.stream_rms)})")
        if self.gates:
            lines.append("deliberate zero-inits: " + ", ".join(g.param for g in self.gates[:4])
                         + (", ..." if len(self.gates) > 4 else ""))
        return "\n".join(lines)


def _rms(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g}"


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _counts(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return out
