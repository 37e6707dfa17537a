"""Time `InitPolicy.apply` on a ~50M-parameter model against the floor and `model.apply(fn)`.

- floor: the same `torch.nn.init` calls on preallocated tensors of the same shapes, no engine.
- hand-written: `model.apply(fn)` with an `isinstance` check, the usual idiom.
- policy.apply: plan + validation + snapshot for atomicity + fills + one batched measurement.

All ratios come from this one run (best of several repeats). Target: apply within 1.2x of the floor.
Run: `PYTHONPATH=. python benchmarks/bench_policy_apply.py`
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lightning_init.policy import InitPolicy  # noqa: E402

WIDTH, DEPTH, REPEATS = 2048, 12, 9
STD = 0.02


def build() -> nn.Module:
    with torch.device("meta"):
        model = nn.Sequential(*(nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH)))
    return model.to_empty(device="cpu")


def _floors(model: nn.Module) -> list[tuple[str, Callable[[], None]]]:
    """The same ``torch.nn.init`` calls on same-shape tensors, unseeded and seeded."""
    shapes = [(p.shape, name.endswith("weight")) for name, p in model.named_parameters()]
    tensors = [(torch.empty(shape), is_weight) for shape, is_weight in shapes]

    def floor(seeded: bool) -> None:
        with torch.no_grad():
            for i, (tensor, is_weight) in enumerate(tensors):
                if not is_weight:
                    nn.init.zeros_(tensor)
                    continue
                generator = torch.Generator().manual_seed(i) if seeded else None
                nn.init.normal_(tensor, 0.0, STD, generator=generator)

    return [("floor: torch.nn.init calls", lambda: floor(False)),
            ("floor, seeded generators", lambda: floor(True))]


def _hand_written(model: nn.Module) -> None:
    def init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, STD)
            nn.init.zeros_(module.bias)

    with torch.no_grad():
        model.apply(init)


def _variants(model: nn.Module) -> list[tuple[str, Callable[[], None]]]:
    rules = [{"match": {"type": "Linear"}, "weight": {"init": "normal", "std": STD},
              "bias": "zeros"}]
    unseeded = InitPolicy.from_dict({"rules": rules})
    seeded = InitPolicy.from_dict({"seed": 0, "rules": rules})

    def meta_apply() -> None:
        with torch.device("meta"):
            fresh = nn.Sequential(*(nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH)))
        seeded.apply(fresh, device="cpu")

    def build_then_apply() -> None:
        seeded.apply(nn.Sequential(*(nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH))))

    return [
        *_floors(model),
        ("hand-written model.apply(fn)", lambda: _hand_written(model)),
        ("policy.apply (global RNG)", lambda: unseeded.apply(model)),
        ("policy.apply (seed)", lambda: seeded.apply(model)),
        ("policy.explain (dry run)", lambda: seeded.explain(model)),
        ("meta model + policy.apply", meta_apply),
        ("build eagerly + policy.apply", build_then_apply),
    ]


def _best_times(variants: list[tuple[str, Callable[[], None]]]) -> dict[str, float]:
    """Best of REPEATS interleaved rounds: load spikes hit every variant alike."""
    timings: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(REPEATS):
            for label, fn in variants:
                start = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - start
                timings[label] = min(timings.get(label, elapsed), elapsed)
    return timings


def main() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = build()
    n_params = sum(p.numel() for p in model.parameters())
    variants = _variants(model)
    timings = _best_times(variants)
    base = timings[variants[0][0]]
    print(f"model: {DEPTH} x Linear({WIDTH}, {WIDTH}) = {n_params / 1e6:.1f}M parameters, "
          f"{torch.get_num_threads()} threads, best of {REPEATS}")
    print(f"{'what':<32} {'ms':>9} {'x floor':>8}")
    for label, _ in variants:
        seconds = timings[label]
        print(f"{label:<32} {seconds * 1e3:>9.1f} {seconds / base:>8.2f}")


if __name__ == "__main__":
    main()
