"""The diagnostics' console alerts: a few lines worth reading, through the lightning_init logger."""

from __future__ import annotations

import logging
import warnings

import lightning as L
import pytest
import torch
from torch import nn

from lightning_init.diagnostics import (
    DiagnosticsOptionError,
    DiagnosticsOptions,
    DiagnosticsWarning,
    NonFiniteError,
    TrainingDiagnostics,
)
from lightning_init.diagnostics._alerts import Alerts, check_update_ratio, element_step_bound


class _DeepMLP(L.LightningModule):
    """10 Linear layers of width 32 with N(0, 1) weights: activations grow ~4x per layer."""

    def __init__(self, std: float = 1.0, optimizer: str = "sgd", lr: float = 0.01) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(10):
            layers += [nn.Linear(32, 32), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, std)
                nn.init.zeros_(module.bias)
        self.optimizer, self.lr = optimizer, lr

    def training_step(self, batch, batch_idx):
        inputs, labels = batch
        return nn.functional.cross_entropy(self.net(inputs), labels)

    def configure_optimizers(self):
        if self.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.lr)
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _fit(model: L.LightningModule, options: dict, max_steps: int) -> L.Trainer:
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(512, 32), torch.randint(0, 32, (512,)))
    trainer = L.Trainer(
        max_steps=max_steps, logger=False, callbacks=[TrainingDiagnostics(options)],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )
    trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=32))
    return trainer


def _alert_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "lightning_init"]


def test_a_bad_init_gives_a_few_lines_naming_the_worst_layers_with_a_fix(caplog) -> None:
    caplog.set_level(logging.INFO, logger="lightning_init")
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(_DeepMLP(std=1.0), {"every_n_steps": 1, "until_step": 30, "activations": True},
             max_steps=30)
    logged = _alert_records(caplog)
    nonfinite = [str(w.message) for w in caught if issubclass(w.category, DiagnosticsWarning)]
    # 30 logged steps, 20 parameters going to NaN: a handful of lines, not one per parameter.
    assert 1 <= len(logged) + len(nonfinite) <= 6, logged + nonfinite
    first = logged[0]
    assert first.startswith("lightning_init diagnostics, step 0: 'net.")
    assert "exploding gradient" in first and "more of 20 parameters" in first
    assert "What to do:" in first and "kaiming_relu" in first
    assert all("What to do:" in line for line in logged + nonfinite)
    assert all(".py:" not in line for line in logged)  # no source-path prefix
    # NaN/Inf: once, as the one warning the user must act on; nothing after it.
    assert len(nonfinite) == 1 and "NaN/Inf" in nonfinite[0]
    assert "on_nonfinite" in nonfinite[0]
    assert not any("NaN/Inf" in line for line in logged)


def test_on_nonfinite_raise_stops_at_the_first_step_and_names_the_parameter() -> None:
    model = _DeepMLP(std=0.2)

    def poison(grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan") if model.trainer.global_step == 3 else grad

    model.net[6].weight.register_hook(poison)
    with pytest.raises(NonFiniteError, match=r"step 3: 'net\.6\.weight': gradient has 1024 NaN"):
        _fit(model, {"on_nonfinite": "raise", "every_n_steps": 10}, max_steps=8)
    assert model.trainer.global_step == 3  # stopped before the step, at an unlogged step


def test_adam_first_steps_on_small_weights_raise_no_update_ratio_alert(caplog) -> None:
    caplog.set_level(logging.INFO, logger="lightning_init")
    _fit(_DeepMLP(std=0.02, optimizer="adam", lr=3e-3),
         {"every_n_steps": 1, "until_step": 4, "exploding_grad_norm": 1e9}, max_steps=5)
    assert not [line for line in _alert_records(caplog) if "update ratio" in line]


def test_update_ratio_band_knows_the_optimizer_and_the_weight_scale() -> None:
    weight = nn.Parameter(torch.zeros(64, 64))
    adam = torch.optim.Adam([weight], lr=3e-3)
    bound = element_step_bound(adam, adam.param_groups[0])
    assert bound == pytest.approx(3e-3 * 0.1 / 0.001**0.5)  # Kingma & Ba 2015, section 2.1
    rmsprop = torch.optim.RMSprop([weight], lr=1e-3, alpha=0.99)
    assert element_step_bound(rmsprop, rmsprop.param_groups[0]) == pytest.approx(1e-2)
    options = DiagnosticsOptions()
    alerts = Alerts()
    check_update_ratio(alerts, options, "adam_small", 0.4, normal_ratio=bound / 0.02)
    check_update_ratio(alerts, options, "growing", 0.3, smallness=16.0)
    check_update_ratio(alerts, options, "adam_huge_lr", 50.0, normal_ratio=150.0)  # lr=1
    check_update_ratio(alerts, options, "sgd", 0.3)
    lines = alerts.lines(0)
    assert len(lines) == 1
    assert "'adam_huge_lr': update ratio" in lines[0] and "is above 1" in lines[0]
    assert "and 1 more of 4 weight matrices ('sgd' 0.3)" in lines[0]
    assert "lower the learning rate" in lines[0]


def test_each_kind_once_unless_it_spreads_or_gets_ten_times_worse() -> None:
    options = DiagnosticsOptions()
    alerts = Alerts()

    def step(norms: dict[str, float]) -> list[str]:
        from lightning_init.diagnostics._alerts import check_gradient

        for name, norm in norms.items():
            check_gradient(alerts, options, name, norm=norm, nonfinite=0, numel=16)
        return alerts.lines(0)

    assert len(step({"a": 2e3, "b": 5e3})) == 1
    assert step({"a": 3e3, "b": 6e3}) == []  # the same, a bit worse
    [spread] = step({"a": 3e3, "b": 6e3, "c": 2e3})
    assert spread.startswith("lightning_init diagnostics, step 0: 'c': exploding")
    [worse] = step({"a": 3e3, "b": 7e4, "c": 2e3})
    assert "'b': exploding gradient: norm 7e+04" in worse and "and 2 more of 3" in worse


def test_on_nonfinite_option_is_checked() -> None:
    assert DiagnosticsOptions().on_nonfinite == "warn"
    with pytest.raises(DiagnosticsOptionError,
                       match=r"'on_nonfinite' must be 'warn' or 'raise', got 'rasie'\. Did you "
                             r"mean 'raise'\?"):
        DiagnosticsOptions.from_arg({"on_nonfinite": "rasie"})
