"""The check's numbers as TensorBoard HParams metrics, read back with TensorBoard's reader."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import nn

from lightning_init import InitCallback
from lightning_init.check.metrics import check_metrics
from lightning_init.check.verdicts import DEFAULT_THRESHOLDS

CLASSES = 5


class _Classifier(L.LightningModule):
    def __init__(self, depth: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(32, 32), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(32, CLASSES))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(tmp_path: Path, policy: str, logger) -> InitCallback:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 32), torch.randint(0, CLASSES, (64,)))
    callback = InitCallback(policy, check=True, diagnostics=False)
    L.Trainer(
        max_steps=1, logger=logger, callbacks=[callback], enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=1,
    ).fit(_Classifier(), torch.utils.data.DataLoader(data, batch_size=32))
    return callback


def test_hparams_metrics_rank_runs_by_init_health(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="run", version=0)
    callback = _fit(tmp_path, "kaiming_relu", logger)
    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    names = [info.name.tag for info in experiment.experiment.metric_infos]
    assert {"lightning_init/check/ok", "lightning_init/check/loss_over_ln_c",
            "lightning_init/check/worst_drift"} <= set(names)
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["lightning_init/policy"].string_value == "kaiming_relu"
    report = callback.check_report

    def value(tag: str) -> float:
        return events.Scalars(f"lightning_init/check/{tag}")[-1].value

    assert value("ok") == float(report.ok)
    assert value("loss_over_ln_c") == pytest.approx(report.loss / math.log(CLASSES), rel=1e-6)
    # Kaiming on a ReLU MLP: the hidden layers stay level (He et al. 2015); the head, at linear
    # gain and fed by the loss directly, differs by a small factor: far inside the check's
    # healthy range (it flags a scale drift of 100 and a gradient drift of 1000).
    assert value("worst_drift") == pytest.approx(check_metrics(report)[
        "lightning_init/check/worst_drift"], rel=1e-6)
    assert 1.0 <= value("worst_drift") < DEFAULT_THRESHOLDS["max_scale_drift"]


def test_a_shrinking_init_has_a_larger_drift_and_other_loggers_get_the_values(
    tmp_path: Path,
) -> None:
    logger = CSVLogger(tmp_path, name="csv", version=0)
    with pytest.warns(UserWarning):
        _fit(tmp_path, {"name": "tiny", "rules": [
            {"match": {"type": "Linear"}, "weight": {"init": "normal", "std": 0.01},
             "bias": "zeros"}]}, logger)
    rows = (Path(logger.log_dir) / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    values = dict(zip(header, rows[1].split(","), strict=True))
    assert float(values["lightning_init/check/ok"]) == 0.0
    assert float(values["lightning_init/check/worst_drift"]) > 1e3
