"""Peak memory of building the automatic policy on a 124M-parameter GPT-2.

The model is Hugging Face's ``GPT2LMHeadModel(GPT2Config())`` (the 124M-parameter defaults),
built from its config. A thread samples the process's resident set (``/proc/self/statm``) every
millisecond; each phase's peak is measured above the resident set just before it, and reported
against the parameters' bytes measured in the same run:

- one forward pass: the sample batch through ``training_step`` under ``no_grad`` (the floor);
- ``InitCallback(policy="auto")``: a real ``Trainer.fit`` whose ``setup`` builds the policy from
  the first training batch and applies it (the phase ends when ``setup`` returns);
- ``InitPolicy.auto(model, sample)``: the model is left unchanged (measured on a copy).

It also counts the deep copies of the model each phase makes (``nn.Parameter.__deepcopy__``
calls over the number of parameters). Run: ``PYTHONPATH=. python benchmarks/bench_auto_memory.py``
(about 2 GB of memory, a minute or two on 2 cores).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lightning_init import InitCallback, InitPolicy  # noqa: E402
from lightning_init.runtime.no_trace import no_side_effects  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PAGE = os.sysconf("SC_PAGE_SIZE")
BATCH, LENGTH = 2, 128


class Sampler:
    """The resident set, sampled every millisecond in a thread; peaks per phase."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * PAGE

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.001)

    @contextlib.contextmanager
    def phase(self, result: dict[str, float]) -> Iterator[None]:
        """Peak above the resident set at entry, in bytes, into ``result["peak"]``."""
        base = self.rss()
        self.peak = base
        yield
        self.peak = max(self.peak, self.rss())
        result["peak"] = self.peak - base

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def count_copies(result: dict[str, float], n_params: int) -> Iterator[None]:
    """Deep copies of the model made inside: ``Parameter.__deepcopy__`` calls / parameters."""
    original = nn.Parameter.__deepcopy__
    calls = [0]

    def counted(self: nn.Parameter, memo: dict[int, Any]) -> nn.Parameter:
        calls[0] += 1
        return original(self, memo)

    nn.Parameter.__deepcopy__ = counted  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Parameter.__deepcopy__ = original  # type: ignore[method-assign]
        result["copies"] = calls[0] / n_params


class LM(L.LightningModule):
    """GPT-2 124M as a LightningModule; SGD with lr 0 (no optimizer state)."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.model = GPT2LMHeadModel(GPT2Config(use_cache=False))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.model(input_ids=batch, labels=batch).loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        tokens = torch.randint(50257, (BATCH * 2, LENGTH), generator=generator)
        return DataLoader(tokens, batch_size=BATCH)


class Phase(L.Callback):
    """Opens a sampler phase in ``setup`` (before the InitCallback's) or closes it (after)."""

    def __init__(self, stack: contextlib.ExitStack, phase: Any, opens: bool) -> None:
        self.stack, self.phase, self.opens = stack, phase, opens

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.opens:
            self.stack.enter_context(self.phase)
        else:
            self.stack.close()


def measure(phase: str) -> dict[str, float]:
    """In this process: the model, one forward pass (the floor), then ``phase``."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning_init").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    module = LM()
    params = list(module.parameters())
    sample = next(iter(module.train_dataloader()))
    sampler = Sampler()
    forward: dict[str, float] = {}
    for _ in range(2):  # the first pass warms the allocator up; the second is measured
        with sampler.phase(forward), no_side_effects(module), torch.no_grad():
            module.training_step(sample, 0)
    result: dict[str, float] = {}
    if phase == "callback":
        stack = contextlib.ExitStack()
        trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir="/tmp/bench_auto_memory",
                            callbacks=[Phase(stack, sampler.phase(result), True),
                                       InitCallback(policy="auto", check=False),
                                       Phase(stack, None, False)])
        with count_copies(result, len(params)):
            trainer.fit(module)
    else:
        with sampler.phase(result), count_copies(result, len(params)):
            InitPolicy.auto(module.model, sample)
    sampler.close()
    return {"forward": forward["peak"], "peak": result["peak"], "copies": result["copies"],
            "bytes": sum(p.numel() * p.element_size() for p in params),
            "params": sum(p.numel() for p in params)}


PHASES = {"callback": "InitCallback(policy='auto'), setup (measured in place)",
          "auto": "InitPolicy.auto(model, sample) (the model left unchanged)"}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--phase":
        print(json.dumps(measure(sys.argv[2])))
        return
    # a fixed mmap threshold: every large block goes back to the system when freed, so the
    # resident set follows the live tensors; each phase in a fresh process
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "PYTHONPATH": str(ROOT)}
    rows = {}
    for phase in PHASES:
        out = subprocess.run([sys.executable, __file__, "--phase", phase], env=env, check=True,
                             capture_output=True, text=True).stdout
        rows[phase] = json.loads(out.strip().splitlines()[-1])
    first = rows["callback"]
    print(f"GPT-2 {first['params'] / 1e6:.1f}M parameters, {first['bytes'] / 2**20:.0f} MiB; "
          f"batch {BATCH} x {LENGTH} tokens; one forward pass (training_step, no grad): peak "
          f"+{first['forward'] / 2**20:.0f} MiB")
    print("| what | peak above the start | beyond one forward pass | vs parameter bytes "
          "| model copies |")
    print("| --- | --- | --- | --- | --- |")
    for phase, label in PHASES.items():
        row = rows[phase]
        beyond = max(0.0, row["peak"] - row["forward"])
        print(f"| {label} | {row['peak'] / 2**20:.0f} MiB | {beyond / 2**20:.0f} MiB | "
              f"{beyond / row['bytes']:.2f}x | {row['copies']:.0f} |")


if __name__ == "__main__":
    main()
