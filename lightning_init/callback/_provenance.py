"""Whether a LightningModule's weights came from somewhere other than its constructor.

Two process-wide torch hooks, registered when this module is imported (the callback imports it),
keep the evidence:

- every module that registers a submodule or a parameter gets a ``load_state_dict`` post-hook
  that marks it loaded (``load_state_dict`` on the module or on any module above it,
  ``Model.load_from_checkpoint``, Lightning's restore from ``ckpt_path``);
- an optimizer's first ``step()`` marks the parameters it holds as trained.

Hugging Face's ``from_pretrained`` does not call ``load_state_dict``: it marks each parameter it
loads with ``_is_hf_initialized``, read here too.

The marks are attributes of the modules and of the parameters, so they travel with a deepcopy
and to the processes of ``ddp_spawn``. Modules built before ``lightning_init.callback`` is
imported are not watched for loads, and values written into a tensor in place
(``param.copy_(...)``, ``param.data = ...``) leave no mark.
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

__all__ = ["keeps_loaded_weights", "loaded_parts", "loaded_parts_kept", "loaded_tensors",
           "weights_origin"]

# Marks kept on the objects themselves, so that they travel with them (deepcopy, pickling to
# the processes of ``ddp_spawn``).
_LOADED = "_lightning_init_loaded"  # on a module: a load_state_dict has filled it
_STEPPED = "_lightning_init_stepped"  # on a parameter: an optimizer has stepped it
_WATCHED = "_lightning_init_watched"  # on a module: the load post-hook is registered
_HF_LOADED = "_is_hf_initialized"  # on a parameter: Hugging Face's from_pretrained loaded it
_log = logging.getLogger("lightning_init.callback")
_stepped_optimizers: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()


def _mark_loaded(module: nn.Module, _incompatible_keys: Any) -> None:
    module.__dict__[_LOADED] = True


def _watch(module: nn.Module, _name: str, _value: Any) -> None:
    if not module.__dict__.get(_WATCHED, False):
        module.__dict__[_WATCHED] = True
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


def loaded_tensors(module: nn.Module) -> dict[str, str]:
    """The parameters and buffers of ``module`` that a load filled, by qualified name: how.

    ``"load_state_dict"`` for the tensors of a module that a ``load_state_dict`` (its own or
    a parent's) filled, ``"from_pretrained"`` for the parameters Hugging Face's loader marked.
    A tensor shared by several modules is named once, by its first name.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> _ = net[0].load_state_dict(nn.Linear(2, 2).state_dict())
        >>> loaded_tensors(net)
        {'0.weight': 'load_state_dict', '0.bias': 'load_state_dict'}
    """
    loaded: dict[str, str] = {}
    seen: set[int] = set()
    for name, sub in module.named_modules():
        by_load = sub.__dict__.get(_LOADED, False)
        lead = f"{name}." if name else ""
        for key, tensor in [*sub._parameters.items(), *sub._buffers.items()]:
            if tensor is None or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            if by_load:
                loaded[lead + key] = "load_state_dict"
            elif getattr(tensor, _HF_LOADED, False) is True:
                loaded[lead + key] = "from_pretrained"
    return loaded


def loaded_parts(module: nn.Module, loaded: dict[str, str]) -> list[str]:
    """``loaded`` (from :func:`loaded_tensors`) said by the outermost modules it fills whole,
    as ``"name (how)"``; tensors outside such a module by their own names.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> loaded_parts(net, {"0.weight": "load_state_dict", "0.bias": "load_state_dict"})
        ['0 (load_state_dict)']
    """
    parts: list[str] = []
    covered: set[str] = set()
    for name, sub in module.named_modules():
        if not name or any(name.startswith(f"{outer}.") for outer in covered):
            continue
        lead = f"{name}."
        names = [lead + key for key, _ in sub.named_parameters()]
        names += [lead + key for key, _ in sub.named_buffers()]
        ways = {loaded.get(key) for key in names}
        if names and None not in ways:
            covered.add(name)
            parts.append(f"{name} ({', '.join(sorted(ways))})")  # type: ignore[arg-type]
    lone = [key for key in loaded if not any(key.startswith(f"{outer}.") for outer in covered)]
    return parts + [f"{key} ({loaded[key]})" for key in lone]


def weights_origin(module: nn.Module) -> str | None:
    """How the weights of ``module`` got there when not (only) from its constructor, or ``None``.

    Returns:
        ``"loaded (load_state_dict, load_from_checkpoint or from_pretrained)"`` when
        ``module`` itself was loaded or loads into its submodules filled every parameter,
        ``"trained (an optimizer has stepped them)"``, or ``None`` when neither is known to
        have happened (a load into a part only: :func:`loaded_tensors` names it).

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
        'loaded (load_state_dict, load_from_checkpoint or from_pretrained)'
    """
    if module.__dict__.get(_LOADED, False) or _all_loaded(module):
        return "loaded (load_state_dict, load_from_checkpoint or from_pretrained)"
    if any(getattr(parameter, _STEPPED, False) for parameter in module.parameters()):
        return "trained (an optimizer has stepped them)"
    return None


def _all_loaded(module: nn.Module) -> bool:
    names = [name for name, _ in module.named_parameters()]
    if not names:
        return False
    loaded = loaded_tensors(module)
    return all(name in loaded for name in names)


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


def loaded_parts_kept(
    trainer: Trainer, pl_module: LightningModule, policy: Policy | None, *, overwrite: bool
) -> set[str]:
    """The tensors loaded into parts of the module before this fit (rank 0's list), which the
    policy leaves alone; one line on rank 0 names them. Empty when ``overwrite``."""
    if policy is None or overwrite:
        return set()
    loaded = loaded_tensors(pl_module) if trainer.is_global_zero else None
    loaded = trainer.strategy.broadcast(loaded, src=0)
    if not loaded:
        return set()
    if trainer.is_global_zero:
        parts = loaded_parts(pl_module, loaded)
        shown = ", ".join(parts[:5]) + (f", ... ({len(parts) - 5} more)" if len(parts) > 5 else "")
        _log.warning(
            "InitCallback: %s was loaded before this fit: policy %r is applied to the rest"
            " only and these %d tensors are kept. To initialize them too, pass"
            " InitCallback(..., overwrite_loaded=True).",
            shown, policy_label(policy), len(loaded),
        )
    return set(loaded)
