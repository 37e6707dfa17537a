"""The check of a model whose embeddings are tensor-parallel (vocabulary split across 2 gloo CPU
ranks, outputs kept as DTensors), each rank writing its embedding findings to
``<out_dir>/rank<r>.json``; rank 0 also writes those of the same model unsharded.

Run: ``python _embedding_tp_script.py <out_dir>``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lightning_init import check_init


class Summed(nn.Module):
    """Words at std 100 summed with positions at std 0.02, then a head (on the sum's local
    tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.words, self.positions = nn.Embedding(64, 16), nn.Embedding(8, 16)
        self.head = nn.Linear(16, 64)
        nn.init.normal_(self.words.weight, std=100.0)
        nn.init.normal_(self.positions.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        summed = self.words(tokens) + self.positions(torch.arange(tokens.shape[1]))
        return self.head(summed.to_local() if hasattr(summed, "to_local") else summed)


def _findings(model: nn.Module, tokens: torch.Tensor) -> list[list[str]]:
    report = check_init(model, tokens)
    return [[problem.kind, *problem.layers, problem.message] for problem in report.problems
            if problem.kind == "embedding"]


def _rank(rank: int, out_dir: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import RowwiseParallel, parallelize_module

    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = Summed()
        tokens = torch.randint(0, 64, (4, 8), generator=torch.Generator().manual_seed(1))
        if rank == 0:
            Path(out_dir, "plain.json").write_text(json.dumps(_findings(model, tokens)))
        lookup = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate(),
                                 use_local_output=False)
        parallelize_module(model, init_device_mesh("cpu", (2,)),
                           {"words": lookup, "positions": lookup})
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(_findings(model, tokens)))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29400 + os.getpid() % 1000))
    mp.spawn(_rank, args=(sys.argv[1],), nprocs=2)
