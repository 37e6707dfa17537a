"""Whether a LightningModule's weights came from somewhere other than its constructor.

Process-wide torch hooks, registered when this module is imported (the callback imports it),
keep the evidence:

- every module in a LightningModule's tree (the LightningModule, each module it registers and
  that module's submodules, and any module registered later under a watched one) gets a
  ``load_state_dict`` pre-hook and post-hook: they mark, tensor by tensor, what a load that
  completed filled (``load_state_dict`` on the module or on any module above it,
  ``Model.load_from_checkpoint``, Lightning's restore from ``ckpt_path``); a key a
  ``strict=False`` load lacked, and every key of a load that raised, leave no mark. Modules
  outside a LightningModule get nothing, so they pickle without this library;
- an optimizer's first ``step()`` marks the parameters it holds as trained.

Hugging Face's ``from_pretrained`` does not call ``load_state_dict``: it marks each parameter it
loads with ``_is_hf_initialized``, read here too.

The marks are attributes of the modules and of the parameters, so they travel with a deepcopy
and to the processes of ``ddp_spawn``. Modules built before ``lightning_init.callback`` is
imported, and loads into a module before it joins a LightningModule, are not seen, and
values written into a tensor in place
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
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)
from torch.optim.optimizer import register_optimizer_step_post_hook

from lightning_init._text import listing
from lightning_init.callback._arguments import Policy, policy_label

__all__ = ["keeps_loaded_weights", "loaded_parts", "loaded_parts_kept", "loaded_tensors",
           "weights_origin"]

# Marks kept on the objects themselves, so that they travel with them (deepcopy, pickling to
# the processes of ``ddp_spawn``).
_LOADED = "_lightning_init_loaded"  # on a module: the names of its tensors a load filled
_TRIED = "_lightning_init_tried"  # on a module: [(names, the load's error list)], until read
_PENDING = "_lightning_init_pending"  # on a module: (prefix, names) while a load runs
_STEPPED = "_lightning_init_stepped"  # on a parameter: an optimizer has stepped it
_WATCHED = "_lightning_init_watched"  # on a module: the load hooks are registered
_HF_LOADED = "_is_hf_initialized"  # on a parameter: Hugging Face's from_pretrained loaded it
_log = logging.getLogger("lightning_init.callback")
_stepped_optimizers: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()


def _local_tensors(module: nn.Module) -> list[str]:
    """The names of the tensors ``module`` itself holds that a state dict carries."""
    skipped = module._non_persistent_buffers_set
    return [*(key for key, value in module._parameters.items() if value is not None),
            *(key for key, value in module._buffers.items()
              if value is not None and key not in skipped)]


def _note_present(module: nn.Module, state_dict: Any, prefix: str, metadata: Any,
                  _strict: Any, _missing: Any, _unexpected: Any, error_msgs: list[str]) -> None:
    names = [key for key in _local_tensors(module) if prefix + key in state_dict]
    if isinstance(module, nn.modules.batchnorm._NormBase) and (metadata.get("version") or 0) < 2:
        # an old-format state dict: batch norm itself puts a zero num_batches_tracked in it
        names = [key for key in names if key != "num_batches_tracked"]
    module.__dict__[_PENDING] = (prefix, names, error_msgs)


def _note_filled(module: nn.Module, incompatible_keys: Any) -> None:
    pending = module.__dict__.pop(_PENDING, None)
    if pending is None:
        return
    prefix, names, error_msgs = pending
    refused = {*incompatible_keys.missing_keys, *incompatible_keys.unexpected_keys}
    filled = [key for key in names if prefix + key not in refused]
    if filled:  # committed when read, if the load raised no error (load_state_dict raises
        # after the post-hooks ran, exactly when this list of errors is not empty)
        module.__dict__.setdefault(_TRIED, []).append((filled, error_msgs))


def _mark_loaded(module: nn.Module, _incompatible_keys: Any) -> None:
    """The post-hook of earlier versions, named by the modules they pickled; marks nothing."""


def _loaded_names(module: nn.Module) -> set[str]:
    """The names of the tensors of ``module`` itself that a completed load filled."""
    loaded = module.__dict__.get(_LOADED)
    if not isinstance(loaded, set):  # True: a whole-module mark of a module pickled earlier
        loaded = module.__dict__[_LOADED] = set(_local_tensors(module)) if loaded else set()
    for names, error_msgs in module.__dict__.pop(_TRIED, ()):
        if not error_msgs:
            loaded.update(names)
    return loaded


def _watch(module: nn.Module) -> None:
    if not module.__dict__.get(_WATCHED, False):
        module.__dict__[_WATCHED] = True
        module.register_load_state_dict_pre_hook(_note_present)
        module.register_load_state_dict_post_hook(_note_filled)


def _on_module(module: nn.Module, _name: str, value: Any) -> None:
    # Only a LightningModule's tree is watched: a plain torch module keeps no reference to
    # this library (it pickles and loads without it).
    if value is None or not (isinstance(module, LightningModule)
                             or module.__dict__.get(_WATCHED, False)):
        return
    _watch(module)
    for sub in value.modules():
        _watch(sub)


def _on_tensor(module: nn.Module, _name: str, _value: Any) -> None:
    if isinstance(module, LightningModule):
        _watch(module)


def _mark_trained(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
    if optimizer in _stepped_optimizers:
        return
    _stepped_optimizers.add(optimizer)
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            setattr(parameter, _STEPPED, True)


register_module_module_registration_hook(_on_module)
register_module_parameter_registration_hook(_on_tensor)
register_module_buffer_registration_hook(_on_tensor)
register_optimizer_step_post_hook(_mark_trained)


def loaded_tensors(module: nn.Module) -> dict[str, str]:
    """The parameters and buffers of ``module`` that a load filled, by qualified name: how.

    ``"load_state_dict"`` for the tensors of a module that a ``load_state_dict`` (its own or
    a parent's) filled, ``"from_pretrained"`` for the parameters Hugging Face's loader marked.
    A tensor shared by several modules is named once, by its first name.

    Example:
        >>> import lightning as L
        >>> net = L.LightningModule()
        >>> net.body, net.head = nn.Linear(2, 2), nn.Linear(2, 1)
        >>> _ = net.load_state_dict(nn.Sequential(nn.Linear(2, 2)).state_dict(), strict=False)
        >>> loaded_tensors(net)  # a new head: not loaded
        {}
        >>> _ = net.body.load_state_dict(nn.Linear(2, 2).state_dict())
        >>> loaded_tensors(net)
        {'body.weight': 'load_state_dict', 'body.bias': 'load_state_dict'}
    """
    loaded: dict[str, str] = {}
    seen: set[int] = set()
    for name, sub in module.named_modules():
        by_load = _loaded_names(sub) if sub.__dict__.get(_WATCHED, False) else set()
        lead = f"{name}." if name else ""
        for key, tensor in [*sub._parameters.items(), *sub._buffers.items()]:
            if tensor is None or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            if key in by_load:
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
    ways: dict[int, set[str] | None] = {}  # by module: how its tensors were all loaded

    def whole(sub: nn.Module, lead: str) -> set[str] | None:  # one walk, each module once
        if id(sub) not in ways:
            ways[id(sub)] = found = set()
            for key in _local_tensors(sub):
                way = loaded.get(lead + key)
                found = None if way is None or found is None else found | {way}
            for key, child in sub._modules.items():
                inner = set() if child is None else whole(child, f"{lead}{key}.")
                found = None if inner is None or found is None else found | inner
            ways[id(sub)] = found
        return ways[id(sub)]

    whole(module, "")
    parts: list[str] = []
    covered: set[str] = set()
    stack, seen = [("", module)], set()
    while stack:  # outermost modules first; a covered module's subtree is skipped
        name, sub = stack.pop()
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        if name and ways[id(sub)]:
            covered.add(name)
            parts.append(f"{name} ({', '.join(sorted(ways[id(sub)]))})")  # type: ignore[arg-type]
            continue
        stack.extend((f"{name}.{key}" if name else key, child)
                     for key, child in reversed(sub._modules.items()) if child is not None)
    lone = [key for key in loaded if not _under(key, covered)]
    return parts + [f"{key} ({loaded[key]})" for key in lone]


def _under(key: str, covered: set[str]) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:end]) in covered for end in range(1, len(parts)))


def weights_origin(module: nn.Module) -> str | None:
    """How the weights of ``module`` got there when not (only) from its constructor, or ``None``.

    Returns:
        ``"loaded (load_state_dict, load_from_checkpoint or from_pretrained)"`` when
        loads (into ``module`` or its submodules) filled every parameter,
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
    if _all_loaded(module):
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
        shown = listing(parts, 5)
        _log.warning(
            "InitCallback: %s was loaded before this fit: policy %r is applied to the rest"
            " only and these %d tensors are kept. To initialize them too, pass"
            " InitCallback(..., overwrite_loaded=True).",
            shown, policy_label(policy), len(loaded),
        )
    return set(loaded)
