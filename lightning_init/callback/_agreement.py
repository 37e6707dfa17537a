"""Every rank the same weights: the rank-shared seed, and the weights' fingerprints compared
across ranks after the initialization (DDP replicas as a whole; under sharding, the ranks that
hold the same shards)."""

from __future__ import annotations

import torch
from lightning.pytorch import Trainer
from torch import nn

from lightning_init.callback._arguments import Policy
from lightning_init.callback._materialize import named_tensors
from lightning_init.runtime.distributed import is_dtensor, local_fingerprints

__all__ = ["shared_seed", "verify_same_on_all_ranks"]

_SEED_BOUND = 2**31 - 1


def shared_seed(trainer: Trainer, policy: Policy) -> int | None:
    """Rank 0's draw, broadcast; ``None`` when the policy has its own seed."""
    if policy.seed is not None:
        return None
    seed = int(torch.randint(_SEED_BOUND, (1,)))  # every rank draws: RNG streams stay aligned
    return int(trainer.strategy.broadcast(seed, src=0))


def _is_replicated(trainer: Trainer, module: nn.Module) -> bool:
    """Whether every rank should hold the same full tensors (DDP, no DTensor parameters)."""
    strategy_classes = {cls.__name__ for cls in type(trainer.strategy).__mro__}
    if "DDPStrategy" not in strategy_classes or "DeepSpeedStrategy" in strategy_classes:
        return False  # DeepSpeed subclasses DDPStrategy but partitions parameters (ZeRO-3)
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - old torch
        return True
    return not any(isinstance(tensor, DTensor) for _, tensor in named_tensors(module))


def verify_same_on_all_ranks(trainer: Trainer, module: nn.Module, fingerprint: str) -> None:
    """All-gather each rank's fingerprint; raise on every rank if they differ. For a sharded
    model, the ranks that hold the same shards (data-parallel replicas) are compared instead."""
    if trainer.world_size <= 1:
        return
    if not _is_replicated(trainer, module):
        if any(is_dtensor(tensor) for _, tensor in named_tensors(module)):
            _verify_same_shards_on_replicas(trainer, module)
        return
    gathered = _gather_fingerprints(trainer, [(0, fingerprint)])
    per_rank = [f"{high:08x}{low:08x}" for [[_, high, low]] in gathered]
    if len(set(per_rank)) > 1:
        listing = ", ".join(f"rank {rank}: {value}" for rank, value in enumerate(per_rank))
        raise RuntimeError(
            "InitCallback: after init the ranks hold different weights (fingerprints of parameters"
            f" and buffers: {listing}). Training would diverge across ranks. Look for rank-"
            "dependent code in configure_model or on_fit_start, or an initializer that draws"
            " from the global RNG without the seed it is given."
        )


def _gather_fingerprints(trainer: Trainer, rows: list[tuple[int, str]]) -> list[list[list[int]]]:
    """Every rank's ``[key, fingerprint high, fingerprint low]`` rows, by rank (every rank
    passes the same number of rows)."""
    halves = [[key, int(value[:8], 16), int(value[8:], 16)] for key, value in rows]
    local = torch.tensor(halves, dtype=torch.int64, device=trainer.strategy.root_device)
    return trainer.strategy.all_gather(local).reshape(-1, len(rows), 3).cpu().tolist()


def _verify_same_shards_on_replicas(trainer: Trainer, module: nn.Module) -> None:
    """For each tensor, compare the local shards' fingerprints of the ranks that hold the same
    shard coordinates (data-parallel replicas); raise on every rank if a group disagrees."""
    local = local_fingerprints(module)
    if not local:
        return
    gathered = _gather_fingerprints(trainer, [(key, value) for _, key, value in local])
    differing: dict[str, list[str]] = {}
    for index, (name, _, _) in enumerate(local):
        groups: dict[int, dict[int, str]] = {}
        for rank, rows in enumerate(gathered):
            key, high, low = rows[index]
            groups.setdefault(key, {})[rank] = f"{high:08x}{low:08x}"
        for ranks in groups.values():
            if len(set(ranks.values())) > 1:
                differing.setdefault(name, []).append(
                    ", ".join(f"rank {r}: {v}" for r, v in ranks.items()))
    if differing:
        shown = list(differing.items())[:5]
        listing = "; ".join(f"{name} ({' / '.join(sets)})" for name, sets in shown)
        more = f"; ... ({len(differing) - 5} more)" if len(differing) > 5 else ""
        raise RuntimeError(
            "InitCallback: after init, ranks that hold the same shards (replicas along a mesh"
            " dimension that does not shard the tensor) hold different values (fingerprints of"
            f" their local shards: {listing}{more}). Training would diverge across these ranks."
            " Look for rank-dependent code in configure_model or on_fit_start, or an initializer"
            " that draws from the global RNG without the seed it is given."
        )
