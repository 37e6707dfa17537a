"""Long runs on real data: the model's own init, ``policy="auto"`` and the matching preset.

Offline data only (nothing is downloaded):

- a byte-level language model on the Python standard library's own ``.py`` files (every 10th
  file held out for validation), in nats per byte;
- scikit-learn's bundled digits (1797 8x8 images, 10 classes), validation cross-entropy;
- scikit-learn's bundled diabetes regression (442 x 10), best validation MSE of the
  standardized target.

Every task runs 3 seeds; within a seed the model is built once by its own init (``own``),
then re-initialized by ``InitPolicy.auto`` on the first training batch (``auto``) or by the
matching preset (``preset``), and every init trains on the same batches. Validation at step 100,
300 and the end; each init's model is also checked by ``check_init`` on the sample batch with
the task's own loss. One torch thread, tasks one after another.

Run: ``PYTHONPATH=. python benchmarks/bench_auto.py [--quick] [--tasks llama,gpt2]
[--json out.json]``; ``--table out.json`` prints the Markdown table of saved results.
Needs scikit-learn (``pip install -e ".[bench]"``) and transformers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from lightning_init import InitPolicy, check_init  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CONTEXT, LM_BATCH, IMAGE_BATCH, TABLE_BATCH = 64, 16, 64, 32
INITS = ("own", "auto", "preset")


# ------------------------------------------------------------------------------------ data
@dataclass
class Data:
    """Training arrays, validation arrays and how to draw a batch."""

    train: Any
    val: Any
    batch: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    val_batches: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


def _corpus() -> tuple[torch.Tensor, torch.Tensor]:
    """The standard library's top-level ``.py`` files as bytes; every 10th file is held out."""
    folder = Path(os.path.dirname(os.__file__))
    files = sorted(folder.glob("*.py"))
    train = [f.read_bytes() for i, f in enumerate(files) if i % 10 != 9]
    val = [f.read_bytes() for i, f in enumerate(files) if i % 10 == 9]

    def as_tensor(chunks: list[bytes]) -> torch.Tensor:
        return torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8).long()

    return as_tensor(train), as_tensor(val)


def _bytes_data() -> Data:
    train, val = _corpus()

    def batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(train) - CONTEXT - 1, (LM_BATCH,), generator=generator)
        windows = torch.stack([train[s:s + CONTEXT + 1] for s in starts.tolist()])
        return windows[:, :-1], windows[:, 1:]

    starts = torch.linspace(0, len(val) - CONTEXT - 2, 128).long().tolist()
    windows = torch.stack([val[s:s + CONTEXT + 1] for s in starts])
    val_batches = [(w[:, :-1], w[:, 1:]) for w in windows.split(32)]
    return Data(train, val, batch, val_batches)


def _split(x: torch.Tensor, y: torch.Tensor, n_val: int) -> tuple[Any, Any]:
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))
    return (x[order[n_val:]], y[order[n_val:]]), (x[order[:n_val]], y[order[:n_val]])


def _table_data(x: torch.Tensor, y: torch.Tensor, n_val: int, batch_size: int) -> Data:
    (x_train, y_train), (x_val, y_val) = _split(x, y, n_val)

    def batch(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(len(x_train), (batch_size,), generator=generator)
        return x_train[index], y_train[index]

    return Data((x_train, y_train), (x_val, y_val), batch,
                list(zip(x_val.split(256), y_val.split(256), strict=True)))


def _digits(shape: str) -> Data:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32)
    x = (x - x.mean()) / x.std()
    if shape != "flat":
        x = x.reshape(-1, 1, 8, 8)
    if shape == "image32":
        x = F.interpolate(x, size=32, mode="bilinear", align_corners=False)
    return _table_data(x, torch.tensor(digits.target), 300, IMAGE_BATCH)


def _diabetes() -> Data:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    (x_train, y_train), _ = _split(x, y, 100)
    x = (x - x_train.mean(0)) / x_train.std(0)
    y = (y - y_train.mean()) / y_train.std()
    return _table_data(x, y[:, None], 100, TABLE_BATCH)


# ---------------------------------------------------------------------------------- models
def _llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=256, hidden_size=128, intermediate_size=352, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=CONTEXT,
        tie_word_embeddings=False, use_cache=False))


def _mamba2() -> nn.Module:
    from transformers import Mamba2Config, Mamba2ForCausalLM

    return Mamba2ForCausalLM(Mamba2Config(
        vocab_size=256, hidden_size=128, num_hidden_layers=4, state_size=16, expand=2,
        head_dim=32, num_heads=8, n_groups=1, conv_kernel=4, chunk_size=16,
        tie_word_embeddings=False, use_cache=False))


def _gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(
        vocab_size=256, n_positions=CONTEXT, n_embd=128, n_layer=4, n_head=4, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False, bos_token_id=0, eos_token_id=0))


class PostNormLM(nn.Module):
    """A causal byte LM on torch's post-norm ``nn.TransformerEncoder`` (``norm_first=False``),
    with learned positions and an untied head."""

    def __init__(self, width: int = 128, layers: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, width)
        self.pos = nn.Embedding(CONTEXT, width)
        layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True,
                                           norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, 256)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(length)
        hidden = self.embed(tokens) + self.pos(torch.arange(length))
        return self.head(self.encoder(hidden, mask=mask, is_causal=True))


def _mlp(inputs: int, width: int, layers: int, outputs: int) -> nn.Module:
    modules: list[nn.Module] = []
    for i in range(layers - 1):
        modules += [nn.Linear(inputs if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*modules, nn.Linear(width, outputs))


def _vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(ViTConfig(
        image_size=8, patch_size=2, num_channels=1, hidden_size=64, num_hidden_layers=4,
        num_attention_heads=4, intermediate_size=128, num_labels=10, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0))


def _resnet() -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    return ResNetForImageClassification(ResNetConfig(
        num_channels=1, embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[2, 2, 2, 2],
        layer_type="basic", num_labels=10))


# ----------------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class Task:
    """One benchmark task: a model, its data, its loss and its steps."""

    name: str
    title: str
    build: Callable[[], nn.Module]
    data: Callable[[], Data]
    kind: str  # "lm", "classify" or "regress"
    preset: str
    steps: int
    lr: float = 1e-3
    metric: str = "val loss"


TASKS = {task.name: task for task in (
    Task("llama", "HF LLaMA byte LM", _llama, _bytes_data, "lm", "llama", 600,
         metric="val nats/byte"),
    Task("gpt2", "HF GPT-2 byte LM (tied head, learned positions)", _gpt2, _bytes_data, "lm",
         "gpt2", 600, metric="val nats/byte"),
    Task("mamba2", "HF Mamba-2 byte LM (state space, untied head)", _mamba2, _bytes_data,
         "lm", "llama", 600, metric="val nats/byte"),
    Task("postnorm", "post-norm nn.TransformerEncoder byte LM", PostNormLM, _bytes_data, "lm",
         "xavier", 600, lr=5e-4, metric="val nats/byte"),
    Task("mlp8", "8-layer ReLU MLP, digits", lambda: _mlp(64, 128, 8, 10),
         lambda: _digits("flat"), "classify", "kaiming_relu", 2000),
    Task("vit", "HF ViT, digits (8x8, patch 2)", _vit, lambda: _digits("image8"), "classify",
         "vit", 1500),
    Task("resnet", "HF ResNet-18 layout, digits (32x32)", _resnet,
         lambda: _digits("image32"), "classify", "resnet", 1000),
    Task("mlp_reg", "4-layer ReLU MLP, diabetes regression", lambda: _mlp(10, 64, 4, 1),
         _diabetes, "regress", "kaiming_relu", 1000, metric="best val MSE"),
)}


def _outputs(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    out = model(inputs)
    return out if isinstance(out, torch.Tensor) else out.logits


def _loss(kind: str, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "regress":
        return F.mse_loss(outputs, target)
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), target.reshape(-1))


def _validate(model: nn.Module, task: Task, data: Data) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for inputs, target in data.val_batches:
            total += float(_loss(task.kind, _outputs(model, inputs), target)) * len(inputs)
            count += len(inputs)
    model.train()
    return total / count


def _initialize(model: nn.Module, task: Task, init: str, seed: int,
                sample: tuple[torch.Tensor, torch.Tensor]) -> None:
    if init == "own":
        return
    if init == "auto":
        classes = None if task.kind == "regress" else int(_outputs(model, sample[0]).shape[-1])
        policy = InitPolicy.auto(model, sample[0], num_classes=classes)
    else:
        policy = InitPolicy.from_preset(task.preset)
    policy.apply(model, seed=1000 + seed)


def _check(model: nn.Module, task: Task, sample: tuple[torch.Tensor, torch.Tensor]) -> str:
    """``check_init`` with the task's own loss on the sample batch: "ok" or the problems."""
    inputs, target = sample
    classes = None if task.kind == "regress" else int(_outputs(model, inputs).shape[-1])
    report = check_init(model, inputs, forward=_outputs,
                        loss_fn=lambda out, y: _loss(task.kind, out, y), target=target,
                        num_classes=classes)
    return "ok" if report.ok else ",".join(sorted({p.kind for p in report.problems}))


def _initialized(task: Task, data: Data, init: str, seed: int) -> tuple[nn.Module, str]:
    """The seed's model, initialized by ``init``, and its ``check_init`` verdict."""
    torch.manual_seed(seed)
    model = task.build()
    sample = data.batch(torch.Generator().manual_seed(seed))  # the first training batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _initialize(model, task, init, seed, sample)
        check = _check(model, task, sample)
    return model, check


def run_one(task: Task, data: Data, init: str, seed: int, evals: list[int],
            check_only: bool = False) -> dict[str, Any]:
    """Train one (task, init, seed); validation at step 0 and at each of ``evals``
    (``check_only``: the check's verdict alone, no training)."""
    model, check = _initialized(task, data, init, seed)
    if check_only:
        return {"task": task.name, "init": init, "seed": seed, "check": check, "curve": {},
                "seconds": 0.0}
    batches = torch.Generator().manual_seed(seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=task.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 30))
    curve = {0: _validate(model, task, data)}
    best = curve[0]
    start = time.perf_counter()
    every = 20 if task.kind == "regress" else None
    for step in range(1, max(evals) + 1):
        inputs, target = data.batch(batches)
        loss = _loss(task.kind, _outputs(model, inputs), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step in evals or (every and step % every == 0):
            value = _validate(model, task, data)
            best = min(best, value) if math.isfinite(value) else best
            if step in evals:
                curve[step] = best if task.kind == "regress" else value
    return {"task": task.name, "init": init, "seed": seed, "check": check, "curve": curve,
            "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------------- table
def _cell(values: list[float]) -> str:
    if not values:
        return ""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.3f}-{max(values):.3f})"


def _verdict(own: list[float], auto: list[float]) -> str:
    """auto against own at the end: outside own's range of seeds, or within it."""
    if not own or not auto:
        return ""
    pairs = sum(a < o for a, o in zip(auto, own, strict=False))
    mean = statistics.fmean(auto)
    if mean < min(own):
        word = "better"
    elif mean > max(own):
        word = "worse"
    else:
        word = "within spread"
    return f"{word} ({pairs}/{len(auto)} seeds lower)"


def _with_checks(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training results, each with the ``check`` of a later check-only result of the same
    task, init and seed where there is one (``--check-only`` reruns the check on newer code)."""
    checks = {(r["task"], r["init"], r["seed"]): r["check"] for r in results if not r["curve"]}
    return [{**r, "check": checks.get((r["task"], r["init"], r["seed"]), r["check"])}
            for r in results if r["curve"]]


def table(results: list[dict[str, Any]]) -> str:
    """The Markdown table: per task and init, mean (min-max) over seeds at each step."""
    results = _with_checks(results)
    lines = ["| task | init | step 0 | 100 | 300 | end | check_init | auto vs own at the end |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, task in TASKS.items():
        rows = [r for r in results if r["task"] == name]
        if not rows:
            continue
        end = max(int(s) for r in rows for s in r["curve"])
        ends: dict[str, list[float]] = {}
        inits = sorted({r["init"] for r in rows},  # a renamed init (an older auto) after auto
                       key=lambda i: (INITS.index(i) if i in INITS else 1.5, i))
        for init in inits:
            mine = sorted((r for r in rows if r["init"] == init), key=lambda r: r["seed"])
            if not mine:
                continue
            cells = [_cell([r["curve"][str(s)] for r in mine]) if s < end
                     else "(end)" if s == end else "" for s in (0, 100, 300, end)]
            cells[-1] = _cell([r["curve"][str(end)] for r in mine])
            ends[init] = [r["curve"][str(end)] for r in mine]
            checks = [r["check"] for r in mine]
            check = f"{checks.count('ok')}/{len(checks)} ok" + (
                "" if all(c == "ok" for c in checks) else
                " (" + "; ".join(sorted({c for c in checks if c != "ok"})) + ")")
            label = f"{init} ({task.preset})" if init == "preset" else init
            verdict = _verdict(ends.get("own", []), ends[init]) if init.startswith("auto") \
                else ""
            title = f"{task.title}, {task.metric}, {end} steps" if init == inits[0] else ""
            lines.append(f"| {title} | {label} | {' | '.join(cells)} | {check} | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="120 steps per run, 1 seed")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"of {','.join(TASKS)}")
    parser.add_argument("--seeds", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--inits", default=",".join(INITS), help=f"of {','.join(INITS)}")
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="multiply every task's steps (a slow machine)")
    parser.add_argument("--check-only", action="store_true",
                        help="only initialize and check (no training); --table uses these "
                             "verdicts over the saved runs' own")
    parser.add_argument("--json", default=None, help="write the results here as they come")
    parser.add_argument("--table", nargs="+", default=None,
                        help="print the table of saved --json files (their results together)")
    args = parser.parse_args()
    if args.table:
        saved = [json.loads(Path(path).read_text()) for path in args.table]
        for run in saved:
            print(f"{run['machine']}; {run['date']}; {run['command']}")
        print(table([result for run in saved for result in run["results"]]))
        return
    torch.set_num_threads(1)
    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        parser.error(f"unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
    seeds = args.seeds or (1 if args.quick else 3)
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "command": " ".join(sys.argv), "results": []}
    for name in names:
        task = TASKS[name]
        steps = 120 if args.quick else max(100, round(task.steps * args.steps_scale))
        evals = sorted({s for s in (100, 300) if s < steps} | {steps})
        data = task.data()
        for seed in range(seeds):
            for init in [i for i in INITS if i in args.inits.split(",")]:
                result = run_one(task, data, init, seed, evals, args.check_only)
                out["results"].append(result)
                curve = " ".join(f"{s}:{v:.3f}" for s, v in result["curve"].items())
                print(f"{name} {init:<6} seed {seed}: {curve} check={result['check']} "
                      f"({result['seconds']:.0f} s)", flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(out, indent=1))
    out = json.loads(json.dumps(out))  # the table reads the saved form (steps as strings)
    print(f"\n{out['machine']}; {out['date']}; {out['command']}\n")
    print(table(out["results"]))


if __name__ == "__main__":
    main()
