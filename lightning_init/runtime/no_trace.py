"""A model pass that leaves no trace: the check's and the automatic policy's mode.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    >>> with no_side_effects(net):
    ...     net.training, net[1].training
    (False, True)
    >>> _ = net(torch.randn(8, 4))  # outside: BatchNorm's running statistics move
    >>> before = net[1].running_mean.clone()
    >>> with no_side_effects(net):
    ...     _ = net(torch.randn(8, 4))
    >>> bool(torch.equal(before, net[1].running_mean)), net.training
    (True, True)
"""

from __future__ import annotations

import contextlib
import random
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parameter import is_lazy
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_init._log import LOGGER
from lightning_init._text import listing

__all__ = ["modes_kept", "no_side_effects", "values_kept"]


@contextlib.contextmanager
def values_kept(tensors: Sequence[torch.Tensor], *, on_host: bool = False) -> Iterator[None]:
    """Give every tensor its values back exactly on exit, from a copy taken on entry (in host
    memory with ``on_host``: a model near its accelerator's memory limit must not need twice
    its weights there).

    Example:
        >>> weight = torch.zeros(3)
        >>> with values_kept([weight], on_host=True):
        ...     _ = weight.add_(1.0)
        >>> weight.tolist()
        [0.0, 0.0, 0.0]
    """
    saved = [tensor.detach().to("cpu", copy=True) if on_host else tensor.detach().clone()
             for tensor in tensors]
    try:
        yield
    finally:
        with torch.no_grad():
            for tensor, value in zip(tensors, saved, strict=True):
                tensor.copy_(value)


@contextlib.contextmanager
def no_side_effects(model: nn.Module) -> Iterator[None]:
    """Run a pass in the check's mode and leave no trace.

    Mode: every module in eval mode (dropout off, so that the spread across samples comes from
    the input alone) except the BatchNorm family in train mode (batch statistics, as in the
    first training step). On exit: every module's ``training`` flag, every buffer (running
    statistics, ``num_batches_tracked``) and the RNG states (torch CPU, initialized CUDA
    devices, Python ``random``, NumPy if imported) are restored exactly, and so is every
    parameter the pass wrote in place (an EMA teacher updated in ``training_step``, a forward
    that renormalizes its weight): a parameter is copied just before its first in-place write,
    and copied back on exit. One line on the ``lightning_init`` logger names them; one that
    changed unseen (its version counter moved, no copy was taken) is named in a warning line.
    A parameter given other data (``param.data = ...``, which no operator and no version
    counter sees) is found by its storage, shape and dtype on exit and given its own back.
    The modes are set back through the modules' own ``train()``/``eval()``
    (:func:`modes_kept`).
    Lazy parameters not yet materialized are left out (the pass materializes them, as the
    first training step would). A ``torch.compile``'d module runs eagerly inside (the same
    numbers; training compiles it as it would without the pass).
    """
    watch = _CopyOnWrite(model)
    buffers = [buffer for buffer in model.buffers()
               if buffer is not None and not buffer.is_meta and not is_lazy(buffer)]
    python_state = random.getstate()
    numpy_random = _numpy_random()
    numpy_state = numpy_random.get_state() if numpy_random is not None else None
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        # Eager: a compiled module would not show the copy its writes (and torch.compile
        # would skip the frames it first meets under the copy's mode, for good). The modes
        # are set and set back inside the copy's mode: what a module's ``train()`` or
        # ``eval()`` writes (a LoRA layer merging its update) is copied first and restored.
        with torch.random.fork_rng(devices=devices), values_kept(buffers), \
                torch.enable_grad(), _eager(), watch, modes_kept(model):
            _check_modes(model)
            yield
    finally:
        watch.restore()
        random.setstate(python_state)
        if numpy_random is not None:
            numpy_random.set_state(numpy_state)


def _check_modes(model: nn.Module) -> None:
    """Every module in eval mode but the BatchNorm family (batch statistics)."""
    model.eval()
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.train()


@contextlib.contextmanager
def modes_kept(model: nn.Module) -> Iterator[None]:
    """Every module's train/eval mode on exit as on entry, set back through the modules' own
    ``train()``: first ``model.train()``, so that a module that caches in eval mode and drops
    the cache there (LeViT's attention biases, kept with the pass's graph) holds nothing of the
    pass, then ``train(False)`` on each module that was in eval mode (in order, parents first),
    so that what its ``eval()`` sets up (a LoRA layer's merged weight and flag) is as before;
    then every flag as it was (a module in train mode under one in eval mode included).

    >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    >>> with modes_kept(net):
    ...     _ = net.eval()
    >>> net[1].training
    True
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        _restore_modes(model, modes)


def _restore_modes(model: nn.Module, modes: list[tuple[nn.Module, bool]]) -> None:
    with torch.no_grad():
        model.train()
        for module, training in modes:
            if not training and module.training:
                module.train(False)
    for module, training in modes:
        module.training = training


def _eager() -> contextlib.AbstractContextManager[Any]:
    """Compiled code runs eagerly inside: ``torch.compiler.set_stance`` (torch 2.6 on), else
    dynamo's ``disable`` setting (the same numbers; a frame dynamo first meets inside may then
    stay eager afterwards), else nothing."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    if set_stance is not None:
        return set_stance("force_eager")
    try:
        from torch._dynamo import config
        return config.patch(disable=True)
    except (ImportError, AttributeError, KeyError):  # pragma: no cover - torch without dynamo
        return contextlib.nullcontext()


class _CopyOnWrite(TorchDispatchMode):
    """Copies a parameter of ``model`` just before the pass first writes it in place (any
    operator that writes an argument, on the parameter or on a view or ``.data`` of it);
    :meth:`restore` writes the copies back and gives a parameter whose ``.data`` was replaced
    its own back. The library's own temporary moves (the check's moved and look-ahead
    passes) are made outside the mode, never through it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._named = [(name, param) for name, param in model.named_parameters()
                       if not param.is_meta and not is_lazy(param)]
        self._versions = [param._version for _, param in self._named]
        # ``.data`` (storage, offset, shape, strides, dtype), held: its setter bumps no version.
        self._data = [param.data for _, param in self._named]
        self._layouts = [_layout(data) for data in self._data]
        self._by_storage: dict[int, list[int]] = {}
        for index, (_, param) in enumerate(self._named):
            key = _storage_key(param)
            if key is not None:
                self._by_storage.setdefault(key, []).append(index)
        self._by_id = {id(param): index for index, (_, param) in enumerate(self._named)}
        self._copies: dict[int, torch.Tensor] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        kwargs = kwargs or {}
        for tensor in _written(func, args, kwargs):
            self._save(tensor)
        return func(*args, **kwargs)

    def _save(self, tensor: Any) -> None:
        if not isinstance(tensor, torch.Tensor):
            return
        index = self._by_id.get(id(tensor))
        indices = [index] if index is not None else self._by_storage.get(_storage_key(tensor), [])
        for index in indices:
            if index not in self._copies:
                self._copies[index] = self._named[index][1].detach().clone()

    def restore(self) -> None:
        """Write the copies back; one line names what was restored, one what changed unseen."""
        rebound = {index for index, (_, param) in enumerate(self._named)
                   if self._layouts[index] is not None
                   and _layout(param.data) != self._layouts[index]}
        for index in rebound:
            self._named[index][1].data = self._data[index]
        changed = [index for index, (_, param) in enumerate(self._named)
                   if param._version != self._versions[index]]
        with torch.no_grad():
            for index, saved in self._copies.items():
                self._named[index][1].copy_(saved)
        self._data = []
        restored = [self._named[index][0] for index in sorted(rebound | set(self._copies))]
        unseen = [self._named[index][0] for index in changed if index not in self._copies]
        if restored:
            LOGGER.info(
                "lightning_init: the model's training_step or forward, run before training by"
                " the init check (or policy='auto'), wrote %d parameter(s) in place (or gave them"
                " other .data): %s; they"
                " are restored bit for bit, and training starts from their values before.",
                len(restored), listing(restored))
        if unseen:
            LOGGER.warning(
                "lightning_init: the model's training_step or forward, run before training by"
                " the init check (or policy='auto'), changed %d parameter(s) in place in a way"
                " that could not be undone: %s. Training starts from the changed values: move"
                " the in-place update out of training_step (into on_train_batch_end), or pass"
                " check=False.", len(unseen), listing(unseen))


def _written(func: Any, args: Any, kwargs: dict[str, Any]) -> list[Any]:
    """The tensors an operator writes: the arguments its schema marks as written (``Tensor(a!)``:
    ``self`` of ``add_``, ``out=``, the lists of ``_foreach_*_``)."""
    positions = _WRITES.get(func)
    if positions is None:
        schema = getattr(func, "_schema", None)
        arguments = [] if schema is None else schema.arguments
        positions = _WRITES[func] = tuple(
            (index, argument.name) for index, argument in enumerate(arguments)
            if argument.alias_info is not None and argument.alias_info.is_write
        )
    written: list[Any] = []
    for index, name in positions:
        value = args[index] if index < len(args) else kwargs.get(name)
        written.extend(value if isinstance(value, (list, tuple)) else [value])
    return written


_WRITES: dict[Any, tuple[tuple[int, str], ...]] = {}


def _storage_key(tensor: torch.Tensor) -> int | None:
    """The address of the tensor's storage (a view and ``.data`` share it), when it has one."""
    try:
        return int(tensor.untyped_storage().data_ptr()) or None
    except (RuntimeError, NotImplementedError, TypeError, ValueError):  # DTensor, lazy
        return None


def _layout(tensor: torch.Tensor) -> tuple[Any, ...] | None:
    """Where and how the tensor's values lie (``None``: no storage of its own, as DTensor)."""
    key = _storage_key(tensor)
    if key is None:
        return None
    return key, tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype


def _numpy_random() -> Any:
    numpy = sys.modules.get("numpy")
    return getattr(numpy, "random", None)
