"""Applying a plan: materialize meta parameters, write every value atomically, measure them.

Built-in initializers cannot fail once validated; custom initializers, ``reset_parameters()``,
parametrizations and DTensors are snapshotted and run first, so a failure restores every tensor
it touched. With a seed, each parameter's generator is seeded from
``blake2b(seed, qualified_name, shape)`` only: its values do not depend on the order of
initialization, on the other parameters or on the global RNG.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch
from torch import nn

from lightning_init.errors import PolicyError
from lightning_init.policy.initializers import known_initializers
from lightning_init.policy.plan import Plan, PlanItem
from lightning_init.policy.reports import InitRecord
from lightning_init.policy.targets import effective, local, scratch, write

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
                device: torch.device | str | None) -> None:
    """Move meta parameters and buffers to ``device`` (default: the default device), uninitialized;
    tied parameters stay tied, and the plan's targets follow the new tensors.

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
    alive: list[torch.Tensor] = []  # keeps ids of the meta Parameters unique meanwhile
    for module in modules:
        tensors = [*module._parameters.values(), *module._buffers.values()]
        if not any(t is not None and t.is_meta for t in tensors):
            continue
        old = dict(module._parameters)
        module.to_empty(device=target_device, recurse=False)
        for local_name, param in old.items():
            if param is None:
                continue
            alive.append(param)
            if id(param) in remap:  # tied: every owner gets the one new Parameter
                module._parameters[local_name] = remap[id(param)]
            else:
                remap[id(param)] = module._parameters[local_name]
    if remap:
        for item in items:
            item.target.tensors = tuple(remap.get(id(t), t) for t in item.target.tensors)


def apply_plan(plan: Plan, model: nn.Module, *, seed: int | None, prefix: str = "",
               source: str | None = None) -> list[tuple[PlanItem, torch.Tensor]]:
    """Write every item of ``plan`` (meta parameters already materialized), atomically.

    Returns:
        ``(item, tensor written)`` pairs in plan order (the effective weight for resets).

    Raises:
        PolicyError: something failed; every parameter was restored first.

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
    items = plan.items
    risky = [item for item in items if not _cannot_fail(item)]
    safe = [item for item in items if _cannot_fail(item)]
    snapshot = _Snapshot(risky, plan.resets)
    written: dict[int, tuple[PlanItem, torch.Tensor]] = {}
    positions = {id(item): index for index, item in enumerate(items)}
    current = "reset_parameters()"
    try:
        with torch.no_grad():
            _reset(model, plan, seed, prefix)
            for item in [*risky, *safe]:
                current = f"{item.target.qualified_name!r} by {item.rule}"
                tensor = effective(item.target) if item.resets else _fill(item, seed)
                written[positions[id(item)]] = (item, tensor)
    except PolicyError as err:
        snapshot.restore()
        raise PolicyError(
            f"initializing {current} failed: {err.bare_message}; every parameter was restored",
            where=err.where, source=err.source or source, line=err.line,
        ) from err
    except Exception as err:
        snapshot.restore()
        raise PolicyError(
            f"initializing {current} failed: {type(err).__name__}: {err}; every parameter was "
            "restored", source=source) from err
    return [written[index] for index in sorted(written)]


def _reset(model: nn.Module, plan: Plan, seed: int | None, prefix: str) -> None:
    """Call ``reset_parameters()`` of the plan's reset modules (seeded per module name)."""
    if not plan.resets:
        return
    # Parameters of reset modules that the plan does not reset keep their values.
    reset_tensors = {id(t) for item in plan.items if item.resets for t in item.target.tensors}
    keep = [(p, p.detach().clone()) for m in plan.resets for p in m.parameters(recurse=False)
            if id(p) not in reset_tensors and not p.is_meta]
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
    for param, value in keep:
        param.copy_(value)


def _cannot_fail(item: PlanItem) -> bool:
    """A built-in tensor initializer on a plain parameter: validated, it cannot fail."""
    target = item.target
    if item.initializer is None or item.initializer.kind != "tensor" or target.kind != "param":
        return False
    if hasattr(target.tensors[0], "placements"):
        return False
    known = set(known_initializers())
    pending = [item.initializer]
    while pending:
        initializer = pending.pop()
        if initializer.blocks:
            pending.extend(initializer.blocks)
        elif initializer.name not in known or ":" in initializer.name:
            return False
    return True


class _Snapshot:
    """Copies of every tensor apply may touch; ``restore`` puts them back."""

    def __init__(self, items: list[PlanItem], resets: list[nn.Module]) -> None:
        seen: dict[int, torch.Tensor] = {}
        for item in items:
            for tensor in item.target.tensors:
                seen[id(tensor)] = tensor
        for module in resets:
            for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
                seen[id(tensor)] = tensor
        self._saved = [(t, local(t).detach().clone()) for t in seen.values() if not t.is_meta]

    def restore(self) -> None:
        with torch.no_grad():
            for tensor, value in self._saved:
                local(tensor).copy_(value)


def _fill(item: PlanItem, seed: int | None) -> torch.Tensor:
    """Fill the target per its initializer; return the tensor whose stats are reported."""
    target = item.target
    generator = None
    if seed is not None:
        generator = torch.Generator(device=local(target.tensors[0]).device)
        generator.manual_seed(derive_seed(seed, target.qualified_name, target.shape))
    value = scratch(target)
    item.initializer.fill_(value, generator)  # type: ignore[union-attr]
    write(target, value)
    return value


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
    """(mean, std) of tensors on one device; one ``tolist`` for all of them."""
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
            std, mean = torch.std_mean(values.to(torch.float64), correction=0)
            rows.append(torch.stack([mean, std, torch.zeros((), dtype=torch.float64,
                                                            device=device)]).float())
    if fast:
        norms = torch._foreach_norm([values for _, values in fast])
        for (row, values), norm in zip(fast, norms, strict=True):
            ones = torch.ones(1024, dtype=values.dtype, device=device)
            total = (values.view(-1, 1024) @ ones).sum()
            n = values.numel()
            rows[row] = torch.stack([total / n, norm.pow(2) / n,
                                     torch.ones((), device=device)]).float()
    table = torch.stack(rows).double().tolist()  # the one host transfer
    return [(first, math.sqrt(max(second - first * first, 0.0))) if is_fast else (first, second)
            for first, second, is_fast in table]
