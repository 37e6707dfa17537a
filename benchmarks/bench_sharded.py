"""Cross-rank costs of the sharded statistics, measured side by side on 2 gloo CPU ranks.

    PYTHONPATH=. python benchmarks/bench_sharded.py [--repeats 30] [--out FILE]

Prints three tables (and writes them to ``FILE`` with ``--out``; docs/benchmarks.md, "Sharded
training", quotes a run):

1. Aggregating per-module statistics across ranks (the diagnostics' activation sums, the
   check's per-rank measurements): ``sum, sum of squares, count`` and a dead-unit indicator
   for 64 modules, by one batched ``all_reduce`` (what lightning_init does), by one torchmetrics
   ``Metric`` with vector states (``dist_reduce_fx="sum"``), and by one ``Metric`` per module.
   Median time per synchronization on rank 0, after a barrier.
2. One logging step of the diagnostics' parameter statistics (weights and gradients: norm, sum,
   max |x|, std, non-finite count; histograms; the update ratio's change norms) on the same
   model, 2 ranks: FSDP2 (``fully_shard``, every rank measures its shards and the partial
   sums are reduced) against DDP (replicated parameters, rank 0 measures them whole), with a
   training step (forward, backward, SGD) of each for scale. Median of the slower rank.
3. Peak resident memory per rank when a meta-device model is given the policy (growth of the
   peak resident set, reset between the two with Linux's ``clear_refs``): sharded
   (``fully_shard``, ``to_empty``, then the policy module by module, as under
   ``ModelParallelStrategy``), then unsharded (``to_empty`` of the whole model, then the
   policy), against the model's full size.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODULES = 64
UNITS = 256


def _median_time(call: Any, repeats: int) -> float:
    """Median seconds of ``call()`` over ``repeats`` rounds, each started after a barrier; the
    slower rank's median (every rank runs this)."""
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    median = torch.tensor([statistics.median(times)], dtype=torch.float64)
    dist.all_reduce(median, op=dist.ReduceOp.MAX)
    return float(median)


# ---------------------------------------------------------------------- 1. aggregation
def _aggregation(rank: int, repeats: int) -> dict[str, float]:
    from torchmetrics import Metric

    class Moments(Metric):
        full_state_update = False

        def __init__(self, size: int | None = None) -> None:
            super().__init__()
            shape = () if size is None else (size,)
            self.add_state("total", torch.zeros(shape, dtype=torch.float64), "sum")
            self.add_state("squares", torch.zeros(shape, dtype=torch.float64), "sum")
            self.add_state("count", torch.zeros(shape, dtype=torch.float64), "sum")
            alive_shape = (UNITS,) if size is None else (size, UNITS)
            self.add_state("alive", torch.zeros(alive_shape, dtype=torch.float64), "sum")

        def update(self, total: Any, squares: Any, count: Any, alive: Any) -> None:
            self.total += total
            self.squares += squares
            self.count += count
            self.alive += alive

        def compute(self) -> Any:
            return self.total, self.squares, self.count, (self.alive == 0).sum(-1)

    generator = torch.Generator().manual_seed(rank)
    sums = torch.randn(MODULES, 3, generator=generator, dtype=torch.float64)
    alive = (torch.rand(MODULES, UNITS, generator=generator) > 0.1).double()

    def batched() -> Any:
        payload = torch.cat([sums.reshape(-1), alive.reshape(-1)])
        dist.all_reduce(payload)
        return payload

    vector = Moments(MODULES)
    per_module = [Moments() for _ in range(MODULES)]

    def metric_vector() -> Any:
        vector.reset()
        vector.update(sums[:, 0], sums[:, 1], sums[:, 2], alive)
        return vector.compute()

    def metric_per_module() -> Any:
        results = []
        for i, metric in enumerate(per_module):
            metric.reset()
            metric.update(sums[i, 0], sums[i, 1], sums[i, 2], alive[i])
            results.append(metric.compute())
        return results

    # Same numbers from all three.
    reduced = batched()
    total, _, _, dead = metric_vector()
    assert torch.allclose(total, reduced[: MODULES * 3].view(MODULES, 3)[:, 0])
    assert int(dead.sum()) == int((reduced[MODULES * 3:] == 0).sum())
    return {
        "one batched all_reduce": _median_time(batched, repeats),
        "torchmetrics Metric, vector states": _median_time(metric_vector, repeats),
        "torchmetrics Metric per module": _median_time(metric_per_module, max(3, repeats // 5)),
    }


# ---------------------------------------------------------------------- 2. a logging step
class _Net(nn.Module):
    def __init__(self, width: int = 512, depth: int = 12) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.ReLU())
            for _ in range(depth)
        )
        self.head = nn.Linear(width, 10)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            inputs = block(inputs)
        return self.head(inputs)


def _train_step(model: nn.Module, optimizer: Any, inputs: Any, targets: Any) -> None:
    optimizer.zero_grad(set_to_none=False)
    nn.functional.cross_entropy(model(inputs), targets).backward()
    optimizer.step()


def _logging_step(rank: int, repeats: int) -> dict[str, float]:
    from torch.distributed._composable.fsdp import fully_shard
    from torch.distributed.device_mesh import init_device_mesh

    from lightning_init.diagnostics._sharded import ShardedSnapshot, sharded_rows
    from lightning_init.diagnostics._stats import TensorBatch
    from lightning_init.runtime.distributed import full_histograms

    bins, samples = 64, 1 << 16
    generator = torch.Generator().manual_seed(rank)
    inputs = torch.randn(64, 512, generator=generator)
    targets = torch.randint(0, 10, (64,), generator=generator)
    results: dict[str, float] = {}

    torch.manual_seed(0)
    replicated = _Net()
    optimizer = torch.optim.SGD(replicated.parameters(), lr=1e-3)
    _train_step(replicated, optimizer, inputs, targets)
    weights = [p.detach() for p in replicated.parameters()]
    grads = [p.grad.detach() for p in replicated.parameters()]  # type: ignore[union-attr]
    weight_batch = TensorBatch(weights, keep_copy=True, copy_max_numel=1 << 16)
    grad_batch = TensorBatch(grads)

    def ddp_logging() -> None:
        if rank == 0:  # under DDP rank 0 measures; the others go on to the next collective
            weight_batch.stats(weights)
            grad_batch.stats(grads)
            weight_batch.histograms(weights, bins, samples)
            grad_batch.histograms(grads, bins, samples)
            weight_batch.change_norms(weights)

    results["DDP: logging step (rank 0 measures)"] = _median_time(ddp_logging, repeats)
    results["DDP: training step"] = _median_time(
        lambda: _train_step(replicated, optimizer, inputs, targets), repeats)

    mesh = init_device_mesh("cpu", (2,))
    torch.manual_seed(0)
    sharded = _Net()
    for block in sharded.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    sharded_optimizer = torch.optim.SGD(sharded.parameters(), lr=1e-3)
    _train_step(sharded, sharded_optimizer, inputs, targets)
    sharded_weights = [p.detach() for p in sharded.parameters()]
    sharded_grads = [p.grad.detach() for p in sharded.parameters()]  # type: ignore[union-attr]

    def fsdp_logging() -> None:
        sharded_rows(sharded_weights)
        sharded_rows(sharded_grads)
        full_histograms(sharded_weights, bins, samples)
        full_histograms(sharded_grads, bins, samples)
        ShardedSnapshot(sharded_weights).change_norms(sharded_weights)

    results["FSDP2: logging step (every rank, 9 collectives)"] = _median_time(
        fsdp_logging, repeats)
    results["FSDP2: training step"] = _median_time(
        lambda: _train_step(sharded, sharded_optimizer, inputs, targets), repeats)
    return results


# ---------------------------------------------------------------------- 3. peak memory
class _Wide(nn.Module):
    def __init__(self, width: int = 1024, hidden: int = 4096, depth: int = 8) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, width))
            for _ in range(depth)
        )


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no /proc: the lifetime peak


def _start_peak() -> int:
    """Reset the peak resident set size (Linux ``clear_refs`` 5); the resident size now."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status_kib("VmRSS")


def _peak_growth_mib(start: int) -> float:
    return (_status_kib("VmHWM") - start) / 1024


def _memory(rank: int) -> dict[str, float]:
    from torch.distributed._composable.fsdp import fully_shard
    from torch.distributed.device_mesh import init_device_mesh

    from lightning_init.policy import InitPolicy

    policy = InitPolicy.from_dict({"seed": 0, "rules": [
        {"match": {"type": "Linear"}, "weight": {"init": "kaiming_normal"}, "bias": "zeros"}]})
    mesh = init_device_mesh("cpu", (2,))
    with torch.device("meta"):
        model = _Wide()
    full_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    start = _start_peak()
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.to_empty(device="cpu")
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            policy.init_module(module, prefix=name)
    sharded_peak = _peak_growth_mib(start)
    del model
    with torch.device("meta"):
        plain = _Wide()
    start = _start_peak()
    plain.to_empty(device="cpu")
    policy.apply(plain)
    plain_peak = _peak_growth_mib(start)
    peaks = torch.tensor([sharded_peak, plain_peak], dtype=torch.float64)
    dist.all_reduce(peaks, op=dist.ReduceOp.MAX)
    return {"model size (MiB)": full_mib,
            "sharded empty-init + policy: peak growth per rank (MiB)": float(peaks[0]),
            "unsharded empty-init + policy: peak growth (MiB)": float(peaks[1])}


def _worker(rank: int, port: int, repeats: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    tables = {
        "Cross-rank aggregation of 64 modules' statistics (s per sync)": _aggregation(
            rank, repeats),
        "One logging step, 3.2M-parameter MLP, 2 ranks (s)": _logging_step(rank, repeats),
        "Peak memory of an empty-init model given the policy": _memory(rank),
    }
    if rank == 0:
        Path(out).write_text(repr(tables))
    dist.barrier()
    dist.destroy_process_group()


def _markdown(tables: dict[str, dict[str, float]]) -> str:
    lines = [f"# bench_sharded ({platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs, torch {torch.__version__}, 1 thread per rank)", ""]
    for title, rows in tables.items():
        lines += [f"## {title}", "", "| | value | ratio to first row |", "|---|---|---|"]
        first = next(iter(rows.values()))
        for name, value in rows.items():
            lines.append(f"| {name} | {value:.6g} | {value / first:.3g} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", help="also write the tables to this Markdown file")
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        out = str(Path(directory) / "tables.txt")
        mp.spawn(_worker, args=(port, args.repeats, out), nprocs=2, join=True)
        tables = eval(Path(out).read_text())  # our own repr of floats and strings
    text = _markdown(tables)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
