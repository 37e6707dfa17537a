"""The Custom Scalars page and the tag namespace, read back with TensorBoard's own reader."""

from __future__ import annotations

import math
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from torch import nn

from lightning_init.diagnostics import DiagnosticsOptions, TrainingDiagnostics
from lightning_init.diagnostics._charts import CHART_MAX_LINES, layer_groups

pytestmark = pytest.mark.filterwarnings("ignore::lightning_init.diagnostics.DiagnosticsWarning")


class _DeepNet(L.LightningModule):
    """Ten Linear layers with LayerNorms between: 10 matrices, 28 biases and gains."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(9):
            layers += [nn.Linear(16, 16), nn.LayerNorm(16), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return (self.net(x) - x.sum(1, keepdim=True)).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _run(tmp_path: Path, options: dict) -> tuple[EventAccumulator, nn.Module]:
    torch.manual_seed(0)
    model = _DeepNet()
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    trainer = L.Trainer(
        max_steps=4, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
        callbacks=[TrainingDiagnostics(DiagnosticsOptions.from_arg(options))],
    )
    data = torch.utils.data.TensorDataset(torch.randn(64, 16))
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=16))
    events = EventAccumulator(
        str(Path(logger.log_dir) / "diagnostics"), size_guidance={"scalars": 0, "tensors": 0}
    ).Reload()
    return events, model


def _layout(events: EventAccumulator) -> layout_pb2.Layout:
    (event,) = events.Tensors("custom_scalars__config__")
    return layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])


def _matched(chart: layout_pb2.Chart, tags: list[str]) -> list[str]:
    """The tags a chart draws, matched as the Custom Scalars plugin matches them."""
    regexes = [re.compile(pattern) for pattern in chart.multiline.tag]
    return [tag for tag in tags if any(regex.match(tag) for regex in regexes)]


def test_every_tag_is_under_the_namespace_and_no_chart_is_all_zeros(tmp_path: Path) -> None:
    events, _ = _run(tmp_path, {"every_n_steps": 1, "until_step": 3, "histograms": True})
    tags = events.Tags()
    assert all(tag.startswith("lightning_init/") for tag in tags["scalars"] + tags["histograms"])
    assert not [tag for tag in tags["scalars"] if "nonfinite" in tag]  # healthy: none written
    for tag in tags["scalars"]:
        values = [event.value for event in events.Scalars(tag)]
        if "weight_mean" not in tag:
            assert any(value != 0 for value in values), tag


def test_charts_group_layers_with_biases_apart_and_log10_values(tmp_path: Path) -> None:
    events, model = _run(tmp_path, {"every_n_steps": 1, "until_step": 3, "activations": True})
    scalar_tags = events.Tags()["scalars"]
    layout = _layout(events)
    titles = [category.title for category in layout.category]
    assert titles[:3] == [
        "lightning_init: update ratio ||w_t+1 - w_t|| / ||w_t||, log10 (about -3 is usual)",
        "lightning_init: gradient norm, log10",
        "lightning_init: weight norm, log10",
    ]
    dims = {f"lightning_init/log10_weight_norm/{n}": p.dim() for n, p in model.named_parameters()}
    for category in layout.category:
        drawn = set()
        for chart in category.chart:
            matched = _matched(chart, scalar_tags)
            assert 1 <= len(matched) <= CHART_MAX_LINES, (chart.title, matched)
            drawn.update(matched)
            if "weight norm" in category.title:
                # Matrices and vectors (biases, LayerNorm gains) never share an axis.
                assert len({dims[tag] >= 2 for tag in matched}) == 1, chart.title
        # 38 parameters (10 matrices, 28 biases and gains), 28 leaf modules, 9 ReLUs.
        if "dead fraction" in category.title:
            assert drawn == {f"lightning_init/act_dead_fraction/net.{i}" for i in range(2, 27, 3)}
        else:
            assert len(drawn) == (28 if "activation" in category.title else 38), category.title
    # The 10 matrices: 2 charts of 5; closed categories beyond the first four.
    (weight_norms,) = [c for c in layout.category if c.title.endswith("weight norm, log10")]
    assert [chart.title for chart in weight_norms.chart][:2] == [
        "net.0-12.weight",
        "net.15-27.weight",
    ]
    assert [c.closed for c in layout.category][:5] == [False] * 5
    assert layout.category[-1].closed
    # The log10 values are those of the plain values, step by step.
    for name in ("net.0.weight", "net.3.bias"):
        for statistic in ("update_ratio", "grad_norm", "weight_norm"):
            plain = events.Scalars(f"lightning_init/{statistic}/{name}")
            logged = events.Scalars(f"lightning_init/log10_{statistic}/{name}")
            assert [e.step for e in logged] == [e.step for e in plain] == [0, 1, 2, 3]
            for a, b in zip(plain, logged, strict=True):
                assert b.value == pytest.approx(math.log10(a.value), abs=1e-5)


def test_layer_groups_pool_single_roles_and_cut_long_ones() -> None:
    entries = [("encoder.fc1.weight", "matrix"), ("decoder.fc1.weight", "matrix")]
    entries += [(f"blocks.{i}.attn.weight", "matrix") for i in range(12)]
    entries += [(f"blocks.{i}.attn.bias", "vector") for i in range(12)]
    groups = layer_groups(entries)
    assert [(title, len(names)) for title, names in groups] == [
        ("weights (2)", 2),
        ("blocks.0-5.attn.weight", 6),
        ("blocks.6-11.attn.weight", 6),
        ("blocks.0-5.attn.bias", 6),
        ("blocks.6-11.attn.bias", 6),
    ]
    assert sorted(n for _, names in groups for n in names) == sorted(n for n, _ in entries)
