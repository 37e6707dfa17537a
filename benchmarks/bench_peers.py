"""Every-step logging against what users use today, measured side by side.

Model: the one of ``bench_diagnostics.py`` (12 x (Linear 512x512, LayerNorm, ReLU) + a head,
about 3.2M parameters, batch 64, Adam), trained by a real ``lightning.Trainer`` that hands its
logger every step (``log_every_n_steps=1``). Four ways to watch the training at every step:

- Lightning's idiom, in the LightningModule::

      def on_before_optimizer_step(self, optimizer):
          self.log_dict(grad_norm(self, norm_type=2))

  (gradient 2-norms of every parameter and their total, through the TensorBoardLogger);
- ``WandbLogger(offline=True).watch(model, log="all", log_freq=1)`` with ``WANDB_MODE=offline``
  (histograms of every weight and gradient, a row committed every step);
- ``InitCallback(policy=None, check=False, diagnostics={"every_n_steps": 1, ...,
  "histograms": False})`` (norms, spread and extremes of weights and gradients, update ratios,
  alerts), through the TensorBoardLogger;
- the same with ``"histograms": True``.

Each approach runs in its own fit, switched on in every other block of 5 steps, so that the
steps with and without it share the model, the process and the machine's load. A step is timed
from its batch start to the next one's, so the logger's writes after ``on_train_batch_end``
count; switching the approach on or off falls outside, and the first step of each block is left
out. The result is the median step time with the approach over the median without, minus 1; the
rounds are interleaved (every approach once per round) and the table gives the median over
rounds and the range. Needs ``wandb`` (the ``bench`` extra: ``pip install -e ".[bench]"``).

    python benchmarks/bench_peers.py [--steps 200] [--rounds 3] [--quick] [--threads 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import grad_norm
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_diagnostics import Model, loader  # noqa: E402  (benchmarks/ is the script's folder)

from lightning_init import InitCallback  # noqa: E402

BLOCK = 5  # steps per block; blocks alternate off, on, off, on, ...
WARMUP_BLOCKS = 2  # left out of the medians: first allocations, layouts, wandb's graph
PER_STEP_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
)


class PeerModel(Model):
    """The benchmark model, called through ``forward`` (``wandb.watch`` logs the parameters from a
    forward hook on the module it is given), with Lightning's grad-norm idiom behind a switch."""

    log_grad_norms = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.log_grad_norms:
            self.log_dict(grad_norm(self, norm_type=2))


class GatedInitCallback(InitCallback):
    """``InitCallback`` whose per-step hooks run only while ``enabled``."""

    enabled = False


def _gate(name: str):
    def hook(self, *args, **kwargs):
        if self.enabled:
            return getattr(super(GatedInitCallback, self), name)(*args, **kwargs)
        return None

    hook.__name__ = name
    return hook


for _name in PER_STEP_HOOKS:
    setattr(GatedInitCallback, _name, _gate(_name))


class Approach:
    """One way to log at every step: its logger, its callbacks, and a switch."""

    label = ""
    records = ""

    def logger(self, root: str) -> Logger:
        return TensorBoardLogger(root, name="peers")

    def callbacks(self) -> list[L.Callback]:
        return []

    def switch(self, trainer: L.Trainer, module: PeerModel, on: bool) -> None:
        raise NotImplementedError

    def after_step(self, trainer: L.Trainer) -> None:
        """Runs at the end of each step while the approach is on."""

    def close(self) -> None:
        """Runs after the fit."""


class LightningGradNorm(Approach):
    label = "Lightning: `self.log_dict(grad_norm(self, norm_type=2))` in `on_before_optimizer_step`"
    records = "gradient 2-norm of each parameter and the total"

    def switch(self, trainer, module, on):
        module.log_grad_norms = on
        if not on:
            # Lightning keeps the last logged values and writes them again at every step until
            # the epoch ends; a run that never logs has none.
            trainer._results.clear()


class WandbWatch(Approach):
    label = '`WandbLogger(offline=True).watch(model, log="all", log_freq=1)`'
    records = "histograms of each weight and gradient"

    def __init__(self) -> None:
        self._logger: WandbLogger | None = None
        self._watched_once = False

    def logger(self, root):
        self._logger = WandbLogger(save_dir=root, offline=True)
        return self._logger

    def switch(self, trainer, module, on):
        if not on:
            self._logger.experiment.unwatch(module)
        elif not self._watched_once:
            self._logger.watch(module, log="all", log_freq=1)
            self._watched_once = True
        else:
            # The graph is logged once per model (wandb refuses a second graph hook); idx=0
            # keeps the histograms' names those of the first watch.
            self._logger.experiment.watch(module, log="all", log_freq=1, idx=0, log_graph=False)

    def after_step(self, trainer):
        # What WandbLogger.log_metrics does when anything is logged: commits the step's row,
        # histograms included.
        self._logger.experiment.log({"trainer/global_step": trainer.global_step})

    def close(self):
        import wandb

        wandb.finish()


class Ours(Approach):
    def __init__(self, histograms: bool) -> None:
        self.histograms = histograms
        self.callback: GatedInitCallback | None = None
        options = '"histograms": True' if histograms else '"histograms": False'
        self.label = (
            'lightning_init: `InitCallback(policy=None, check=False, diagnostics={"every_n_steps":'
            f' 1, "until_step": N, {options}}})`'
        )
        self.records = (
            "norm, mean, std, largest magnitude of each weight and gradient, update ratios"
            + (", histograms" if histograms else "")
        )

    def callbacks(self):
        self.callback = GatedInitCallback(
            policy=None,
            check=False,
            diagnostics={"every_n_steps": 1, "until_step": 10**9, "histograms": self.histograms},
        )
        return [self.callback]

    def switch(self, trainer, module, on):
        self.callback.enabled = on


class Alternation(L.Callback):
    """Switches an approach on in every other block of ``BLOCK`` steps and times each step from
    its batch start to the next one's; the switching itself is left out."""

    def __init__(self, approach: Approach) -> None:
        self.approach = approach
        self.on = False
        self.with_approach: list[float] = []
        self.without: list[float] = []
        self._step = -1
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        if self._step >= WARMUP_BLOCKS * BLOCK and self._step % BLOCK:  # not a block's first
            (self.with_approach if self.on else self.without).append(now - self._start)
        self._step = trainer.global_step
        on = (self._step // BLOCK) % 2 == 1
        if on != self.on:
            self.approach.switch(trainer, pl_module, on)
            self.on = on
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.on:
            self.approach.after_step(trainer)


def overhead(approach: Approach, steps: int, root: str) -> tuple[float, float]:
    """One fit with ``approach`` switched on in every other block: (median step with / median
    step without - 1, median step without in seconds)."""
    torch.manual_seed(0)
    model = PeerModel()
    alternation = Alternation(approach)
    trainer = L.Trainer(
        max_steps=steps,
        logger=approach.logger(root),
        callbacks=[alternation, *approach.callbacks()],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=1,
    )
    try:
        trainer.fit(model, loader(steps))
    finally:
        approach.close()
    without = statistics.median(alternation.without)
    return statistics.median(alternation.with_approach) / without - 1, without


def _quiet() -> None:
    """Lightning's and the diagnostics' console output is not what is measured here."""
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_init", "wandb"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _versions() -> str:
    import wandb

    return (
        f"torch {torch.__version__}, lightning {L.__version__}, wandb {wandb.__version__}, "
        f"torch threads: {torch.get_num_threads()}, CPUs: {os.cpu_count()}, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="steps per fit (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 steps, 1 round")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 40, 1
    torch.set_num_threads(min(args.threads, torch.get_num_threads()))
    _quiet()
    approaches = {
        "grad_norm": LightningGradNorm,
        "wandb": WandbWatch,
        "ours": lambda: Ours(histograms=False),
        "ours_histograms": lambda: Ours(histograms=True),
    }
    ratios: dict[str, list[float]] = {name: [] for name in approaches}
    steps_without: list[float] = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        os.environ.setdefault("WANDB_DIR", root)
        for round_ in range(args.rounds):  # interleaved, so drift hits every approach alike
            for name, make in approaches.items():
                ratio, without = overhead(make(), args.steps, root)
                ratios[name].append(ratio)
                steps_without.append(without)
                print(f"round {round_ + 1}/{args.rounds} {name}: {100 * ratio:+.0f}% "
                      f"(step without {1e3 * without:.1f} ms)", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - began
    print(report(args, {name: make() for name, make in approaches.items()}, ratios,
                 statistics.median(steps_without), seconds, args.out))


def report(args, approaches, ratios, step_without, seconds, out) -> str:
    def pct(x: float) -> str:
        return f"{100 * x:+.0f}%"

    rows = ["| Every-step logging | What it records | Added to the loop |", "|---|---|---|"]
    for name, approach in approaches.items():
        values = ratios[name]
        spread = f" ({pct(min(values))} to {pct(max(values))})" if len(values) > 1 else ""
        rows.append(f"| {approach.label} | {approach.records} | "
                    f"{pct(statistics.median(values))}{spread} |")
    n_params = sum(p.numel() for p in Model().parameters())
    text = (
        f"Model: 12 x (Linear(512, 512) + LayerNorm + ReLU) + a head, {n_params / 1e6:.2f}M "
        f"parameters, batch 64, Adam; {args.steps} steps per fit, logging in every other block of "
        f"{BLOCK} steps; {args.rounds} interleaved round(s), median (range) of the step time with "
        f"over without. Median step without: {1e3 * step_without:.1f} ms.\n"
        f"{_versions()}; measured {datetime.date.today().isoformat()}, {seconds:.0f} s in all.\n\n"
        + "\n".join(rows) + "\n"
    )
    if out:
        Path(out).write_text(text)
    return text


if __name__ == "__main__":
    main()
