"""The anatomy's one traced pass: module hooks plus a ``TorchFunctionMode`` that follows tensors.

Every tensor the pass makes gets a node: the sample's tensors are ``input`` nodes, a module
with a kind (a weight layer, a norm, an activation...) is one ``module`` node whose parents are
the nodes of its inputs (what it does inside is not recorded), and every other torch call is an
``op`` node whose parents are the nodes of its tensor arguments; the parameters a call reads
directly (``x * self.gamma``, ``F.linear(x, wte.weight)``) are noted on its node. Tensors are
followed by identity (a weak dictionary keyed by the tensor object), so an in-place op moves
its tensor to a new node. Each float node keeps its rms (a device scalar; one host transfer at
the end) and its shape. Containers (blocks, stages) are not nodes: they are seen through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from lightning_init.anatomy.kinds import LayerKind, activation_for_function, kind_of
from lightning_init.runtime.distributed import rms
from lightning_init.runtime.hooks import HookHandles

__all__ = ["ADDS", "Node", "Trace", "trace_model"]

ADDS = frozenset({"add", "__add__", "__radd__", "add_", "__iadd__"})

# Calls that never make a node: attribute reads and the like.
_SKIPPED = frozenset({"__get__", "__set__", "size", "dim", "numel", "is_floating_point",
                      "_set_grad_enabled", "__len__", "__bool__", "item", "tolist",
                      "__format__", "__repr__", "is_complex", "data_ptr", "element_size"})
_WEIGHT_OPS = frozenset({"linear", "conv1d", "conv2d", "conv3d", "matmul", "addmm", "mm",
                         "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "einsum",
                         "__matmul__", "bmm", "baddbmm"})
# Ops that give a parameter another shape: a weight layer may read its weight through one.
_VIEWS = frozenset({"view", "reshape", "squeeze", "unsqueeze", "transpose", "t", "permute",
                    "flatten", "to", "float", "contiguous", "__getitem__", "T", "mT"})
# A masked attention logit: -1e4 (BERT's), -1e6 (Funnel's), -1e9, the dtype's min or -inf.
_MASKED = -1e4
_COLLAPSED = ("weight", "norm", "embedding", "activation", "pass", "recurrent", "attention")


@dataclass
class Node:
    """One tensor-producing step of the pass.

    Attributes:
        index: its position in the pass (parents always have smaller indices).
        kind: ``"input"``, ``"module"`` or ``"op"``.
        name: the module's qualified name or the op's function name.
        parents: the nodes of its tensor inputs.
        params: the qualified names of the parameters an op reads directly.
        role: for a module node, its kind's role (``"weight"``, ``"norm"``...); for an op
            that reads a 2-D+ parameter (a functional linear), ``"weight"``; an op that is a
            known activation, ``"activation"``.
        activation: the activation's name in the gain table, where it is one.
        shape: the shape of its (first) output tensor.
        rms: its output's rms (float; ``None`` for integer tensors).
        constant_rms: for an addition of a traced tensor and a constant one (a sinusoidal
            position table, a buffer), the constant's rms.
    """

    index: int
    kind: str
    name: str
    parents: tuple[int, ...] = ()
    params: tuple[str, ...] = ()
    role: str | None = None
    activation: str | None = None
    shape: tuple[int, ...] = ()
    rms: float | None = None
    scalars: tuple[float, ...] = ()
    constant_rms: float | None = None


@dataclass
class Trace:
    """The nodes of one pass, the outputs and the loss it returned, and the calls seen."""

    nodes: list[Node] = field(default_factory=list)
    outputs: list[tuple[str, int]] = field(default_factory=list)  # (key, node)
    attention: list[dict[str, Any]] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)  # module name -> first float input
    called: set[str] = field(default_factory=set)


def _tensors(value: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in a nested value with its key path (``"logits"``, ``"0"``)."""
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (tuple, list)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{prefix}.{index}" if prefix else str(index))


class _Recorder(TorchFunctionMode):
    """Makes the nodes: ops through ``__torch_function__``, modules through hooks."""

    def __init__(self, model: nn.Module, keep_inputs: set[str]) -> None:
        super().__init__()
        self.trace = Trace()
        self.of: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.params = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
        self.param_dims = {name: p.dim() for name, p in model.named_parameters(
            remove_duplicate=False)}
        self.views: dict[int, str] = {}  # node -> the parameter it is a view of
        self.collapsed = 0  # > 0 inside a module recorded as one node
        self.busy = False  # inside the recorder's own bookkeeping
        self.keep_inputs = keep_inputs
        self.rms: list[tuple[Node, torch.Tensor]] = []
        self.constants: list[tuple[Node, torch.Tensor]] = []  # an added constant's rms

    # -------------------------------------------------------------------------- nodes
    def node(self, kind: str, name: str, parents: tuple[int, ...], out: Any, **extra: Any
             ) -> Node | None:
        first = next((t for _, t in _tensors(out)), None)
        node = Node(len(self.trace.nodes), kind, name, parents,
                    shape=tuple(first.shape) if first is not None else (), **extra)
        self.trace.nodes.append(node)
        for _, tensor in _tensors(out):
            if not isinstance(tensor, nn.Parameter):
                self.of[tensor] = node.index
        if first is not None and first.is_floating_point() and first.numel() > 0:
            self.busy = True
            try:
                self.rms.append((node, rms(first)))
            finally:
                self.busy = False
        return node

    def parents(self, value: Any) -> tuple[tuple[int, ...], tuple[str, ...]]:
        nodes: list[int] = []
        params: list[str] = []
        for _, tensor in _tensors(value):
            if id(tensor) in self.params and isinstance(tensor, nn.Parameter):
                params.append(self.params[id(tensor)])
            elif tensor in self.of and self.of[tensor] in self.views:
                params.append(self.views[self.of[tensor]])  # a view of a parameter
            elif tensor in self.of and self.of[tensor] not in nodes:
                nodes.append(self.of[tensor])
        return tuple(nodes), tuple(params)

    # -------------------------------------------------------------------------- ops
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if self.busy or self.collapsed or name in _SKIPPED:
            return out
        if not any(True for _ in _tensors(out)):
            return out
        parents, params = self.parents((args, kwargs))
        if not parents and not params:
            return out  # a constant (positions, masks from shapes): no node
        if name in ("scaled_dot_product_attention", "softmax"):
            self.attention_call(name, args, kwargs, parents)
        role, activation = self.op_role(name, params)
        scalars = tuple(float(a) for a in args if isinstance(a, (int, float))
                        and not isinstance(a, bool))
        node = self.node("op", name, parents, out, params=params, role=role,
                         activation=activation, scalars=scalars)
        if not parents and len(params) == 1 and name in _VIEWS and node is not None:
            self.views[node.index] = params[0]  # self.conv1d.weight.view(...): the parameter
        if name in ADDS and len(parents) + len(params) == 1 and node is not None:
            self.constant(node, args)
        return out

    def constant(self, node: Node, args: Any) -> None:
        """The rms of the constant tensor an addition adds to a traced one."""
        for value in args[:2]:
            if isinstance(value, torch.Tensor) and value.is_floating_point() \
                    and value.numel() > 0 and value not in self.of \
                    and id(value) not in self.params:
                self.busy = True
                try:
                    self.constants.append((node, rms(value)))
                finally:
                    self.busy = False
                return

    def op_role(self, name: str, params: tuple[str, ...]) -> tuple[str | None, str | None]:
        activation = activation_for_function(name)
        if activation is not None:
            return "activation", activation
        if name in _WEIGHT_OPS and any(self.param_dims.get(p, 0) >= 2 for p in params):
            return "weight", None
        if name == "embedding" and params:
            return "embedding", None
        return None, None

    def attention_call(self, name: str, args: Any, kwargs: Any, parents: tuple[int, ...]
                       ) -> None:
        self.busy = True
        try:
            if name == "scaled_dot_product_attention" and len(args) >= 2:
                scale = args[6] if len(args) > 6 else kwargs.get("scale")
                query, key = args[0], args[1]
                std = _sdpa_logit_std(query, key, scale)
                self.trace.attention.append({"op": name, "std": std,
                                             "query": self.of.get(query),
                                             "key": self.of.get(key)})
            elif name == "softmax" and args and isinstance(args[0], torch.Tensor) \
                    and args[0].dim() == 4 and args[0].is_floating_point():
                logits = args[0].detach().float()
                kept = logits[logits > _MASKED]
                if kept.numel() > 1:
                    self.trace.attention.append({"op": name, "std": kept.std(),
                                                 "scores": self.of.get(args[0])})
        finally:
            self.busy = False

    # -------------------------------------------------------------------------- modules
    def hooks(self, name: str, module: nn.Module, kind: LayerKind | None,
              handles: HookHandles) -> None:
        if kind is None or kind.role not in _COLLAPSED:
            return
        saved: list[Any] = []

        def enter(_m: nn.Module, args: Any, kwargs: Any) -> None:
            saved.append(None if self.collapsed else self.parents((args, kwargs)))
            if not self.collapsed and name in self.keep_inputs:
                first = next((t for _, t in _tensors(args) if t.is_floating_point()), None)
                if first is not None:
                    self.trace.inputs.setdefault(name, first.detach())
            self.collapsed += 1

        def leave(_m: nn.Module, _args: Any, _kwargs: Any, out: Any) -> None:
            self.collapsed -= 1
            seen = saved.pop() if saved else None
            if seen is None:
                return
            self.trace.called.add(name)
            parents, params = seen
            self.node("module", name, parents, out, params=params, role=kind.role,
                      activation=kind.activation)

        handles.add(module.register_forward_pre_hook(enter, with_kwargs=True))
        handles.add(module.register_forward_hook(leave, with_kwargs=True, always_call=True))


def _sdpa_logit_std(query: torch.Tensor, key: torch.Tensor, scale: float | None) -> torch.Tensor:
    query, key = query.detach().float(), key.detach().float()
    if key.dim() >= 3 and query.dim() >= 3 and key.shape[-3] != query.shape[-3]:
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], dim=-3)  # grouped heads
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    return (query @ key.transpose(-1, -2) * scale).std()


def trace_model(model: nn.Module, sample: Any, run: Callable[[], Any],
                kinds: Mapping[str, LayerKind | None] | None = None,
                keep_inputs: set[str] | None = None) -> Trace:
    """Run ``run()`` (one pass of ``model`` on ``sample``) under the recorder.

    Args:
        model: the model the pass runs.
        sample: the batch: its tensors become the input nodes.
        run: the pass, returning the model's output.
        kinds: module name -> kind (else :func:`kind_of` of each module).
        keep_inputs: modules whose first float input is kept (for the norm probes).
    """
    recorder = _Recorder(model, keep_inputs or set())
    for key, tensor in _tensors(sample):
        recorder.node("input", key or "input", (), tensor)
    with HookHandles() as handles:
        for name, module in model.named_modules():
            kind = kinds.get(name) if kinds is not None else kind_of(module)
            recorder.hooks(name, module, kind, handles)
        with recorder:
            out = run()
    for key, tensor in _tensors(out):
        if tensor in recorder.of:
            recorder.trace.outputs.append((key or "output", recorder.of[tensor]))
    measured = recorder.rms + recorder.constants
    if measured:
        values = torch.stack([value.to(measured[0][1].device) for _, value in measured])
        for index, ((node, _), value) in enumerate(zip(measured, values.tolist(), strict=True)):
            if index < len(recorder.rms):
                node.rms = value
            else:
                node.constant_rms = value
    for call in recorder.trace.attention:
        call["std"] = float(call["std"])
    return recorder.trace
