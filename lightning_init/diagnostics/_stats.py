"""Batched, on-device statistics of many tensors: a handful of kernels, one host transfer.

A logging step measures every watched weight and gradient. Launching a few reductions per
tensor costs more in per-call overhead than in arithmetic for the many small tensors of a model
(biases, norm gains), and on CPU the cost of a pass is in memory traffic. So
:class:`TensorBatch` lays the tensors out once, by size:

* tensors of equal size (up to ``GROUP_MAX_NUMEL``) are copied into one ``[k, n]`` buffer,
  reused from step to step, and reduced along ``dim=1``: a few kernels for the whole group;
* larger tensors are reduced one by one, read in place, each tensor's reductions one after the
  other while it is still in the cache (a copy, or one kernel over a whole group of large
  tensors, streams them from memory again for every statistic);
* with ``keep_copy=True`` the values are also kept until :meth:`TensorBatch.change_norms` (the
  weights' snapshot for the update ratio): the group buffers are that copy; a large tensor is
  copied whole up to ``copy_max_numel`` elements; above it, only a fixed sample of that many
  elements, in runs of ``SAMPLE_RUN`` spread at a regular stride, from which its change is
  estimated (:meth:`TensorBatch.change_norms`).

On CPU, ``sum``, ``amax``, ``amin`` and ``linalg.vector_norm`` are fast; ``std``, ``var_mean``
and ``aminmax(dim=...)`` are many times slower. So the standard deviation of a large tensor is
derived from its sum and its sum of squares (:func:`moments_from_sums`); tensors small enough
that cancellation could matter get an exact ``std``, which is cheap at their size.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "EXACT_STD_MAX_NUMEL",
    "GROUP_MAX_NUMEL",
    "SAMPLE_RUN",
    "TensorBatch",
    "moments_from_sums",
    "sparse_histograms",
    "sparse_stats",
]

# Below this size a tensor's std is computed directly (cheap, no cancellation).
EXACT_STD_MAX_NUMEL = 8192
# Up to this size, tensors of equal size share one buffer and one kernel per statistic; larger
# ones are read in place, one by one.
GROUP_MAX_NUMEL = 1 << 16
# A sampled snapshot is made of runs of this many contiguous elements (1 KiB of float32): whole
# cache lines, where single random elements would each wait for memory. Shorter runs estimate
# better (more independent pieces).
SAMPLE_RUN = 256

# Columns of the matrix returned by `TensorBatch.stats`.
NORM, SUM, ABSMAX, EXACT_STD = range(4)


def _local(tensor: Tensor) -> Tensor:
    """The local shard of a DTensor (FSDP2, tensor parallel), the tensor itself otherwise.

    Only rank zero measures here: a collective launched by a DTensor op would wait forever
    (DTensors' full statistics come from ``_sharded``, on every rank).
    """
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


class _Group:
    """Tensors measured together: rows ``members`` of the batch, each of ``numel`` elements."""

    __slots__ = ("buffer", "members", "numel", "rows")

    def __init__(self, members: list[int], numel: int) -> None:
        self.members = members
        self.numel = numel
        self.buffer: Tensor | None = None  # [k, numel] float32, for groups of small tensors
        self.rows: list[Tensor] = []  # views of the buffer's rows, shaped like the tensors

    def allocate(self, tensors: Sequence[Tensor]) -> None:
        """The ``[k, numel]`` buffer of a group of small tensors, and its rows' views."""
        self.buffer = torch.empty(
            len(self.members), self.numel, dtype=torch.float32,
            device=_local(tensors[self.members[0]]).device,
        )
        self.rows = [
            row.view(_local(tensors[index]).shape)
            for row, index in zip(self.buffer, self.members, strict=True)
        ]


def _partition(tensors: Sequence[Tensor]) -> tuple[list[_Group], list[_Group]]:
    """The large tensors, one per group, and the groups of small tensors of equal size (and
    device), in order of first appearance.

    Example:
        >>> singles, grouped = _partition([torch.zeros(3), torch.zeros(70000), torch.zeros(3)])
        >>> [g.members for g in singles], [g.members for g in grouped]
        ([[1]], [[0, 2]])
    """
    by_key: dict[tuple[torch.device, int], list[int]] = {}
    singles: list[_Group] = []
    for index, tensor in enumerate(tensors):
        local = _local(tensor)
        numel = local.numel()
        if numel == 0:
            raise ValueError(f"tensor {index} is empty")
        if numel <= GROUP_MAX_NUMEL:
            by_key.setdefault((local.device, numel), []).append(index)
        else:
            singles.append(_Group([index], numel))
    return singles, [_Group(members, numel) for (_, numel), members in by_key.items()]


def _sample_layout(numel: int, count: int, run: int) -> tuple[int, int]:
    """``(stride, offset)`` of ``count`` runs of ``run`` elements spread over ``numel``.

    A regular stride lets the hardware prefetch the runs (random runs each wait for memory); it
    is odd, so that over a matrix the runs start in every column. The offset is pseudo-random,
    fixed for ``(numel, count, run)``.

    Example:
        >>> stride, offset = _sample_layout(1000, 4, 10)
        >>> stride % 2, offset + 3 * stride + 10 <= 1000
        (1, True)
    """
    stride = (numel - run) // (count - 1) if count > 1 else numel
    if stride % 2 == 0 and stride > run:
        stride -= 1
    free = numel - (run + stride * (count - 1))
    generator = torch.Generator().manual_seed(zlib.crc32(repr((numel, count, run)).encode()))
    return stride, int(torch.randint(0, free + 1, (1,), generator=generator))


def _row_positions(groups: Sequence[_Group], count: int, device: torch.device) -> Tensor:
    """Position of each tensor's row in the group-ordered results."""
    order = [index for group in groups for index in group.members]
    inverse = [0] * count
    for position, index in enumerate(order):
        inverse[index] = position
    return torch.tensor(inverse, device=device)


class TensorBatch:
    """Statistics of a fixed list of tensors (same shapes every call), with few kernels.

    Args:
        tensors: the tensors as they are now (only shapes, dtypes and devices are used; the
            values are read at each call). Must be non-empty, none of them empty.
        keep_copy: keep a float32 copy of the tensors from :meth:`stats` to
            :meth:`change_norms` (the snapshot of the update ratio).
        copy_max_numel: with ``keep_copy``, a tensor of more than ``GROUP_MAX_NUMEL`` and
            more than this many elements keeps only a fixed sample of about this many elements
            (runs of ``SAMPLE_RUN`` contiguous ones at a regular stride), from which its change
            norm is estimated. ``None``: every tensor is copied whole.
        copy_whole: per tensor, ``True`` to copy it whole whatever its size (a tensor whose
            changes are sparse, such as an embedding table, whose sample would miss them).

    Example:
        >>> batch = TensorBatch([torch.zeros(2), torch.zeros(3)])
        >>> stats = batch.stats([torch.tensor([3.0, -4.0]), torch.ones(3)])
        >>> [[round(v, 4) for v in row] for row in stats[:, :3].tolist()]
        [[5.0, -1.0, 4.0], [1.7321, 3.0, 1.0]]
    """

    def __init__(
        self,
        tensors: Sequence[Tensor],
        *,
        keep_copy: bool = False,
        copy_max_numel: int | None = None,
        copy_whole: Sequence[bool] | None = None,
    ) -> None:
        if not tensors:
            raise ValueError("TensorBatch needs at least one tensor")
        self.count = len(tensors)
        self.keep_copy = keep_copy
        self.device = _local(tensors[0]).device
        singles, grouped = _partition(tensors)

        sample_size = copy_max_numel if keep_copy and copy_max_numel is not None else 0

        def sampled(group: _Group) -> bool:
            whole = copy_whole is not None and copy_whole[group.members[0]]
            return 0 < sample_size < group.numel and not whole

        # Large tensors read in place first, those with a sampled snapshot ahead of those
        # copied whole; then the groups (stats() and change_norms() rely on this order).
        singles.sort(key=lambda group: not sampled(group))
        self.singles = singles
        self.grouped = grouped
        self.groups = singles + self.grouped
        self._inverse = _row_positions(self.groups, self.count, self.device)
        for group in self.grouped:
            group.allocate(tensors)
        self._copy_targets = [row for group in self.grouped for row in group.rows]
        self._copied = [i for group in self.grouped for i in group.members]
        self._sample_index: dict[tuple[int, int], Tensor] = {}
        # Snapshots of the large tensors (keep_copy): whole copies, and the samples, all of one
        # size, in the rows of one buffer (`_samples`, and `_current` for the values after).
        self._whole: list[Tensor] = []
        self._layouts: list[tuple[int, int]] = []  # (stride, offset) per sampled tensor
        self._samples = self._current = torch.empty(0)
        self._by_size = torch.empty(0)
        self._sample_scale: Tensor | None = None
        if not keep_copy:
            return
        n_sampled = sum(1 for group in singles if sampled(group))
        if n_sampled:
            run = min(SAMPLE_RUN, sample_size)
            count = sample_size // run
            self._layouts = [
                _sample_layout(group.numel, count, run) for group in singles[:n_sampled]
            ]
            self._samples = torch.empty(n_sampled, count, run, device=self.device)
            self._current = torch.empty_like(self._samples)
            self._by_size = torch.tensor(
                [math.sqrt(group.numel / (count * run)) for group in singles[:n_sampled]],
                device=self.device,
            )
        self._whole = [
            torch.empty(
                group.numel, dtype=torch.float32, device=_local(tensors[group.members[0]]).device
            )
            for group in singles[n_sampled:]
        ]

    # ------------------------------------------------------------------ helpers
    def _flat(self, tensors: Sequence[Tensor], group: _Group) -> Tensor:
        """A large tensor's values as one float32 vector (a view when it is one already)."""
        return _local(tensors[group.members[0]]).detach().reshape(-1).float()

    def _sample_view(self, vector: Tensor, k: int) -> Tensor:
        """The runs of sampled tensor ``k`` in ``vector`` (its flat values), as a view."""
        count, run = self._samples.shape[1:]
        stride, offset = self._layouts[k]
        return vector.as_strided((count, run), (stride, 1), vector.storage_offset() + offset)

    def _ordered(self, blocks: list[Tensor]) -> Tensor:
        stacked = torch.cat([block.to(self.device) for block in blocks])
        return stacked.index_select(0, self._inverse)

    # ------------------------------------------------------------------ measurements
    @torch.no_grad()
    def stats(self, tensors: Sequence[Tensor]) -> Tensor:
        """Norm, sum, max |x| and (tensors up to ``EXACT_STD_MAX_NUMEL``) exact std of each.

        With ``keep_copy``, the tensors' values (or samples of them) are also kept for
        :meth:`change_norms`.

        Returns:
            A ``[len(tensors), 4]`` float32 tensor on the first tensor's device, one row per
            tensor in the given order, columns norm, sum, max |x| and the exact standard
            deviation (NaN for larger tensors; use :func:`moments_from_sums`).
        """
        blocks = []
        if self._copy_targets:
            torch._foreach_copy_(self._copy_targets, [_local(tensors[i]) for i in self._copied])
        if self.singles:
            # Large tensors one at a time, while in the cache: three passes each and the
            # snapshot; one stack for all.
            values: list[Tensor] = []
            n_sampled = len(self._layouts)
            for k, group in enumerate(self.singles):
                vector = self._flat(tensors, group)
                values += [torch.dot(vector, vector), vector.sum(), *torch.aminmax(vector)]
                if k < n_sampled:
                    self._samples[k].copy_(self._sample_view(vector, k))
                elif self._whole:
                    self._whole[k - n_sampled].copy_(vector)
            squares, sums, lows, highs = torch.stack(values).view(-1, 4).unbind(1)
            norms = squares.sqrt()
            blocks.append(
                torch.stack(
                    [norms, sums, torch.maximum(highs, -lows), torch.full_like(sums, math.nan)], 1
                )
            )
            if n_sampled:
                self._sample_scale = self._scales(norms[:n_sampled])
        for group in self.grouped:
            matrix: Tensor = group.buffer  # type: ignore[assignment]
            # amax and amin: on CPU `aminmax(dim=1)` and `abs().amax(1)` are several times slower.
            absmax = torch.maximum(matrix.amax(1), matrix.amin(1).neg())
            if 1 < group.numel <= EXACT_STD_MAX_NUMEL:
                # Two passes, centred first: no cancellation. (`std(1)` is slower on CPU.)
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

    def _scales(self, norms: Tensor) -> Tensor:
        """Per sampled tensor ``||x|| / ||x[S]||``; ``sqrt(numel / |S|)`` where the sample is
        all zeros."""
        sample_norms = torch.linalg.vector_norm(self._samples.flatten(1), dim=1)
        return torch.where(sample_norms > 0, norms / sample_norms, self._by_size)

    @torch.no_grad()
    def change_norms(self, tensors: Sequence[Tensor]) -> Tensor:
        """``||x - x_copy||`` of each tensor against the copy taken by the last :meth:`stats`.

        A tensor whose snapshot is a sample ``S`` gets the estimate
        ``||x[S] - x_copy[S]|| * ||x_copy|| / ||x_copy[S]||``: its change relative to its norm
        is the sample's. Consumes the copy (the buffers hold the differences afterwards).

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
        blocks = []
        n_sampled = len(self._layouts)
        if n_sampled:
            torch._foreach_copy_(
                list(self._current),
                [self._sample_view(self._flat(tensors, group), k)
                 for k, group in enumerate(self.singles[:n_sampled])],
            )
            changes = torch.linalg.vector_norm(self._samples.sub_(self._current).flatten(1), dim=1)
            blocks.append(changes * self._sample_scale)
        if self._whole:
            blocks.append(torch.stack([
                torch.linalg.vector_norm(copy.sub_(self._flat(tensors, group)))
                for copy, group in zip(self._whole, self.singles[n_sampled:], strict=True)
            ]))
        if self._copy_targets:
            torch._foreach_sub_(self._copy_targets, [_local(tensors[i]) for i in self._copied])
            blocks += [
                torch.linalg.vector_norm(group.buffer, dim=1)  # type: ignore[arg-type]
                for group in self.grouped
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
                matrix = self._flat(tensors, group).view(1, -1)
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
            self._sample_index[key] = _histogram_positions(numel, max_samples).to(matrix.device)
        return self._sample_index[key]


@functools.lru_cache(maxsize=64)
def _histogram_positions(numel: int, max_samples: int) -> Tensor:
    """The fixed, sorted flat positions a tensor of ``numel`` elements is histogrammed on."""
    generator = torch.Generator().manual_seed(zlib.crc32(repr((numel, max_samples)).encode()))
    return torch.randperm(numel, generator=generator)[:max_samples].sort().values


@torch.no_grad()
def sparse_stats(tensors: Sequence[Tensor]) -> Tensor:
    """:meth:`TensorBatch.stats` rows of coalesced sparse COO tensors, as of their dense
    equivalents (the implicit zeros add nothing to the sums; the std comes from
    :func:`moments_from_sums` with the dense ``numel``).

    Example:
        >>> grad = torch.tensor([[0.0, 0.0], [3.0, -4.0]]).to_sparse()
        >>> sparse_stats([grad]).tolist()[0][:3]
        [5.0, -1.0, 4.0]
    """
    rows = []
    for tensor in tensors:
        values = tensor.values().detach().reshape(-1).float()
        if values.numel() == 0:
            rows.append(torch.tensor([0.0, 0.0, 0.0, math.nan], device=values.device))
            continue
        rows.append(torch.stack([
            torch.linalg.vector_norm(values), values.sum(), values.abs().amax(),
            torch.full((), math.nan, device=values.device),
        ]))
    return torch.stack(rows)


def _dense_values_at(tensor: Tensor, positions: Tensor) -> Tensor:
    """The values of a coalesced sparse COO tensor's dense equivalent at flat ``positions``,
    without making it dense: each position's row of sparse indices is looked up among the
    (sorted) non-zero ones."""
    sparse_dims = tensor.sparse_dim()
    inner = math.prod(tensor.shape[sparse_dims:])
    values = tensor.values().detach().reshape(-1, inner).float()
    if values.shape[0] == 0:
        return torch.zeros(positions.numel(), device=values.device)
    strides = [math.prod(tensor.shape[d + 1 : sparse_dims]) for d in range(sparse_dims)]
    indices = tensor.indices()
    keys = (indices * torch.tensor(strides, device=indices.device)[:, None]).sum(0)
    outer, within = positions // inner, positions % inner
    slot = torch.searchsorted(keys, outer).clamp_(max=keys.numel() - 1)
    return torch.where(keys[slot] == outer, values[slot, within], 0.0)


@torch.no_grad()
def sparse_histograms(tensors: Sequence[Tensor], bins: int, max_samples: int) -> Tensor:
    """:meth:`TensorBatch.histograms` rows of coalesced sparse COO tensors, as of their dense
    equivalents (zeros included), on the same fixed positions a dense tensor of that size is
    histogrammed on; never made dense when larger than ``max_samples``.

    Example:
        >>> grad = torch.tensor([0.0, 0.0, 1.0, 3.0]).to_sparse()
        >>> sparse_histograms([grad], bins=2, max_samples=100).tolist()[0][:5]
        [0.0, 3.0, 4.0, 4.0, 10.0]
    """
    rows = []
    for tensor in tensors:
        numel = tensor.numel()
        if numel <= max_samples:
            values = tensor.detach().to_dense().reshape(1, -1).float()
        else:
            positions = _histogram_positions(numel, max_samples).to(tensor.device)
            values = _dense_values_at(tensor, positions).view(1, -1)
        rows.append(_batched_histogram(values, bins))
    return torch.cat(rows)


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
