"""check_init: the textbook cases, healthy models, failure modes, exact numbers, no side effects."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from torch import nn

from lightning_init import InitCheckError, InitCheckReport, check_init, weights_fingerprint
from lightning_init.check import CheckOptionError, CheckOptions, raise_or_warn

WIDTH, DEPTH, BATCH = 64, 30, 128


class PlainMLP(nn.Module):
    """He et al. 2015's textbook case: 30 x (Linear, ReLU), no normalization."""

    def __init__(self, init: str, depth: int = DEPTH, width: int = WIDTH,
                 activation: type[nn.Module] = nn.ReLU, bias: float | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            linear = nn.Linear(width, width)
            if init == "kaiming":
                nn.init.kaiming_normal_(linear.weight, mode="fan_in", nonlinearity="relu")
            elif init == "xavier":
                nn.init.xavier_normal_(linear.weight)
            elif init == "normal":
                nn.init.normal_(linear.weight, std=1.0)
            elif init == "xavier_tanh":
                nn.init.xavier_normal_(linear.weight, gain=5 / 3)
            if init != "default":
                nn.init.zeros_(linear.bias)
            if bias is not None:
                nn.init.constant_(linear.bias, bias)
            layers += [linear, activation()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _kinds(report: InitCheckReport) -> set[str]:
    return {problem.kind for problem in report.problems}


# ------------------------------------------------------------------------- the textbook case


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_kaiming_passes_the_textbook_relu_mlp(seed: int) -> None:
    torch.manual_seed(seed)
    report = check_init(PlainMLP("kaiming"), torch.randn(BATCH, WIDTH))
    assert report.ok, [str(problem) for problem in report.problems]
    linear_stds = [layer.output_std for layer in report.layers if layer.type == "Linear"]
    assert len(linear_stds) == DEPTH
    # He et al.: var(W) = 2 / fan_in keeps the preactivation variance constant in expectation;
    # at width 64 the log-std wanders a little: the per-layer factor stays near 1 (xavier: 0.71).
    per_layer = (linear_stds[-1] / linear_stds[0]) ** (1 / (DEPTH - 1))
    assert 0.9 < per_layer < 1.1


@pytest.mark.parametrize("seed", [0, 1])
def test_xavier_fails_with_shrinking_activations_and_names_the_fix(seed: int) -> None:
    torch.manual_seed(seed)
    report = check_init(PlainMLP("xavier"), torch.randn(BATCH, WIDTH))
    assert not report.ok
    scale = next(problem for problem in report.problems if problem.kind == "scale")
    # Judged below the output layer `net.58` (whose output the model returns through a ReLU),
    # whose scale a head may set on purpose: from the first to the last layer below it.
    assert scale.layers == ("net.0", "net.56")
    assert "shrink" in scale.message and "`net.0`" in scale.message
    assert "kaiming_normal" in scale.message and "nonlinearity=relu" in scale.message
    # Xavier keeps var(W) = 2 / (fan_in + fan_out) = 1 / fan_in: ReLU halves the variance per
    # layer, so the std shrinks by sqrt(1/2) ~ 0.71x per layer.
    factor = float(scale.message.split("about ")[1].split("x")[0])
    assert 0.6 < factor < 0.8
    gradient = next(problem for problem in report.problems if problem.kind == "gradient")
    assert "vanish towards the input" in gradient.message and "surrogate" in gradient.message


def test_normal_std_one_fails_with_exploding_activations() -> None:
    report = check_init(PlainMLP("normal"), torch.randn(BATCH, WIDTH))
    scale = next(problem for problem in report.problems if problem.kind == "scale")
    assert "grow" in scale.message
    # std grows by sqrt(fan_in / 2) = sqrt(32) ~ 5.7x per layer.
    factor = float(scale.message.split("about ")[1].split("x")[0])
    assert 4.5 < factor < 7
    assert all(math.isfinite(layer.output_std) for layer in report.layers)  # no float32 overflow


@pytest.mark.parametrize("seed", [0, 1])
def test_pytorch_default_init_fails_because_outputs_stop_depending_on_the_input(seed: int) -> None:
    torch.manual_seed(seed)
    report = check_init(PlainMLP("default"), torch.randn(BATCH, WIDTH))
    assert "input_dependence" in _kinds(report)
    problem = next(p for p in report.problems if p.kind == "input_dependence")
    assert problem.layers[0].startswith("net.")
    assert "no longer depends on the input" in problem.message
    assert "kaiming_normal" in problem.message
    last = report.layers[-1]
    assert last.name == "net.59"
    assert last.input_dependence is not None and last.input_dependence < 1e-4
    assert last.output_std > 1e-3  # the scale looks fine: the bias sets the floor


# ------------------------------------------------------------------------- healthy models


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = 3
        for out_channels in (16, 32, 32, 64):
            blocks += [nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Dropout(0.2)]
            channels = out_channels
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


class PreLNTransformer(nn.Module):
    def __init__(self, depth: int = 4, width: int = 32, vocab: int = 50) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, 4, 64, dropout=0.1, batch_first=True,
                                       norm_first=True) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(tokens)
        for block in self.blocks:
            hidden = block(hidden)
        return self.head(self.norm(hidden))


class LSTMClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 16)
        self.lstm = nn.LSTM(16, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        output, _ = self.lstm(self.embed(tokens))
        return self.head(output[:, -1])


def _cross_entropy_2d(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(
    ("factory", "make_inputs", "classes"),
    [
        (SmallCNN, lambda: torch.randn(16, 3, 12, 12), 10),
        # global average pooling over 32x32 noise: samples differ little (~4% of the scale)
        (SmallCNN, lambda: torch.randn(16, 3, 32, 32), 10),
        (PreLNTransformer, lambda: torch.randint(0, 50, (8, 12)), 50),
        (LSTMClassifier, lambda: torch.randint(0, 40, (16, 10)), 5),
    ],
    ids=["cnn_batchnorm", "cnn_batchnorm_pooled_32px", "pre_ln_transformer", "lstm_classifier"],
)
def test_healthy_models_pass_without_false_alarm(seed, factory, make_inputs, classes) -> None:
    torch.manual_seed(seed)
    model, inputs = factory(), make_inputs()
    report = check_init(model, inputs)
    assert report.ok, [str(problem) for problem in report.problems]
    output = model.eval()(inputs)
    target = torch.randint(0, classes, output.shape[:-1])
    with_loss = check_init(model, inputs, loss_fn=_cross_entropy_2d, target=target,
                           num_classes=classes)
    assert with_loss.ok, [str(problem) for problem in with_loss.problems]
    assert with_loss.expected_loss == pytest.approx(math.log(classes))
    assert with_loss.loss == pytest.approx(math.log(classes), rel=0.25)


def test_transformer_attention_is_measured() -> None:
    report = check_init(PreLNTransformer(depth=1), torch.randint(0, 50, (4, 6)))
    types = {layer.type for layer in report.layers}
    assert "MultiheadAttention" in types  # owns in_proj_weight directly
    assert "blocks.0.self_attn" in [layer.name for layer in report.layers]


# ------------------------------------------------------------------------- failure modes


def test_tanh_saturation_is_flagged() -> None:
    torch.manual_seed(0)
    report = check_init(PlainMLP("normal", depth=6, activation=nn.Tanh), torch.randn(64, WIDTH))
    problem = next(p for p in report.problems if p.kind == "saturation")
    assert problem.layers[0] == "net.1"
    assert "saturated" in problem.message and "xavier_normal(gain=5/3)" in problem.message
    healthy = check_init(PlainMLP("xavier_tanh", depth=6, activation=nn.Tanh),
                         torch.randn(64, WIDTH))
    assert healthy.ok, [str(p) for p in healthy.problems]
    assert max(layer.saturated_fraction or 0 for layer in healthy.layers) < 0.3


def test_dead_relus_from_bias_minus_ten_are_flagged() -> None:
    torch.manual_seed(0)
    report = check_init(PlainMLP("kaiming", depth=5, bias=-10.0), torch.randn(64, WIDTH))
    problem = next(p for p in report.problems if p.kind == "dead_units")
    assert problem.layers[0] == "net.1"
    assert "100%" in problem.message and "bias" in problem.message
    assert report.layers[1].dead_fraction == 1.0
    zero_grad = next(p for p in report.problems if p.kind == "gradient")
    assert "net.0.weight gets exactly zero gradient" in zero_grad.message


def test_nan_input_names_the_first_module() -> None:
    inputs = torch.randn(32, WIDTH)
    inputs[3, 5] = float("nan")
    report = check_init(PlainMLP("kaiming", depth=4), inputs)
    assert [p.kind for p in report.problems] == ["nonfinite"]
    assert report.problems[0].layers == ("net.0",)
    assert "input batch contains 1 NaN/Inf" in report.problems[0].message
    assert report.layers[0].nonfinite > 0


def test_overflowing_layer_is_named() -> None:
    model = PlainMLP("kaiming", depth=4)
    with torch.no_grad():
        model.net[4].weight[0, 0] = float("inf")
    report = check_init(model, torch.randn(32, WIDTH))
    assert report.problems[0].kind == "nonfinite"
    assert report.problems[0].layers == ("net.4",)
    assert "first module in forward order" in report.problems[0].message


def test_initial_loss_against_log_classes() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
    inputs, target = torch.randn(64, 16), torch.randint(0, 10, (64,))
    report = check_init(model, inputs, loss_fn=nn.CrossEntropyLoss(), target=target)
    assert report.ok and report.num_classes == 10  # inferred from CrossEntropyLoss + output
    manual = nn.functional.cross_entropy(model(inputs), target).item()
    assert report.loss == pytest.approx(manual, rel=1e-5)
    with torch.no_grad():
        model[2].weight.mul_(30)
    bad = check_init(model, inputs, loss_fn=nn.CrossEntropyLoss(), target=target)
    problem = next(p for p in bad.problems if p.kind == "loss")
    assert "ln(10) = 2.303" in problem.message and "last layer" in problem.message


# ------------------------------------------------------------------------- exact numbers


def test_reported_numbers_equal_a_manual_computation() -> None:
    torch.manual_seed(0)
    model = PlainMLP("kaiming", depth=6)
    inputs = torch.randn(48, WIDTH)
    seen: dict[str, torch.Tensor] = {}
    handle = model.net[4].register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    output = model(inputs)
    handle.remove()
    target = torch.randn_like(output)
    report = check_init(model, inputs, loss_fn=nn.functional.mse_loss, target=target)
    layer = next(layer for layer in report.layers if layer.name == "net.4")
    out = seen["out"].detach()
    assert layer.output_mean == pytest.approx(out.mean().item(), rel=1e-5, abs=1e-7)
    assert layer.output_std == pytest.approx(out.std(unbiased=False).item(), rel=1e-5)
    spread = out.std(dim=0, unbiased=False).pow(2).mean().sqrt()
    assert layer.input_dependence == pytest.approx((spread / out.pow(2).mean().sqrt()).item(),
                                                   rel=1e-5)
    relu = next(layer for layer in report.layers if layer.name == "net.5")
    manual_dead = (seen["out"].detach().clamp(min=0) == 0).all(dim=0).float().mean().item()
    assert relu.dead_fraction == pytest.approx(manual_dead)
    loss = nn.functional.mse_loss(model(inputs), target)
    weight_grad = torch.autograd.grad(loss, model.net[4].weight)[0]
    record = next(p for p in report.parameters if p.name == "net.4.weight")
    assert record.layer == "net.4"
    assert record.grad_norm == pytest.approx(weight_grad.norm().item(), rel=1e-4)
    assert record.weight_norm == pytest.approx(model.net[4].weight.norm().item(), rel=1e-6)
    assert report.loss == pytest.approx(loss.item(), rel=1e-5)


def test_statistics_need_no_per_layer_item(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"tolist": 0}
    original_tolist = torch.Tensor.tolist

    def counting_tolist(self: torch.Tensor):  # type: ignore[no-untyped-def]
        calls["tolist"] += 1
        return original_tolist(self)

    def no_item(self: torch.Tensor):  # type: ignore[no-untyped-def]
        raise AssertionError(".item() called during the check")

    monkeypatch.setattr(torch.Tensor, "item", no_item)
    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    report = check_init(PlainMLP("kaiming", depth=10), torch.randn(32, WIDTH))
    assert len(report.layers) == 20 and calls["tolist"] == 1


# ------------------------------------------------------------------------- no side effects


class Mixed(nn.Module):
    """BatchNorm, dropout, a submodule left in eval mode, and a layer that can raise."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                  nn.Dropout(0.5), nn.Linear(16, 4))
        self.body[1].eval()  # a frozen BatchNorm stays frozen
        self.extra_bn = nn.BatchNorm1d(4)
        self.fail = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.extra_bn(self.body(x))
        if self.fail:
            raise RuntimeError("boom")
        return out


def _snapshot(model: nn.Module) -> dict:
    return {
        "fingerprint": weights_fingerprint(model),
        "modes": [module.training for module in model.modules()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
        "torch_rng": torch.get_rng_state(),
        "python_rng": random.getstate(),
    }


def _assert_same(before: dict, after: dict) -> None:
    assert after["fingerprint"] == before["fingerprint"]  # weights and buffers, bit-exact
    assert after["modes"] == before["modes"]
    for old, new in zip(before["grads"], after["grads"], strict=True):
        assert (old is None and new is None) or torch.equal(old, new)
    assert after["hooks"] == before["hooks"] == 0
    assert torch.equal(after["torch_rng"], before["torch_rng"])
    assert after["python_rng"] == before["python_rng"]


def test_check_leaves_no_trace() -> None:
    model = Mixed()
    model(torch.randn(16, 8)).sum().backward()  # some .grad present, running stats moved
    model.body[0].weight.grad = None  # and one missing
    inputs = torch.randn(16, 8)
    before = _snapshot(model)
    report = check_init(model, inputs, loss_fn=lambda out: out.pow(2).mean())
    assert report.layers and any(p.grad_norm for p in report.parameters)
    _assert_same(before, _snapshot(model))


def test_check_leaves_no_trace_when_the_forward_raises() -> None:
    model = Mixed().eval()
    model.fail = True
    inputs = torch.randn(16, 8)
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        check_init(model, inputs)
    _assert_same(before, _snapshot(model))


def test_dropout_is_off_and_batchnorm_uses_batch_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Dropout(0.9)).train()
    with torch.no_grad():
        model[1].running_mean.fill_(100.0)  # eval-mode BN would shift everything by -100
    inputs = torch.randn(256, 8)
    first, second = check_init(model, inputs), check_init(model, inputs)
    assert first.layers[-1].output_std == second.layers[-1].output_std  # no dropout noise
    assert first.layers[1].output_mean == pytest.approx(0.0, abs=1e-5)  # batch statistics
    assert first.layers[1].output_std == pytest.approx(1.0, abs=1e-3)


# ------------------------------------------------------------------------- options, reports


def test_unknown_threshold_is_named_with_did_you_mean() -> None:
    with pytest.raises(CheckOptionError,
                       match=r"'max_dead_fractoin'.*Did you mean 'max_dead_fraction'"):
        check_init(nn.Linear(2, 2), torch.randn(4, 2), max_dead_fractoin=0.5)
    with pytest.raises(ValueError, match=r"'on_fial'.*Did you mean 'on_fail'"):
        CheckOptions.from_arg({"on_fial": "raise"})
    with pytest.raises(CheckOptionError, match=r"'on_fail' must be one of raise, warn"):
        CheckOptions.from_arg({"on_fail": "rasie"})
    with pytest.raises(CheckOptionError, match=r"'min_input_dependence' must be a positive"):
        CheckOptions.from_arg({"thresholds": {"min_input_dependence": -1}})


def test_options_from_arg_and_threshold_overrides() -> None:
    assert CheckOptions.from_arg(None) is None and CheckOptions.from_arg(False) is None
    assert CheckOptions.from_arg(True) == CheckOptions()
    options = CheckOptions.from_arg({"on_fail": "raise", "thresholds": {"max_scale_drift": 1e9},
                                     "num_classes": 3})
    assert options.on_fail == "raise" and options.num_classes == 3
    assert options.thresholds["max_scale_drift"] == 1e9
    torch.manual_seed(0)
    model, inputs = PlainMLP("xavier"), torch.randn(BATCH, WIDTH)
    assert "scale" in _kinds(check_init(model, inputs))
    relaxed = check_init(model, inputs, max_scale_drift=1e9, max_grad_drift=1e9)
    assert "scale" not in _kinds(relaxed)


def test_raise_or_warn() -> None:
    torch.manual_seed(0)
    report = check_init(PlainMLP("xavier"), torch.randn(BATCH, WIDTH))
    with pytest.raises(InitCheckError, match=r"net\.0") as caught:
        raise_or_warn(report, CheckOptions(on_fail="raise"))
    assert caught.value.report is report and isinstance(caught.value, RuntimeError)
    with pytest.warns(UserWarning, match="shrink"):
        raise_or_warn(report, CheckOptions())


def test_report_renders_as_table_markdown_json_and_figure() -> None:
    torch.manual_seed(0)
    report = check_init(PlainMLP("xavier", depth=8), torch.randn(32, WIDTH))
    text = str(report)
    assert "net.0" in text and "Linear" in text and "input dep." in text
    markdown = report.to_markdown()
    # The verdict first, then the table.
    assert markdown.startswith("**init check: ") and "\n| # | layer |" in markdown
    assert "| net.14 | Linear |" in markdown
    decoded = json.loads(report.to_json())
    assert decoded["ok"] == report.ok
    assert decoded["layers"][0]["name"] == "net.0"
    assert decoded["layers"][0]["output_std"] == pytest.approx(report.layers[0].output_std)
    figure = report.figure()
    act_axis, grad_axis = figure.axes
    assert act_axis.get_yscale() == grad_axis.get_yscale() == "log"
    assert len(act_axis.lines[0].get_ydata()) == len(report.layers)


def test_loss_fn_must_return_a_scalar_tensor() -> None:
    with pytest.raises(CheckOptionError, match=r"loss_fn must return a scalar tensor, got float"):
        check_init(nn.Linear(2, 2), torch.randn(4, 2), loss_fn=lambda out: 1.0)
    with pytest.raises(CheckOptionError, match=r"target= was given without loss_fn="):
        check_init(nn.Linear(2, 2), torch.randn(4, 2), target=torch.zeros(4))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left, self.right = nn.Linear(4, 8), nn.Linear(6, 8)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.left(a) + self.right(b)


def test_inputs_as_tuple_dict_or_custom_forward() -> None:
    a, b = torch.randn(8, 4), torch.randn(8, 6)
    model = TwoInputs()
    by_tuple = check_init(model, (a, b))
    by_dict = check_init(model, {"a": a, "b": b})
    by_forward = check_init(model, {"pair": (a, b)}, forward=lambda m, x: m(*x["pair"]))
    for report in (by_tuple, by_dict, by_forward):
        assert [layer.name for layer in report.layers] == ["left", "right"]
        manual_std = model.right(b).std(unbiased=False).item()
        assert report.layers[1].output_std == pytest.approx(manual_std)


def test_publish_is_rank_zero_only(capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    from lightning_init.check import publish_check_report

    report = check_init(nn.Linear(2, 2), torch.randn(4, 2))
    publish_check_report(report, SimpleNamespace(is_global_zero=False, loggers=[]))
    assert capsys.readouterr().out == ""
    publish_check_report(report, SimpleNamespace(is_global_zero=True, loggers=[]))
    assert "init check: OK" in capsys.readouterr().out


def test_sparse_embedding_gradients_are_measured_as_dense() -> None:
    # nn.Embedding(sparse=True) gets a sparse COO gradient, with a row repeated per lookup.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(100, 8, sparse=True), nn.Flatten(), nn.Linear(48, 1))
    tokens = torch.randint(0, 100, (16, 6))
    tokens[:, 0] = 7
    report = check_init(model, tokens, loss_fn=lambda out: out.pow(2).mean())
    loss = model(tokens).pow(2).mean()
    dense_grad = torch.autograd.grad(loss, model[0].weight)[0].to_dense()
    record = next(p for p in report.parameters if p.name == "0.weight")
    assert record.grad_norm == pytest.approx(dense_grad.norm().item(), rel=1e-5)
    assert record.weight_norm == pytest.approx(model[0].weight.norm().item(), rel=1e-6)


def _conv_bn_chain(gamma_std: float | None) -> nn.Sequential:
    """Eight conv-BatchNorm-ReLU6 blocks with TensorFlow's BatchNorm eps 1e-3 (MobileNetV1's
    port); BatchNorm weights at 1, or drawn from N(0, gamma_std)."""
    torch.manual_seed(0)
    blocks: list[nn.Module] = []
    channels = 3
    for _ in range(8):
        conv = nn.Conv2d(channels, 16, 3, padding=1, bias=False)
        norm = nn.BatchNorm2d(16, eps=1e-3)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out")
        if gamma_std is not None:
            nn.init.normal_(norm.weight, std=gamma_std)
        blocks += [conv, norm, nn.ReLU6()]
        channels = 16
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def test_a_norm_whose_input_is_below_its_eps_does_not_remove_the_scale() -> None:
    """BatchNorm weights N(0, 0.02) (transformers' own _init_weights for some convnets): each
    normalized output has std ~0.02, below sqrt(eps) = 0.03, so the next BatchNorm divides by
    sqrt(var + eps) ~ sqrt(eps), not by the input's std, and the scale shrinks ~30x a block; a
    conv feeding such a norm is no longer exempt from the scale verdict."""
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert check_init(_conv_bn_chain(None), x).ok
    report = check_init(_conv_bn_chain(0.02), x)
    assert [problem.kind for problem in report.problems][:1] == ["scale"], str(report)
    message = report.problems[0].message
    assert "shrink" in message and "below their eps (0.001)" in message, message
    assert "set the norms' weights to 1" in message
