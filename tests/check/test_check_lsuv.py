"""lsuv_init: unit output variance per layer on a deep net, orthogonal pre-init, bounded work."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_init import check_init, lsuv_init


def _deep_relu_mlp(depth: int = 20, width: int = 48) -> nn.Sequential:
    return nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width), nn.ReLU())])


def _output_variances(model: nn.Module, inputs: torch.Tensor) -> dict[str, float]:
    variances: dict[str, float] = {}
    hooks = [
        module.register_forward_hook(
            lambda m, i, o, name=name: variances.__setitem__(name, o.var(unbiased=False).item()))
        for name, module in model.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))
    ]
    with torch.no_grad():
        model(inputs)
    for hook in hooks:
        hook.remove()
    return variances


def test_lsuv_gives_unit_variance_per_layer_on_a_deep_net() -> None:
    torch.manual_seed(0)
    model, inputs = _deep_relu_mlp(), torch.randn(256, 48)
    biases = [module.bias.clone() for module in model if isinstance(module, nn.Linear)]
    report = lsuv_init(model, inputs, tol=0.05, max_iters=10)
    assert report.converged and len(report.layers) == 20
    assert [layer.name for layer in report.layers] == [str(2 * i) for i in range(20)]
    assert all(0 <= layer.iterations <= 10 for layer in report.layers)
    assert sum(report.iterations.values()) >= 10  # the ReLU-halved layers needed rescaling
    # Measured independently, with the final weights: every layer's output variance is ~1.
    for name, variance in _output_variances(model, inputs).items():
        assert abs(variance - 1) <= 0.05, (name, variance)
    # Biases are left alone; only weights are rescaled.
    after = [module.bias for module in model if isinstance(module, nn.Linear)]
    assert all(torch.equal(a, b) for a, b in zip(biases, after, strict=True))


def test_lsuv_weights_are_scaled_orthogonal_matrices() -> None:
    torch.manual_seed(1)
    model = _deep_relu_mlp(depth=4, width=32)
    lsuv_init(model, torch.randn(128, 32))
    for module in model:
        if isinstance(module, nn.Linear):
            gram = module.weight @ module.weight.t()
            scale = gram.diagonal().mean()
            assert torch.allclose(gram / scale, torch.eye(32), atol=1e-4)


def test_lsuv_on_a_conv_net_and_report() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    inputs = torch.randn(32, 3, 8, 8)
    report = lsuv_init(model, inputs, tol=0.1)
    assert report.converged and list(report.iterations) == ["0", "2", "5"]
    assert "iterations" in str(report)
    assert all(abs(v - 1) <= 0.1 for v in _output_variances(model, inputs).values())


def test_lsuv_respects_max_iters_and_validates_arguments() -> None:
    model = _deep_relu_mlp(depth=3, width=16)
    report = lsuv_init(model, torch.randn(64, 16), tol=1e-9, max_iters=1)
    assert all(layer.iterations <= 1 for layer in report.layers)
    with pytest.raises(ValueError, match="tol must be positive"):
        lsuv_init(model, torch.randn(4, 16), tol=0)
    with pytest.raises(ValueError, match="max_iters must be an integer >= 1"):
        lsuv_init(model, torch.randn(4, 16), max_iters=0)


def test_lsuv_leaves_modes_and_buffers_and_passes_the_check() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.Tanh(), nn.Linear(32, 32),
                          nn.Tanh(), nn.Linear(32, 4)).eval()
    running_mean = model[1].running_mean.clone()
    inputs = torch.randn(64, 16)
    lsuv_init(model, inputs)
    assert not model.training and not model[1].training
    assert torch.equal(model[1].running_mean, running_mean)
    assert check_init(model, inputs).ok


def test_lsuv_rescales_hugging_faces_conv1d_layers() -> None:
    pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    model = nn.Sequential(Conv1D(64, 32), nn.Tanh(), Conv1D(64, 64), nn.Tanh(), Conv1D(8, 64),
                          nn.Embedding(10, 8))  # the lookup is never rescaled
    model.forward = lambda x: model[4](model[3](model[2](model[1](model[0](x)))))
    report = lsuv_init(model, torch.randn(512, 32), tol=0.02)
    assert [layer.name for layer in report.layers] == ["0", "2", "4"]
    assert report.converged


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_lsuv_on_half_precision_weights(dtype: torch.dtype) -> None:
    """The orthogonal pre-init is computed in float32 and cast (no half-precision QR)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32)).to(dtype)
    report = lsuv_init(model, torch.randn(256, 32, dtype=dtype), tol=0.1, max_iters=10)
    assert report.converged and len(report.layers) == 2
    for module in (model[0], model[2]):
        assert module.weight.dtype == dtype
        weight = module.weight.float()
        gram = weight @ weight.T
        scale = gram.diagonal().mean()
        # orthogonal rows, up to LSUV's scalar rescaling and half-precision rounding
        assert torch.allclose(gram / scale, torch.eye(32), atol=3e-2)


def test_lsuv_rescales_in_call_order_not_registration_order() -> None:
    class Reversed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.second = torch.nn.Linear(32, 32)  # registered first, called second
            self.first = torch.nn.Linear(32, 32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.second(torch.relu(self.first(x)))

    torch.manual_seed(0)
    model, x = Reversed(), torch.randn(512, 32)
    report = lsuv_init(model, x, tol=0.01)
    assert [layer.name for layer in report.layers] == ["first", "second"]
    with torch.no_grad():  # the last layer's output is at unit variance with the first's final
        assert abs(float(model(x).var(correction=0)) - 1) < 0.02
