"""The callback's tensors before and after the policy: lazy modules materialized by one sample
forward, meta tensors a failed or partial policy left allocated (so Lightning's teardown does not
hide the error), and the modules added since ``setup`` (built in ``configure_model``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.nn.parameter import is_lazy

from lightning_init._lightning import SampleUnavailable, find_sample_batch, run_sample_forward
from lightning_init._text import listing
from lightning_init.callback._arguments import Policy

__all__ = [
    "has_tensors",
    "materialize_lazy",
    "modules_added_since",
    "named_tensors",
    "raise_if_meta_left",
    "tensor_device",
    "visible_through_teardown",
]

_log = logging.getLogger("lightning_init.callback")


def materialize_lazy(
    trainer: Trainer, pl_module: LightningModule, policy: Policy | None, *, deferred: bool = False
) -> str | None:
    """One forward of a sample batch materializes the lazy modules. In ``setup`` a training
    dataloader that cannot be built yet (its data made in ``LightningModule.setup``) defers this
    to ``on_fit_start``: the return says why; ``None`` when done or not needed."""
    lazy = [name for name, tensor in named_tensors(pl_module) if is_lazy(tensor)]
    if not lazy:
        return None
    try:
        sample = find_sample_batch(trainer, pl_module, tensor_device(pl_module))
        why = "no sample batch"
    except SampleUnavailable as error:
        sample, why = None, str(error)
    except Exception as error:
        if deferred:
            raise
        reason = f"{type(error).__name__}: {error}"
        _log.info(
            "InitCallback: no sample batch in setup (%s); the lazy modules are materialized and"
            " initialized in on_fit_start.", reason,
        )
        return reason
    if sample is None:
        if policy is None:
            return None  # nothing to initialize: leave them to the first training step
        raise ValueError(
            f"InitCallback: {type(pl_module).__name__} has lazy parameters ({', '.join(lazy)})"
            f" and no sample batch to materialize them ({why}): set `example_input_array` or"
            " give `fit` a training dataloader."
        )
    run_sample_forward(pl_module, sample)
    return None


def named_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    named = list(module.named_parameters())
    return named + [(name, buffer) for name, buffer in module.named_buffers() if buffer is not None]


def has_tensors(module: nn.Module) -> bool:
    return bool(named_tensors(module))


def tensor_device(module: nn.Module) -> torch.device:
    """Where the module's tensors are now (in ``setup``: where they were built)."""
    for _, tensor in named_tensors(module):
        if not tensor.is_meta:
            return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def visible_through_teardown(module: nn.Module) -> Iterator[None]:
    """On an error, allocate the meta tensors the failed policy left (uninitialized), so that
    Lightning's teardown, which moves the model to the CPU, does not fail on them and replace
    the error with its own ``NotImplementedError``."""
    try:
        yield
    except BaseException:
        _allocate_meta(module)
        raise


def _allocate_meta(module: nn.Module) -> None:
    from lightning_init.policy.apply import materialize  # only meta tensors are replaced

    materialize(module, [], recurse=True, device=tensor_device(module))


def raise_if_meta_left(module: nn.Module) -> None:
    left = [name for name, tensor in named_tensors(module) if tensor.is_meta]
    if left:
        _allocate_meta(module)  # so that Lightning's teardown does not hide this error
        shown = listing(left, 10)
        raise ValueError(
            f"InitCallback: after the policy, {len(left)} tensor(s) are still on the meta device:"
            f" {shown}. Add rules for them or set `default: reset` in the policy."
        )


def modules_added_since(root: nn.Module, known_ids: set[int]) -> list[tuple[str, nn.Module]]:
    """The outermost submodules that did not exist in ``setup`` (built in configure_model)."""
    if id(root) not in known_ids:
        return [("", root)] if has_tensors(root) else []
    added: list[tuple[str, nn.Module]] = []
    for name, module in root.named_modules():
        if id(module) in known_ids or any(name.startswith(f"{outer}.") for outer, _ in added):
            continue
        if has_tensors(module):
            added.append((name, module))
    return added
