"""Batched, on-device statistics of many tensors: a handful of kernels, one host transfer.

A logging step measures every watched weight and gradient. Launching a few reductions per
tensor costs more in per-call overhead than in arithmetic for the many small tensors of a model
(biases, norm gains), and on CPU the cost of a pass is in memory traffic. So
:class:`TensorBatch` lays the tensors out once, by size:

* tensors of equal size (up to ``GROUP_MAX_NUMEL``) are copied into one ``[k, n]`` buffer,
  reused from step to step, and reduced along ``dim=1``: a few kernels for the whole group;
* larger tensors are reduced one by one (their own arithmetic dominates), read in place: a
  copy would cost more than the calls it saves;
* with ``keep_copy=True`` every tensor is copied (the copy is the weights' snapshot for the
  update ratio) and grouped by size, and the statistics are read from the copy.

On CPU, ``sum``, ``amax``, ``amin`` and ``linalg.vector_norm`` are fast; ``std``, ``var_mean``
and ``aminmax(dim=...)`` are many times slower. So the standard deviation of a large tensor is
derived from its sum and its sum of squares (:func:`moments_from_sums`); tensors small enough
that cancellation could matter get an exact ``std``, which is cheap at their size.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "EXACT_STD_MAX_NUMEL",
    "GROUP_MAX_NUMEL",
    "TensorBatch",
    "moments_from_sums",
]

# Below this size a tensor's std is computed directly (cheap, no cancellation).
EXACT_STD_MAX_NUMEL = 8192
# Up to this size, tensors of equal size share one buffer and one kernel per statistic; larger
# ones are read in place, one by one (unless a copy is kept anyway: then all are grouped).
GROUP_MAX_NUMEL = 1 << 16

# Columns of the matrix returned by `TensorBatch.stats`.
NORM, SUM, ABSMAX, EXACT_STD = range(4)


def _local(tensor: Tensor) -> Tensor:
    """The local shard of a DTensor (FSDP2, tensor parallel), the tensor itself otherwise.

    Only rank zero measures: a collective launched by a DTensor op would wait forever.
    """
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


class _Group:
    """Tensors measured together: rows ``members`` of the batch, each of ``numel`` elements."""

    __slots__ = ("buffer", "members", "numel", "rows")

    def __init__(self, members: list[int], numel: int) -> None:
        self.members = members
        self.numel = numel
        self.buffer: Tensor | None = None  # [k, numel] float32, when the group is copied
        self.rows: list[Tensor] = []  # views of the buffer's rows, shaped like the tensors


class TensorBatch:
    """Statistics of a fixed list of tensors (same shapes every call), with few kernels.

    Args:
        tensors: the tensors as they are now (only shapes, dtypes and devices are used; the
            values are read at each call). Must be non-empty, none of them empty.
        keep_copy: keep a float32 copy of every tensor from :meth:`stats` to
            :meth:`change_norms` (the snapshot of the update ratio). Costs one copy of the
            tensors in memory.

    Example:
        >>> batch = TensorBatch([torch.zeros(2), torch.zeros(3)])
        >>> stats = batch.stats([torch.tensor([3.0, -4.0]), torch.ones(3)])
        >>> [[round(v, 4) for v in row] for row in stats[:, :3].tolist()]
        [[5.0, -1.0, 4.0], [1.7321, 3.0, 1.0]]
    """

    def __init__(self, tensors: Sequence[Tensor], *, keep_copy: bool = False) -> None:
        if not tensors:
            raise ValueError("TensorBatch needs at least one tensor")
        self.count = len(tensors)
        self.keep_copy = keep_copy
        self.device = _local(tensors[0]).device
        by_key: dict[tuple[torch.device, int], list[int]] = {}
        groups: list[_Group] = []
        for index, tensor in enumerate(tensors):
            local = _local(tensor)
            numel = local.numel()
            if numel == 0:
                raise ValueError(f"tensor {index} is empty")
            if keep_copy or numel <= GROUP_MAX_NUMEL:
                by_key.setdefault((local.device, numel), []).append(index)
            else:
                groups.append(_Group([index], numel))
        # Singletons read in place first, then the groups (stats() relies on this order).
        groups += [_Group(members, numel) for (_, numel), members in by_key.items()]
        self.groups = groups
        order = [index for group in groups for index in group.members]
        # Position of each tensor's row in the group-ordered results.
        inverse = [0] * self.count
        for position, index in enumerate(order):
            inverse[index] = position
        self._inverse = torch.tensor(inverse, device=self.device)
        for group in groups:
            if keep_copy or group.numel <= GROUP_MAX_NUMEL:  # not a singleton read in place
                device = _local(tensors[group.members[0]]).device
                group.buffer = torch.empty(
                    len(group.members), group.numel, dtype=torch.float32, device=device
                )
                group.rows = [
                    row.view(_local(tensors[index]).shape)
                    for row, index in zip(group.buffer, group.members, strict=True)
                ]
        self._copy_targets = [row for group in groups for row in group.rows]
        self._copied = [i for group in groups if group.buffer is not None for i in group.members]
        self._sample_index: dict[tuple[int, int], Tensor] = {}

    # ------------------------------------------------------------------ helpers
    def _matrices(self, tensors: Sequence[Tensor]) -> list[Tensor]:
        """One ``[k, n]`` float32 matrix per group: the refreshed buffer or a view in place."""
        if self._copy_targets:
            torch._foreach_copy_(self._copy_targets, [_local(tensors[i]) for i in self._copied])
        matrices = []
        for group in self.groups:
            if group.buffer is not None:
                matrices.append(group.buffer)
            else:
                tensor = _local(tensors[group.members[0]]).detach()
                matrices.append(tensor.reshape(1, -1).float().contiguous())
        return matrices

    def _ordered(self, blocks: list[Tensor]) -> Tensor:
        stacked = torch.cat([block.to(self.device) for block in blocks])
        return stacked.index_select(0, self._inverse)

    # ------------------------------------------------------------------ measurements
    @torch.no_grad()
    def stats(self, tensors: Sequence[Tensor]) -> Tensor:
        """Norm, sum, max |x| and (tensors up to ``EXACT_STD_MAX_NUMEL``) exact std of each.

        With ``keep_copy``, the tensors' values are also kept for :meth:`change_norms`.

        Returns:
            A ``[len(tensors), 4]`` float32 tensor on the first tensor's device, one row per
            tensor in the given order, columns norm, sum, max |x| and the exact standard
            deviation (NaN for larger tensors; use :func:`moments_from_sums`).
        """
        blocks = []
        matrices = self._matrices(tensors)
        # Large tensors read in place (they come first): three passes each, one stack for all.
        singles = [m.view(-1) for group, m in zip(self.groups, matrices, strict=True)
                   if group.buffer is None]
        if singles:
            values: list[Tensor] = []
            for vector in singles:
                values += [torch.dot(vector, vector), vector.sum(), *torch.aminmax(vector)]
            squares, sums, lows, highs = torch.stack(values).view(-1, 4).unbind(1)
            blocks.append(
                torch.stack(
                    [squares.sqrt(), sums, torch.maximum(highs, -lows),
                     torch.full_like(sums, math.nan)], 1
                )
            )
        for group, matrix in zip(self.groups, matrices, strict=True):
            if group.buffer is None:
                continue
            # amax and amin: on CPU `aminmax(dim=1)` and `abs().amax(1)` are 3-30x slower.
            absmax = torch.maximum(matrix.amax(1), matrix.amin(1).neg())
            if 1 < group.numel <= EXACT_STD_MAX_NUMEL:
                # Two passes, centred first: no cancellation. (`std(1)` is 5x slower on CPU.)
                centred = matrix - matrix.mean(1, keepdim=True)
                std = torch.linalg.vector_norm(centred, dim=1) / math.sqrt(group.numel - 1)
            else:
                std = torch.full_like(absmax, math.nan)
            blocks.append(
                torch.stack(
                    [torch.linalg.vector_norm(matrix, dim=1), matrix.sum(1), absmax, std], 1
                )
            )
        return self._ordered(blocks)

    @torch.no_grad()
    def change_norms(self, tensors: Sequence[Tensor]) -> Tensor:
        """``||x - x_copy||`` of each tensor against the copy taken by the last :meth:`stats`.

        Consumes the copy (the buffers hold the differences afterwards).

        Example:
            >>> weight = torch.ones(4)
            >>> batch = TensorBatch([weight], keep_copy=True)
            >>> _ = batch.stats([weight])
            >>> _ = weight.sub_(torch.tensor([0.0, 0.0, 3.0, 4.0]))
            >>> batch.change_norms([weight]).tolist()
            [5.0]
        """
        if not self.keep_copy:
            raise RuntimeError("change_norms needs TensorBatch(keep_copy=True)")
        torch._foreach_sub_(self._copy_targets, [_local(tensors[i]) for i in self._copied])
        blocks = [
            torch.linalg.vector_norm(group.buffer, dim=1)  # type: ignore[arg-type]
            for group in self.groups
        ]
        return self._ordered(blocks)

    @torch.no_grad()
    def histograms(self, tensors: Sequence[Tensor], bins: int, max_samples: int) -> Tensor:
        """A histogram of each tensor (or of a fixed random subsample), computed on device.

        Must follow :meth:`stats` on the same values: grouped tensors are read from the copy
        :meth:`stats` made. Non-finite values count as 0 (their number is logged apart). The
        bins split ``[min, max]`` evenly, as ``torch.histc`` does (widened by 1 on each side
        when ``min == max``). Tensors larger than ``max_samples`` are histogrammed on the same
        ``max_samples`` positions at every call; all of them in one batch.

        Returns:
            A ``[len(tensors), 5 + 2 * bins]`` float32 tensor: ``min, max, num, sum,
            sum_of_squares`` of the histogrammed values, the ``bins`` right bin edges, then the
            ``bins`` counts.

        Example:
            >>> values = torch.tensor([0.0, 1.0, 1.0, 2.0])
            >>> batch = TensorBatch([values])
            >>> _ = batch.stats([values])
            >>> batch.histograms([values], bins=2, max_samples=100).tolist()
            [[0.0, 2.0, 4.0, 4.0, 6.0, 1.0, 2.0, 1.0, 3.0]]
        """
        blocks: list[Tensor | None] = []
        sampled: list[Tensor] = []  # one [k, max_samples] matrix per group above max_samples
        for group in self.groups:
            if group.buffer is not None:
                matrix = group.buffer
            else:
                matrix = _local(tensors[group.members[0]]).detach().reshape(1, -1).float()
            if group.numel > max_samples:
                index = self._index(group.numel, max_samples, matrix)
                sampled.append(matrix.index_select(1, index))
                blocks.append(None)
            else:
                blocks.append(_batched_histogram(matrix, bins))
        if sampled:
            rows = _batched_histogram(torch.cat([m.to(self.device) for m in sampled]), bins)
            parts = iter(rows.split([m.shape[0] for m in sampled]))
            blocks = [next(parts) if block is None else block for block in blocks]
        return self._ordered(blocks)  # type: ignore[arg-type]

    def _index(self, numel: int, max_samples: int, matrix: Tensor) -> Tensor:
        key = (numel, max_samples)
        if key not in self._sample_index:
            generator = torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))
            index = torch.randperm(numel, generator=generator)[:max_samples].sort().values
            self._sample_index[key] = index.to(matrix.device)
        return self._sample_index[key]


def _batched_histogram(matrix: Tensor, bins: int) -> Tensor:
    """Per row of ``matrix``: ``[min, max, num, sum, sum_sq, edges..., counts...]``, one
    bincount for all rows."""
    values = torch.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0)
    rows, width = values.shape
    low, high = values.amin(1), values.amax(1)
    head = torch.stack(
        [
            low,
            high,
            torch.full((rows,), float(width), device=values.device),
            values.sum(1),
            values.square().sum(1),
        ],
        1,
    )
    flat = low == high  # histc widens an empty range by 1 on each side
    low, high = torch.where(flat, low - 1, low), torch.where(flat, high + 1, high)
    width_of_bin = (high - low) / bins
    # int32: a fresh int64 buffer this size costs more in page faults than the arithmetic.
    index = ((values - low[:, None]) / width_of_bin[:, None]).int().clamp_(0, bins - 1)
    index += torch.arange(rows, device=values.device, dtype=torch.int32)[:, None] * bins
    counts = torch.bincount(index.view(-1), minlength=rows * bins).view(rows, bins)
    steps = torch.arange(1, bins + 1, device=values.device, dtype=values.dtype)
    edges = low[:, None] + width_of_bin[:, None] * steps
    return torch.cat([head, edges, counts.to(values.dtype)], 1)


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
