"""Exact zero gradients that no init changes, told from those an init causes.

A parameter can get exactly zero gradient for two reasons. An init can cause it: an all-zero
weight after it, dead units, a closed gate; another init would pass a gradient. Or the loss
does not read what the parameter computes, whatever the weights: Funnel multiplies its
relative-position and token-type attention terms by a mask that is 0 at ``<cls>``, the one
position its classifier reads; Longformer's last layer computes the local query/key/value of
positions nothing reads, ``<cls>`` having global attention of its own. No init changes those.

The test moves every parameter by ``s N(0, 1)``, ``s`` its own root-mean-square and at least
``0.05`` (another draw of about its scale; a fixed generator, restored exactly afterwards), and
takes the gradients again: a gradient that stays exactly zero does not depend on the weights,
only on the structure. A gradient that an init could open changes: a zero weight is no longer
zero, a closed gate opens, units dead behind a bias of -10 get half their bias above zero.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from lightning_init.check.measure import first_float_tensor, surrogate_loss
from lightning_init.runtime.distributed import is_dtensor
from lightning_init.runtime.hooks import forward_hooks
from lightning_init.runtime.no_trace import no_side_effects, values_kept
from lightning_init.runtime.sparse import stored_values

__all__ = ["NOISE", "perturbed", "unread_note", "unread_parameters"]

NOISE = 0.05  # std of the move added to every parameter


@contextlib.contextmanager
def perturbed(params: Sequence[torch.Tensor], std: float = NOISE) -> Iterator[None]:
    """Add ``s * N(0, 1)`` (a generator seeded with 0) to every floating parameter, ``s`` the
    parameter's root-mean-square and at least ``std``, and restore each exactly on exit (from
    a copy in host memory).

    Example:
        >>> weight = torch.zeros(3)
        >>> with perturbed([weight]):
        ...     bool((weight != 0).all())
        True
        >>> weight.tolist()
        [0.0, 0.0, 0.0]
    """
    floating = [param for param in params if param.is_floating_point()]
    with values_kept(floating, on_host=True):
        with torch.no_grad():
            for param in floating:
                generator = torch.Generator(device=param.device).manual_seed(0)
                noise = torch.randn(param.shape, generator=generator, device=param.device)
                scale = param.detach().float().pow(2).mean().sqrt().clamp(min=std)
                param.add_((noise * scale).to(param.dtype))
        yield


def _owners(model: nn.Module, params: Sequence[torch.Tensor]) -> list[tuple[str, nn.Module]]:
    """The module that holds each parameter directly."""
    held = {id(param): (name, module) for name, module in model.named_modules()
            for param in module.parameters(recurse=False)}
    return [held.get(id(param), ("", model)) for param in params]


def unread_parameters(
    model: nn.Module,
    run: Callable[[], tuple[torch.Tensor | None, str, Any]],
    named: Sequence[tuple[str, torch.Tensor]],
    candidates: Sequence[str],
) -> dict[str, bool]:
    """The ``candidates`` (parameters with exactly zero gradient) whose gradient stays exactly
    zero when every parameter of ``named`` is moved (:func:`perturbed`), each with whether the
    output of the module that holds it gets no gradient either (``True``: nothing the loss reads
    depends on that output; ``False``: the output is read, the parameter's term inside it is
    multiplied by zero).

    ``run`` makes the pass as the check's does (the loss, or ``None`` for the surrogate loss of
    the output). The pass runs in the check's mode (``no_side_effects``), entered after the
    move and left before the move is undone: the move is the check's, not a write of the
    model's. Sharded (DTensor) parameters: none (the move would have to be the same on every
    rank).
    """
    params = [param for _, param in named]
    if not candidates or any(is_dtensor(param) for param in params):
        return {}
    wanted = set(candidates)
    chosen = [(name, param) for name, param in named if name in wanted]
    owners = _owners(model, [param for _, param in chosen])
    outputs: dict[int, torch.Tensor] = {}

    def hook_for(_name: str, module: nn.Module) -> Callable[..., None]:
        def hook(_m: nn.Module, _args: Any, output: Any) -> None:
            tensor = first_float_tensor(output)
            if id(module) not in outputs and tensor is not None and tensor.requires_grad:
                outputs[id(module)] = tensor
        return hook

    unique = list({id(module): (name, module) for name, module in owners}.values())
    with perturbed(params), no_side_effects(model), forward_hooks(unique, hook_for):
        loss, _, output = run()
        if loss is None:
            tensor = first_float_tensor(output)
            if tensor is None:
                return {}
            loss = surrogate_loss(tensor)
        if not loss.requires_grad:
            return {}
        read = [outputs[id(module)] for _, module in unique if id(module) in outputs]
        grads = torch.autograd.grad(loss, [param for _, param in chosen] + read,
                                    allow_unused=True)
        flags = torch.stack([
            torch.zeros((), device=loss.device) if grad is None
            else (stored_values(grad.detach()) != 0).any().float().to(loss.device)
            for grad in grads]).tolist()  # one host transfer
    moved, output_read = flags[:len(chosen)], iter(flags[len(chosen):])
    read_by = {id(module): bool(next(output_read)) for _, module in unique
               if id(module) in outputs}
    return {name: not read_by.get(id(module), False)
            for (name, _), (_, module), flag in zip(chosen, owners, moved, strict=True)
            if not flag}


def unread_note(found: dict[str, bool]) -> str:
    """The note for parameters whose zero gradient no init changes (see
    :func:`unread_parameters`), naming why.

    Example:
        >>> unread_note({"a.weight": True, "b.bias": False})  # doctest: +ELLIPSIS
        '`a.weight` and `b.bias` get exactly zero gradient, also with every parameter moved ...'
    """
    names = list(found)
    shown = ", ".join(f"`{name}`" for name in names[:-1][:4])
    shown = f"{shown} and `{names[-1]}`" if len(names) > 1 else f"`{names[0]}`"
    if len(names) > 5:
        shown = ", ".join(f"`{name}`" for name in names[:4]) + f" and {len(names) - 4} more"
    unread = [name for name, whole in found.items() if whole]
    masked = [name for name, whole in found.items() if not whole]
    mixed = bool(unread and masked)
    them = "it" if len(names) == 1 else "them"
    why = []
    if unread:
        holding = f"holding {_few(unread)}" if mixed else f"holding {them}"
        why.append(f"the modules {holding} get no gradient on their outputs (the loss reads no "
                   "position they compute for)")
    if masked:
        holding = f"holding {_few(masked)}" if mixed else f"holding {them}"
        why.append(f"the modules {holding} pass a gradient on but multiply these terms by 0 "
                   "(a mask)")
    verb = "gets" if len(names) == 1 else "get"
    return (f"{shown} {verb} exactly zero gradient, also with every parameter moved by N(0, 1) "
            f"times its own scale (at least {NOISE:g}): " + "; ".join(why)
            + ". No init changes that; not counted as a problem")


def _few(names: Sequence[str]) -> str:
    return ", ".join(f"`{name}`" for name in names[:2]) + (
        f" and {len(names) - 2} more" if len(names) > 2 else "")
