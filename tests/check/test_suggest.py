"""report.suggest_policy(): on broken inits the re-check passes and a short training does better.

Each case: a model with a broken init, the check (it finds the problem), the suggestion
(offered, its re-check clean), then the same few dozen Adam steps from the broken init and from
the suggested one: the suggested one ends lower.
"""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lightning_init import InitPolicy
from lightning_init.check import check_init
from lightning_init.check.suggest import suggest_policy
from lightning_init.policy.auto import auto_rules

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _train(model: nn.Module, step_loss, steps: int = 40, lr: float = 1e-3) -> float:
    torch.manual_seed(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = step_loss(model)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float(step_loss(model))


def _suggested(model: nn.Module, report) -> nn.Module:
    suggestion = report.suggest_policy()
    assert suggestion.offered, suggestion.verdicts()
    assert suggestion.recheck.ok, suggestion.verdicts()
    assert suggestion.policy is not None
    fixed = copy.deepcopy(model)
    suggestion.policy.apply(fixed)
    return fixed


def _he_net(init: str) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(30):
        layers += [nn.Linear(64, 64), nn.ReLU()]
    net = nn.Sequential(*layers)
    if init == "xavier":
        for module in net:
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)
    return net


@pytest.mark.parametrize("init", ["pytorch_default", "xavier"])
def test_he_net_suggestion_passes_the_recheck_and_trains_better(init: str) -> None:
    net = _he_net(init)
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(128, 64, generator=generator)
    y = (x @ torch.randn(64, 64, generator=generator)).argmax(1)
    report = check_init(net, x, loss_fn=F.cross_entropy, target=y)
    assert not report.ok
    fixed = _suggested(net, report)
    plan = InitPolicy.auto(net, x).explain(net)
    assert all("sqrt(2) / sqrt(fan_in)" in entry.initializer
               for entry in plan.entries if entry.qualified_name.endswith("weight"))

    def step(model: nn.Module) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    broken, suggested = _train(net, step), _train(fixed, step)
    assert suggested < broken


def test_gpt2_with_unit_normal_weights() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=4, n_embd=64, n_head=4, vocab_size=500,
                                     n_positions=64, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0, 1)
    ids = torch.randint(0, 500, (8, 32), generator=torch.Generator().manual_seed(3))

    def loss_fn(output) -> torch.Tensor:
        return F.cross_entropy(output.logits[:, :-1].reshape(-1, 500), ids[:, 1:].reshape(-1))

    report = check_init(model, {"input_ids": ids}, loss_fn=loss_fn, num_classes=500)
    assert not report.ok
    suggestion = report.suggest_policy()
    assert "n_branches: 8" in suggestion.yaml  # 4 blocks of 2 residual branches each
    assert "std: stream_rms / sqrt(fan_in * n_branches)" in suggestion.yaml
    fixed = _suggested(model, report)
    # branch closers: stream_rms / sqrt(fan_in * 8) (GPT-2, Megatron), the stream being the
    # tied embedding's scale
    stream = suggestion.policy.variables["stream_rms"]
    with torch.no_grad():  # the stream, measured here on its own: token plus position embeddings
        embedded = fixed.transformer.wte(ids) + fixed.transformer.wpe(torch.arange(32))
    assert stream == pytest.approx(float(embedded.square().mean().sqrt()), rel=0.01)
    expected = stream * (64 * 8) ** -0.5
    c_proj = fixed.transformer.h[0].attn.c_proj.weight.detach()
    assert abs(float(c_proj.std()) - expected) < 0.1 * expected
    assert fixed.lm_head.weight is fixed.transformer.wte.weight  # tying kept

    def step(model: nn.Module) -> torch.Tensor:
        return loss_fn(model(input_ids=ids))

    broken, suggested = _train(model, step, steps=30), _train(fixed, step, steps=30)
    assert suggested < broken


class _LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 32, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def test_lstm_with_zero_forget_bias() -> None:
    torch.manual_seed(0)
    model = _LSTMNet()
    with torch.no_grad():
        for name, param in model.lstm.named_parameters():
            if "bias" in name:
                param.zero_()
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(256, 100, 8, generator=generator)
    y = (x[:, 0, :4]).argmax(1)  # the label is in the first step: long-range memory
    report = check_init(model, x, loss_fn=F.cross_entropy, target=y)
    assert any("forget-gate bias is about 0" in note and "100 steps" in note
               for note in report.notes)
    fixed = _suggested(model, report)
    assert not any("forget-gate" in note for note in report.suggest_policy().recheck.notes)
    forget = fixed.lstm.bias_ih_l0[32:64]
    assert torch.equal(forget, torch.ones(32))
    hidden = fixed.lstm.weight_hh_l0[:32]  # one gate's block is orthogonal
    assert torch.allclose(hidden @ hidden.T, torch.eye(32), atol=1e-4)

    def first_step_gradient(net: nn.Module) -> float:
        inputs = x[:16].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(net(inputs), y[:16]), inputs)
        return float(grad[:, 0].norm() / grad[:, -1].norm())

    # Through 100 steps the cell keeps sigmoid(b_f) per step: 1/2 at b_f = 0, 0.73 at b_f = 1.
    assert first_step_gradient(model) < 1e-12 < first_step_gradient(fixed)

    def step(model: nn.Module) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    broken = _train(model, step, steps=60, lr=5e-3)
    suggested = _train(fixed, step, steps=60, lr=5e-3)
    assert suggested < broken


def test_cnn_with_a_bad_head() -> None:
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    with torch.no_grad():
        cnn[-1].weight.mul_(100)
        cnn[-1].bias.normal_(0, 10)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(64, 3, 16, 16, generator=generator)
    y = torch.randint(0, 10, (64,), generator=generator)
    report = check_init(cnn, x, loss_fn=F.cross_entropy, target=y)
    # the loss far above ln 10, and the head's gain (std(W) * sqrt(fan_in) far above 4)
    assert sorted((p.kind, p.layers) for p in report.problems) == [
        ("gain", ("6",)), ("loss", ("6",))]
    suggestion = report.suggest_policy()
    assert "# answers: loss at 6" in suggestion.yaml
    assert "output layer (classifier head)" in suggestion.yaml
    fixed = _suggested(cnn, report)
    assert suggestion.recheck.loss < 1.5 * suggestion.recheck.expected_loss

    def step(model: nn.Module) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    broken, suggested = _train(cnn, step), _train(fixed, step)
    assert suggested < broken


# ------------------------------------------------------------------ the construction itself


def test_gain_comes_from_the_activation_that_actually_follows() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c, self.d = (nn.Linear(8, 8) for _ in range(4))
            self.norm = nn.LayerNorm(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.tanh(self.a(x))
            x = F.gelu(self.norm(self.b(x)))  # the norm sits between: the gelu still follows
            x = F.selu(self.c(x))
            return self.d(x)

    roles = {rule.role: rule.layers for rule in auto_rules(Functional(), torch.randn(4, 8)).rules}
    assert roles == {"output layer": ("d",), "followed by tanh": ("a",),
                     "followed by gelu": ("b",), "followed by selu": ("c",),
                     "normalization layer": ("norm",)}


def test_registration_order_is_not_call_order() -> None:
    class Reordered(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(8, 2)  # registered first, called last
            self.body = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.body(x)))

    roles = {rule.role: rule.layers for rule in auto_rules(Reordered(), torch.randn(4, 8)).rules}
    assert roles == {"output layer": ("head",), "followed by relu": ("body",)}


def test_auto_leaves_the_model_as_it_was() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.BatchNorm1d(4), nn.ReLU())
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    sample = torch.randn(8, 4)
    state = torch.get_rng_state()
    InitPolicy.auto(net, sample)
    assert net.training and all(module.training for module in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(state, torch.get_rng_state())


def test_suggestion_is_withheld_on_a_healthy_model() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    suggestion = check_init(net, torch.randn(16, 4)).suggest_policy()
    assert suggestion.policy is None and not suggestion.offered
    assert suggestion.reason == "withheld: the check found nothing to fix"


def test_the_yaml_is_the_policy() -> None:
    net = _he_net("pytorch_default")
    x = torch.randn(64, 64)
    suggestion = check_init(net, x).suggest_policy()
    assert InitPolicy.from_dict(__import__("yaml").safe_load(suggestion.yaml)) == suggestion.policy
    assert "# source: He et al. 2015 (arXiv:1502.01852)" in suggestion.yaml
    assert suggestion.verdicts().splitlines()[:2] == [
        "before: 2 problem(s) (input_dependence, gradient)",
        "after the suggested policy: OK, no problem found"]


def test_a_report_without_its_model_asks_for_it() -> None:
    report = check_init(nn.Linear(2, 2), torch.randn(4, 2))
    report._subject = None
    with pytest.raises(ValueError, match=r"pass them: report.suggest_policy\(model, inputs\)"):
        report.suggest_policy()
    assert suggest_policy(report, nn.Linear(2, 2), torch.randn(4, 2)).policy is None


def test_uninitialized_memory_is_noted() -> None:
    layer = nn.Linear(8, 8)
    with torch.no_grad():
        layer.weight[0, :3] = torch.tensor([1e-40, 3e30, -2e12])
    notes = check_init(layer, torch.randn(4, 8)).notes
    assert any("`weight` holds 1 denormal value(s)" in note
               and "2 value(s) above 1e+06" in note for note in notes)


def _healthy_zoo() -> list[tuple[str, nn.Module, object]]:
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True), num_layers=3)
    return [
        ("mlp", nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                              nn.Linear(32, 4)), torch.randn(64, 16)),
        ("cnn", nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)),
         torch.randn(32, 3, 12, 12)),
        ("transformer", encoder, torch.randn(16, 10, 32)),
        ("gru", nn.GRU(8, 16, num_layers=2, batch_first=True), torch.randn(16, 20, 8)),
    ]


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer", "gru"])
def test_auto_passes_the_check_on_healthy_models(name: str) -> None:
    _, model, sample = next(case for case in _healthy_zoo() if case[0] == name)
    assert check_init(model, sample).ok
    InitPolicy.auto(model, sample).apply(model)
    report = check_init(model, sample)
    assert report.ok, report.problems


def test_a_head_bias_off_the_prior_is_named_and_fixed() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        net[2].bias.normal_(0, 10)  # the weights are PyTorch's; only the bias is off
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(64, 16, generator=generator)
    y = torch.randint(0, 10, (64,), generator=generator)
    report = check_init(net, x, loss_fn=F.cross_entropy, target=y)
    (problem,) = report.problems
    assert problem.kind == "loss"
    assert "the bias of `2` (std " in problem.message and "class prior" in problem.message
    assert "b_c = ln(p_c)" in problem.message
    fixed = _suggested(net, report)
    assert torch.equal(fixed[2].bias, torch.zeros(10))

    def step(model: nn.Module) -> torch.Tensor:
        return F.cross_entropy(model(x), y)

    assert _train(fixed, step) < _train(net, step)


def test_prior_sets_a_sigmoid_heads_bias() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    x = torch.randn(256, 16)
    policy = InitPolicy.auto(net, x, prior=0.01)
    policy.apply(net)
    assert float(net[2].bias) == pytest.approx(math.log(0.01 / 0.99), rel=1e-5)
    with torch.no_grad():
        p = torch.sigmoid(net(x))
    # the predictions start near the prior: the loss on rare positives starts near its entropy
    assert 0.003 < float(p.mean()) < 0.03
    with pytest.raises(ValueError, match=r"prior must be a probability strictly between 0 and 1"):
        InitPolicy.auto(net, x, prior=1.5)


def test_layers_the_pass_never_calls_are_named_in_the_yaml() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = nn.Linear(8, 8), nn.Linear(8, 2)
            self.spare_head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.body(x)))

    model = TwoHeads()
    before = model.spare_head.weight.detach().clone()
    rules = auto_rules(model, torch.randn(4, 8))
    assert rules.yaml().splitlines()[-1] == (
        "# not called by the sample pass, so left to the model's own init (1): spare_head")
    rules.policy().apply(model)
    assert torch.equal(model.spare_head.weight, before)


def test_a_suggestion_for_a_sigmoid_head_takes_the_prior() -> None:
    net = _he_net("pytorch_default")
    net.append(nn.Linear(64, 1))
    x = torch.randn(128, 64, generator=torch.Generator().manual_seed(8))
    suggestion = check_init(net, x).suggest_policy(prior=0.01)
    assert suggestion.offered, suggestion.verdicts()
    assert "bias: {init: constant, val: -4.59512}" in suggestion.yaml
    assert "Focal Loss" in suggestion.yaml
    fixed = copy.deepcopy(net)
    suggestion.policy.apply(fixed)
    with torch.no_grad():
        assert 0.003 < float(torch.sigmoid(fixed(x)).mean()) < 0.03
