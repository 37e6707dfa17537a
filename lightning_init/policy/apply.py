"""Applying a plan: materialize meta parameters, write every value atomically, measure them.

Atomic by construction: before anything runs, every tensor the plan can touch is copied (each
target, and every parameter and buffer of the model when a ``reset_parameters()`` runs, since
a module's reset may reach its children); meta tensors need no copy, materialization is undone
instead. Any exception, ``KeyboardInterrupt`` included, restores all of it, and the error says
which tensors, if any, could not be restored. A ``skip``ped or ``keep`` tensor that a parent's
``reset_parameters()`` reaches is restored right after the resets. With a seed, each
parameter's generator is seeded from ``blake2b(seed, qualified_name, shape)`` only: its values
do not depend on the order of initialization, on the other parameters or on the global RNG.

``atomic=False`` copies nothing (but what a ``reset_parameters()`` must have put back): for
weights that are about to be replaced anyway, such as the automatic policy's measuring passes
(:mod:`lightning_init.policy._calibrate`) and its apply over them. A failure then leaves the
tensors written before it with their new values, and the error says so.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
from torch import nn

from lightning_init.errors import PolicyError
from lightning_init.policy._snapshot import Snapshot
from lightning_init.policy.plan import Plan, PlanItem
from lightning_init.policy.reports import InitRecord
from lightning_init.policy.targets import effective, local, reach, scratch, write

__all__ = ["apply_plan", "derive_seed", "materialize", "measure"]


def derive_seed(seed: int, qualified_name: str, shape: Sequence[int]) -> int:
    """A 63-bit seed from ``(seed, qualified_name, shape)`` only.

    Example:
        >>> derive_seed(0, "fc.weight", (2, 3)) == derive_seed(0, "fc.weight", [2, 3])
        True
    """
    text = f"{seed}|{qualified_name}|{tuple(int(s) for s in shape)}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def materialize(model: nn.Module, items: list[PlanItem], *, recurse: bool,
                device: torch.device | str | None, undo: Snapshot | None = None) -> None:
    """Replace meta parameters and buffers by uninitialized ones on ``device`` (default: the
    default device); other tensors, even in the same module, are left as they are. Tied
    parameters stay tied, the plan's targets follow the new tensors, and ``undo`` (if given)
    remembers each meta tensor so that a failed apply can put it back.

    Example:
        >>> with torch.device("meta"):
        ...     layer = nn.Linear(2, 2)
        >>> materialize(layer, [], recurse=True, device="cpu")
        >>> layer.weight.device.type
        'cpu'
    """
    modules = model.modules() if recurse else [model]
    target_device = torch.device(device) if device is not None else torch.empty(0).device
    remap: dict[int, torch.Tensor] = {}
    for module in modules:
        for owner in (module._parameters, module._buffers):
            for key, old in list(owner.items()):
                if old is None or not old.is_meta:
                    continue
                if id(old) not in remap:  # tied: every owner gets the one new tensor
                    new = torch.empty_like(old, device=target_device)
                    if isinstance(old, nn.Parameter):
                        new = nn.Parameter(new, requires_grad=old.requires_grad)
                    remap[id(old)] = new
                if undo is not None:
                    undo.replaced(owner, key, old, remap[id(old)])
                owner[key] = remap[id(old)]
    if remap:
        for item in items:
            item.target.tensors = tuple(remap.get(id(t), t) for t in item.target.tensors)


def apply_plan(plan: Plan, model: nn.Module, *, seed: int | None, prefix: str = "",
               source: str | None = None, recurse: bool = True,
               device: torch.device | str | None = None,
               atomic: bool = True) -> list[tuple[PlanItem, torch.Tensor]]:
    """Materialize ``model``'s meta tensors and write every item of ``plan``, atomically
    (``atomic=False``: without copying the tensors it writes first, no undo).

    Returns:
        ``(item, tensor written)`` pairs in plan order (the effective weight for resets).

    Raises:
        PolicyError: something failed; every tensor was restored first (or the message names
            the ones that could not be). A ``BaseException`` that is no ``Exception``
            (``KeyboardInterrupt``...) is raised as it is, after the same restore.

    Example:
        >>> from lightning_init.policy.plan import build_plan
        >>> from lightning_init.policy.schema import parse_policy
        >>> layer = nn.Linear(2, 2)
        >>> before = layer.weight.clone()
        >>> schema = parse_policy({"rules": [{"match": {"type": "Linear"}, "weight": "ones",
        ...                                   "bias": "torch.nn.init:eye_"}]})
        >>> apply_plan(build_plan(schema, layer), layer, seed=0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_init.PolicyError: initializing 'bias' by rules[0] (type=Linear) failed: ...
        >>> torch.equal(layer.weight, before)
        True
    """
    snapshot = Snapshot()
    written: list[tuple[PlanItem, torch.Tensor]] = []
    step = "materializing meta tensors"
    try:
        with torch.no_grad():
            materialize(model, plan.items, recurse=recurse, device=device, undo=snapshot)
            if atomic or plan.resets:
                _take(snapshot, plan, model)
            step = "reset_parameters()"
            _reset(model, plan, seed, prefix, snapshot)
            for item in plan.items:
                step = f"{item.target.qualified_name!r} by {item.rule}"
                tensor = effective(item.target) if item.resets else _fill(item, seed)
                written.append((item, tensor))
    except BaseException as err:
        if not atomic:
            snapshot = Snapshot()  # nothing is put back: the written values stay
        raise _rolled_back(err, snapshot, model, prefix, step, source, atomic) from err
    return written


def _take(snapshot: Snapshot, plan: Plan, model: nn.Module) -> None:
    """Copy every tensor applying ``plan`` can change: what writing each target reaches, and
    every parameter and buffer of the model when a ``reset_parameters()`` runs (a module's
    reset may reach anything it holds); remember which tensor objects those modules hold, and
    the weights the old ``weight_norm`` hook computes."""
    tensors = [t for item in plan.items for t in reach(item.target)]
    modules = [item.target.module for item in plan.items]
    modules += [m for item in plan.items if item.target.kind == "parametrized"
                for m in item.target.module.parametrizations[item.target.local_name].modules()]
    if plan.resets:
        tensors += [*model.parameters(), *model.buffers()]
        modules += list(model.modules())
    snapshot.take(tensors, modules)
    for item in plan.items:
        if item.target.kind == "old_weight_norm":
            snapshot.attribute(item.target.module, item.target.local_name)


def _rolled_back(err: BaseException, snapshot: Snapshot, model: nn.Module, prefix: str,
                 step: str, source: str | None, atomic: bool = True) -> BaseException:
    """Restore everything; the error to raise, saying truthfully what was restored."""
    lost = snapshot.roll_back()
    if not atomic:
        outcome = ("applied without a snapshot (its weights were to be replaced), so the "
                   "tensors written before it keep their new values")
    elif lost:
        names = _names(model, prefix)
        shown = [names.get(id(tensor), f"a tensor of shape {tuple(tensor.shape)}")
                 for tensor in lost]
        outcome = (f"{len(lost)} tensor(s) could not be restored and may hold partial values: "
                   f"{', '.join(shown[:10])}")
    else:
        outcome = "every parameter was restored"
    if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit: raised as they are
        if hasattr(err, "add_note"):
            err.add_note(f"lightning_init: the init policy was interrupted at {step}; {outcome}")
        return err
    if isinstance(err, PolicyError):
        return PolicyError(f"initializing {step} failed: {_first_line(err.bare_message)}; "
                           f"{outcome}", where=err.where, source=err.source or source,
                           line=err.line)
    return PolicyError(f"initializing {step} failed: {type(err).__name__}: "
                       f"{_first_line(str(err))}; {outcome}", source=source)


def _first_line(text: str) -> str:
    """The first line of an error text (torch's dispatcher errors list every backend)."""
    first, _, rest = text.strip().partition("\n")
    return first + (" [...]" if rest.strip() else "")


def _names(model: nn.Module, prefix: str) -> dict[int, str]:
    named = [*model.named_parameters(prefix=prefix, remove_duplicate=False),
             *model.named_buffers(prefix=prefix, remove_duplicate=False)]
    return {id(tensor): name for name, tensor in reversed(named)}


def _reset(model: nn.Module, plan: Plan, seed: int | None, prefix: str,
           snapshot: Snapshot) -> None:
    """Call ``reset_parameters()`` of the plan's reset modules (seeded per module name), then
    restore every tensor they reached that the plan does not reset (``skip``, ``keep``, other
    rules, what is left alone)."""
    if not plan.resets:
        return
    # What the resets may change, taken before they run (a reset may replace tensor objects)
    reset = {id(t) for item in plan.items if item.resets for t in reach(item.target)}
    reset |= {id(b) for module in plan.resets for b in module.buffers(recurse=False)}
    names = {id(module): name for name, module in model.named_modules(prefix=prefix)}
    for module in plan.resets:
        if seed is None:
            module.reset_parameters()
            continue
        devices = [p.device.index or 0 for p in module.parameters(recurse=False)
                   if p.device.type == "cuda"]
        with torch.random.fork_rng(devices=sorted(set(devices))):
            torch.manual_seed(derive_seed(seed, names.get(id(module), prefix), ()))
            module.reset_parameters()
    lost = snapshot.restore(keep=reset)
    if lost:
        names = _names(model, prefix)
        raise PolicyError(
            "reset_parameters() changed tensors the policy leaves alone and they could not be "
            f"put back: {', '.join(names.get(id(t), '?') for t in lost[:10])}")


def _fill(item: PlanItem, seed: int | None) -> torch.Tensor:
    """Fill the target per its initializer; return the tensor whose stats are reported."""
    target = item.target
    generator = None
    if seed is not None:
        generator = torch.Generator(device=local(target.tensors[0]).device)
        generator.manual_seed(derive_seed(seed, target.qualified_name, target.shape))
    value = scratch(target)
    before = _layout(value)
    item.initializer.fill_(value, generator)  # type: ignore[union-attr]
    if _layout(value) != before:
        raise PolicyError(
            f"{item.describe()} replaced the data of {target.qualified_name!r}: "
            f"{_describe_layout(before)} became {_describe_layout(_layout(value))}; an "
            "initializer fills its tensor in place and keeps its shape and dtype")
    write(target, value)
    return value


def _layout(tensor: torch.Tensor) -> tuple[tuple[int, ...], torch.dtype, torch.device]:
    value = local(tensor)
    return tuple(value.shape), value.dtype, value.device


def _describe_layout(layout: tuple[tuple[int, ...], torch.dtype, torch.device]) -> str:
    shape, dtype, device = layout
    return f"shape {tuple(shape)} {str(dtype).removeprefix('torch.')} on {device}"


_EXACT_BELOW = 1 << 16  # elements: smaller tensors get torch.std_mean


def measure(written: list[tuple[PlanItem, torch.Tensor]]) -> list[InitRecord]:
    """Mean/std of every written tensor, on its device, with one host transfer per device.

    Large tensors whose initializer promises a positive std use one pass each for the sum
    (a matrix-vector product) and the sum of squares (``torch._foreach_norm``); small tensors
    and constants use ``torch.std_mean`` (exact).

    Example:
        >>> from lightning_init.policy.plan import build_plan
        >>> from lightning_init.policy.schema import parse_policy
        >>> layer = nn.Linear(2, 3)
        >>> schema = parse_policy({"rules": [{"match": {"type": "Linear"}, "bias": "ones"}]})
        >>> written = apply_plan(build_plan(schema, layer), layer, seed=0)
        >>> [(record.qualified_name, record.measured_mean) for record in measure(written)]
        [('bias', 1.0)]
    """
    by_device: dict[torch.device, list[int]] = {}
    for index, (_item, tensor) in enumerate(written):
        by_device.setdefault(local(tensor).device, []).append(index)
    stats: dict[int, tuple[float, float]] = {}
    with torch.no_grad():
        for device, indices in by_device.items():
            stats.update(zip(indices, _device_stats([written[i] for i in indices], device),
                             strict=True))
    return [InitRecord.of(item, *stats[index]) for index, (item, _) in enumerate(written)]


def _is_fast(item: PlanItem, tensor: torch.Tensor) -> bool:
    return bool(tensor.numel() >= _EXACT_BELOW and item.expected_std() and tensor.is_contiguous()
                and tensor.dtype in (torch.float32, torch.float64)
                and tensor.numel() % 1024 == 0)


def _device_stats(written: list[tuple[PlanItem, torch.Tensor]], device: torch.device
                  ) -> list[tuple[float, float]]:
    """(mean, std) of tensors on one device; one ``tolist`` for all of them (a second one
    only for the rare large tensor whose one-pass variance would lose its digits)."""
    rows: list[torch.Tensor] = []
    fast: list[tuple[int, torch.Tensor]] = []
    for item, tensor in written:
        values = local(tensor).detach()
        if values.numel() == 0:
            rows.append(torch.full((3,), float("nan"), device=device))
        elif _is_fast(item, values):
            rows.append(torch.zeros(3, device=device))
            fast.append((len(rows) - 1, values))
        else:
            rows.append(_exact_row(values, device))
    if fast:
        norms = torch._foreach_norm([values for _, values in fast])
        for (row, values), norm in zip(fast, norms, strict=True):
            ones = torch.ones(1024, dtype=values.dtype, device=device)
            total = (values.view(-1, 1024) @ ones).sum()
            n = values.numel()
            rows[row] = torch.stack([total / n, norm.pow(2) / n,
                                     torch.ones((), device=device)]).float()
    table = torch.stack(rows).double().tolist()  # the one host transfer
    stats = [(first, second) for first, second, _ in table]
    for row, values in fast:
        mean, square = stats[row]
        # E[x^2] - E[x]^2 cancels when the mean dominates (normal(mean=100, std=0.01)): below
        # 1% of E[x^2] the float32 sums keep too few digits, so take two exact passes instead.
        if square - mean * mean > _CANCELLATION * square:
            stats[row] = (mean, math.sqrt(square - mean * mean))
        else:
            stats[row] = tuple(_exact_row(values, device)[:2].tolist())  # type: ignore[assignment]
    return stats


_CANCELLATION = 1e-2


_CHUNK = 1 << 20  # elements widened to float64 at a time by the exact statistics


def _exact_row(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``[mean, std, 0]`` in float64 by ``torch.std_mean`` (two-pass accuracy); a sparse
    tensor counts its zeros, a complex one gives the real part of its mean and the std of
    its modulus around it. A large real tensor takes both passes in chunks of ``_CHUNK``
    elements, so that the float64 copy is one chunk, never the whole tensor."""
    if values.layout != torch.strided:
        values = values.to_dense()
    zero = torch.zeros((), dtype=torch.float64, device=device)
    if values.numel() > _CHUNK and not values.is_complex():
        chunks = values.reshape(-1).split(_CHUNK)
        mean = torch.stack([chunk.sum(dtype=torch.float64) for chunk in chunks]).sum()
        mean = mean / values.numel()
        square = torch.stack([(chunk.double() - mean).square().sum() for chunk in chunks]).sum()
        return torch.stack([mean, (square / values.numel()).sqrt(), zero]).float()
    wide = torch.complex128 if values.is_complex() else torch.float64
    std, mean = torch.std_mean(values.to(wide), correction=0)
    return torch.stack([mean.real if mean.is_complex() else mean, std, zero]).float()
