"""Batched, on-device statistics of many tensors: one host transfer per measurement.

On CPU the cost is in the kernels: ``norm`` (``torch._foreach_norm``, also with ``ord=inf`` for
``max |x|``) and ``sum`` are fast, ``std`` is several times slower. So the standard deviation of a
large tensor is derived from its sum and its sum of squares (= squared norm); tensors small enough
that cancellation could matter get an exact ``std``, which is cheap at their size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "EXACT_STD_MAX_NUMEL",
    "TensorStats",
    "histogram_inputs",
    "moments_from_sums",
    "tensor_stats",
]

# Below this size a tensor's std is computed directly (cheap, no cancellation).
EXACT_STD_MAX_NUMEL = 8192

# Columns of the matrix returned by `tensor_stats`.
NORM, SUM, ABSMAX, EXACT_STD = range(4)
TensorStats = Tensor  # [n_tensors, 4] float32 on the tensors' (first) device


def _stack(values: Sequence[Tensor], device: torch.device) -> Tensor:
    return torch.stack([v.to(device=device, dtype=torch.float32) for v in values])


@torch.no_grad()
def tensor_stats(tensors: Sequence[Tensor]) -> TensorStats:
    """Norm, sum, max |x| and (small tensors only) exact std of each tensor, on device.

    Nothing is transferred to the host: the caller stacks the result with the other statistics
    of the step and moves everything at once.

    Args:
        tensors: non-empty list of floating tensors (detached views are fine).

    Returns:
        A ``[len(tensors), 4]`` float32 tensor on the first tensor's device with columns norm,
        sum, max |x| and the exact standard deviation (NaN for tensors larger than
        ``EXACT_STD_MAX_NUMEL``; use :func:`moments_from_sums` for those).

    Example:
        >>> stats = tensor_stats([torch.tensor([3.0, -4.0]), torch.ones(3)])
        >>> [[round(v, 4) for v in row] for row in stats[:, :3].tolist()]
        [[5.0, -1.0, 4.0], [1.7321, 3.0, 1.0]]
    """
    device = tensors[0].device
    norms = torch._foreach_norm(list(tensors))
    # max |x| from aminmax: on CPU `_foreach_norm(ord=inf)` and `abs().amax()` are 3-10x slower.
    extremes = [torch.aminmax(t) for t in tensors]
    lows = _stack([low for low, _ in extremes], device)
    highs = _stack([high for _, high in extremes], device)
    sums = [t.sum() for t in tensors]
    nan = torch.full((), math.nan, device=device)
    exact = [t.std() if 1 < t.numel() <= EXACT_STD_MAX_NUMEL else nan for t in tensors]
    return torch.stack(
        [_stack(norms, device), _stack(sums, device), torch.maximum(-lows, highs),
         _stack(exact, device)],
        dim=1,
    )


def moments_from_sums(
    norm: float, total: float, numel: int, exact_std: float = math.nan
) -> tuple[float, float]:
    """Mean and (unbiased) standard deviation from a tensor's norm and sum, on the host.

    ``var = (sum(x^2) - sum(x)^2 / n) / (n - 1)`` with ``sum(x^2) = norm^2``, computed in float64
    and clipped at 0; ``exact_std`` wins when it is a number.

    Example:
        >>> x = torch.tensor([1.0, 2.0, 3.0, 4.0])
        >>> mean, std = moments_from_sums(float(x.norm()), float(x.sum()), 4)
        >>> round(mean, 5), round(std, 5), round(float(x.std()), 5)
        (2.5, 1.29099, 1.29099)
    """
    mean = total / numel
    if not math.isnan(exact_std):
        return mean, exact_std
    if numel < 2:
        return mean, math.nan
    variance = (norm * norm - total * total / numel) / (numel - 1)
    return mean, math.sqrt(max(variance, 0.0)) if math.isfinite(variance) else math.nan


@torch.no_grad()
def histogram_inputs(
    tensor: Tensor, bins: int, sample_index: Tensor | None
) -> Tensor:
    """A histogram of ``tensor`` (or of its subsample) computed on device, with its moments.

    Non-finite values are replaced by 0 (their count is logged separately). The bin edges are
    ``linspace(min, max, bins + 1)``, as ``torch.histc`` uses them.

    Returns:
        A float32 vector ``[min, max, num, sum, sum_of_squares, count_0, ..., count_(bins-1)]``
        on the tensor's device.

    Example:
        >>> out = histogram_inputs(torch.tensor([0.0, 1.0, 1.0, 2.0]), 2, None)
        >>> out.tolist()
        [0.0, 2.0, 4.0, 4.0, 6.0, 1.0, 3.0]
    """
    flat = tensor.detach().reshape(-1)
    if sample_index is not None:
        flat = flat[sample_index]
    flat = flat.float()
    flat = torch.where(torch.isfinite(flat), flat, torch.zeros((), device=flat.device))
    low, high = torch.aminmax(flat)
    counts = torch.histc(flat, bins=bins)  # range = [min, max], widened by 1 if min == max
    head = torch.stack(
        [low, high, torch.tensor(float(flat.numel()), device=flat.device), flat.sum(),
         flat.dot(flat)]
    )
    return torch.cat([head, counts])


def histogram_edges(low: float, high: float, bins: int) -> list[float]:
    """Right bin edges of ``torch.histc(bins=bins)`` over ``[low, high]``.

    Example:
        >>> histogram_edges(0.0, 2.0, 2)
        [1.0, 2.0]
        >>> histogram_edges(1.0, 1.0, 2)  # histc widens an empty range by 1 on each side
        [1.0, 2.0]
    """
    if low == high:
        low, high = low - 1.0, high + 1.0
    step = (high - low) / bins
    return [low + step * (i + 1) for i in range(bins)]


def sample_index(numel: int, max_samples: int, device: torch.device, seed: int) -> Tensor | None:
    """A fixed random subset of ``max_samples`` flat indices, or ``None`` when all fit.

    Example:
        >>> sample_index(10, 20, torch.device("cpu"), 0) is None
        True
        >>> index = sample_index(1000, 10, torch.device("cpu"), 0)
        >>> index.shape, bool(index.unique().numel() == 10)
        (torch.Size([10]), True)
    """
    if numel <= max_samples:
        return None
    generator = torch.Generator().manual_seed(seed)
    index = torch.randperm(numel, generator=generator)[:max_samples].sort().values
    return index.to(device)
