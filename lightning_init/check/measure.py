"""The check's one forward/backward pass: hooks, statistics, side-effect-free bookkeeping."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightning_init.runtime.distributed import NORM, full_stats, is_dtensor, rms
from lightning_init.runtime.hooks import HookHandles, forward_hooks
from lightning_init.runtime.no_trace import no_side_effects
from lightning_init.runtime.sparse import stored_values

__all__ = [
    "RELU_FAMILY",
    "SIGMOID_FAMILY",
    "STAT_FIELDS",
    "TANH_FAMILY",
    "Recording",
    "first_float_tensor",
    "gradients",
    "loss_from_step_output",
    "measured_modules",
    "no_side_effects",
    "norms",
    "recording",
    "rms",
    "safe_norm",
    "surrogate_loss",
    "tensors_in",
]

# Per-layer statistics, one row per recorded module (see _output_stats).
STAT_FIELDS = ("mean", "std", "input_dependence", "dead_fraction", "saturated_fraction",
               "nonfinite", "inflow_dependence", "inflow_rms")

RELU_FAMILY: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)  # exact zeros
TANH_FAMILY: tuple[type[nn.Module], ...] = (nn.Tanh,)
SIGMOID_FAMILY: tuple[type[nn.Module], ...] = (nn.Sigmoid,)
SATURATION_LEVEL = 0.99


def measured_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaves, plus modules that own parameters directly (``MultiheadAttention``, a custom
    block with its own ``weight``): every module whose own computation the check sees."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if not any(True for _ in module.children())
        or any(True for _ in module.parameters(recurse=False))
    ]


def first_float_tensor(value: Any) -> torch.Tensor | None:
    """The first floating-point tensor in a module output (tensor, tuple, list, dict,
    PackedSequence)."""
    if isinstance(value, torch.Tensor):
        return value if value.is_floating_point() or value.is_complex() else None
    if isinstance(value, nn.utils.rnn.PackedSequence):
        return first_float_tensor(value.data)
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        for item in value:
            found = first_float_tensor(item)
            if found is not None:
                return found
    return None


def tensors_in(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a nested batch (tensor, tuple, list, dict)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from tensors_in(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from tensors_in(item)


def _spread(values: torch.Tensor) -> torch.Tensor:
    """Spread across the leading (batch) dimension over root-mean-square, of values already
    divided by their peak (see ``LayerRecord.input_dependence``)."""
    rows = values.reshape(values.shape[0], -1)
    spread = rows.var(dim=0, correction=0).mean().sqrt()
    rms = rows.pow(2).mean().sqrt()
    return torch.where(rms > 0, spread / rms, torch.zeros_like(rms))


def inflow_dependence(inflow: torch.Tensor | None) -> torch.Tensor | None:
    """The input dependence of what flows into a module (float, or integer indices as numbers);
    ``None`` when it cannot be measured (no tensor, one sample, complex)."""
    if inflow is None or inflow.dim() < 1 or inflow.shape[0] < 2 or inflow.numel() == 0 \
            or inflow.is_complex():
        return None
    values = inflow.detach().float()
    peak = values.abs().amax()
    scale = torch.where(torch.isfinite(peak) & (peak > 0), peak, torch.ones_like(peak))
    return _spread(values / scale)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's full tensor (a tensor-parallel layer's output), else the tensor: the check's
    statistics are the full output's, as on one device."""
    return tensor.full_tensor() if is_dtensor(tensor) else tensor


def _output_stats(output: torch.Tensor, module: nn.Module,
                  inflow: torch.Tensor | None = None) -> torch.Tensor:
    """Seven statistics of one output as a float32 tensor on the output's device (no sync).

    mean and std over all elements; input dependence (see ``LayerRecord``); dead fraction for
    the ReLU family; saturated fraction for tanh / sigmoid; count of NaN/Inf; the input
    dependence and root-mean-square of the module's own input (``inflow``). NaN marks "not
    applicable".
    """
    values = output.detach()
    if values.is_complex():
        values = values.abs()
    values = values.float()
    nan = torch.full((), float("nan"), device=values.device)
    inflow_dep = inflow_dependence(inflow)
    inflow_dep = nan if inflow_dep is None else inflow_dep.to(values.device)
    inflow_rms = rms(inflow).to(values.device) \
        if inflow is not None and inflow.is_floating_point() and inflow.numel() else nan
    if values.numel() == 0:
        return torch.stack([nan, nan, nan, nan, nan, torch.zeros((), device=values.device),
                            inflow_dep, inflow_rms])
    # Moments of the output divided by its largest magnitude: float32 squares of 1e22 overflow.
    peak = values.abs().amax()
    scale = torch.where(torch.isfinite(peak) & (peak > 0), peak, torch.ones_like(peak))
    scaled = values / scale
    flat = scaled.reshape(-1)
    mean = flat.mean() * scale
    std = flat.std(correction=0) * scale
    dependence = _spread(scaled) if values.dim() >= 1 and values.shape[0] >= 2 else nan
    dead = nan
    if isinstance(module, RELU_FAMILY) and values.dim() >= 2:
        # A unit is a column of (N, F), a channel of (N, C, ...): zero for every sample/position.
        other_dims = [0, *range(2, values.dim())]
        dead = (values.abs().amax(dim=other_dims) == 0).float().mean()
    saturated = nan
    if isinstance(module, TANH_FAMILY):
        saturated = (values.abs() > SATURATION_LEVEL).float().mean()
    elif isinstance(module, SIGMOID_FAMILY):
        saturated = ((values < 1 - SATURATION_LEVEL) | (values > SATURATION_LEVEL)).float().mean()
    nonfinite = (~torch.isfinite(values)).sum().float()
    return torch.stack([mean, std, dependence, dead, saturated, nonfinite, inflow_dep,
                        inflow_rms])


def first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor of any dtype but bool in a nested value (what flows into a module)."""
    for tensor in tensors_in(value):
        if tensor.dtype != torch.bool:
            return tensor
    return None


def _storage(tensor: torch.Tensor) -> int | None:
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensor subclasses without storage
        return None


def _version(tensor: torch.Tensor) -> int | None:
    """How many in-place ops wrote into the tensor's storage (views share the count)."""
    try:
        return tensor._version
    except (RuntimeError, NotImplementedError, AttributeError):  # inference tensors
        return None


@dataclass
class Recording:
    """What the forward hooks saw: in forward order, first call of each module only.

    ``sources[i]`` is the index of the recorded module whose output module ``i`` received as
    its input, as is (the same storage: a view, an in-place activation), or ``None`` when the
    input was computed in between (a residual sum, a functional op, also one written into the
    producer's output in place: ``h += residual``) or is the model's input.
    """

    names: list[str] = field(default_factory=list)
    modules: list[nn.Module] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    stats: list[torch.Tensor] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    sources: list[int | None] = field(default_factory=list)
    _producers: dict[int, tuple[int, int | None]] = field(default_factory=dict)
    _alive: list[torch.Tensor] = field(default_factory=list)

    def hook_for(self, qualified_name: str, module: nn.Module) -> Callable[..., None]:
        def hook(_module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            self.calls[qualified_name] = self.calls.get(qualified_name, 0) + 1
            if self.calls[qualified_name] > 1:
                return
            # The check's own arithmetic: no TorchFunctionMode following the model's pass (the
            # anatomy's trace) sees it.
            with torch._C.DisableTorchFunction():
                self._record(qualified_name, module, args, kwargs, output)

        return hook

    def _record(self, qualified_name: str, module: nn.Module, args: Any, kwargs: Any,
                output: Any) -> None:
        """Record one module's first call: its output's statistics and where its input came
        from."""
        tensor = first_float_tensor(output)
        if tensor is None:
            return
        inflow = first_tensor(args) if args else None
        if inflow is None:
            inflow = first_tensor(kwargs)
        produced = _storage(tensor)
        self.sources.append(self._source(inflow, produced) if inflow is not None else None)
        if produced is not None:
            self._producers[produced] = (len(self.names), _version(tensor))
            self._alive.append(tensor)  # no storage reuse while the pass runs
        self.names.append(qualified_name)
        self.modules.append(module)
        self.shapes.append(tuple(tensor.shape))
        self.stats.append(_output_stats(_full(tensor), module,
                                        None if inflow is None else _full(inflow)))

    def _source(self, inflow: torch.Tensor, produced: int | None) -> int | None:
        """The recorded module whose output ``inflow`` is, as is: the same storage, written
        in place since by nothing, or only by the module receiving it (an in-place
        activation, whose output shares the storage: one write)."""
        storage = _storage(inflow)
        entry = self._producers.get(storage) if storage is not None else None
        if entry is None:
            return None
        index, version = entry
        now = _version(inflow)
        if version is None or now is None or now == version:
            return index
        return index if now == version + 1 and produced == storage else None

    def producers(self, value: Any) -> list[int]:
        """The recorded modules whose output is one of the floating-point tensors in ``value``
        (the model's output), as is: the same storage (a view, an in-place op by a module),
        written in place by nothing since. Only while the pass's outputs are alive (before
        :meth:`release`)."""
        found = []
        for tensor in tensors_in(value):
            storage = _storage(tensor) if tensor.is_floating_point() else None
            entry = self._producers.get(storage) if storage is not None else None
            if entry is not None and entry[1] == _version(tensor):
                found.append(entry[0])
        return list(dict.fromkeys(found))

    def release(self) -> None:
        """Drop the references that kept outputs alive during the pass."""
        self._alive.clear()
        self._producers.clear()


@contextlib.contextmanager
def recording(model: nn.Module) -> Iterator[Recording]:
    """Forward hooks on every measured module, removed on exit (also when the forward raises)."""
    record = Recording()
    hooks: HookHandles = forward_hooks(measured_modules(model), record.hook_for,
                                       with_kwargs=True)
    try:
        yield record
    finally:
        hooks.remove()
        record.release()


def surrogate_loss(output: torch.Tensor) -> torch.Tensor:
    """A fixed random projection of the output: ``sum(output * r) / sqrt(numel)``, ``r`` standard
    normal from a generator seeded with 0. Its gradient with respect to the output is a
    unit-variance signal whatever the output's scale, so gradient norms measure how the network
    carries a unit signal backwards (and a huge output does not overflow the loss)."""
    generator = torch.Generator(device=output.device).manual_seed(0)
    projection = torch.randn(output.shape, generator=generator, device=output.device,
                             dtype=torch.float32)
    numel = max(output.numel(), 1)
    return (output.float() * projection).sum() / numel**0.5


def label_free_loss(output: Any) -> tuple[torch.Tensor, int] | None:
    """For a model output holding ``logits`` (transformers' ``ModelOutput``, a dict) with C >= 2
    classes on the last dimension: the cross-entropy against uniformly drawn labels,
    ``-mean(log_softmax(logits, -1))`` (ln C for uniform predictions), and C; else ``None``.

    Example:
        >>> import math
        >>> value, classes = label_free_loss({"logits": torch.zeros(4, 10)})
        >>> round(float(value), 4), classes, round(math.log(10), 4)
        (2.3026, 10, 2.3026)
    """
    logits = output.get("logits") if isinstance(output, Mapping) else None
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() \
            or logits.dim() < 2 or logits.shape[-1] < 2 or logits.numel() == 0:
        return None
    with torch.no_grad():
        value = -torch.log_softmax(logits.detach().float(), dim=-1).mean()
    return value, int(logits.shape[-1])


def loss_from_step_output(step_output: Any) -> torch.Tensor | None:
    """``training_step``'s loss: a tensor, or a mapping's ``"loss"``; ``None`` otherwise."""
    if isinstance(step_output, torch.Tensor):
        return step_output
    if isinstance(step_output, Mapping) and isinstance(step_output.get("loss"), torch.Tensor):
        return step_output["loss"]
    return None


def safe_norm(tensor: torch.Tensor) -> torch.Tensor:
    """L2 norm in float32 without overflow: squares of 1e22 do not fit, so scale by the peak
    first (NaN/Inf stay NaN/Inf). A 0-d tensor on the tensor's device; no host sync. A sparse
    gradient's norm is that of its dense equivalent."""
    values = stored_values(tensor.detach()).float()
    if values.numel() == 0:
        return torch.zeros((), device=values.device)
    peak = values.abs().amax()
    scale = torch.where(torch.isfinite(peak) & (peak > 0), peak, torch.ones_like(peak))
    return (values / scale).norm() * scale


def norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """:func:`safe_norm` of each tensor; a DTensor's is its full tensor's, from the shards'
    partial sums, all DTensors in one batched reduction (collective: every rank calls this
    with the same list).

    Example:
        >>> [round(float(n), 4) for n in norms([torch.tensor([3.0, 4.0]), torch.ones(4)])]
        [5.0, 2.0]
    """
    result = [None if is_dtensor(t) else safe_norm(t) for t in tensors]
    sharded = [i for i, t in enumerate(tensors) if is_dtensor(t)]
    if sharded:
        rows = full_stats([tensors[i] for i in sharded])
        for k, i in enumerate(sharded):
            result[i] = rows[k, NORM].float()
    return result  # type: ignore[return-value]


def _fully_sharded(model: nn.Module) -> bool:
    """Whether FSDP2's ``fully_shard`` manages a module of ``model``."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch < 2.6
        return False
    return any(isinstance(module, FSDPModule) for module in model.modules())


def gradients(model: nn.Module, loss: torch.Tensor,
              params: list[torch.Tensor]) -> list[torch.Tensor | None]:
    """``d loss / d params`` (``None`` for an unused parameter), leaving every ``.grad`` as it
    was.

    With ``torch.autograd.grad``, except under FSDP2 (``fully_shard``): its forward computes
    with gathered copies of the parameters, and gradients reach the sharded parameters only
    through its backward hooks (reduce-scatter into ``.grad``). There ``loss.backward()`` runs
    with every ``.grad`` cleared, the gradients are taken, and the previous ``.grad`` restored.

    Example:
        >>> layer = torch.nn.Linear(2, 1)
        >>> grads = gradients(layer, layer(torch.ones(1, 2)).sum(), list(layer.parameters()))
        >>> [g.tolist() for g in grads], layer.weight.grad
        ([[[1.0, 1.0]], [1.0]], None)
    """
    if not _fully_sharded(model):
        return list(torch.autograd.grad(loss, params, allow_unused=True))
    saved = [param.grad for param in params]
    try:
        for param in params:
            param.grad = None
        loss.backward()
        return [param.grad for param in params]
    finally:
        for param, grad in zip(params, saved, strict=True):
            param.grad = grad
