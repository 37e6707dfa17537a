"""Re-render the pictures in docs/: ``python docs/make_pictures.py [--tensorboard]``.

- ``docs/check_depth_<policy>.png``: the init check's depth figure (the project's own
  ``report.figure()``, saved by matplotlib) for a 30-layer plain ReLU MLP under PyTorch's
  default init and under kaiming.
- With ``--tensorboard``: runs ``examples/he_init_experiment.py`` (xavier, kaiming, default),
  starts TensorBoard on localhost and screenshots its pages with Debian's headless Chromium
  (``apt-get install chromium``; ``--use-angle=swiftshader`` draws the charts without a GPU):
  ``tb_custom_scalars.png`` (the diagnostics' charts) and ``tb_text.png`` (the check's verdict
  and table), in windows narrow enough to read at the width a README shows. (The Images page
  shows the depth figure as a thumbnail until *Show actual image size* is ticked, which no URL
  sets: the figure itself is saved by matplotlib above.) Each PNG is reduced to a palette when
  it is over ``MAX_BYTES``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # this checkout's lightning_init, not an installed one

from lightning_init import InitPolicy, check_init  # noqa: E402

MAX_BYTES = 300_000
PORT = 6123

# (file, page of TensorBoard's URL, window size): the legacy dashboards take the run filter
# `regexInput` and the tag filter `tagFilter` in the URL.
PAGES = (
    ("tb_custom_scalars.png", "#custom_scalars&regexInput=diagnostics&_smoothingWeight=0",
     (1120, 1000)),
    ("tb_text.png", "#text&regexInput=pytorch_default%24&tagFilter=check", (1360, 800)),
)


def deep_relu_mlp(depth: int = 30, width: int = 64) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for _ in range(depth):
        layers += [torch.nn.Linear(width, width), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers)


def check_depth_png() -> None:
    torch.manual_seed(0)
    inputs = torch.randn(256, 64)
    default_net = deep_relu_mlp()
    kaiming_net = deep_relu_mlp()
    InitPolicy.from_preset("kaiming_relu").apply(kaiming_net)
    for label, net in (("pytorch_default", default_net), ("kaiming_relu", kaiming_net)):
        report = check_init(net, inputs)
        figure = report.figure()
        verdict = "passed" if report.ok else "FAILED"
        figure.suptitle(f"30-layer ReLU MLP, {label}: init check {verdict}", fontsize=15)
        path = DOCS / f"check_depth_{label}.png"
        figure.savefig(path, dpi=90)
        shrink(path)
        print(f"wrote {path} ({path.stat().st_size} bytes)")


def shrink(path: Path) -> None:
    """Reduce a PNG to a 256-colour palette when it is over ``MAX_BYTES``."""
    if path.stat().st_size <= MAX_BYTES:
        return
    from PIL import Image

    with Image.open(path) as image:
        reduced = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    reduced.save(path, optimize=True)


def _wait_for(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"TensorBoard did not answer at {url} within {seconds:g} s")


def screenshot(page: str, path: Path, size: tuple[int, int]) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium, "--headless", "--no-sandbox", "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                "--hide-scrollbars", "--virtual-time-budget=30000", f"--screenshot={path}",
                f"http://127.0.0.1:{PORT}/{page}",
            ],
            check=True, timeout=180, capture_output=True,
        )
    shrink(path)
    print(f"wrote {path} ({path.stat().st_size} bytes)")


def tensorboard_pngs(logdir: Path | None) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        if logdir is None:
            logdir = Path(scratch)
            subprocess.run(
                [sys.executable, str(DOCS.parent / "examples/he_init_experiment.py"),
                 "--logdir", str(logdir), "--max-steps", "100"],
                check=True, env={**os.environ, "PYTHONPATH": str(DOCS.parent)},
            )
        server = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
             "--host", "127.0.0.1", "--port", str(PORT)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(f"http://127.0.0.1:{PORT}/data/runs")
            time.sleep(5)  # the first load of the event files
            for name, page, size in PAGES:
                screenshot(page, DOCS / name, size)
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensorboard", action="store_true")
    parser.add_argument("--logdir", type=Path, help="screenshot these runs instead of new ones")
    args = parser.parse_args()
    check_depth_png()
    if args.tensorboard:
        tensorboard_pngs(args.logdir)
