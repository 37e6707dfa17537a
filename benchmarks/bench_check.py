"""Cost of the init check against one plain forward + backward of the same model and batch.

Run: ``PYTHONPATH=. python benchmarks/bench_check.py``. Prints times and the ratio; the check
adds per-module statistics (a few reductions per module) and one host transfer.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from lightning_init.check import check_init, lsuv_init


def _mlp(depth: int = 30, width: int = 512) -> nn.Module:
    return nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), nn.ReLU())])


def _cnn() -> nn.Module:
    layers: list[nn.Module] = []
    channels = 3
    for out_channels in (32, 64, 64, 128, 128, 256):
        layers += [nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
                   nn.BatchNorm2d(out_channels), nn.ReLU()]
        channels = out_channels
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


def _best_of(run, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    torch.manual_seed(0)
    cases = {
        "mlp 30x512, batch 256": (_mlp(), torch.randn(256, 512)),
        "cnn 6 conv+bn, batch 32x3x32x32": (_cnn(), torch.randn(32, 3, 32, 32)),
    }
    for label, (model, inputs) in cases.items():
        def plain(model=model, inputs=inputs) -> None:
            params = list(model.parameters())
            torch.autograd.grad(model(inputs).pow(2).mean(), params)

        def checked(model=model, inputs=inputs) -> None:
            check_init(model, inputs)

        plain()  # warm up
        checked()
        base, check = _best_of(plain), _best_of(checked)
        print(f"{label}: forward+backward {1e3 * base:.1f} ms, check_init {1e3 * check:.1f} ms, "
              f"ratio {check / base:.2f}x")
    model, inputs = _mlp(depth=20, width=256), torch.randn(256, 256)
    start = time.perf_counter()
    report = lsuv_init(model, inputs)
    print(f"lsuv_init mlp 20x256: {1e3 * (time.perf_counter() - start):.1f} ms, "
          f"{sum(report.iterations.values())} rescaling passes, converged={report.converged}")


if __name__ == "__main__":
    main()
