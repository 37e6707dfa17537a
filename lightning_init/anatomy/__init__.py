"""The anatomy of a model: what its parts are and how data flows between them, from one traced
pass, not from names.

:func:`anatomy_of` runs the model once on a sample batch, with module hooks and a
``TorchFunctionMode`` that follows every tensor (``_trace``), and reads from the data flow
(``_read``):

- each weight layer: what feeds it, what reads its output, the activation it goes into;
- residual branches: an add of a branch's output and the stream that entered the branch (or,
  with a projection shortcut, of two paths from one node); their stream, depth, first and last
  weight layers, the learned inputs they read from outside (cross-attention);
- each norm's place (pre, post, sandwich, final, after a layer) and formula, by a probe
  (``w * x_hat`` or ``(1 + w) * x_hat``);
- activations (modules or functional calls) and their gains (:mod:`.kinds`);
- attention calls: the logits' measured std and the layers that make queries and keys;
- embeddings, what each is summed with and the scales of every sum they flow into; tied
  parameters;
- the outputs the loss reads and the last weight layers before them (heads), through
  element-wise ops and across several heads;
- deliberate zero-inits: all-zero parameters on a path to the loss.

What a module *is* comes from one registry (:mod:`.kinds`), extended like ``register_layout``;
class-name fragments are only a fallback hint that the probes can overrule.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Block(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.norm, self.fc = nn.LayerNorm(8), nn.Linear(8, 8)
    ...     def forward(self, x):
    ...         return x + self.fc(self.norm(x))
    >>> net = nn.Sequential(nn.Linear(4, 8), Block(), Block(), nn.Linear(8, 3))
    >>> anatomy = anatomy_of(net, torch.randn(16, 4))
    >>> [(b.depth, b.place, b.last) for b in anatomy.branches]
    [(0, 'pre', ('1.fc',)), (1, 'pre', ('2.fc',))]
    >>> anatomy.head_names(), anatomy.layers["0"].followed_by
    (['3'], 'linear')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from lightning_init._lightning import call_model
from lightning_init.anatomy._attention import attention_sites
from lightning_init.anatomy._branches import BranchReader
from lightning_init.anatomy._probe import probe_norm
from lightning_init.anatomy._read import Reader
from lightning_init.anatomy._sums import embedding_sums
from lightning_init.anatomy._trace import trace_model
from lightning_init.anatomy.kinds import (
    ROLES,
    LayerKind,
    activation_for_function,
    gain_of,
    is_embedding,
    is_norm,
    is_weight_layer,
    kind_of,
    layer_fans,
    measured_gain,
    register_activation,
    register_hint,
    register_kind,
    transforms,
)
from lightning_init.anatomy.layouts import register_layout
from lightning_init.anatomy.record import (
    Anatomy,
    AttentionSite,
    Branch,
    EmbeddingSite,
    EmbeddingSum,
    Gate,
    Head,
    LayerSite,
    NormSite,
)
from lightning_init.runtime.distributed import is_dtensor
from lightning_init.runtime.no_trace import no_side_effects

_T = TypeVar("_T")

__all__ = ["ROLES", "Anatomy", "AttentionSite", "Branch", "EmbeddingSite", "EmbeddingSum", "Gate",
           "Head", "LayerKind", "LayerSite", "NormSite", "activation_for_function", "anatomy_of",
           "anatomy_of_pass", "gain_of", "is_embedding", "is_norm", "is_weight_layer", "kind_of",
           "layer_fans", "measured_gain", "register_activation", "register_hint", "register_kind",
           "register_layout", "transforms"]


def anatomy_of(model: nn.Module, sample: Any, *,
               forward: Callable[[nn.Module, Any], Any] | None = None) -> Anatomy:
    """The model's :class:`Anatomy` from one pass of ``sample``.

    The pass runs like the check's (dropout off, BatchNorm by batch statistics, no grad), and
    leaves no trace: modes, buffers and RNG states are restored.

    Args:
        model: the model.
        sample: a batch: a tensor, a tuple/list (positional) or a mapping (keywords).
        forward: ``forward(model, sample)`` to call the model another way (return what the
            loss reads, or the loss).
    """
    kinds = _kinds(model)
    with no_side_effects(model), torch.no_grad():
        trace, probes = _traced(model, sample, lambda: (forward or call_model)(model, sample),
                                kinds)
    return _finish(model, trace, probes, kinds)


def anatomy_of_pass(model: nn.Module, sample: Any, run: Callable[[], tuple[Any, _T]]
                    ) -> tuple[Anatomy, _T]:
    """The :class:`Anatomy` of a pass the caller makes, and what the pass handed back: the
    anatomy's trace follows the caller's own pass (the check's forward) instead of a pass of
    its own.

    ``run()`` makes the pass and returns what the loss reads (the loss, or the output) and
    anything to hand back. It runs as the caller set it up (grad mode, the modules' modes);
    the caller also undoes its side effects and those of the norm probes that follow it
    (:func:`~lightning_init.runtime.no_trace.no_side_effects`).

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
        >>> def run():
        ...     output = net(torch.arange(10).reshape(2, 5))
        ...     return output, output.sum()
        >>> anatomy, total = anatomy_of_pass(net, None, run)
        >>> list(anatomy.embeddings), anatomy.head_names(), total.requires_grad
        (['0'], ['1'], True)
    """
    kinds = _kinds(model)
    kept: list[_T] = []

    def traced() -> Any:
        reads, result = run()
        kept.append(result)
        return reads

    trace, probes = _traced(model, sample, traced, kinds)
    return _finish(model, trace, probes, kinds), kept[0]


def _kinds(model: nn.Module) -> dict[str, LayerKind | None]:
    return {name: kind_of(module) for name, module in model.named_modules()}


def _traced(model: nn.Module, sample: Any, run: Callable[[], Any],
            kinds: dict[str, LayerKind | None]
            ) -> tuple[Any, dict[str, tuple[bool, float | None]]]:
    """The trace of ``run()`` and the norms' probes on their inputs."""
    norms = {name for name, kind in kinds.items() if kind is not None and kind.role == "norm"}
    trace = trace_model(model, sample, run, kinds, keep_inputs=norms)
    probes = {name: probe_norm(model.get_submodule(name), x) for name, x in trace.inputs.items()}
    trace.inputs.clear()
    return trace, probes


def _finish(model: nn.Module, trace: Any, probes: dict[str, tuple[bool, float | None]],
            kinds: dict[str, LayerKind | None]) -> Anatomy:
    for node in trace.nodes:  # a hinted "norm" that is not scale-invariant is no norm
        if node.role == "norm" and not probes.get(node.name, (True, None))[0] \
                and kinds[node.name] is not None and kinds[node.name].source == "hint":
            node.role = None
    return _assemble(model, trace, probes, kinds)


def _tied(model: nn.Module) -> dict[str, tuple[str, ...]]:
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return {name: tuple(n for n in names if n != name)
            for names in groups.values() if len(names) > 1 for name in names}


def _assemble(model: nn.Module, trace: Any, probes: dict[str, tuple[bool, float | None]],
              kinds: dict[str, LayerKind | None]) -> Anatomy:
    reader = Reader(trace, model)
    tied = _tied(model)
    reads, loss = reader.reads()
    branches = BranchReader(reader).branches()
    heads = reader.heads(reads, tied)
    module_params = {name: [f"{name}.{p}" if name else p for p, _ in
                            module.named_parameters(recurse=kinds.get(name) is not None)]
                     for name, module in model.named_modules()}
    used, live = reader.used_and_live(reads, module_params)
    places = reader.norm_places(branches, heads)
    norms = {}
    for name, place in places.items():
        invariant, offset = probes.get(name, (True, None))
        norms[name] = NormSite(name, place, reader.norm_kind(
            next(n.index for n in trace.nodes if n.name == name and n.role == "norm")),
            offset, None if offset is None else 1 - offset, invariant)
    layers = reader.layers()
    loss_op, target_rms = reader.loss_op(reads, heads)
    anatomy = Anatomy(
        layers=layers, branches=branches, norms=norms, heads=heads,
        embeddings=reader.embeddings(tied), embedding_sums=embedding_sums(reader),
        tied=sorted({tuple(sorted((name, *others))) for name, others in tied.items()}),
        attention=attention_sites(reader), activations=reader.activations(), loss=loss,
        loss_op=loss_op, target_rms=target_rms,
        uncalled=_uncalled(model, layers, trace.called), called=set(trace.called),
        _nodes=trace.nodes, _live_params=frozenset(live), _used_params=frozenset(used))
    anatomy.gates = _gates(model, anatomy, live, norms, {h.name for h in heads})
    return anatomy


def _uncalled(model: nn.Module, layers: dict[str, LayerSite], called: set[str]) -> list[str]:
    """Weight layers never called, those inside a called module aside (the ``out_proj`` a
    ``MultiheadAttention`` uses through its weight)."""
    inside = tuple(f"{name}." for name in called if name)
    return [name for name, module in model.named_modules() if is_weight_layer(module)
            and name not in layers and not name.startswith(inside)]


def _gates(model: nn.Module, anatomy: Anatomy, live: set[str], norms: dict[str, NormSite],
           heads: set[str]) -> list[Gate]:
    """All-zero parameters (not biases) on a path to the loss; a norm's weight where its scale
    ``c + w`` is zero (``w = 0`` for ``w * x_hat``, ``w = -1`` for ``(1 + w) * x_hat``). One
    host transfer per device for all the tests (a DTensor's test is its own collective)."""
    names: list[str] = []
    zeros: list[torch.Tensor] = []
    for name, param in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        if name not in live or leaf.startswith("bias") or param.is_meta or param.numel() == 0:
            continue
        norm = norms.get(owner)
        if norm is not None and norm.identity is None:
            continue
        zero = norm.identity - 1.0 if norm is not None else 0.0
        names.append(name)
        zeros.append(torch.all(param.detach() == zero))
    gates = []
    for name, is_zero in zip(names, _on_host(zeros), strict=True):
        owner = name.rpartition(".")[0]
        if is_zero:
            gates.append(Gate(name, _gate_kind(anatomy, name, owner, owner in norms, heads)))
    return gates


def _on_host(flags: list[torch.Tensor]) -> list[bool]:
    """0-d boolean tensors as Python booleans, in one transfer: stacked on the first one's
    device, as the trace's rms values are (a DTensor's is its full tensor's: a collective)."""
    if not flags:
        return []
    local = [flag.full_tensor() if is_dtensor(flag) else flag for flag in flags]
    return torch.stack([flag.to(local[0].device) for flag in local]).tolist()


def _gate_kind(anatomy: Anatomy, name: str, owner: str, norm: bool, heads: set[str]) -> str:
    if norm:
        return "norm"
    if owner in heads:
        return "head"
    if owner in anatomy.layers:
        return "weight"
    reader = next((node.name for node in anatomy._nodes if name in node.params), "")
    return "scale" if reader in ("mul", "__mul__", "__rmul__", "mul_", "__imul__") else "added"
