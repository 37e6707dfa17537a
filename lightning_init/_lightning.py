"""Find one sample batch for a LightningModule and run it through the module.

Used by :class:`~lightning_init.InitCallback` to materialize lazy modules and to feed the init
check. The sources, in order: ``pl_module.example_input_array``, then the first batch of the
training dataloader (a datamodule's ``train_dataloader()``, the module's, or loaders passed
straight to ``trainer.fit``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.utilities.seed import isolate_rng
from lightning_utilities.core.apply_func import apply_to_collection

__all__: list[str] = []


@dataclass(frozen=True)
class _SampleBatch:
    """One batch and where it came from.

    Attributes:
        batch: the batch, on the requested device.
        source: ``"example_input_array"`` or ``"train_dataloader"``.
    """

    batch: Any
    source: str


def _first_loader(loaders: Any) -> Any:
    """The first loader of a loader, a CombinedLoader, or a list/dict of loaders."""
    flattened = getattr(loaders, "flattened", None)  # lightning's CombinedLoader
    if isinstance(flattened, list) and flattened:
        return flattened[0]
    if isinstance(loaders, Mapping):
        return _first_loader(next(iter(loaders.values()))) if loaders else None
    if isinstance(loaders, Sequence) and not isinstance(loaders, (str, bytes, torch.Tensor)):
        return _first_loader(loaders[0]) if loaders else None
    return loaders


def _train_loader(trainer: Any) -> Any:
    """The training dataloader(s) the coming ``fit`` will use, or ``None``."""
    if getattr(trainer, "train_dataloader", None) is not None:
        return trainer.train_dataloader
    source = getattr(getattr(trainer, "fit_loop", None), "_data_source", None)
    if source is None or source.instance is None or not source.is_defined():
        return None
    return source.dataloader()


def find_sample_batch(
    trainer: Any, pl_module: Any, device: torch.device, *, example_first: bool = True
) -> _SampleBatch | None:
    """The example input, else the first training batch, moved to ``device``; ``None`` if none.

    ``example_first=False`` looks for a training batch only (the check runs ``training_step``
    on it, and reads ``example_input_array`` itself when given none).

    Drawing the batch does not move the global RNG state (a shuffling sampler draws its seed
    from it), so training sees the same batches with and without the callback.

    Example:
        >>> import lightning as L
        >>> module = L.LightningModule(); module.example_input_array = torch.zeros(2, 3)
        >>> found = find_sample_batch(None, module, torch.device("cpu"))
        >>> found.source, tuple(found.batch.shape)
        ('example_input_array', (2, 3))
    """
    example = getattr(pl_module, "example_input_array", None) if example_first else None
    if example is not None:
        return _SampleBatch(_to_device(example, device), "example_input_array")
    with isolate_rng():
        loader = _first_loader(_train_loader(trainer))
        if loader is None:
            return None
        iterator = iter(loader)
        try:
            batch = next(iterator)
        except StopIteration:
            return None
        finally:
            del iterator  # let worker processes go now
    transfer = getattr(pl_module, "transfer_batch_to_device", None)
    batch = transfer(batch, device, 0) if callable(transfer) else _to_device(batch, device)
    return _SampleBatch(batch, "train_dataloader")


def _to_device(batch: Any, device: torch.device) -> Any:
    return apply_to_collection(batch, torch.Tensor, lambda tensor: tensor.to(device))


@contextmanager
def _muted_logging(pl_module: Any) -> Iterator[None]:
    """``self.log``/``self.log_dict`` do nothing inside (they are forbidden in setup hooks)."""
    had = {name: name in vars(pl_module) for name in ("log", "log_dict")}
    pl_module.log = lambda *args, **kwargs: None
    pl_module.log_dict = lambda *args, **kwargs: None
    try:
        yield
    finally:
        for name, was_instance_attr in had.items():
            if not was_instance_attr:
                delattr(pl_module, name)


def _forward_example(pl_module: Any, example: Any) -> Any:
    """Call the module the way Lightning's model summary does with ``example_input_array``."""
    if isinstance(example, (list, tuple)):
        return pl_module(*example)
    if isinstance(example, Mapping):
        return pl_module(**example)
    return pl_module(example)


def _forward_training_batch(pl_module: Any, batch: Any) -> Any:
    """One ``training_step`` (logging muted); for manual optimization, ``forward`` of the input."""
    if getattr(pl_module, "automatic_optimization", True):
        with _muted_logging(pl_module):
            return pl_module.training_step(batch, 0)
    if isinstance(batch, torch.Tensor):
        return pl_module(batch)
    if isinstance(batch, (list, tuple)) and batch:
        return pl_module(batch[0])
    raise ValueError(
        f"InitCallback cannot tell the input apart in a training batch of type "
        f"{type(batch).__name__} of a module with manual optimization; set "
        f"`{type(pl_module).__name__}.example_input_array` to a sample input."
    )


def run_sample_forward(pl_module: Any, sample: _SampleBatch) -> None:
    """One forward pass of ``sample`` in eval mode under ``no_grad`` (materializes lazy modules).

    ``example_input_array`` goes through ``forward``; a training batch through
    ``training_step`` with logging muted, so batches that are tensors, ``(x, y)`` tuples or
    dicts all work the way the module's own training code reads them.

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
    was_training = pl_module.training
    pl_module.eval()  # no batch-norm statistics updated, no dropout drawn
    try:
        with torch.no_grad(), isolate_rng():
            if sample.source == "example_input_array":
                _forward_example(pl_module, sample.batch)
            else:
                _forward_training_batch(pl_module, sample.batch)
    finally:
        pl_module.train(was_training)
