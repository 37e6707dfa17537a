"""Probes of a norm's formula: is it a norm (scale-invariant), and does weight ``w`` scale by
``w`` or by ``1 + w``."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from lightning_init.runtime.distributed import rms

__all__ = ["probe_norm"]

_INVARIANT = 0.02  # relative change of the output when the input is tripled


def _rms(tensor: torch.Tensor) -> float:
    return float(rms(tensor))


def _first(value: object) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


@torch.no_grad()
def probe_norm(module: nn.Module, sample: torch.Tensor) -> tuple[bool, float | None]:
    """``(scale_invariant, offset)`` of a norm on one of its real inputs (brought to unit rms;
    a normal draw of its shape where it is all zeros or not finite).

    ``offset`` is ``c`` in ``y = (c + w) * x_hat``, read from the output's rms at ``w = 0``
    over that at ``w = 1`` (biases 0): ``r = c / (c + 1)``, so ``c = r / (1 - r)``; 0 for
    ``w * x_hat`` (LayerNorm, BatchNorm), 1 for Gemma's RMSNorm. ``None`` without a 1-D
    weight or when the module cannot be called on its own.

    Example:
        >>> probe_norm(nn.LayerNorm(8), torch.randn(4, 8))
        (True, 0.0)
        >>> probe_norm(nn.Linear(8, 8), torch.randn(4, 8))[0]
        False
    """
    peak = _rms(sample)
    if not math.isfinite(peak) or peak == 0:  # a dead or broken input: a normal one instead
        generator = torch.Generator(device=sample.device).manual_seed(0)
        sample = torch.randn(sample.shape, generator=generator, device=sample.device).to(
            sample.dtype)
    else:  # at unit rms: an eps that dominates a tiny input is no lack of invariance
        sample = sample.detach() / peak
    try:
        plain = _first(module(sample))
        tripled = _first(module(3 * sample))
    except Exception:
        return True, None
    if plain is None or tripled is None or plain.shape != tripled.shape:
        return True, None
    scale = _rms(plain)
    invariant = scale == 0 or _rms(tripled - plain) <= _INVARIANT * scale
    weight = getattr(module, "weight", None)
    if not isinstance(weight, nn.Parameter) or weight.dim() != 1:
        return invariant, None
    overrides = {"weight": torch.zeros_like(weight)}
    bias = getattr(module, "bias", None)
    if isinstance(bias, nn.Parameter):
        overrides["bias"] = torch.zeros_like(bias)
    try:
        at_zero = _first(functional_call(module, overrides, (sample,)))
        overrides["weight"] = torch.ones_like(weight)
        at_one = _first(functional_call(module, overrides, (sample,)))
    except Exception:
        return invariant, None
    if at_zero is None or at_one is None or _rms(at_one) == 0:
        return invariant, None
    ratio = _rms(at_zero) / _rms(at_one)
    if not math.isfinite(ratio) or ratio >= 0.99:
        return invariant, None
    offset = ratio / (1 - ratio)
    return invariant, float(round(offset)) if abs(offset - round(offset)) < 0.02 \
        else round(offset, 4)
