"""LSUV: the data-dependent layer-sequential unit-variance init (Mishkin & Matas 2015)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lightning_init._lightning import call_model
from lightning_init.anatomy import anatomy_of, is_weight_layer
from lightning_init.check.measure import first_float_tensor, no_side_effects

__all__ = ["LSUVLayer", "LSUVReport", "lsuv_init"]

def _is_weight_layer(module: nn.Module) -> bool:
    """A weight layer of the kinds registry (``Linear``, convolutions, Hugging Face's
    ``Conv1D``, the user's own via ``register_layout`` or ``register_kind``) with a ``weight``
    of 2+ dimensions; lookups are not.

    Example:
        >>> _is_weight_layer(nn.Linear(2, 2)), _is_weight_layer(nn.Embedding(4, 2))
        (True, False)
    """
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.dim() >= 2 and is_weight_layer(module)

_Forward = Callable[[nn.Module, Any], Any]


@dataclass(frozen=True)
class LSUVLayer:
    """One layer of :func:`lsuv_init`: how many rescaling passes it took and the result.

    Attributes:
        name: the module's qualified name.
        iterations: forward passes spent rescaling it (0: already within tolerance).
        variance: the output variance after the last rescale.
        converged: ``abs(variance - 1) <= tol``.
    """

    name: str
    iterations: int
    variance: float
    converged: bool


@dataclass
class LSUVReport:
    """The result of :func:`lsuv_init`: one :class:`LSUVLayer` per rescaled layer.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> report = lsuv_init(net, torch.randn(64, 8))
        >>> [layer.name for layer in report.layers], report.converged
        (['0', '2'], True)
    """

    layers: list[LSUVLayer]
    tol: float

    @property
    def converged(self) -> bool:
        """``True`` when every layer reached unit variance within ``tol``."""
        return all(layer.converged for layer in self.layers)

    @property
    def iterations(self) -> dict[str, int]:
        """Iterations per layer, by qualified name."""
        return {layer.name: layer.iterations for layer in self.layers}

    def __str__(self) -> str:
        width = max([len(layer.name) for layer in self.layers] + [5])
        lines = [f"{'layer'.ljust(width)}  iterations  variance  converged"]
        lines += [f"{layer.name.ljust(width)}  {layer.iterations:>10}  {layer.variance:>8.4f}  "
                  f"{'yes' if layer.converged else 'NO'}" for layer in self.layers]
        return "\n".join(lines)


def lsuv_init(
    model: nn.Module,
    inputs: Any,
    *,
    tol: float = 0.1,
    max_iters: int = 10,
    forward: _Forward | None = None,
    orthogonal: bool = True,
) -> LSUVReport:
    """Layer-sequential unit-variance init (Mishkin & Matas 2015, "All you need is a good init").

    Pre-initializes every weight layer (``Linear``, ``Conv``, and the layer types with a
    registered weight layout, such as Hugging Face's ``Conv1D``) orthogonally
    (``orthogonal=True``), then, layer by layer in forward order, runs the batch and divides
    the layer's weight by the standard deviation of its output until the output variance is
    within ``tol`` of 1, at most ``max_iters`` passes per layer. Changes those weights in
    place under ``no_grad`` (by design) and nothing else: biases, buffers, train/eval modes
    stay as they were; passes run like the check's (dropout off, BatchNorm on batch
    statistics). Layers are taken in the order the pass calls them (the anatomy's), which need
    not be the order they were registered in. The orthogonal pre-init draws from the global RNG
    (seed it for reproducibility).

    Args:
        model: the model to initialize.
        inputs: a tensor, tuple or dict, fed like :func:`~lightning_init.check_init` does.
        tol: tolerance on the output variance (``|var - 1| <= tol``).
        max_iters: the most rescaling passes per layer.
        forward: ``forward(model, inputs)`` to call the model another way.
        orthogonal: whether to pre-initialize with ``torch.nn.init.orthogonal_``.

    Returns:
        An :class:`LSUVReport` with the iterations and final variance per layer.

    Raises:
        ValueError: ``tol`` not positive or ``max_iters`` below 1.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(5)])
        >>> report = lsuv_init(net, torch.randn(256, 32), tol=0.01)
        >>> all(abs(layer.variance - 1) <= 0.01 for layer in report.layers)
        True
    """
    if not tol > 0:
        raise ValueError(f"lsuv_init: tol must be positive, got {tol!r}")
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"lsuv_init: max_iters must be an integer >= 1, got {max_iters!r}")
    order = {name: index for index, name in
             enumerate(anatomy_of(model, inputs, forward=forward).layers)}
    candidates = sorted(((name, module) for name, module in model.named_modules()
                         if _is_weight_layer(module)),
                        key=lambda item: order.get(item[0], len(order)))
    if orthogonal:
        for _, module in candidates:
            _orthogonal_(module.weight)
    call = forward or call_model

    def run() -> Any:
        return call(model, inputs)

    layers = []
    for name, module in candidates:
        layer = _rescale(model, name, module, run, tol, max_iters)
        if layer is not None:
            layers.append(layer)
    return LSUVReport(layers=layers, tol=tol)


def _rescale(
    model: nn.Module,
    name: str,
    module: nn.Module,
    run: Callable[[], Any],
    tol: float,
    max_iters: int,
) -> LSUVLayer | None:
    """Divide ``module.weight`` by its output's std until the variance is within ``tol`` of 1;
    ``None`` when the forward never calls ``module``."""
    iterations = 0
    variance = _output_variance(model, module, run)
    if variance is None:  # never called in the forward
        return None
    while abs(variance - 1) > tol and iterations < max_iters and variance > 0:
        with torch.no_grad():
            module.weight.div_(math.sqrt(variance))
        iterations += 1
        variance = _output_variance(model, module, run)
        if variance is None:  # pragma: no cover - a forward that skips it on a re-run
            return None
    return LSUVLayer(name, iterations, variance, abs(variance - 1) <= tol)


@torch.no_grad()
def _orthogonal_(weight: torch.Tensor) -> None:
    """``nn.init.orthogonal_`` in float32 for low-precision weights (the QR it needs has no
    float16/bfloat16 kernel on every device), cast back into ``weight``."""
    if weight.dtype in (torch.float32, torch.float64):
        nn.init.orthogonal_(weight)
        return
    full = torch.empty(weight.shape, dtype=torch.float32, device=weight.device)
    nn.init.orthogonal_(full)
    weight.copy_(full)


class _StopForward(Exception):
    """Raised by LSUV's hook once the layer of interest has produced its output."""


def _output_variance(model: nn.Module, target: nn.Module, run: Callable[[], Any]) -> float | None:
    """The variance of ``target``'s output in one pass (stopped there), or ``None`` when the
    pass does not reach it. One host sync."""
    seen: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        tensor = first_float_tensor(output)
        if tensor is not None:
            seen.append(tensor.detach().float().var(correction=0))
        raise _StopForward

    handle = target.register_forward_hook(hook)
    try:
        # no_side_effects turns autograd on for the check; LSUV needs none.
        with no_side_effects(model), torch.no_grad():
            run()
    except _StopForward:
        pass
    finally:
        handle.remove()
    return float(seen[0]) if seen else None
