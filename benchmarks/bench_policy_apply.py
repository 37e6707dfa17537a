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
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lightning_init.policy import InitPolicy  # noqa: E402

WIDTH, DEPTH, REPEATS = 2048, 12, 5
STD = 0.02


def build() -> nn.Module:
    with torch.device("meta"):
        model = nn.Sequential(*(nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH)))
    return model.to_empty(device="cpu")


def best(fn) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = build()
    n_params = sum(p.numel() for p in model.parameters())
    shapes = [(p.shape, name.endswith("weight")) for name, p in model.named_parameters()]
    tensors = [(torch.empty(shape), is_weight) for shape, is_weight in shapes]

    def floor() -> None:
        with torch.no_grad():
            for tensor, is_weight in tensors:
                if is_weight:
                    nn.init.normal_(tensor, 0.0, STD)
                else:
                    nn.init.zeros_(tensor)

    def floor_seeded() -> None:
        with torch.no_grad():
            for i, (tensor, is_weight) in enumerate(tensors):
                if is_weight:
                    nn.init.normal_(tensor, 0.0, STD,
                                    generator=torch.Generator().manual_seed(i))
                else:
                    nn.init.zeros_(tensor)

    def hand_written() -> None:
        def init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, STD)
                nn.init.zeros_(module.bias)

        with torch.no_grad():
            model.apply(init)

    rules = [{"match": {"type": "Linear"}, "weight": {"init": "normal", "std": STD},
              "bias": "zeros"}]
    unseeded = InitPolicy.from_dict({"rules": rules})
    seeded = InitPolicy.from_dict({"seed": 0, "rules": rules})

    def meta_apply() -> None:
        with torch.device("meta"):
            fresh = nn.Sequential(*(nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH)))
        seeded.apply(fresh, device="cpu")

    def build_then_apply() -> None:
        fresh = nn.Sequential(*(nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH)))
        seeded.apply(fresh)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = [
            ("floor: torch.nn.init calls", best(floor)),
            ("floor, seeded generators", best(floor_seeded)),
            ("hand-written model.apply(fn)", best(hand_written)),
            ("policy.apply (global RNG)", best(lambda: unseeded.apply(model))),
            ("policy.apply (seed)", best(lambda: seeded.apply(model))),
            ("policy.explain (dry run)", best(lambda: seeded.explain(model))),
            ("meta model + policy.apply", best(meta_apply)),
            ("build eagerly + policy.apply", best(build_then_apply)),
        ]
    base = rows[0][1]
    print(f"model: {DEPTH} x Linear({WIDTH}, {WIDTH}) = {n_params / 1e6:.1f}M parameters, "
          f"{torch.get_num_threads()} threads, best of {REPEATS}")
    print(f"{'what':<32} {'ms':>9} {'x floor':>8}")
    for label, seconds in rows:
        print(f"{label:<32} {seconds * 1e3:>9.1f} {seconds / base:>8.2f}")


if __name__ == "__main__":
    main()
