"""Where a value lands: a parameter as the user names it, and how a value is written into it.

A plain parameter is written in place. Under a parametrization (``torch.nn.utils.
parametrize``, the new ``weight_norm``, ``orthogonal``, ...) the value is the *effective*
weight and the originals are set through ``right_inverse``. Under the old ``weight_norm`` hook
``weight`` sets ``v`` and ``g = ||v||``; under the old ``spectral_norm`` it sets the weight
before normalization. A DTensor parameter receives its local shard of the full value.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "Target",
    "effective",
    "is_dtensor",
    "is_parametrization_container",
    "local",
    "module_targets",
    "reach",
    "scratch",
    "write",
]


@dataclass
class Target:
    """One parameter as the user names it (a parametrized ``weight`` counts as one).

    Attributes:
        qualified_name: its name in the model (``"encoder.0.weight"``).
        module_name: its module's qualified name.
        module: the module.
        local_name: its name in the module (``"weight"``).
        shape: the shape of the value the user sets (the effective weight).
        kind: how a value is written (see the module docstring).
        tensors: the real Parameters written.
        aliases: other qualified names of the same tensor (tied parameters).
        hook: the old ``weight_norm`` / ``spectral_norm`` hook, if any.
    """

    qualified_name: str
    module_name: str
    module: nn.Module
    local_name: str
    shape: torch.Size
    kind: Literal["param", "parametrized", "old_weight_norm", "old_spectral_norm"]
    tensors: tuple[torch.Tensor, ...]
    aliases: list[str] = field(default_factory=list)
    hook: Any = None


def _old_norm_hooks(module: nn.Module) -> dict[str, tuple[str, Any]]:
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    found = {}
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm):
            found[hook.name] = ("old_weight_norm", hook)
        elif isinstance(hook, SpectralNorm):
            found[hook.name] = ("old_spectral_norm", hook)
    return found


def module_targets(module_name: str, module: nn.Module) -> Iterator[Target]:
    """The module's own parameters, parametrized tensors folded into their user-facing name.

    Example:
        >>> from torch.nn.utils import parametrizations
        >>> layer = parametrizations.orthogonal(nn.Linear(2, 3))
        >>> [(t.qualified_name, t.kind) for t in module_targets("fc", layer)]
        [('fc.weight', 'parametrized'), ('fc.bias', 'param')]
    """
    from torch.nn.utils import parametrize

    def qualify(local_name: str) -> str:
        return f"{module_name}.{local_name}" if module_name else local_name

    claimed: set[str] = set()
    if parametrize.is_parametrized(module):
        for local_name, plist in module.parametrizations.items():
            originals = (plist.original,) if plist.is_tensor else tuple(
                getattr(plist, f"original{i}") for i in range(plist.ntensors)
            )
            with torch.no_grad():  # meta originals give a meta weight: its shape is enough
                shape = getattr(module, local_name).shape
            yield Target(qualify(local_name), module_name, module, local_name,
                         torch.Size(shape), "parametrized", originals)
    for local_name, (kind, hook) in _old_norm_hooks(module).items():
        if kind == "old_weight_norm":
            g, v = module._parameters[local_name + "_g"], module._parameters[local_name + "_v"]
            claimed |= {local_name + "_g", local_name + "_v"}
            yield Target(qualify(local_name), module_name, module, local_name, v.shape, kind,
                         (g, v), hook=hook)
        else:
            orig = module._parameters[local_name + "_orig"]
            claimed.add(local_name + "_orig")
            yield Target(qualify(local_name), module_name, module, local_name, orig.shape, kind,
                         (orig,), hook=hook)
    for local_name, param in module._parameters.items():
        if param is None or local_name in claimed:
            continue
        yield Target(qualify(local_name), module_name, module, local_name, param.shape,
                     "param", (param,))


def is_parametrization_container(module_name: str, modules: dict[str, nn.Module]) -> bool:
    """Whether ``module_name`` lies inside some module's ``parametrizations`` (its originals
    are reached through the owner's targets instead).

    Example:
        >>> from torch.nn.utils import parametrizations
        >>> model = nn.Sequential(parametrizations.orthogonal(nn.Linear(2, 2)))
        >>> modules = dict(model.named_modules())
        >>> is_parametrization_container("0.parametrizations.weight", modules)
        True
    """
    parts = module_name.split(".")
    for i, part in enumerate(parts):
        if part == "parametrizations":
            owner = modules.get(".".join(parts[:i]))
            if owner is not None and hasattr(owner, "parametrizations"):
                return True
    return False


def is_dtensor(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a DTensor (it has placements and a device mesh).

    Example:
        >>> is_dtensor(torch.zeros(2))
        False
    """
    return hasattr(tensor, "placements") and hasattr(tensor, "device_mesh")


def local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard; any other tensor itself.

    Example:
        >>> t = torch.zeros(2); local(t) is t
        True
    """
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) and hasattr(tensor, "placements") else tensor


def effective(target: Target) -> torch.Tensor:
    """The value the user sees under ``target``'s name (the parametrized weight, if any).

    Example:
        >>> layer = nn.Linear(2, 2)
        >>> effective(next(module_targets("", layer))) is layer.weight
        True
    """
    if target.kind == "param":
        return target.tensors[0]
    return getattr(target.module, target.local_name)


def reach(target: Target) -> list[torch.Tensor]:
    """Every tensor that writing ``target`` may change: its parameters, and under a
    parametrization the parametrization modules' own parameters and buffers too (``orthogonal``
    keeps a ``base`` buffer that ``right_inverse`` rewrites); under the old ``spectral_norm``,
    its ``u`` and ``v`` buffers.

    Example:
        >>> from torch.nn.utils import parametrizations
        >>> layer = parametrizations.orthogonal(nn.Linear(2, 2))
        >>> len({id(tensor) for tensor in reach(next(module_targets("", layer)))})
        2
    """
    tensors = list(target.tensors)
    if target.kind == "parametrized":
        plist = target.module.parametrizations[target.local_name]
        tensors += [*plist.parameters(), *plist.buffers()]
    elif target.kind == "old_spectral_norm":
        tensors += [target.module._buffers[target.local_name + suffix] for suffix in ("_u", "_v")]
    return tensors


def scratch(target: Target) -> torch.Tensor:
    """The tensor an initializer fills for ``target``: a plain parameter itself, else a new
    tensor of the effective shape, on the parameter's (local) device, for :func:`write`.

    Example:
        >>> layer = nn.Linear(2, 3)
        >>> scratch(next(module_targets("", layer))) is layer.weight
        True
    """
    first = target.tensors[0]
    if target.kind == "param" and not is_dtensor(first):
        return first
    dtype = first.dtype if target.kind != "old_weight_norm" else target.tensors[1].dtype
    return torch.empty(target.shape, dtype=dtype, device=local(first).device)


def write(target: Target, value: torch.Tensor) -> None:
    """Set ``target`` to ``value`` (a no-op when ``value`` is the parameter itself).

    Call under ``torch.no_grad()``. An Embedding's ``padding_idx`` row is zeroed first.

    Example:
        >>> from torch.nn.utils import parametrizations
        >>> layer = parametrizations.weight_norm(nn.Linear(3, 2))
        >>> with torch.no_grad():
        ...     write(next(module_targets("", layer)), torch.ones(2, 3))
        >>> layer.weight.tolist()
        [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    module = target.module
    if (target.local_name == "weight" and getattr(module, "padding_idx", None) is not None
            and isinstance(module, nn.Embedding | nn.EmbeddingBag)):
        value[module.padding_idx].zero_()
    first = target.tensors[0]
    if target.kind == "param":
        if is_dtensor(first):
            from torch.distributed.tensor import distribute_tensor

            shard = distribute_tensor(value, first.device_mesh, first.placements)
            local(first).copy_(shard.to_local())
    elif target.kind == "parametrized":
        _write_parametrized(target, value)
    elif target.kind == "old_weight_norm":
        g, v = target.tensors
        v.copy_(value)
        g.copy_(torch.norm_except_dim(value, 2, target.hook.dim))
        setattr(module, target.local_name, target.hook.compute_weight(module))
    else:  # old spectral_norm: the weight before normalization
        first.copy_(value)


def _write_parametrized(target: Target, value: torch.Tensor) -> None:
    plist = target.module.parametrizations[target.local_name]
    originals: Any = value
    for parametrization in reversed(plist):
        originals = parametrization.right_inverse(originals)
    originals = (originals,) if plist.is_tensor else tuple(originals)
    for tensor, new in zip(target.tensors, originals, strict=True):
        tensor.copy_(new)
