"""Whether a LightningModule's weights came from somewhere other than its constructor.

Two process-wide torch hooks, registered when this module is imported (the callback imports it),
keep the evidence:

- every ``LightningModule`` that registers a submodule or a parameter in its ``__init__`` gets a
  ``load_state_dict`` post-hook that marks it loaded (``load_state_dict``,
  ``Model.load_from_checkpoint``, Lightning's restore from ``ckpt_path``);
- an optimizer's first ``step()`` marks the parameters it holds as trained.

The marks are attributes of the module and of the parameters, so they travel with a deepcopy
and to the processes of ``ddp_spawn``. Modules built before ``lightning_init.callback`` is
imported are not watched for loads.
"""

from __future__ import annotations

import logging
import warnings
import weakref
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.nn.modules.module import (
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)
from torch.optim.optimizer import register_optimizer_step_post_hook

from lightning_init.callback._arguments import Policy, policy_label

__all__ = ["keeps_loaded_weights", "weights_origin"]

# Marks kept on the objects themselves, so that they travel with them (deepcopy, pickling to
# the processes of ``ddp_spawn``).
_LOADED = "_lightning_init_loaded"  # on a module: a load_state_dict has filled it
_STEPPED = "_lightning_init_stepped"  # on a parameter: an optimizer has stepped it
_log = logging.getLogger("lightning_init.callback")
_stepped_optimizers: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()


def _mark_loaded(module: nn.Module, _incompatible_keys: Any) -> None:
    module.__dict__[_LOADED] = True


def _watch(module: nn.Module, _name: str, _value: Any) -> None:
    if isinstance(module, LightningModule) and not any(
        hook is _mark_loaded for hook in module._load_state_dict_post_hooks.values()
    ):
        module.register_load_state_dict_post_hook(_mark_loaded)


def _mark_trained(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
    if optimizer in _stepped_optimizers:
        return
    _stepped_optimizers.add(optimizer)
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            setattr(parameter, _STEPPED, True)


register_module_module_registration_hook(_watch)
register_module_parameter_registration_hook(_watch)
register_optimizer_step_post_hook(_mark_trained)


def weights_origin(module: nn.Module) -> str | None:
    """How the weights of ``module`` got there when not (only) from its constructor, or ``None``.

    Returns:
        ``"loaded (load_state_dict or load_from_checkpoint)"``, ``"trained (an optimizer has
        stepped them)"``, or ``None`` when neither is known to have happened.

    Example:
        >>> import lightning as L
        >>> class Net(L.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.layer = nn.Linear(2, 2)
        >>> net = Net()
        >>> weights_origin(net) is None
        True
        >>> _ = net.load_state_dict(Net().state_dict())
        >>> weights_origin(net)
        'loaded (load_state_dict or load_from_checkpoint)'
    """
    if module.__dict__.get(_LOADED, False):
        return "loaded (load_state_dict or load_from_checkpoint)"
    if any(getattr(parameter, _STEPPED, False) for parameter in module.parameters()):
        return "trained (an optimizer has stepped them)"
    return None


def keeps_loaded_weights(
    trainer: Trainer, pl_module: LightningModule, policy: Policy | None, *, overwrite: bool
) -> bool:
    """Whether the policy is skipped because the weights were loaded or trained before this
    fit (rank 0 decides); says so on rank 0 either way."""
    if policy is None:
        return False
    origin = weights_origin(pl_module) if trainer.is_global_zero else None
    origin = trainer.strategy.broadcast(origin, src=0)
    if origin is None:
        return False
    name, label = type(pl_module).__name__, policy_label(policy)
    if overwrite:
        _log.warning(
            "InitCallback: %s's weights were %s; policy %r overwrites them as asked"
            " (overwrite_loaded=True).", name, origin, label,
        )
        return False
    if trainer.is_global_zero:
        warnings.warn(
            f"InitCallback: {name}'s weights were {origin} before this fit: policy {label!r}"
            " is NOT applied and they are kept. To initialize them anyway, pass"
            " InitCallback(..., overwrite_loaded=True).",
            UserWarning,
            stacklevel=2,
        )
    return True
