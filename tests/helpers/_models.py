"""Small LightningModules and a policy for the InitCallback tests (importable: DDP, CLI)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_init import weights_fingerprint

IN_FEATURES, HIDDEN, OUT_FEATURES = 4, 8, 2


def _data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return torch.randn(n, IN_FEATURES, generator=generator), torch.randn(
        n, OUT_FEATURES, generator=generator
    )


class _DictDataset(Dataset):
    def __init__(self) -> None:
        self.inputs, self.targets = _data()

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.inputs[index], "y": self.targets[index]}


def make_loader(kind: str = "tuple") -> DataLoader:
    """A tiny loader whose batches are ``(x, y)`` tuples, dicts, or bare input tensors."""
    if kind == "dict":
        return DataLoader(_DictDataset(), batch_size=8)
    inputs, targets = _data()
    if kind == "tensor":
        return DataLoader(inputs, batch_size=8)
    return DataLoader(TensorDataset(inputs, targets), batch_size=8, shuffle=True)


class Net(L.LightningModule):
    """An MLP built in ``__init__``; SGD with ``lr`` (0 keeps the weights exactly)."""

    def __init__(self, lr: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.lr = lr
        self.steps = 0
        self.build()

    def build(self) -> None:
        self.net = nn.Sequential(
            nn.Linear(IN_FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT_FEATURES)
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.steps += 1
        if isinstance(batch, dict):
            inputs, targets = batch["x"], batch["y"]
        elif isinstance(batch, torch.Tensor):
            inputs, targets = batch, torch.zeros(len(batch), OUT_FEATURES)
        else:
            inputs, targets = batch
        loss = nn.functional.mse_loss(self(inputs), targets)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        inputs, targets = batch
        self.log("val_loss", nn.functional.mse_loss(self(inputs), targets))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self) -> DataLoader:
        return make_loader("tuple")

    def val_dataloader(self) -> DataLoader:
        inputs, targets = _data(16)
        return DataLoader(TensorDataset(inputs, targets), batch_size=8)


class ConfiguredNet(Net):
    """The same MLP, built in ``configure_model`` (idempotent)."""

    def build(self) -> None:
        self.net: nn.Module | None = None

    def configure_model(self) -> None:
        if self.net is None:
            super().build()


class LazyNet(Net):
    """The MLP with lazy layers; the training batch form is chosen by ``batch_kind``."""

    def __init__(self, lr: float = 0.0, batch_kind: str = "tuple") -> None:
        self.batch_kind = batch_kind
        super().__init__(lr)

    def build(self) -> None:
        self.net = nn.Sequential(nn.LazyLinear(HIDDEN), nn.ReLU(), nn.LazyLinear(OUT_FEATURES))

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.batch_kind)


class DataModule(L.LightningDataModule):
    """Serves the tuple loader (used by the LightningCLI app)."""

    def train_dataloader(self) -> DataLoader:
        return make_loader("tuple")


# --------------------------------------------------------------------------------- policy


@dataclass
class StandInReport:
    policy_name: str
    fingerprint: str
    names: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        return "| parameter |\n|---|\n" + "\n".join(f"| {name} |" for name in self.names)


@dataclass
class StandInPolicy:
    """Follows the InitPolicy contract of docs/architecture.md (name, seed, apply, reports).

    Numbers per parameter from ``(seed, qualified_name, shape)`` when a seed is given, else
    from the global RNG; ``ignore_seed=True`` always uses the global RNG (a broken policy).
    """

    name: str = "stand_in"
    seed: int | None = None
    std: float = 0.05
    ignore_seed: bool = False

    def apply(
        self, model: nn.Module, *, seed: int | None = None, recurse: bool = True, prefix: str = ""
    ) -> StandInReport:
        seed = self.seed if self.seed is not None else seed
        modules = model.named_modules(prefix=prefix) if recurse else [(prefix, model)]
        names = []
        with torch.no_grad():
            for module_name, module in modules:
                if any(p.is_meta for p in module.parameters(recurse=False)):
                    module.to_empty(device="cpu", recurse=False)
                for local_name, parameter in module.named_parameters(recurse=False):
                    qualified_name = f"{module_name}.{local_name}" if module_name else local_name
                    generator = None
                    if seed is not None and not self.ignore_seed:
                        key = f"{seed}|{qualified_name}|{tuple(parameter.shape)}".encode()
                        derived = int(hashlib.sha256(key).hexdigest()[:15], 16)
                        generator = torch.Generator(parameter.device).manual_seed(derived)
                    parameter.normal_(0.0, self.std, generator=generator)
                    names.append(qualified_name)
        return StandInReport(self.name, weights_fingerprint(model), names)


def make_policy(**kwargs: Any) -> Any:
    """The stand-in policy (the tests read the callback, not the engine)."""
    return StandInPolicy(**kwargs)


#: A seedless real policy (the DDP test: the callback must supply a rank-shared seed).
RELU_POLICY = {
    "name": "relu",
    "rules": [
        {
            "match": {"type": "Linear"},
            "weight": {"init": "kaiming_normal", "nonlinearity": "relu"},
            "bias": {"init": "normal", "std": 0.1},
        }
    ],
}


def quiet_trainer(tmp_path: Path, **kwargs: Any) -> L.Trainer:
    """A fast, silent single-process CPU Trainer for callback tests (two steps by default)."""
    options: dict[str, Any] = {
        "max_steps": 2,
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
        "default_root_dir": tmp_path,
    }
    options.update(kwargs)
    return L.Trainer(**options)


class GatedDecoder(nn.Module):
    """A pre-norm decoder of 3 branches, each multiplied by a learnable gate at ``gate``:
    a scalar (ReZero, Bachlechner et al. 2020: at 0, each branch adds exactly zero at init) or,
    ``per_channel``, one per channel (LayerScale, Touvron et al. 2021: at 1e-4, each adds 1e-4
    of its output). The head is drawn from N(0, 0.02); the embedding from ``nn.Embedding``'s
    N(0, 1), or N(0, ``embed_std``)."""

    def __init__(self, vocab: int, width: int, gate: float, *, per_channel: bool = False,
                 embed_std: float | None = None) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        if embed_std is not None:
            nn.init.normal_(self.embed.weight, std=embed_std)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(3))
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
            for _ in range(3))
        shape = (width,) if per_channel else ()
        self.gates = nn.ParameterList(nn.Parameter(torch.full(shape, gate)) for _ in range(3))
        self.final = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        nn.init.normal_(self.head.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        stream = self.embed(tokens)
        for norm, branch, gate in zip(self.norms, self.branches, self.gates, strict=True):
            stream = stream + gate * branch(norm(stream))
        return self.head(self.final(stream))


def write_doctor_models(tmp_path: Path, monkeypatch: Any, module: str) -> None:
    """Write ``<module>.py`` (``deep()``: a 30-layer ReLU MLP of width 32, seeded; ``batch()``:
    64 samples) into ``tmp_path`` and put it on the path, for ``lightning-init doctor
    --model <module>:deep``. Each test file names its own module (one import cache)."""
    (tmp_path / f"{module}.py").write_text(
        "import torch\n"
        "def deep():\n"
        "    torch.manual_seed(0)\n"
        "    layers = []\n"
        "    for _ in range(30):\n"
        "        layers += [torch.nn.Linear(32, 32), torch.nn.ReLU()]\n"
        "    return torch.nn.Sequential(*layers)\n"
        "def batch():\n"
        "    return torch.randn(64, 32)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
