"""Group statistics of two inits of one architecture: the reference's and a preset's.

Parameters are grouped by name with every layer index folded (``h.3.attn.c_proj.weight`` ->
``h.*.attn.c_proj.weight``) and each group is pooled over a few independent draws. A group
that is constant in the reference (zeros, ones) must be bit-identical; any other group must
match the reference's std within 2%, or within three standard errors of the difference of two
sample stds where the pooled group is too small for 2% to be resolved (fewer than 22,500
values), its mean within four standard errors, and its kurtosis (which tells a normal, 3, from
a uniform, 1.8, or a normal truncated at 2 std, 2.4) within 0.1 plus four standard errors.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable

import torch
from torch import nn

from lightning_init.policy import InitPolicy

_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)")


def group_name(name: str) -> str:
    """``transformer.h.3.attn.c_proj.weight`` -> ``transformer.h.*.attn.c_proj.weight``."""
    return _INDEX.sub("*", name)


def groups(model: nn.Module) -> dict[str, torch.Tensor]:
    """Each folded group's values, flattened (a tied parameter counted once); the key ends in
    the tensors' dimension, so that ``downsample.*.weight`` keeps convs and norms apart."""
    found: dict[str, list[torch.Tensor]] = {}
    for name, param in model.named_parameters():
        key = f"{group_name(name)} ({param.dim()}-d)"
        found.setdefault(key, []).append(param.detach().flatten().float())
    return {key: torch.cat(values) for key, values in found.items()}


def pooled(build: Callable[[int], nn.Module], draws: int) -> dict[str, torch.Tensor]:
    """Groups pooled over ``draws`` models ``build(0)``, ``build(1)``, ..."""
    runs = [groups(build(draw)) for draw in range(draws)]
    return {key: torch.cat([run[key] for run in runs]) for key in runs[0]}


def _kurtosis(values: torch.Tensor) -> float:
    centred = values.double() - values.double().mean()
    return float((centred**4).mean() / (centred**2).mean() ** 2)


def compare(reference: dict[str, torch.Tensor], ours: dict[str, torch.Tensor]) -> list[str]:
    """Every way ``ours`` differs from ``reference`` (empty: they match)."""
    problems = []
    if set(reference) != set(ours):
        return [f"groups differ: {sorted(set(reference) ^ set(ours))}"]
    for key, a in reference.items():
        b = ours[key]
        if bool((a == a[0]).all()):
            if not torch.equal(a, b):
                problems.append(f"{key}: reference is the constant {a[0].item()}, ours is not "
                                f"(mean {b.mean().item():.4g}, std {b.std().item():.4g})")
            continue
        n = a.numel()
        sa, sb = a.double().std().item(), b.double().std().item()
        tolerance = max(0.02, 3 * math.sqrt(1 / n))  # sd of sb/sa - 1 is about sqrt(1/n)
        if abs(sb / sa - 1) > tolerance:
            problems.append(f"{key}: std {sb:.5g}, reference {sa:.5g} "
                            f"({100 * (sb / sa - 1):+.1f}%, tolerance {100 * tolerance:.1f}%)")
        if abs(b.double().mean().item() - a.double().mean().item()) > 4 * sa * math.sqrt(2 / n):
            problems.append(f"{key}: mean {b.mean().item():.4g}, reference {a.mean().item():.4g}")
        ka, kb = _kurtosis(a), _kurtosis(b)
        if abs(ka - kb) > 0.1 + 4 * math.sqrt(48 / n):
            problems.append(f"{key}: kurtosis {kb:.3f}, reference {ka:.3f}")
    return problems


def relative_tolerances(reference: dict[str, torch.Tensor]) -> dict[str, float]:
    """The std tolerance :func:`compare` uses per random group."""
    return {key: max(0.02, 3 * math.sqrt(1 / a.numel())) for key, a in reference.items()
            if not bool((a == a[0]).all())}


def apply_quietly(policy: InitPolicy, model: nn.Module, seed: int, **kwargs) -> None:
    """``policy.apply`` with the meta-buffer warnings of HF models silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*buffers on the meta device.*")
        policy.apply(model, seed=seed, **kwargs)
