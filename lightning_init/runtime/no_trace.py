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
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["no_side_effects"]


@contextlib.contextmanager
def no_side_effects(model: nn.Module) -> Iterator[None]:
    """Run a pass in the check's mode and leave no trace.

    Mode: every module in eval mode (dropout off, so that the spread across samples comes from
    the input alone) except the BatchNorm family in train mode (batch statistics, as in the
    first training step). On exit: every module's ``training`` flag, every buffer (running
    statistics, ``num_batches_tracked``) and the RNG states (torch CPU, initialized CUDA
    devices, Python ``random``, NumPy if imported) are restored exactly.
    """
    modes = [(module, module.training) for module in model.modules()]
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()
               if buffer is not None and not buffer.is_meta]
    python_state = random.getstate()
    numpy_random = _numpy_random()
    numpy_state = numpy_random.get_state() if numpy_random is not None else None
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            model.eval()
            for module in model.modules():
                if isinstance(module, _BatchNorm):
                    module.train()
            with torch.enable_grad():
                yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for module, training in modes:
            module.training = training
        random.setstate(python_state)
        if numpy_random is not None:
            numpy_random.set_state(numpy_state)


def _numpy_random() -> Any:
    numpy = sys.modules.get("numpy")
    return getattr(numpy, "random", None)
