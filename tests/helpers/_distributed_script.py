"""Run by tests/runtime/test_distributed.py:
``python tests/helpers/_distributed_script.py OUT_DIR``.

Spawns 2 gloo processes on CPU. Each builds the same DTensors (full values seeded alike on every
rank), measures them with ``lightning_init.runtime.distributed`` and with ``.full_tensor()``,
and writes ``OUT_DIR/rank<r>.json``: per case, the engine's rows and the reference rows.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

BINS = 8


def _reference_row(full: torch.Tensor) -> list[float]:
    """``full_stats`` columns computed on the full tensor directly, in float64."""
    values = full.detach().reshape(-1).double()
    absmax = values.abs().amax().item() if values.numel() else 0.0
    std = values.std().item() if values.numel() > 1 else math.nan
    return [float(values.numel()), values.sum().item(), values.square().sum().item(), absmax,
            float((~torch.isfinite(values)).sum()), values.norm().item(), values.mean().item(),
            std]


def _full(tensor: torch.Tensor) -> torch.Tensor:
    from lightning_init.runtime.distributed import is_dtensor

    return tensor.full_tensor() if is_dtensor(tensor) else tensor


def _tensors(rank: int) -> dict[str, torch.Tensor]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (2,))
    mesh2 = init_device_mesh("cpu", (2, 1), mesh_dim_names=("dp", "tp"))
    generator = torch.Generator().manual_seed(0)

    def full(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.3 + 0.1

    bad = full(6, 2)
    bad[0, 0], bad[5, 1] = math.inf, math.nan
    partial_local = torch.randn(3, 4, generator=torch.Generator().manual_seed(10 + rank))
    return {
        "shard0_uneven": distribute_tensor(full(5, 3), mesh, [Shard(0)]),
        "shard1": distribute_tensor(full(4, 6), mesh, [Shard(1)]),
        "replicate": distribute_tensor(full(7), mesh, [Replicate()]),
        "partial_sum": DTensor.from_local(partial_local, mesh, [Partial()]),
        "partial_avg": DTensor.from_local(partial_local * 2, mesh, [Partial("avg")]),
        "empty_shard": distribute_tensor(full(1, 4), mesh, [Shard(0)]),
        "nonfinite": distribute_tensor(bad, mesh, [Shard(0)]),
        "plain_per_rank": torch.randn(9, generator=torch.Generator().manual_seed(20 + rank)),
        "mesh2d_shard_rep": distribute_tensor(full(6, 5), mesh2, [Shard(0), Replicate()]),
        "submesh_rep": distribute_tensor(full(3, 3), mesh2["tp"], [Replicate()]),
        "mesh2d_rep_rep": distribute_tensor(full(4), mesh2, [Replicate(), Replicate()]),
    }


def _count_collectives(tensors: list[torch.Tensor], call: Any) -> int:
    original = dist.all_reduce
    calls = 0

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    dist.all_reduce = counting  # type: ignore[assignment]
    try:
        call(tensors)
    finally:
        dist.all_reduce = original  # type: ignore[assignment]
    return calls


def _collective_counts(rank: int) -> dict[str, int]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Partial, Shard, distribute_tensor

    from lightning_init.runtime.distributed import full_histograms, full_stats

    mesh = init_device_mesh("cpu", (2,))
    many = [distribute_tensor(torch.ones(4, 3) * i, mesh, [Shard(0)]) for i in range(30)]
    partials = [DTensor.from_local(torch.ones(2) * rank, mesh, [Partial()]) for _ in range(10)]
    return {
        "stats_30": _count_collectives(many, full_stats),
        "stats_3": _count_collectives(many[:3], full_stats),
        "stats_30_plus_10_partial": _count_collectives(many + partials, full_stats),
        "histograms_30": _count_collectives(many, lambda t: full_histograms(t, BINS)),
    }


def _failure(rank: int, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Rank 1's local part raises: it still joins the collectives, then raises."""
    import lightning_init.runtime.distributed as engine

    result: dict[str, Any] = {}
    original = engine._local_rows

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("local failure on rank 1")

    if rank == 1:
        engine._local_rows = broken  # type: ignore[assignment]
    try:
        rows = engine.full_stats(list(tensors.values()))
        result["stats"] = rows.tolist()
    except RuntimeError as error:
        result["stats_error"] = str(error)
    finally:
        engine._local_rows = original  # type: ignore[assignment]
    # Then one more call in step on both ranks: the collectives did not drift.
    result["after"] = engine.full_stats([tensors["shard1"]]).tolist()
    return result


def _models(rank: int) -> dict[str, Any]:
    from torch import nn
    from torch.distributed._composable.fsdp import fully_shard
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    from lightning_init.fingerprint import weights_fingerprint
    from lightning_init.runtime.distributed import full_fingerprint, full_stats

    mesh = init_device_mesh("cpu", (2,))

    def build() -> nn.Module:
        torch.manual_seed(5)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8), nn.LayerNorm(8))

    reference = build()
    tp = parallelize_module(build(), mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    fsdp = build()
    fully_shard(fsdp, mesh=mesh)
    result: dict[str, Any] = {"reference_fingerprint": weights_fingerprint(reference)}
    for name, model in (("tp", tp), ("fsdp", fsdp)):
        params = [p for _, p in model.named_parameters()]
        result[f"{name}_fingerprint"] = full_fingerprint(model)
        result[f"{name}_local_fingerprint"] = weights_fingerprint(model)
        result[f"{name}_stats"] = full_stats(params).tolist()
        result[f"{name}_placements"] = [str(getattr(p, "placements", "plain")) for p in params]
    result["reference_stats"] = [_reference_row(p) for p in reference.parameters()]
    return result


def _worker(rank: int, out_dir: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from lightning_init.diagnostics._stats import _batched_histogram
    from lightning_init.runtime.distributed import full_histograms, full_stats, reduce_squares

    tensors = _tensors(rank)
    values = list(tensors.values())
    result: dict[str, Any] = {"names": list(tensors)}
    result["stats"] = full_stats(values).tolist()
    result["reference"] = [_reference_row(_full(t)) for t in values]
    result["histograms"] = full_histograms(values, BINS).tolist()
    result["reference_histograms"] = [
        _batched_histogram(_full(t).detach().reshape(1, -1).float(), BINS)[0].tolist()
        for t in values
    ]
    sampled = full_histograms([tensors["shard1"]], BINS, max_samples=10)
    result["sampled_histogram_num"] = sampled[0, 2].item()
    local_squares = torch.stack([
        (t.to_local() if hasattr(t, "to_local") else t).detach().double().square().sum()
        for t in (tensors["shard0_uneven"], tensors["replicate"], tensors["plain_per_rank"])
    ])
    result["squares"] = reduce_squares(
        local_squares,
        [tensors["shard0_uneven"], tensors["replicate"], tensors["plain_per_rank"]],
    ).tolist()
    result["local_squares"] = local_squares.tolist()
    result["collectives"] = _collective_counts(rank)
    result["failure"] = _failure(rank, tensors)
    result["models"] = _models(rank)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()
    # Leave without the interpreter's teardown: a gloo thread still joinable when C++ statics
    # are destroyed aborts the process ("terminate called without an active exception",
    # SIGABRT) after its results are written, now and then; mp.spawn reads only the exit code.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_worker, args=(sys.argv[1], port), nprocs=2, join=True)


if __name__ == "__main__":
    main()
