"""Re-render the pictures in docs/: ``python docs/make_pictures.py [--tensorboard]``.

- ``docs/check_depth.png``: the init check's depth plot (the project's own ``report.figure()``)
  for a 30-layer plain ReLU MLP under PyTorch's default init and under kaiming.
- ``docs/tensorboard.png`` (with ``--tensorboard``): runs ``examples/he_init_experiment.py``,
  starts TensorBoard on localhost and takes a screenshot with Debian's headless Chromium
  (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lightning_init import InitPolicy, check_init

DOCS = Path(__file__).resolve().parent


def deep_relu_mlp(depth: int = 30, width: int = 64) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers)


def check_depth_png() -> Path:
    torch.manual_seed(0)
    inputs = torch.randn(256, 64)
    default_net = deep_relu_mlp()
    kaiming_net = deep_relu_mlp()
    InitPolicy.from_preset("kaiming_relu").apply(kaiming_net)
    for label, net in (("pytorch_default", default_net), ("kaiming_relu", kaiming_net)):
        report = check_init(net, inputs)
        figure = report.figure()
        verdict = "passed" if report.ok else "FAILED"
        figure.suptitle(f"30-layer ReLU MLP, {label}: check {verdict}", y=1.03)
        path = DOCS / f"check_depth_{label}.png"
        figure.savefig(path, dpi=90, bbox_inches="tight")
        print(f"wrote {path}")
    return path


def tensorboard_png() -> None:
    root = DOCS.parent
    with tempfile.TemporaryDirectory() as logdir:
        subprocess.run(
            [
                sys.executable,
                str(root / "examples/he_init_experiment.py"),
                "--logdir",
                logdir,
                "--max-steps",
                "200",
            ],
            check=True,
        )
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorboard.main",
                "--logdir",
                logdir,
                "--host",
                "127.0.0.1",
                "--port",
                "6123",
            ]
        )
        try:
            time.sleep(15)
            subprocess.run(
                [
                    "chromium",
                    "--headless",
                    "--no-sandbox",
                    "--use-angle=swiftshader",
                    "--enable-unsafe-swiftshader",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1400,900",
                    "--virtual-time-budget=30000",
                    f"--screenshot={DOCS / 'tensorboard.png'}",
                    "http://127.0.0.1:6123/#scalars&tagFilter=train%2Floss&_smoothingWeight=0",
                ],
                check=True,
                timeout=120,
            )
        finally:
            server.terminate()
    print(f"wrote {DOCS / 'tensorboard.png'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensorboard", action="store_true")
    args = parser.parse_args()
    check_depth_png()
    if args.tensorboard:
        tensorboard_png()
