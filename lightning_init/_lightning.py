"""How the library feeds a LightningModule: one copy each, for the callback and the check.

- :func:`find_sample_batch`: ``example_input_array``, else the first batch of the training
  dataloader (a datamodule's ``train_dataloader()``, the module's, or loaders passed straight
  to ``trainer.fit``), moved to a device; :class:`SampleUnavailable` says why there is none.
- :func:`convert_input`: the trainer's precision plugin's conversion of a batch.
- :func:`run_sample_forward`: one no-grad forward of that batch (materializes lazy modules).
- :func:`call_model`: inputs fed the way Lightning's model summary feeds
  ``example_input_array``.
- :func:`forward_input`: what ``forward`` gets when ``training_step`` must not run (manual
  optimization steps the optimizers inside it).
- :func:`muted_logging`, :func:`precision_context`: ``training_step`` outside the training loop.
- :func:`to_device`: Lightning's ``move_data_to_device``.

Lightning itself is imported on first use, so :func:`~lightning_init.check_init` on a plain
``nn.Module`` does not import it.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from lightning_init.runtime.no_trace import modes_kept

__all__ = [
    "SampleBatch",
    "SampleUnavailable",
    "call_model",
    "convert_input",
    "find_sample_batch",
    "forward_input",
    "is_manual_optimization",
    "model_copy",
    "muted_logging",
    "precision_context",
    "run_sample_forward",
    "to_device",
]

_LOGGING_METHODS = ("log", "log_dict")


@dataclass(frozen=True)
class SampleBatch:
    """One batch and where it came from.

    Attributes:
        batch: the batch, on the requested device.
        source: ``"example_input_array"`` or ``"train_dataloader"``.
    """

    batch: Any
    source: str


class SampleUnavailable(Exception):
    """No training batch can be read for the library without harm; the message says why.

    Example:
        >>> str(SampleUnavailable("the training data is a stream"))
        'the training data is a stream'
    """


# ------------------------------------------------------------------------------ sample batch


def _combined(loaders: Any) -> Any:
    """A fresh ``CombinedLoader`` over ``loaders`` in the mode the fit loop iterates them: a
    ``CombinedLoader``'s own mode, else ``"max_size_cycle"`` (a dict or a list of loaders, one
    loader)."""
    from lightning.pytorch.utilities import CombinedLoader

    if isinstance(loaders, CombinedLoader):
        return CombinedLoader(loaders.iterables, getattr(loaders, "_mode", "max_size_cycle"))
    return CombinedLoader(loaders, "max_size_cycle")


def _first_batch(loaders: Any) -> tuple[bool, Any]:
    """``(True, batch)``: the first batch the fit loop gives ``training_step`` (one batch of
    each loader, in their dict or list, as Lightning combines them); ``(False, None)`` when
    there is none. Every generator of the loaders is left as it was."""
    combined = _combined(loaders)
    if not combined.flattened:
        return False, None
    for loader in combined.flattened:
        _refuse_one_shot(loader)
    with _generators_kept(combined.flattened):
        iter(combined)
        try:
            batch, _, _ = next(combined)
        except StopIteration:
            return False, None
        finally:
            combined.reset()  # let worker processes go now
    return True, batch


@contextlib.contextmanager
def _generators_kept(loaders: list[Any]) -> Iterator[None]:
    """The states of the loaders' own generators restored on exit: reading a batch draws from
    them. Kept: every ``torch.Generator`` attribute (whatever its name) of a loader, its
    dataset, its sampler, its batch sampler and the batch sampler's sampler; NumPy's and
    Python's generators are not."""
    generators: dict[int, torch.Generator] = {}
    for loader in loaders:
        batch_sampler = getattr(loader, "batch_sampler", None)
        owners = (loader, getattr(loader, "dataset", None), getattr(loader, "sampler", None),
                  batch_sampler, getattr(batch_sampler, "sampler", None))
        for owner in owners:
            for value in getattr(owner, "__dict__", {}).values():
                if isinstance(value, torch.Generator):
                    generators[id(value)] = value
    states = [(generator, generator.get_state()) for generator in generators.values()]
    try:
        yield
    finally:
        for generator, state in states:
            generator.set_state(state)


def _train_loader(trainer: Any) -> Any:
    """The training dataloader(s) the coming ``fit`` will use, or ``None``."""
    if getattr(trainer, "train_dataloader", None) is not None:
        return trainer.train_dataloader
    source = getattr(getattr(trainer, "fit_loop", None), "_data_source", None)
    if source is None or source.instance is None or not source.is_defined():
        return None
    return source.dataloader()


def _refuse_one_shot(loader: Any) -> None:
    """Raise :class:`SampleUnavailable` unless reading a batch leaves the data for training.

    A ``DataLoader`` over a map-style dataset and a list or tuple of batches are read again from
    the start by the fit loop. A stream (an ``IterableDataset``, an iterator, any other
    iterable) may be one-shot: its first batch, once taken, would be lost to training.
    """
    from torch.utils.data import DataLoader, IterableDataset

    if isinstance(loader, (list, tuple, torch.Tensor)):
        return
    if isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset):
        return
    kind = (
        f"a DataLoader over {type(loader.dataset).__name__} (an IterableDataset)"
        if isinstance(loader, DataLoader)
        else f"a {type(loader).__name__}"
    )
    raise SampleUnavailable(
        f"the training data is {kind}, a stream that may not be read twice: its first batch is"
        " left to training; set `example_input_array` to give the library a sample input"
    )


def find_sample_batch(
    trainer: Any, pl_module: Any, device: torch.device, *, example_first: bool = True
) -> SampleBatch | None:
    """The example input, else the first training batch, moved to ``device``; ``None`` if none.

    ``example_first=False`` looks for a training batch only (the check runs ``training_step``
    on it, and reads ``example_input_array`` itself when given none). The training batch is the
    one the fit loop gives ``training_step`` first: several loaders (a dict, a list, a
    ``CombinedLoader`` in its mode) give one batch each, combined as Lightning combines them,
    and it goes through the module's batch hooks (``on_before_batch_transfer``,
    ``transfer_batch_to_device``, ``on_after_batch_transfer``).

    Drawing the batch and running its batch hooks moves neither the global RNG states (a
    shuffling sampler draws its seed from them, an augmentation its noise) nor the loaders' own
    generators (:func:`_generators_kept`), so training sees the same batches with and
    without the callback. A stream is not read at all (see :class:`SampleUnavailable`).

    Raises:
        SampleUnavailable: the training data is a stream that reading could consume.
        Exception: whatever building the training dataloader raises (e.g. an
            ``AttributeError`` for data made in ``LightningModule.setup``, not run yet).

    Example:
        >>> import lightning as L
        >>> module = L.LightningModule(); module.example_input_array = torch.zeros(2, 3)
        >>> found = find_sample_batch(None, module, torch.device("cpu"))
        >>> found.source, tuple(found.batch.shape)
        ('example_input_array', (2, 3))
    """
    from lightning.pytorch.utilities.seed import isolate_rng

    example = getattr(pl_module, "example_input_array", None) if example_first else None
    if example is not None:
        return SampleBatch(to_device(example, device), "example_input_array")
    with isolate_rng():  # the batch hooks too: an augmentation may draw random numbers
        loaders = _train_loader(trainer)
        if loaders is None:
            return None
        found, batch = _first_batch(loaders)
        if not found:
            return None
        return SampleBatch(_transferred(pl_module, batch, device), "train_dataloader")


def _transferred(pl_module: Any, batch: Any, device: torch.device) -> Any:
    """``batch`` through the batch hooks as the fit loop runs them (``on_before_batch_transfer``,
    ``transfer_batch_to_device``, ``on_after_batch_transfer``: the datamodule's when it
    overrides them, else the module's), or moved to ``device`` when there are none."""
    before = getattr(pl_module, "_on_before_batch_transfer", None)
    handler = getattr(pl_module, "_apply_batch_transfer_handler", None)
    if callable(before) and callable(handler):  # a LightningModule
        return handler(before(batch, 0), device, 0)
    transfer = getattr(pl_module, "transfer_batch_to_device", None)
    return transfer(batch, device, 0) if callable(transfer) else to_device(batch, device)


def run_sample_forward(pl_module: Any, sample: SampleBatch) -> None:
    """One forward pass of ``sample`` in eval mode under ``no_grad`` (materializes lazy modules).

    ``example_input_array`` goes through ``forward`` (:func:`call_model`); a training batch
    through ``training_step`` with logging muted, so batches that are tensors, ``(x, y)`` tuples
    or dicts all work the way the module's own training code reads them. Under manual
    optimization ``forward`` gets the batch's input (:func:`forward_input`) instead.

    Example:
        >>> import lightning as L
        >>> class Net(L.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.layer = torch.nn.LazyLinear(2)
        ...     def forward(self, x):
        ...         return self.layer(x)
        >>> net = Net(); net.example_input_array = torch.zeros(1, 5)
        >>> run_sample_forward(net, find_sample_batch(None, net, torch.device("cpu")))
        >>> tuple(net.layer.weight.shape)
        (2, 5)
    """
    from lightning.pytorch.utilities.seed import isolate_rng

    # modes kept module by module: a submodule frozen in eval mode stays so
    with modes_kept(pl_module), torch.no_grad(), isolate_rng():
        pl_module.eval()  # no batch-norm statistics updated, no dropout drawn
        if sample.source == "example_input_array":
            call_model(pl_module, sample.batch)
        elif is_manual_optimization(pl_module):
            call_model(pl_module, forward_input(pl_module, sample.batch, "InitCallback"))
        else:
            with muted_logging(pl_module):
                pl_module.training_step(sample.batch, 0)


# ------------------------------------------------------------------------ calling the module


def call_model(model: Any, inputs: Any) -> Any:
    """Call ``model`` the way Lightning's model summary feeds ``example_input_array``.

    A tuple or list is unpacked as positional arguments, a mapping as keyword arguments,
    anything else passed as is.

    Example:
        >>> call_model(lambda a, b: a - b, (5, 3)), call_model(lambda a, b: a - b, {"b": 5, "a": 3})
        (2, -2)
    """
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def is_manual_optimization(pl_module: Any) -> bool:
    """Whether ``training_step`` steps the optimizers itself (``automatic_optimization=False``).

    Example:
        >>> import lightning as L
        >>> module = L.LightningModule(); module.automatic_optimization = False
        >>> is_manual_optimization(module), is_manual_optimization(torch.nn.Linear(1, 1))
        (True, False)
    """
    return not getattr(pl_module, "automatic_optimization", True)


def forward_input(pl_module: Any, batch: Any, where: str) -> Any:
    """What to feed ``forward`` (through :func:`call_model`) instead of a ``training_step``.

    ``example_input_array`` when the module has one; else the input part of ``batch``: a
    tensor as is, the first element of a tuple or list, a mapping whole (as keyword arguments)
    when ``forward`` takes its keys.

    Args:
        pl_module: the LightningModule.
        batch: a training batch, or ``None``.
        where: who asks, for the error message (``"check"``, ``"InitCallback"``).

    Raises:
        ValueError: no example input and no part of ``batch`` fits ``forward``; the message
            says to set ``example_input_array``.

    Example:
        >>> import lightning as L
        >>> class Net(L.LightningModule):
        ...     def forward(self, x):
        ...         return x
        >>> forward_input(Net(), (torch.ones(2), torch.zeros(2)), "check")
        tensor([1., 1.])
        >>> forward_input(Net(), {"x": torch.ones(2), "y": torch.zeros(2)}, "check")
        Traceback (most recent call last):
        ...
        ValueError: check: Net.forward cannot take a training batch of type dict (keywords x, y: ...
    """
    example = getattr(pl_module, "example_input_array", None)
    if example is not None:
        return example
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    name = type(pl_module).__name__
    if batch is None:
        raise ValueError(
            f"{where}: {name} has no example_input_array and no sample batch was given; set "
            f"`self.example_input_array` or pass a batch"
        )
    problem = "" if not isinstance(batch, Mapping) else _keyword_problem(pl_module, batch)
    if isinstance(batch, Mapping) and not problem:
        return batch
    raise ValueError(
        f"{where}: {name}.forward cannot take a training batch of type {type(batch).__name__}"
        f"{problem}, and training_step does not run under manual optimization (it would step "
        f"the optimizers); set `{name}.example_input_array` to a sample input"
    )


def _keyword_problem(pl_module: Any, batch: Mapping[Any, Any]) -> str:
    """``""`` when ``forward(**batch)`` binds, else why not (for the error message)."""
    keys = ", ".join(str(key) for key in batch)
    if not all(isinstance(key, str) for key in batch):
        return f" (keys {keys}: not all strings)"
    try:
        inspect.signature(pl_module.forward).bind(**batch)
    except TypeError as error:
        return f" (keywords {keys}: {error})"
    except ValueError:  # no signature to read: let the call tell
        return ""
    return ""


# ----------------------------------------------------------- training_step outside the loop


@contextlib.contextmanager
def muted_logging(pl_module: Any) -> Iterator[None]:
    """``self.log``/``self.log_dict`` do nothing inside; on exit they are as before.

    Lightning forbids logging outside its loop; a ``log`` the user set on the instance comes
    back too.

    Example:
        >>> import lightning as L
        >>> module = L.LightningModule()
        >>> with muted_logging(module):
        ...     module.log("loss", 1.0)
        >>> "log" in vars(module)
        False
    """
    instance = vars(pl_module)
    saved = {name: instance[name] for name in _LOGGING_METHODS if name in instance}
    for name in _LOGGING_METHODS:
        object.__setattr__(pl_module, name, _no_op)
    try:
        yield
    finally:
        for name in _LOGGING_METHODS:
            if name in saved:
                object.__setattr__(pl_module, name, saved[name])
            else:
                instance.pop(name, None)


def _no_op(*_args: Any, **_kwargs: Any) -> None:
    return None


def precision_context(pl_module: Any) -> contextlib.AbstractContextManager[Any]:
    """The attached trainer's ``precision_plugin.train_step_context()`` (autocast under mixed
    precision), else a context that does nothing.

    Example:
        >>> with precision_context(torch.nn.Linear(1, 1)):
        ...     pass
    """
    trainer = getattr(pl_module, "_trainer", None)
    plugin = getattr(trainer, "precision_plugin", None)
    if plugin is not None and hasattr(plugin, "train_step_context"):
        return plugin.train_step_context()
    return contextlib.nullcontext()


def convert_input(pl_module: Any, data: Any) -> Any:
    """``data`` converted the way Lightning converts a training batch before the step: by the
    attached trainer's ``precision_plugin.convert_input`` (floating-point tensors to bfloat16
    under ``"bf16-true"``, to float64 under ``"64-true"``); unchanged without a trainer.

    Example:
        >>> convert_input(torch.nn.Linear(1, 1), torch.zeros(1)).dtype
        torch.float32
    """
    trainer = getattr(pl_module, "_trainer", None)
    plugin = getattr(trainer, "precision_plugin", None)
    if plugin is None or not hasattr(plugin, "convert_input"):
        return data
    return plugin.convert_input(data)


def to_device(batch: Any, device: torch.device | None) -> Any:
    """Every tensor (and anything with a ``.to``) in ``batch`` moved to ``device``, with
    Lightning's ``move_data_to_device``; ``device=None`` leaves the batch as it is.

    Example:
        >>> to_device({"x": torch.zeros(1)}, torch.device("meta"))["x"].is_meta
        True
    """
    if device is None:
        return batch
    from lightning.pytorch.utilities import move_data_to_device

    return move_data_to_device(batch, device)


def model_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` (any module). A LightningModule's copy keeps its trainer
    (``LightningModule.__getstate__`` drops it), so that a ``training_step`` reading
    ``self.trainer`` runs on the copy as on the module.

    A tensor that a forward pass left on a module as a plain attribute while it recorded a
    graph (RecurrentGemma's ``rg_lru.recurrent_states``) is no graph leaf, which
    ``copy.deepcopy`` refuses: the copy holds it detached, as a plain attribute or one level
    down in a list, tuple or dict attribute (a cache of past states)."""
    memo = {id(value): value.detach().clone() for module in model.modules()
            for value in _attribute_tensors(module) if value.grad_fn is not None}
    trial = copy.deepcopy(model, memo)
    if getattr(model, "_trainer", None) is not None and getattr(trial, "_trainer", 0) is None:
        trial._trainer = model._trainer
    return trial


def _attribute_tensors(module: torch.nn.Module) -> Iterator[torch.Tensor]:
    """The tensors a module holds as plain attributes, and one level down in containers."""
    for value in vars(module).values():
        inner = value.values() if isinstance(value, dict) else \
            value if isinstance(value, (list, tuple)) else (value,)
        yield from (item for item in inner if isinstance(item, torch.Tensor))
