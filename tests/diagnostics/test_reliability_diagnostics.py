"""Issue 25, items 6 and 7: the diagnostics follow what the optimizers train (gradual
unfreezing) and measure complex parameters."""

from __future__ import annotations

import logging
import warnings

import lightning as L
import pytest
import torch
from _models import quiet_trainer
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_init import InitCallback


class _Recorder(Logger):
    name, version = "recorder", 0

    def __init__(self):
        super().__init__()
        self.metrics: dict[str, dict[int, float]] = {}

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        for key, value in metrics.items():
            self.metrics.setdefault(key, {})[step] = value


def _data():
    return DataLoader(TensorDataset(torch.randn(64, 6), torch.randint(0, 3, (64,))),
                      batch_size=8)


class _Unfreezing(L.LightningModule):
    """The first layer is frozen until step 2, then unfrozen: by ``add_param_group`` or by
    switching ``requires_grad`` on (its parameters were in the optimizer from the start)."""

    def __init__(self, way: str):
        super().__init__()
        self.way = way
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        self.net[0].requires_grad_(False)

    def on_train_batch_start(self, batch, batch_idx):
        if self.global_step == 2 and not self.net[0].weight.requires_grad:
            self.net[0].requires_grad_(True)
            if self.way == "add_param_group":
                self.optimizers().optimizer.add_param_group(
                    {"params": list(self.net[0].parameters()), "lr": 0.05})

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        params = self.net[2].parameters() if self.way == "add_param_group" else self.parameters()
        return torch.optim.SGD(params, lr=0.1)


@pytest.mark.parametrize("way", ["add_param_group", "requires_grad"])
def test_item6_gradual_unfreezing_is_logged_from_the_step_it_trains(tmp_path, way):
    recorder = _Recorder()
    callback = InitCallback(None, check=False,
                            diagnostics={"every_n_steps": 1, "until_step": 4,
                                         "activations": False})
    quiet_trainer(tmp_path, max_steps=5, logger=recorder, log_every_n_steps=1,
                  callbacks=[callback]).fit(_Unfreezing(way), _data())
    grad = recorder.metrics["lightning_init/grad_norm/net.0.weight"]
    assert sorted(grad) == [2, 3, 4]  # from the step it is trained, not before
    assert sorted(recorder.metrics["lightning_init/grad_norm/net.2.weight"]) == [0, 1, 2, 3, 4]
    assert "lightning_init/update_ratio/net.0.weight" in recorder.metrics


class _Spectral(L.LightningModule):
    """A complex spectral filter (FNO-like) between two real layers."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.filter = nn.Parameter(torch.randn(5, dtype=torch.cfloat) / 5)
        self.out = nn.Linear(8, 3)

    def training_step(self, batch, batch_idx):
        x, y = batch
        h = self.inp(x)
        h = torch.fft.irfft(torch.fft.rfft(h) * self.filter, n=8)
        return nn.functional.cross_entropy(self.out(h), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def test_item7_complex_parameters_get_the_norms_of_their_magnitudes(tmp_path, caplog):
    recorder = _Recorder()
    model = _Spectral()
    callback = InitCallback(None, check=False,
                            diagnostics={"every_n_steps": 1, "until_step": 2})
    initial = float(torch.linalg.vector_norm(model.filter.detach().abs()))
    with caplog.at_level(logging.INFO, logger="lightning_init"), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_trainer(tmp_path, max_steps=3, logger=recorder, log_every_n_steps=1,
                      callbacks=[callback]).fit(model, _data())
    assert not [w for w in caught if "diagnostics stopped" in str(w.message)]
    assert sorted(recorder.metrics["lightning_init/grad_norm/out.weight"]) == [0, 1, 2]
    norms = recorder.metrics["lightning_init/weight_norm/filter"]
    assert sorted(norms) == [0, 1, 2]
    assert norms[0] == pytest.approx(initial, rel=1e-6)  # the true norm, before any step
