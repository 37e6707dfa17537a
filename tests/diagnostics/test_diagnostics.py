"""TrainingDiagnostics through real Trainer runs, read back from the loggers' files."""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.plugins.precision import MixedPrecision
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from lightning_init.diagnostics import (
    DiagnosticsOptionError,
    DiagnosticsOptions,
    DiagnosticsWarning,
    TrainingDiagnostics,
)

# The tiny model's first updates are large: alerts not under test are not shown.
pytestmark = pytest.mark.filterwarnings("ignore::lightning_init.diagnostics.DiagnosticsWarning")


class _AlertsAsWarnings(logging.Handler):
    """Re-issues each alert line the ``lightning_init`` logger writes as a DiagnosticsWarning,
    so that the tests below read the logged alerts and the NaN/Inf warnings alike (the channel
    itself is tested in test_diagnostics_alerts.py)."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("lightning_init diagnostics, step "):
            warnings.warn(message, DiagnosticsWarning, stacklevel=2)


@pytest.fixture(autouse=True)
def _alerts_as_warnings():
    handler = _AlertsAsWarnings()
    logger = logging.getLogger("lightning_init")
    logger.addHandler(handler)
    yield
    logger.removeHandler(handler)


class _TrueGradients(L.Callback):
    """Records the true gradient norm of every parameter at each optimizer step."""

    def __init__(self) -> None:
        self.norms: dict[int, dict[str, float]] = {}
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        step = trainer.global_step
        self.norms[step] = {name: float(p.grad.norm()) for name, p in pl_module.named_parameters()}
        self.weights[step] = {name: p.detach().clone() for name, p in pl_module.named_parameters()}


class _TrueDenseGradients(L.Callback):
    """The gradients of every parameter at each optimizer step, sparse ones made dense."""

    def __init__(self) -> None:
        self.grads: dict[int, dict[str, torch.Tensor]] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads[trainer.global_step] = {
            name: p.grad.to_dense() if p.grad.is_sparse else p.grad.clone()
            for name, p in pl_module.named_parameters()
        }


class _ScaledGradients(L.Callback):
    """The norm of net.0.weight's gradient as backward left it (before AMP unscaling)."""

    def __init__(self) -> None:
        self.norms: dict[int, float] = {}

    def on_after_backward(self, trainer, pl_module):
        self.norms[trainer.global_step] = float(pl_module.net[0].weight.grad.norm())


class _Net(L.LightningModule):
    def __init__(self, lr: float = 0.05, automatic: bool = True) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)
        )
        self.lr = lr
        self.automatic_optimization = automatic
        self.hooks_seen: dict[int, int] = {}

    def training_step(self, batch, batch_idx):
        self.hooks_seen[self.trainer.global_step] = sum(
            len(m._forward_hooks) for m in self.net.modules()
        )
        (x,) = batch
        loss = (self.net(x) - x.sum(dim=1, keepdim=True)).pow(2).mean()
        if not self.automatic_optimization:
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _data(n: int = 64, batch_size: int = 8) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(n, 8)), batch_size=batch_size
    )


def _fit(model, options, *, max_steps, logger=False, extra=(), **trainer_kwargs):
    diagnostics = TrainingDiagnostics(DiagnosticsOptions.from_arg(options))
    trainer = L.Trainer(
        max_steps=max_steps,
        logger=logger,
        callbacks=[diagnostics, *extra],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        **trainer_kwargs,
    )
    trainer.fit(model, _data())
    return diagnostics, trainer


def _events(log_dir: str) -> EventAccumulator:
    """The diagnostics' own run: the ``diagnostics`` subdirectory of the logger's directory."""
    return EventAccumulator(
        str(Path(log_dir) / "diagnostics"), size_guidance={"scalars": 0, "histograms": 0}
    ).Reload()


PARAMS = ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias", "net.4.weight", "net.4.bias"]


def test_tensorboard_logs_every_parameter_within_the_window(tmp_path: Path) -> None:
    options = {"every_n_steps": 3, "until_step": 7, "histograms": True, "activations": True}
    truth = _TrueGradients()
    model = _Net()
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    _fit(model, options, max_steps=12, logger=logger, extra=[truth])
    expected_steps = [0, 1, 2, 3, 4, 6]  # dense start 0,1,2,4 and every 3rd step up to 7
    events = _events(logger.log_dir)
    scalar_tags = set(events.Tags()["scalars"])
    histogram_tags = set(events.Tags()["histograms"])
    for name in PARAMS:
        for stat in (
            "weight_norm",
            "weight_std",
            "weight_mean",
            "weight_absmax",
            "grad_norm",
            "grad_std",
            "grad_absmax",
            "update_ratio",
        ):
            assert f"lightning_init/{stat}/{name}" in scalar_tags
        # A healthy run writes no chart of zeros: non-finite counts only when there are some.
        assert f"lightning_init/grad_nonfinite/{name}" not in scalar_tags
        assert {
            f"lightning_init/weight_hist/{name}", f"lightning_init/grad_hist/{name}"
        } <= histogram_tags
    for module in ("net.0", "net.1", "net.2", "net.3", "net.4"):
        assert {
            f"lightning_init/act_mean/{module}", f"lightning_init/act_dead_fraction/{module}"
        } <= scalar_tags
    # Nothing outside the window, and the logged gradient norm is the true one.
    for name in PARAMS:
        logged = events.Scalars(f"lightning_init/grad_norm/{name}")
        assert [event.step for event in logged] == expected_steps
        for event in logged:
            assert event.value == pytest.approx(truth.norms[event.step][name], rel=1e-5)
    for tag in scalar_tags | histogram_tags:
        series = events.Scalars(tag) if tag in scalar_tags else events.Histograms(tag)
        assert max(event.step for event in series) <= 7
    # Weight statistics and the update ratio against values computed here.
    weight = truth.weights[3]["net.2.weight"]
    (std_event,) = [
        e for e in events.Scalars("lightning_init/weight_std/net.2.weight") if e.step == 3
    ]
    assert std_event.value == pytest.approx(float(weight.std()), rel=1e-4)
    update = float((truth.weights[4]["net.2.weight"] - weight).norm() / weight.norm())
    (ratio_event,) = [
        e for e in events.Scalars("lightning_init/update_ratio/net.2.weight") if e.step == 3
    ]
    assert ratio_event.value == pytest.approx(update, rel=1e-3)
    # Histograms hold every element of a small tensor.
    histogram = events.Histograms("lightning_init/weight_hist/net.0.weight")[0].histogram_value
    assert histogram.num == 8 * 16 and sum(histogram.bucket) == 8 * 16
    # Activations: a ReLU's output mean is >= 0; hooks exist only at logged steps.
    assert all(e.value >= 0 for e in events.Scalars("lightning_init/act_mean/net.1"))
    assert {s for s, n in model.hooks_seen.items() if n} == set(expected_steps)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    # One custom-scalars layout, comparing layers per statistic.
    assert "custom_scalars__config__" in events.Tags()["tensors"]


def test_gradient_accumulation_logs_the_accumulated_gradient(tmp_path: Path) -> None:
    truth = _TrueGradients()
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    _fit(
        _Net(),
        {"every_n_steps": 2, "until_step": 3},
        max_steps=4,
        logger=logger,
        extra=[truth],
        accumulate_grad_batches=2,
    )
    logged = _events(logger.log_dir).Scalars("lightning_init/grad_norm/net.0.weight")
    assert [e.step for e in logged] == [0, 1, 2]
    for event in logged:
        assert event.value == pytest.approx(truth.norms[event.step]["net.0.weight"], rel=1e-5)


def _amp_on_cpu(init_scale: float) -> MixedPrecision:
    """16-bit AMP with a real GradScaler, which torch also runs on CPU."""
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    return MixedPrecision("16-mixed", "cpu", scaler=scaler)


def test_amp_gradients_are_logged_unscaled(tmp_path: Path) -> None:
    truth = _TrueGradients()
    scaled = _ScaledGradients()
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    _fit(
        _Net(), {"every_n_steps": 1, "until_step": 2}, max_steps=3, logger=logger,
        extra=[truth, scaled], plugins=[_amp_on_cpu(2.0**10)],
    )
    logged = _events(logger.log_dir).Scalars("lightning_init/grad_norm/net.0.weight")
    assert [e.step for e in logged] == [0, 1, 2]
    for event in logged:
        true_norm = truth.norms[event.step]["net.0.weight"]
        assert event.value == pytest.approx(true_norm, rel=1e-6)
        # What backward left, before Lightning unscaled it: 1024 times larger.
        assert scaled.norms[event.step] == pytest.approx(2.0**10 * true_norm, rel=1e-3)


def test_amp_overflow_alerts_nonfinite_gradients_but_not_the_skipped_update(
    tmp_path: Path,
) -> None:
    model = _Net()
    before = [p.detach().clone() for p in model.parameters()]
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # A loss scale of 2^40 overflows float16: every step is skipped by the GradScaler.
        _fit(
            model, {"every_n_steps": 1, "until_step": 1}, max_steps=2, logger=logger,
            plugins=[_amp_on_cpu(2.0**40)],
        )
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    messages = [str(w.message) for w in caught if issubclass(w.category, DiagnosticsWarning)]
    assert any("step 0: 'net.4.weight': gradient has" in m and "NaN/Inf" in m for m in messages)
    assert not any("update ratio" in m for m in messages)
    events = _events(logger.log_dir)
    assert all(e.value > 0 for e in events.Scalars("lightning_init/grad_nonfinite/net.4.weight"))
    ratios = events.Scalars("lightning_init/update_ratio/net.4.weight")
    assert [e.value for e in ratios] == [0.0, 0.0]


def test_manual_optimization_is_logged(tmp_path: Path) -> None:
    truth = _TrueGradients()
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    _fit(
        _Net(automatic=False),
        {"every_n_steps": 2, "until_step": 4},
        max_steps=6,
        logger=logger,
        extra=[truth],
    )
    logged = _events(logger.log_dir).Scalars("lightning_init/grad_norm/net.4.weight")
    assert [e.step for e in logged] == [0, 1, 2, 4]
    for event in logged:
        assert event.value == pytest.approx(truth.norms[event.step]["net.4.weight"], rel=1e-5)


def test_csv_logger_gets_the_scalars(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="csv", version=0)
    _fit(
        _Net(),
        {"every_n_steps": 4, "until_step": 5, "parameters": "*.weight"},
        max_steps=8,
        logger=logger,
    )
    with open(Path(logger.log_dir) / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    logged = [r for r in rows if r.get("lightning_init/grad_norm/net.0.weight")]
    assert [int(r["step"]) for r in logged] == [0, 1, 2, 4]
    assert all(float(r["lightning_init/weight_norm/net.2.weight"]) > 0 for r in logged)
    assert not any(key.endswith(".bias") for key in rows[0])  # the parameter filter


def test_bad_init_alerts_name_the_layer_and_step() -> None:
    model = _Net()
    with torch.no_grad():
        model.net[0].bias.fill_(-100.0)  # net.1 (ReLU) outputs 0 everywhere: a dead layer
    model.net[4].weight.register_hook(lambda grad: grad * float("nan"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        diagnostics, _ = _fit(model, {"activations": True, "until_step": 2}, max_steps=3)
    messages = [str(w.message) for w in caught if issubclass(w.category, DiagnosticsWarning)]
    assert any("step 0: 'net.1': dead layer: 100%" in m for m in messages)
    assert any("step 0: 'net.4.weight': gradient has 16 NaN/Inf values" in m for m in messages)
    assert any("step 0: 'net.0.weight': vanishing gradient" in m for m in messages)
    # Each alert once, although steps 1 and 2 are as bad.
    assert len(messages) == len(set(m.split(": ", 1)[1] for m in messages))
    assert diagnostics.logged_steps == [0, 1, 2]
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_exploding_gradient_alert_names_the_parameter() -> None:
    model = _Net()
    model.net[2].weight.register_hook(lambda grad: grad * 1e6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(model, {"until_step": 0}, max_steps=1)
    gradient_alerts = [
        str(w.message) for w in caught
        if issubclass(w.category, DiagnosticsWarning) and "gradient" in str(w.message)
    ]
    assert len(gradient_alerts) == 1
    assert "step 0: 'net.2.weight': exploding gradient: norm" in gradient_alerts[0]
    assert "> 1000" in gradient_alerts[0]


def test_exploding_updates_alert() -> None:
    with pytest.warns(DiagnosticsWarning, match=r"step 0: 'net\.\d\.(weight|bias)': update ratio"):
        _fit(_Net(lr=50.0), {"until_step": 0}, max_steps=2)


class _FailingLogger(Logger):
    name = "failing"
    version = 0

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    @property
    def experiment(self):
        return None

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.calls += 1
        raise OSError("disk full")


def test_logging_failure_does_not_stop_training() -> None:
    logger = _FailingLogger()
    model = _Net()
    with pytest.warns(DiagnosticsWarning, match="could not write to _FailingLogger at step 0"):
        diagnostics, trainer = _fit(
            model, {"every_n_steps": 1, "until_step": 5}, max_steps=6, logger=logger
        )
    assert trainer.global_step == 6
    assert logger.calls == 1  # the broken logger is not tried again
    assert diagnostics.logged_steps == [0, 1, 2, 3, 4, 5]


def test_nothing_is_hooked_or_logged_after_the_window() -> None:
    model = _Net()
    diagnostics, _ = _fit(
        model, {"every_n_steps": 1, "until_step": 2, "activations": True}, max_steps=6
    )
    assert diagnostics.logged_steps == [0, 1, 2]
    assert {s for s, n in model.hooks_seen.items() if n} == {0, 1, 2}
    assert diagnostics.hook_count == 0


def test_exception_removes_hooks() -> None:
    class Crashing(_Net):
        def training_step(self, batch, batch_idx):
            if self.trainer.global_step == 1:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    model = Crashing()
    with pytest.raises(RuntimeError, match="boom"):
        _fit(model, {"every_n_steps": 1, "activations": True}, max_steps=4)
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_state_dict_keeps_the_alerts_raised() -> None:
    diagnostics = TrainingDiagnostics(DiagnosticsOptions())
    diagnostics._alerts.raised.add("vanishing:net.0.weight")
    restored = TrainingDiagnostics(DiagnosticsOptions())
    restored.load_state_dict(diagnostics.state_dict())
    assert restored.state_dict() == {"alerts_raised": ["vanishing:net.0.weight"]}


def test_standalone_callback_keeps_its_alerts_in_the_checkpoint(tmp_path: Path) -> None:
    def exploding() -> _Net:
        model = _Net()
        model.net[2].weight.register_hook(lambda grad: grad * 1e6)
        return model

    def trainer(diagnostics: TrainingDiagnostics, max_steps: int) -> L.Trainer:
        return L.Trainer(
            max_steps=max_steps, callbacks=[diagnostics], logger=False, default_root_dir=tmp_path,
            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        )

    options = {"every_n_steps": 1, "until_step": 3, "update_ratio": False}
    first = TrainingDiagnostics(options)
    first_trainer = trainer(first, max_steps=1)
    with pytest.warns(DiagnosticsWarning, match=r"step 0: 'net\.2\.weight': exploding gradient"):
        first_trainer.fit(exploding(), _data())
    checkpoint = tmp_path / "run.ckpt"
    first_trainer.save_checkpoint(checkpoint)
    saved = torch.load(checkpoint, weights_only=False)["callbacks"]
    key = "TrainingDiagnostics{'every_n_steps': 1, 'until_step': 3, 'update_ratio': False}"
    assert saved[key]["alerts_raised"] == ["exploding:net.2.weight"]

    resumed = TrainingDiagnostics(options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(resumed, max_steps=3).fit(exploding(), _data(), ckpt_path=checkpoint)
    assert resumed.logged_steps == [1, 2]  # the gradient explodes again: not alerted again
    assert not [w for w in caught if "'net.2.weight': exploding" in str(w.message)]
    assert any("exploding" in str(w.message) for w in caught)  # other layers: alerted


def test_option_errors_name_the_yaml_line() -> None:
    from lightning_init._yaml import load_yaml

    with pytest.raises(
        DiagnosticsOptionError, match=r"^line 2: unknown diagnostics option 'histogram'\. Did you"
    ):
        DiagnosticsOptions.from_arg(load_yaml("every_n_steps: 5\nhistogram: true\n"))
    with pytest.raises(
        DiagnosticsOptionError,
        match=r"^line 3: diagnostics option 'until_step' must be an integer >= 0, got -1$",
    ):
        DiagnosticsOptions.from_arg(load_yaml("every_n_steps: 5\n\nuntil_step: -1\n"))


def test_options_from_arg() -> None:
    assert DiagnosticsOptions.from_arg(False) is None
    assert DiagnosticsOptions.from_arg(None) is None
    defaults = DiagnosticsOptions.from_arg(True)
    assert (defaults.every_n_steps, defaults.until_step, defaults.histograms) == (25, 300, False)
    assert defaults.logged_steps()[:10] == [0, 1, 2, 4, 8, 16, 25, 32, 50, 64]
    assert max(defaults.logged_steps()) == 300
    assert len(defaults.logged_steps()) == 22
    options = DiagnosticsOptions.from_arg(
        {"parameters": "*.weight", "dense_start": False, "update_ratio_band": [1e-5, 1e-2]}
    )
    assert options.parameters == ("*.weight",) and options.update_ratio_band == (1e-5, 1e-2)
    assert options.logged_steps()[:3] == [0, 25, 50]


_BINS = r"'histogram_bins' must be an integer from 1 to 1024, "


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        ({"dead_fraction": 5}, r"'dead_fraction' must be a fraction in \(0, 1\], got 5"),
        ({"dead_fraction": 0}, r"'dead_fraction' must be a fraction in \(0, 1\], got 0"),
        ({"vanishing_grad_norm": float("nan")}, r"'vanishing_grad_norm' must be a finite number"),
        ({"exploding_grad_norm": float("inf")}, r"'exploding_grad_norm' must be a finite number"),
        ({"update_ratio_band": [0.0, float("inf")]}, r"'update_ratio_band' must be \[low, high\]"),
        ({"histogram_bins": 10**9}, _BINS + r"got 10+$"),
        ({"histogram_bins": 1e9}, _BINS + r"got 1000000000\.0$"),
    ],
)
def test_senseless_option_values_are_refused_with_the_valid_range(arg, match) -> None:
    with pytest.raises(DiagnosticsOptionError, match=match) as raised:
        DiagnosticsOptions.from_arg(arg)
    assert raised.value.option == next(iter(arg))


def test_option_bounds_are_inclusive() -> None:
    options = DiagnosticsOptions.from_arg({"dead_fraction": 1, "histogram_bins": 1024})
    assert (options.dead_fraction, options.histogram_bins) == (1.0, 1024)


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        (
            {"every_n_step": 5},
            r"unknown diagnostics option 'every_n_step'\. "
            r"Did you mean 'every_n_steps'\? Valid options: .*until_step",
        ),
        ({"untill_step": 5}, r"Did you mean 'until_step'"),
        ({"every_n_steps": 0}, r"'every_n_steps' must be a positive integer, got 0"),
        (
            {"update_ratio_max_samples": 0},
            r"'update_ratio_max_samples' must be a positive integer, got 0",
        ),
        ({"until_step": -1}, r"'until_step' must be an integer >= 0, got -1"),
        ({"histograms": "yes"}, r"'histograms' must be true or false, got 'yes'"),
        ({"update_ratio_band": [1e-1, 1e-3]}, r"'update_ratio_band' must be \[low, high\]"),
        ({"parameters": 3}, r"'parameters' must be a glob or a list of globs"),
        (
            "on",
            r"^diagnostics= takes True, False or a mapping of options \(or DiagnosticsOptions\), "
            r"got 'on' of type str$",
        ),
    ],
)
def test_option_errors(arg, match) -> None:
    with pytest.raises(DiagnosticsOptionError, match=match):
        DiagnosticsOptions.from_arg(arg)
    assert issubclass(DiagnosticsOptionError, ValueError)


def test_zero_initialized_biases_raise_no_update_ratio_alert(tmp_path) -> None:
    """Biases start at 0, so their first updates are huge relative to them: not an alert."""
    import warnings

    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_init import InitCallback
    from lightning_init.diagnostics import DiagnosticsWarning

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
            )

        def training_step(self, batch, batch_idx):
            inputs, labels = batch
            return torch.nn.functional.cross_entropy(self.net(inputs), labels)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    data = TensorDataset(torch.randn(64, 8), torch.randint(2, (64,)))
    callback = InitCallback(policy="kaiming_relu", check=False, diagnostics={"every_n_steps": 1})
    trainer = L.Trainer(
        max_steps=4,
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Net(), DataLoader(data, batch_size=16))
    ratio_alerts = [
        str(w.message)
        for w in caught
        if issubclass(w.category, DiagnosticsWarning) and "update ratio" in str(w.message)
    ]
    assert torch.count_nonzero(Net().net[0].bias) > 0  # default init would not be zero: policy was
    assert not [m for m in ratio_alerts if ".bias'" in m], ratio_alerts


def test_a_parameter_that_changes_shape_mid_window_is_measured_in_its_new_shape(
    tmp_path: Path,
) -> None:
    """A model that grows a layer (as when embeddings are resized) keeps being logged."""

    class Growing(_Net):
        def training_step(self, batch, batch_idx):
            if self.trainer.global_step == 2 and self.net[4].bias.numel() == 1:
                # The last layer grows from 1 to 3 outputs; the Parameter objects stay.
                self.net[4].weight.data = torch.zeros(3, 16)
                self.net[4].bias.data = torch.zeros(3)
            (x,) = batch
            return self.net(x).sum(dim=1).sub(x.sum(dim=1)).pow(2).mean()

    logger = TensorBoardLogger(tmp_path, name="growing")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*diagnostics stopped")
        diagnostics, _ = _fit(Growing(), {"every_n_steps": 1, "until_step": 4, "alerts": False},
                              max_steps=5, logger=logger)
    assert diagnostics.logged_steps == [0, 1, 2, 3, 4]
    norms = _events(logger.log_dir).Scalars("lightning_init/weight_norm/net.4.bias")
    assert [event.step for event in norms] == [0, 1, 2, 3, 4]


class _EmbeddingNet(L.LightningModule):
    """An embedding table (row-sparse updates) and a large Linear, both past 65,536 elements."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(2000, 64)
        self.hidden = nn.Linear(64, 1500)

    def training_step(self, batch, batch_idx):
        (tokens,) = batch
        return self.hidden(self.embedding(tokens)).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_update_ratio_of_large_weights_sampled_and_embeddings_exact(tmp_path: Path) -> None:
    truth = _TrueGradients()
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    tokens = torch.utils.data.TensorDataset(torch.randint(0, 2000, (64, 4)))
    diagnostics = TrainingDiagnostics(
        DiagnosticsOptions.from_arg({"every_n_steps": 1, "until_step": 3})
    )
    trainer = L.Trainer(
        max_steps=5,
        logger=logger,
        callbacks=[diagnostics, truth],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    torch.manual_seed(0)
    trainer.fit(_EmbeddingNet(), torch.utils.data.DataLoader(tokens, batch_size=8))
    events = _events(logger.log_dir)
    for name, tolerance in (("embedding.weight", 1e-4), ("hidden.weight", 0.1)):
        logged = events.Scalars(f"lightning_init/update_ratio/{name}")
        assert [event.step for event in logged] == [0, 1, 2, 3]
        for event in logged:
            before, after = truth.weights[event.step][name], truth.weights[event.step + 1][name]
            exact = float((after - before).norm() / before.norm())
            # Adam moves only the 32 rows looked up at step 0: 1.6% of the table.
            assert event.value == pytest.approx(exact, rel=tolerance), (name, event.step)


class _SparseEmbeddingNet(L.LightningModule):
    """``sparse=True`` embeddings: their gradients are sparse COO tensors (SGD takes them)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(50, 4, sparse=True)
        self.bag = nn.EmbeddingBag(30, 4, mode="sum", sparse=True)
        self.head = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        (tokens,) = batch
        # Token 0 twice in every row: uncoalesced duplicates in the embedding's gradient.
        features = self.embedding(tokens).sum(1) + self.bag(tokens % 30)
        return self.head(features).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_sparse_gradients_are_measured_as_their_dense_equivalent(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    truth = _TrueDenseGradients()
    tokens = torch.randint(1, 50, (32, 6))
    tokens[:, :2] = 0
    diagnostics = TrainingDiagnostics(
        DiagnosticsOptions.from_arg({"every_n_steps": 1, "until_step": 2, "histograms": True})
    )
    trainer = L.Trainer(
        max_steps=3, logger=logger, log_every_n_steps=1,
        callbacks=[diagnostics, truth],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DiagnosticsWarning)
        trainer.fit(
            _SparseEmbeddingNet(),
            torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens), batch_size=8),
        )
    assert not [w for w in caught if "stopped" in str(w.message)]
    assert diagnostics.logged_steps == [0, 1, 2]
    events = _events(logger.log_dir)
    for name in ("embedding.weight", "bag.weight"):
        for step in (0, 1, 2):
            dense = truth.grads[step][name]
            expected = {
                "grad_norm": float(dense.norm()),
                "grad_std": float(dense.std()),
                "grad_absmax": float(dense.abs().max()),
            }
            assert f"lightning_init/grad_nonfinite/{name}" not in events.Tags()["scalars"]
            for statistic, value in expected.items():
                series = events.Scalars(f"lightning_init/{statistic}/{name}")
                logged = {e.step: e.value for e in series}
                assert logged[step] == pytest.approx(value, rel=1e-5, abs=1e-7), (
                    name, statistic, step,
                )
        # The histogram of a sparse gradient is that of its dense equivalent (zeros included).
        histogram = events.Histograms(f"lightning_init/grad_hist/{name}")[0].histogram_value
        assert histogram.num == truth.grads[0][name].numel()
        assert histogram.sum == pytest.approx(float(truth.grads[0][name].sum()), abs=1e-5)
