"""Cost of lightning_init's training diagnostics, measured side by side in one run.

Model: 12 x (Linear 512x512, LayerNorm, ReLU) + a head, about 3.2M parameters, batch 64, Adam,
trained by a real ``lightning.Trainer`` with a TensorBoardLogger. Prints a table of ratios and
writes it to ``benchmarks/RESULTS_diagnostics.md``.

    PYTHONPATH=. python benchmarks/bench_diagnostics.py [--steps 300] [--repeats 2]

Three measures of the training-loop overhead are given: the wall time of the whole loop against a
run without diagnostics (noisy on a shared machine); within each run, the time spent inside the
diagnostics' hooks divided by the rest of that run's loop (both halves see the same machine load,
but it leaves out what the hooks save the optimizer: it then finds the weights and gradients in
the cache); and, for logging at every step, the median step time with diagnostics against
without, in alternating blocks of 5 steps of one run (the added time, both effects included).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightning_init.diagnostics import DiagnosticsOptions, TrainingDiagnostics  # noqa: E402
from lightning_init.diagnostics._stats import GROUP_MAX_NUMEL  # noqa: E402

HOOKS = (
    "setup",
    "on_train_start",
    "on_train_batch_start",
    "on_before_optimizer_step",
    "on_train_batch_end",
    "teardown",
)


class Model(L.LightningModule):
    def __init__(self, width: int = 512, depth: int = 12) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(width, width), nn.LayerNorm(width), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(width, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class TimedForwarding(L.Callback):
    """Stands in for InitCallback: forwards the hooks and times the time spent in them."""

    def __init__(self, diagnostics: TrainingDiagnostics) -> None:
        self.diagnostics = diagnostics
        self.seconds = {name: 0.0 for name in HOOKS}

    def _call(self, name, *args):
        start = time.perf_counter()
        getattr(self.diagnostics, name)(*args)
        self.seconds[name] += time.perf_counter() - start

    def setup(self, trainer, pl_module, stage):
        self._call("setup", trainer, pl_module, stage)

    def on_train_start(self, trainer, pl_module):
        self._call("on_train_start", trainer, pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._call("on_train_batch_start", trainer, pl_module, batch, batch_idx)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._call("on_before_optimizer_step", trainer, pl_module, optimizer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._call("on_train_batch_end", trainer, pl_module, outputs, batch, batch_idx)

    def teardown(self, trainer, pl_module, stage):
        self._call("teardown", trainer, pl_module, stage)


class LoopTimer(L.Callback):
    """Wall time of the training loop (first batch start to train end) and per step."""

    def __init__(self) -> None:
        self.start = self.total = 0.0
        self.step_times: list[float] = []
        self._batch_start = 0.0

    def on_train_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.step_times.append(time.perf_counter() - self._batch_start)

    def on_train_end(self, trainer, pl_module):
        self.total = time.perf_counter() - self.start


class AlternatingForwarding(TimedForwarding):
    """Forwards the per-step hooks only in every other block of ``block`` steps, so that steps
    with and without diagnostics alternate within one run (same model, same machine load)."""

    def __init__(self, diagnostics: TrainingDiagnostics, block: int = 5) -> None:
        super().__init__(diagnostics)
        self.block = block

    def active(self, step: int) -> bool:
        return (step // self.block) % 2 == 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.active(trainer.global_step):
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.active(trainer.global_step):
            super().on_before_optimizer_step(trainer, pl_module, optimizer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.active(trainer.global_step - 1):  # the step has been taken
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class PairedStepTimer(L.Callback):
    """Step times (batch start to batch end, the diagnostics' hooks included) of the steps with
    and without diagnostics; the first block of each is left out (warm-up, layouts)."""

    def __init__(self, forwarding: AlternatingForwarding) -> None:
        self.forwarding = forwarding
        self.with_diagnostics: list[float] = []
        self.without: list[float] = []
        self._start = 0.0
        self._step = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._step = trainer.global_step
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        seconds = time.perf_counter() - self._start
        if self._step >= 2 * self.forwarding.block:
            active = self.forwarding.active(self._step)
            (self.with_diagnostics if active else self.without).append(seconds)


class BareStatistics:
    """Stands in for TrainingDiagnostics with only the arithmetic no exact implementation can
    skip, a lower bound: ``reductions(tensor)`` of the weights and gradients above
    ``GROUP_MAX_NUMEL`` elements (99% of the values) before the optimizer step, one transfer to
    the host. Nothing for the small tensors, no update ratio, no tags, no writes."""

    def __init__(self, reductions) -> None:
        self.reductions = reductions

    def setup(self, *args) -> None: ...
    def on_train_start(self, *args) -> None: ...
    def on_train_batch_start(self, *args) -> None: ...
    def on_train_batch_end(self, *args) -> None: ...
    def teardown(self, *args) -> None: ...

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        values = []
        for p in pl_module.parameters():
            if p.numel() > GROUP_MAX_NUMEL:
                for tensor in (p.detach(), p.grad):
                    values += self.reductions(tensor.reshape(-1))
        torch.stack(values).cpu()


def exact_reductions(vector: torch.Tensor) -> list[torch.Tensor]:
    """Sum of squares, sum, min and max: norm, mean, std and max |x| follow from these."""
    return [torch.dot(vector, vector), vector.sum(), *torch.aminmax(vector)]


def one_read(vector: torch.Tensor) -> list[torch.Tensor]:
    """The floor: one pass over the tensor (its sum of squares)."""
    return [torch.dot(vector, vector)]


def paired_overhead(steps: int, log_root: str, options) -> tuple[float, float]:
    """Median step time with / without diagnostics in alternating blocks of one run, minus 1;
    and the time inside the hooks / the median step without them. ``options``: the
    diagnostics' options, or a stand-in with the same hooks (``BareStatistics``)."""
    if isinstance(options, BareStatistics):
        forwarding = AlternatingForwarding(options)  # type: ignore[arg-type]
    else:
        forwarding = AlternatingForwarding(
            TrainingDiagnostics(DiagnosticsOptions.from_arg(options))
        )
    timer = PairedStepTimer(forwarding)
    fit_model(steps, log_root, "paired", [forwarding, timer])
    with_diagnostics = statistics.median(timer.with_diagnostics)
    without = statistics.median(timer.without)
    in_hooks = sum(forwarding.seconds[k] for k in
                   ("on_train_batch_start", "on_before_optimizer_step", "on_train_batch_end"))
    active_steps = sum(1 for step in range(steps) if forwarding.active(step))
    return with_diagnostics / without - 1, in_hooks / active_steps / without


class NaiveScalars(L.Callback):
    """What people write first: .item() and add_scalar for 5 statistics of each weight/grad."""

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = every_n_steps

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step % self.every_n_steps:
            return
        naive_logging_step(pl_module, trainer.logger.experiment, trainer.global_step)


def naive_logging_step(pl_module, writer, step) -> None:
    for name, p in pl_module.named_parameters():
        for kind, tensor in (("weight", p.detach()), ("grad", p.grad)):
            writer.add_scalar(f"naive_{kind}_norm/{name}", tensor.norm().item(), step)
            writer.add_scalar(f"naive_{kind}_std/{name}", tensor.std().item(), step)
            writer.add_scalar(f"naive_{kind}_mean/{name}", tensor.mean().item(), step)
            writer.add_scalar(f"naive_{kind}_absmax/{name}", tensor.abs().max().item(), step)
            writer.add_scalar(
                f"naive_{kind}_nonfinite/{name}", (~torch.isfinite(tensor)).sum().item(), step
            )
    writer.flush()  # the writer thread's work (TensorBoard's Python CRC) is part of the cost


def hook_histogram_step(pl_module, writer, step) -> None:
    """The work ``wandb.watch(log="all")`` does per parameter in its hooks: min/max to the host,
    ``histc`` over the whole tensor, counts to the host, one histogram per tensor."""
    for name, p in pl_module.named_parameters():
        for kind, tensor in (("parameters", p.detach()), ("gradients", p.grad)):
            flat = tensor.reshape(-1).float()
            if not torch.isfinite(flat).all().item():
                flat = flat[torch.isfinite(flat)]
            low, high = flat.min().item(), flat.max().item()
            counts = flat.histc(bins=64, min=low, max=high).cpu().tolist()
            step_size = (high - low) / 64 or 1.0
            limits = [low + step_size * (i + 1) for i in range(64)]
            writer.add_histogram_raw(
                f"{kind}/{name}", low, high, flat.numel(), float(flat.sum()),
                float(flat.dot(flat)), limits, counts, global_step=step,
            )
    writer.flush()


def tb_add_histogram_step(pl_module, writer, step) -> None:
    """``SummaryWriter.add_histogram`` of every weight (numpy's histogram, float64 copy)."""
    for name, p in pl_module.named_parameters():
        writer.add_histogram(f"tb/{name}", p.detach(), step)
    writer.flush()


def floor_step(pl_module) -> None:
    """The floor: read every parameter and every gradient once, one transfer."""
    params = [p.detach() for p in pl_module.parameters()]
    grads = [p.grad for p in pl_module.parameters()]
    torch.stack(torch._foreach_norm(params) + torch._foreach_norm(grads)).cpu()


def loader(steps: int, batch_size: int = 64) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    n = 16 * batch_size
    x = torch.randn(n, 512, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=False
    )


def fit_model(steps: int, log_root: str, name: str, callbacks: list[L.Callback]) -> None:
    """Train a freshly seeded Model for ``steps`` steps with these callbacks, quietly."""
    torch.manual_seed(0)
    model = Model()
    trainer = L.Trainer(
        max_steps=steps,
        logger=TensorBoardLogger(log_root, name=name),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=50,
    )
    trainer.fit(model, loader(steps))


def train(steps: int, log_root: str, *, diagnostics=None, naive_every: int | None = None):
    timer = LoopTimer()
    callbacks: list[L.Callback] = [timer]
    forwarding = None
    if diagnostics is not None:
        forwarding = TimedForwarding(TrainingDiagnostics(DiagnosticsOptions.from_arg(diagnostics)))
        callbacks.insert(0, forwarding)
    if naive_every is not None:
        callbacks.insert(0, NaiveScalars(naive_every))
    fit_model(steps, log_root, "bench", callbacks)
    return timer, forwarding


def import_seconds() -> float:
    """A fresh interpreter's extra time to import lightning_init.diagnostics after lightning."""
    code = (
        "import time, lightning, torch.utils.tensorboard\n"
        "start = time.perf_counter()\n"
        "import lightning_init.diagnostics\n"
        "print(time.perf_counter() - start)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    runs = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, check=True).stdout)
        for _ in range(3)
    ]
    return min(runs)


class _StubTrainer:
    """Just what TrainingDiagnostics reads from a trainer, for the per-step microbenchmark."""

    def __init__(self, logger) -> None:
        self.global_step = 0
        self.is_global_zero = True
        self.loggers = [logger]


def per_logging_step(log_root: str, repeats: int = 15) -> dict[str, float]:
    """Median seconds of one logging step of each approach, on the same model and gradients."""
    torch.manual_seed(0)
    model = Model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = next(iter(loader(1)))
    nn.functional.cross_entropy(model.net(x), y).backward()
    logger = TensorBoardLogger(log_root, name="micro")
    writer = logger.experiment
    trainer = _StubTrainer(logger)

    def ours(options):
        diagnostics = TrainingDiagnostics(DiagnosticsOptions.from_arg(options))
        diagnostics.setup(trainer, model, "fit")
        diagnostics.on_train_start(trainer, model)

        def step():
            diagnostics.on_before_optimizer_step(trainer, model, optimizer)
            diagnostics.on_train_batch_end(trainer, model, None, None, 0)

        return step

    approaches = {
        "floor": lambda: floor_step(model),
        "ours_scalars": ours({"every_n_steps": 1, "until_step": 10**9}),
        "ours_histograms": ours({"every_n_steps": 1, "until_step": 10**9, "histograms": True}),
        "naive_item_loop": lambda: naive_logging_step(model, writer, 0),
        "hook_histograms": lambda: hook_histogram_step(model, writer, 0),
        "tb_add_histogram": lambda: tb_add_histogram_step(model, writer, 0),
    }
    # The writer's own cost: N scalars as N add_scalar events vs one Summary with N values.
    n_scalars = 9 * len(list(model.parameters()))
    from lightning_init.diagnostics._writers import TensorBoardWriter

    tb_writer = TensorBoardWriter(os.path.join(log_root, "writer_bench"))
    values = {f"s/{i}": float(i) for i in range(n_scalars)}

    def add_scalar_loop() -> None:
        for tag, value in values.items():
            writer.add_scalar(tag, value, 0)
        writer.flush()  # the writer thread's checksums are part of the cost

    def one_event() -> None:
        tb_writer.add_scalars(values)
        tb_writer.write(0)

    approaches["write_add_scalar_loop"] = add_scalar_loop
    approaches["write_one_summary"] = one_event
    results = {}
    for name, fn in approaches.items():
        fn()  # warm up (sample indices, layouts, allocations)
        times = []
        for _ in range(repeats if name != "tb_add_histogram" else 3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        results[name] = statistics.median(times)
    results["n_scalars"] = n_scalars
    writer.flush()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS_diagnostics.md"))
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    n_params = sum(p.numel() for p in Model().parameters())
    defaults = DiagnosticsOptions()
    every_step = {"every_n_steps": 1, "until_step": 10**9, "dense_start": False}
    # Every step, paired within one run: the defaults (large weights' update ratio sampled),
    # every weight copied whole for the update ratio, and no update ratio at all.
    paired_variants = {
        "every_step": every_step,
        "every_step_exact_update": {**every_step, "update_ratio_max_samples": 10**12},
        "every_step_no_update": {**every_step, "update_ratio": False},
        "bare_exact": BareStatistics(exact_reductions),
        "bare_one_read": BareStatistics(one_read),
    }
    paired: dict[str, list[tuple[float, float]]] = {name: [] for name in paired_variants}
    loops: dict[str, list[float]] = {"baseline": [], "defaults": [], "every_step": []}
    inside: dict[str, list[float]] = {"defaults": [], "every_step": []}
    step_medians: list[float] = []
    one_time_hooks: list[float] = []
    with tempfile.TemporaryDirectory() as log_root:
        for _ in range(args.repeats):  # interleaved, so drift hits every variant alike
            timer, _ = train(args.steps, log_root)
            loops["baseline"].append(timer.total)
            step_medians.append(statistics.median(timer.step_times))
            timer, forwarding = train(args.steps, log_root, diagnostics=True)
            loops["defaults"].append(timer.total)
            in_loop = sum(v for k, v in forwarding.seconds.items()
                          if k not in ("setup", "on_train_start", "teardown"))
            inside["defaults"].append(in_loop / (timer.total - in_loop))
            seconds = forwarding.seconds
            one_time_hooks.append(seconds["setup"] + seconds["on_train_start"])
            timer, forwarding = train(args.steps, log_root, diagnostics=every_step)
            loops["every_step"].append(timer.total)
            in_loop = sum(v for k, v in forwarding.seconds.items()
                          if k not in ("setup", "on_train_start", "teardown"))
            inside["every_step"].append(in_loop / (timer.total - in_loop))
            for name, options in paired_variants.items():
                paired[name].append(paired_overhead(args.steps, log_root, options))
        micro = per_logging_step(log_root)
    step = statistics.median(step_medians)
    imports = import_seconds()
    one_time = imports + min(one_time_hooks)
    n_logged = sum(1 for s in range(args.steps) if defaults.is_logged_step(s))
    n_logged_total = len(defaults.logged_steps())

    def pct(x: float) -> str:
        return f"{100 * x:+.1f}%"

    def wall(variant: str) -> str:
        """Median over rounds of (variant / the same round's baseline), and the range."""
        ratios = [v / b - 1 for v, b in zip(loops[variant], loops["baseline"], strict=True)]
        return f"{pct(statistics.median(ratios))} ({pct(min(ratios))} to {pct(max(ratios))})"

    def inside_range(variant: str) -> str:
        values = inside[variant]
        return (f"{pct(statistics.median(values))} ({pct(min(values))} to "
                f"{pct(max(values))})")

    def paired_range(variant: str, which: int) -> str:
        values = [pair[which] for pair in paired[variant]]
        return (f"{pct(statistics.median(values))} ({pct(min(values))} to "
                f"{pct(max(values))})")

    rows = [
        ("Training loop, defaults (wall time vs no diagnostics, same round)",
         wall("defaults"), "<= 2%"),
        ("Training loop, defaults (time inside the hooks / rest of the same loop)",
         inside_range("defaults"), "<= 2%"),
        (f"Defaults amortized over a {10 * args.steps}-step run (logging-step cost x "
         f"{n_logged_total} logged steps / all steps; derived)",
         pct(micro["ours_scalars"] * n_logged_total / (10 * args.steps * step)), "<= 2%"),
        ("One-time cost of the defaults (import + setup), in training steps",
         f"{one_time / step:.2f} steps ({1e3 * one_time:.0f} ms)", "<= 20"),
        ("Scalar statistics at every step (wall time vs no diagnostics, same round)",
         wall("every_step"), "<= 10%"),
        ("Scalar statistics at every step (time inside the hooks / rest of the loop)",
         inside_range("every_step"), "<= 10%"),
        ("Scalar statistics at every step (step time with / without, alternating blocks of 5 "
         "steps in one run)", paired_range("every_step", 0), "<= 10%"),
        ("Scalar statistics at every step (time inside the hooks / step without, same run)",
         paired_range("every_step", 1), "(reference)"),
        ("Every step, update ratio of every weight from a whole copy (step time with / without)",
         paired_range("every_step_exact_update", 0), "(reference)"),
        ("Every step, no update ratio (step time with / without)",
         paired_range("every_step_no_update", 0), "(reference)"),
        ("Every step, lower bound of exact statistics: sum of squares, sum, min/max of the 24 "
         "weights and gradients above 65,536 values (99% of all), one transfer, nothing else "
         "(step time with / without)", paired_range("bare_exact", 0), "(bound)"),
        ("Every step, floor: one pass over those 24 tensors, one transfer (step time with / "
         "without)", paired_range("bare_one_read", 0), "(bound)"),
        ("Naive .item() + add_scalar at every step (one logging step / training step)",
         pct(micro["naive_item_loop"] / step), "(reference)"),
        ("One logging step, scalars: naive per-parameter .item() loop / ours",
         f"{micro['naive_item_loop'] / micro['ours_scalars']:.1f}x faster", "several x"),
        ("One logging step, histograms: hook-per-parameter (wandb.watch style) / ours",
         f"{micro['hook_histograms'] / micro['ours_histograms']:.1f}x faster", "several x"),
        ("One logging step, histograms: SummaryWriter.add_histogram / ours",
         f"{micro['tb_add_histogram'] / micro['ours_histograms']:.1f}x faster", "(reference)"),
        ("One logging step, scalars: ours / floor (read every weight and grad once)",
         f"{micro['ours_scalars'] / micro['floor']:.1f}x the floor", "(reference)"),
        ("One logging step, scalars + histograms: ours / floor",
         f"{micro['ours_histograms'] / micro['floor']:.1f}x the floor", "(reference)"),
        (f"Writing {micro['n_scalars']} scalars: add_scalar loop / one Summary event",
         f"{micro['write_add_scalar_loop'] / micro['write_one_summary']:.1f}x faster",
         "(design choice)"),
    ]
    header = (
        f"Model: 12 x Linear(512, 512) + LayerNorm + ReLU, {n_params / 1e6:.2f}M parameters, "
        f"batch 64, Adam; {args.steps} steps per run, {args.repeats} interleaved rounds (median, "
        f"range); "
        f"defaults log {n_logged} of the {args.steps} steps "
        f"(every {defaults.every_n_steps} + 0,1,2,4,8,...). torch {torch.__version__}, "
        f"lightning {L.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}.\n\n"
        f"Median training step {1e3 * step:.1f} ms; one logging step: floor "
        f"{1e3 * micro['floor']:.2f} ms, ours scalars {1e3 * micro['ours_scalars']:.2f} ms, "
        f"ours + histograms {1e3 * micro['ours_histograms']:.2f} ms, naive .item() loop "
        f"{1e3 * micro['naive_item_loop']:.2f} ms, hook-per-parameter histograms "
        f"{1e3 * micro['hook_histograms']:.2f} ms, add_histogram "
        f"{1e3 * micro['tb_add_histogram']:.1f} ms.\n"
    )
    table = ["| Measure | Result | Target |", "|---|---|---|"]
    table += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    text = "### Diagnostics overhead (`benchmarks/bench_diagnostics.py`)\n\n" + header + "\n"
    text += "\n".join(table) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
