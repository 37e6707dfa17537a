"""Issue 25, items 3, 4 and 5: the check and the lazy materialization get exactly the batch
``training_step`` gets, whatever the training dataloaders, and leave training's batches alone."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from _models import quiet_trainer
from lightning.pytorch.utilities import CombinedLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_init import InitCallback


def _loader(seed: int, n: int = 24, batch_size: int = 8) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    return DataLoader(TensorDataset(x, torch.randint(0, 3, (n,), generator=generator)),
                      batch_size=batch_size)


def _pairs(batch):
    """The (x, y) pairs of a combined batch, whatever its structure."""
    if isinstance(batch, dict):
        return [tuple(part) for part in batch.values()]
    return [tuple(part) for part in batch]


class _TwoSources(L.LightningModule):
    """Trained on two loaders at once; records every batch its training_step gets."""

    def __init__(self, lazy: bool):
        super().__init__()
        first = nn.LazyLinear(16) if lazy else nn.Linear(6, 16)
        self.net = nn.Sequential(first, nn.ReLU(), nn.Linear(16, 3))
        self.seen: list = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch)
        losses = [nn.functional.cross_entropy(self.net(x), y) for x, y in _pairs(batch)]
        return sum(losses)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _FirstBatch(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.batch = batch


def _same(one, other) -> bool:
    left, right = _pairs(one), _pairs(other)
    return len(left) == len(right) and all(
        torch.equal(a, b) for pair, twin in zip(left, right, strict=True)
        for a, b in zip(pair, twin, strict=True))


def _loaders(kind: str):
    first, second = _loader(1), _loader(2, n=40)
    if kind == "dict":
        return {"a": first, "b": second}
    if kind == "list":
        return [first, second]
    return CombinedLoader({"a": first, "b": second}, mode=kind)


@pytest.mark.parametrize("kind", ["dict", "list", "min_size", "max_size_cycle", "max_size"])
@pytest.mark.parametrize("lazy", [True, False], ids=["lazy", "built"])
def test_item3_item4_two_loaders_the_check_gets_the_training_batch(tmp_path, kind, lazy):
    model = _TwoSources(lazy)
    first = _FirstBatch()
    callback = InitCallback("kaiming_relu" if lazy else None, check={"on_fail": "warn"},
                            diagnostics=False)
    quiet_trainer(tmp_path, max_steps=2, callbacks=[callback, first]).fit(model, _loaders(kind))
    assert callback.check_report is not None  # ran, did not step aside
    assert callback.check_report.loss_source == "training_step"
    assert model.net[0].weight.shape == (16, 6)
    check_batch = model.seen[0]  # the check (and the lazy forward) run before training
    assert _same(check_batch, first.batch)
    assert type(check_batch) is type(first.batch)


class _SetupLoader(L.LightningModule):
    """Its DataLoader is built once in setup(), with its own generator (shuffled)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))

    def setup(self, stage):
        x = torch.arange(64 * 6, dtype=torch.float32).reshape(64, 6) / 100
        self.loader = DataLoader(TensorDataset(x, torch.arange(64) % 3), batch_size=8,
                                 shuffle=True, generator=torch.Generator().manual_seed(5))

    def train_dataloader(self):
        return self.loader

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_item5_a_loaders_own_generator_gives_training_the_same_batches(tmp_path):
    firsts = []
    for check in (False, True):
        first = _FirstBatch()
        callback = InitCallback(None, check=check, diagnostics=False)
        quiet_trainer(tmp_path, max_steps=1, callbacks=[callback, first]).fit(_SetupLoader())
        firsts.append(first.batch)
    assert torch.equal(firsts[0][1], firsts[1][1]) and torch.equal(firsts[0][0], firsts[1][0])


class _Augmented(L.LightningModule):
    """Noise added in ``on_after_batch_transfer`` (a GPU augmentation, as Lightning's docs show)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(6, 3)

    def train_dataloader(self):
        return _loader(3)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        x, y = batch
        return x + 0.1 * torch.randn_like(x), y

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_batch_hook_that_draws_random_numbers_gives_training_the_same_batches(tmp_path):
    firsts = []
    for check in (False, True):
        first = _FirstBatch()
        callback = InitCallback(None, check=check, diagnostics=False)
        torch.manual_seed(7)
        quiet_trainer(tmp_path, max_steps=1, callbacks=[callback, first]).fit(_Augmented())
        assert (callback.check_report is not None) == check  # the check read a batch
        firsts.append(first.batch)
    assert torch.equal(firsts[0][0], firsts[1][0])


class _NoisyData(torch.utils.data.Dataset):
    """Each item drawn with the dataset's own generator, held under a name of its own."""

    def __init__(self):
        self.rng = torch.Generator().manual_seed(11)

    def __len__(self):
        return 16

    def __getitem__(self, index):
        return torch.randn(6, generator=self.rng), index % 3


class _OwnNoise(_Augmented):
    def setup(self, stage):
        self.data = _NoisyData()  # one dataset, read by the check and by training

    def train_dataloader(self):
        return DataLoader(self.data, batch_size=4)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        return batch


def test_a_generator_under_any_name_gives_training_the_same_batches(tmp_path):
    firsts = []
    for check in (False, True):
        first = _FirstBatch()
        callback = InitCallback(None, check=check, diagnostics=False)
        quiet_trainer(tmp_path, max_steps=1, callbacks=[callback, first]).fit(_OwnNoise())
        assert (callback.check_report is not None) == check
        firsts.append(first.batch)
    assert torch.equal(firsts[0][0], firsts[1][0])
