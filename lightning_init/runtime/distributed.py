"""Full-tensor statistics of sharded (``DTensor``) tensors, from each shard's partial sums.

Under FSDP2 (``fully_shard``) and tensor parallelism (``parallelize_module``) a parameter is a
``DTensor``: each rank holds a piece (``Shard``), a copy (``Replicate``) or an unreduced addend
(``Partial``) of the full tensor along each dimension of its device mesh. The statistics of the
full tensor are sums over its elements (count, sum, sum of squares, non-finite count) and a
maximum (max |x|), so each rank reduces its local shard and the ranks add up their partial sums,
without any rank ever holding the full tensor:

* ``Shard(d)``: the pieces partition the full tensor; every rank's partial sums count.
* ``Replicate()``: every coordinate of that mesh dimension holds the same values; only
  coordinate 0 contributes (a replicated bias is counted once).
* ``Partial(op)``: the full values are the element-wise reduction of the local ones, which the
  sums of squares and the maximum do not commute with; those tensors are reduced over that mesh
  dimension first, all the tensors of one mesh and placement in one collective, then counted as
  replicated.

The partial sums of a whole list of tensors travel together: two ``all_reduce`` calls per call
(a SUM and a MAX), plus one per group of ``Partial`` tensors, whatever the number of tensors.
The reductions run over the default process group, and a rank contributes only for the
instance of a sub-mesh that holds global rank 0 (sub-meshes of one mesh over all ranks, as
Lightning's ``ModelParallelStrategy`` builds them, hold the same values in each instance).
Every rank must pass the same list of tensors (same shapes and placements), as SPMD training
does. A rank whose local part fails still joins every collective (with NaN rows) and raises
afterwards, so that the other ranks never wait forever. Plain tensors are measured locally
and never reduced.

The mean and standard deviation follow from the sums (``var = (S2 - S1^2 / n) / (n - 1)``,
accumulated in float64).
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_init.fingerprint import digest

__all__ = [
    "FIELDS",
    "full_fingerprint",
    "full_histograms",
    "full_stats",
    "is_dtensor",
    "local_fingerprints",
    "reduce_squares",
    "rms",
]

# Columns of `full_stats`.
FIELDS = ("numel", "sum", "sum_sq", "absmax", "nonfinite", "norm", "mean", "std")
NUMEL, SUM, SUM_SQ, ABSMAX, NONFINITE, NORM, MEAN, STD = range(len(FIELDS))
# Columns of the SUM payload: numel, sum, sum of squares, non-finite count, NaN count.
_SUMMED = 5


def rms(tensor: Tensor) -> Tensor:
    """Root-mean-square in float32 without overflow (scaled by the peak first), 0 for an empty
    tensor; a DTensor's is its full tensor's (a collective: every rank runs the same pass).

    Example:
        >>> f"{float(rms(torch.tensor([3e20, -4e20]))):.3g}"  # their float32 squares overflow
        '3.54e+20'
        >>> float(rms(torch.empty(0)))
        0.0
    """
    if is_dtensor(tensor):
        tensor = tensor.full_tensor()
    values = tensor.detach().float()
    if not values.numel():
        return values.new_zeros(())
    peak = values.abs().amax()
    scale = torch.where(torch.isfinite(peak) & (peak > 0), peak, torch.ones_like(peak))
    return (values / scale).pow(2).mean().sqrt() * scale


def is_dtensor(tensor: Any) -> bool:
    """Whether ``tensor`` is a ``torch.distributed.tensor.DTensor`` (without importing it when
    ``torch.distributed`` is unavailable).

    Example:
        >>> is_dtensor(torch.zeros(2))
        False
    """
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - builds without torch.distributed
        return False
    return isinstance(tensor, DTensor)


def _canonical(tensor: Tensor, replicated_dims: Iterable[int]) -> bool:
    """Whether this rank's copy of a DTensor's local shard is the one that counts: coordinate 0
    on every replicated mesh dimension, in the instance of the mesh that holds global rank 0."""
    coordinate, holds_rank_zero = _mesh_facts(tensor.device_mesh)  # type: ignore[attr-defined]
    if coordinate is None:  # this rank is not in the mesh
        return False
    return holds_rank_zero and all(coordinate[dim] == 0 for dim in replicated_dims)


_MESH_FACTS: dict[int, tuple[Any, tuple[int, ...] | None, bool]] = {}


def _mesh_facts(mesh: Any) -> tuple[tuple[int, ...] | None, bool]:
    """``(this rank's coordinate, whether the mesh holds global rank 0)``, cached per mesh
    (reading ``mesh.mesh`` costs milliseconds)."""
    cached = _MESH_FACTS.get(id(mesh))
    if cached is None or cached[0] is not mesh:
        coordinate = mesh.get_coordinate()
        cached = (mesh, None if coordinate is None else tuple(coordinate),
                  bool((mesh.mesh == 0).any()))
        _MESH_FACTS[id(mesh)] = cached
    return cached[1], cached[2]


def _is_copy(placement: Any) -> bool:
    """Whether a mesh dimension holds copies (``Replicate``) or addends (``Partial``, reduced
    first) rather than pieces: ``Shard`` and FSDP2's ``_StridedShard`` over a tensor-parallel
    shard (whose ``is_shard()`` is False) are pieces."""
    return placement.is_replicate() or placement.is_partial()


def _partial_key(tensor: Tensor) -> tuple[Any, ...] | None:
    """``(mesh, ((dim, reduce_op), ...))`` of a DTensor with ``Partial`` placements, else None."""
    if not is_dtensor(tensor):
        return None
    partials = tuple(
        (dim, getattr(p, "reduce_op", "sum"))
        for dim, p in enumerate(tensor.placements)  # type: ignore[attr-defined]
        if p.is_partial()
    )
    return (tensor.device_mesh, partials) if partials else None  # type: ignore[attr-defined]


_REDUCE_OPS = {"sum": "SUM", "avg": "SUM", "max": "MAX", "min": "MIN"}


def _reduce_partials(tensors: Sequence[Tensor]) -> dict[int, Tensor]:
    """The full values of the local shards of the ``Partial`` DTensors, by index: one
    ``all_reduce`` per (mesh, partial dimensions) group and per partial mesh dimension."""
    import torch.distributed as dist

    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, tensor in enumerate(tensors):
        key = _partial_key(tensor)
        if key is not None:
            groups.setdefault((id(key[0]), key[1]), []).append(index)
    reduced: dict[int, Tensor] = {}
    for (_, partials), members in groups.items():
        locals_ = [tensors[i].to_local().detach() for i in members]  # type: ignore[attr-defined]
        mesh = tensors[members[0]].device_mesh  # type: ignore[attr-defined]
        flat = torch.cat([local.reshape(-1).double() for local in locals_])
        for dim, op in partials:
            dist.all_reduce(flat, op=getattr(dist.ReduceOp, _REDUCE_OPS[op]),
                            group=mesh.get_group(dim))
            if op == "avg":
                flat /= mesh.size(dim)
        for i, local, part in zip(members, locals_, flat.split([x.numel() for x in locals_]),
                                  strict=True):
            reduced[i] = part.view(local.shape).to(local.dtype)
    return reduced


def _local_view(tensor: Tensor, reduced: dict[int, Tensor], index: int) -> tuple[Tensor, bool]:
    """``(values this rank measures, whether they count)`` for one tensor."""
    if not is_dtensor(tensor):
        return tensor.detach(), True
    placements = tensor.placements  # type: ignore[attr-defined]
    replicated = [d for d, p in enumerate(placements) if _is_copy(p)]
    local = reduced.get(index)
    if local is None:
        local = tensor.to_local().detach()  # type: ignore[attr-defined]
    return local, _canonical(tensor, replicated)


def _local_rows(values: Sequence[Tensor], counts: Sequence[bool], device: torch.device) -> Tensor:
    """``[n, 6]`` float64: numel, sum, sum of squares, non-finite count and NaN flag, then max
    |x| (NaN as +inf); all zero for an empty shard or a copy that does not count.

    Four passes per shard (sum, dot, max, min); the non-finite values are counted only in the
    shards whose sums are not finite, found with one host transfer for all.
    """
    rows = []
    flats: list[Tensor] = []
    for local, counted in zip(values, counts, strict=True):
        flat = local.reshape(-1)
        if not flat.is_floating_point():
            flat = flat.double()
        if flat.numel() == 0 or not counted:
            flats.append(flat[:0])
            rows.append(torch.zeros(6, dtype=torch.float64, device=device))
            continue
        flats.append(flat)
        absmax = torch.maximum(flat.amax(), -flat.amin()).double()  # NaN if any NaN
        rows.append(torch.stack([
            torch.tensor(float(flat.numel()), dtype=torch.float64, device=flat.device),
            flat.sum(dtype=torch.float64),
            torch.dot(flat.float(), flat.float()).double(),
            torch.zeros((), dtype=torch.float64, device=flat.device),
            absmax.isnan().double(),
            torch.where(absmax.isnan(), math.inf, absmax),
        ]).to(device))
    if not rows:
        return torch.zeros(0, 6, dtype=torch.float64, device=device)
    stacked = torch.stack(rows)
    suspect = (~torch.isfinite(stacked[:, 1:3]).all(1)).nonzero().flatten().tolist()
    for i in suspect:
        stacked[i, 3] = (~torch.isfinite(flats[i])).sum().double().to(device)
    return stacked


def _world() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _reduce_device(tensors: Sequence[Tensor]) -> torch.device:
    """Where the payloads live: a CUDA shard's device (NCCL), the CPU otherwise (gloo)."""
    for tensor in tensors:
        local = tensor.to_local() if is_dtensor(tensor) else tensor  # type: ignore[attr-defined]
        if local.device.type != "meta":
            return local.device
    return torch.device("cpu")


def _moments(summed: Tensor, absmax: Tensor) -> Tensor:
    """``full_stats`` rows from the reduced sums and maxima."""
    numel, total, squares, nonfinite, nan = summed.unbind(1)  # nan: shards holding a NaN
    absmax = torch.where((nan > 0) | summed.isnan().any(1), math.nan, absmax)
    mean = total / numel.clamp(min=1)
    variance = (squares - total * mean) / (numel - 1).clamp(min=1)
    std = torch.where(numel > 1, variance.clamp(min=0).sqrt(), math.nan)
    return torch.stack([numel, total, squares, absmax, nonfinite, squares.sqrt(), mean, std], 1)


def full_stats(tensors: Sequence[Tensor]) -> Tensor:
    """Statistics of each tensor as a whole: for a DTensor, its full tensor's, from the ranks'
    partial sums (see the module docstring); for a plain tensor, its own.

    Collective when any tensor is a DTensor and a process group of more than one rank is
    running: every rank must call it with the same list.

    Returns:
        A ``[len(tensors), 8]`` float64 tensor on the first shard's device, columns ``FIELDS``:
        numel, sum, sum of squares, max |x| (NaN if any NaN), non-finite count, L2 norm, mean
        and unbiased standard deviation (NaN for a single element).

    Raises:
        Exception: whatever this rank's local part raised, after the collectives.

    Example:
        >>> rows = full_stats([torch.tensor([3.0, -4.0]), torch.tensor([1.0, float("nan")])])
        >>> dict(zip(FIELDS, rows[0].tolist()))["norm"], rows[1, NONFINITE].item()
        (5.0, 1.0)
    """
    import torch.distributed as dist

    device = _reduce_device(tensors)
    sharded = [is_dtensor(t) for t in tensors]
    collective = any(sharded) and _world()
    error: BaseException | None = None
    try:
        reduced = _reduce_partials(tensors) if collective else {}
        views = [_local_view(t, reduced, i) for i, t in enumerate(tensors)]
        rows = _local_rows([v for v, _ in views], [c for _, c in views], device)
    except Exception as caught:  # join the collectives, then raise
        error = caught
        rows = torch.full((len(tensors), 6), math.nan, dtype=torch.float64, device=device)
    summed, absmax = rows[:, :_SUMMED].clone(), rows[:, _SUMMED].clone()
    if collective:
        plain = torch.tensor([not s for s in sharded], device=device)
        summed[plain] = 0.0
        dist.all_reduce(summed)
        dist.all_reduce(absmax, op=dist.ReduceOp.MAX)
        summed[plain] = rows[plain, :_SUMMED]
        absmax[plain] = rows[plain, _SUMMED]
    if error is not None:
        raise error
    return _moments(summed, absmax)


def reduce_squares(squares: Tensor, tensors: Sequence[Tensor]) -> Tensor:
    """Sum over the ranks of per-tensor sums of squares of local shards (a change norm
    squared, say), with each DTensor's replicated copies counted once; plain tensors' entries
    are returned as they are. One ``all_reduce``; collective as :func:`full_stats`.

    Args:
        squares: ``[len(tensors)]`` float tensor: this rank's sum of squares per tensor.
        tensors: the tensors the squares were computed from (for their placements).

    Example:
        >>> reduce_squares(torch.tensor([4.0]), [torch.zeros(3)]).tolist()
        [4.0]
    """
    import torch.distributed as dist

    sharded = [is_dtensor(t) for t in tensors]
    if not (any(sharded) and _world()):
        return squares
    weights = []
    for tensor, is_sharded in zip(tensors, sharded, strict=True):
        if not is_sharded:
            weights.append(0.0)
            continue
        placements = tensor.placements  # type: ignore[attr-defined]
        replicated = [d for d, p in enumerate(placements) if _is_copy(p)]
        weights.append(1.0 if _canonical(tensor, replicated) else 0.0)
    weight = torch.tensor(weights, dtype=squares.dtype, device=squares.device)
    payload = squares * weight
    dist.all_reduce(payload)
    plain = weight.new_tensor([not s for s in sharded], dtype=torch.bool)
    return torch.where(plain, squares, payload)


@functools.lru_cache(maxsize=64)
def _sample_positions(numel: int, count: int, device: torch.device) -> Tensor:
    """Fixed, sorted positions of ``count`` of a shard's ``numel`` elements."""
    generator = torch.Generator().manual_seed(zlib.crc32(repr((numel, count)).encode()))
    return torch.randperm(numel, generator=generator)[:count].sort().values.to(device)


def _histogram_values(tensor: Tensor, local: Tensor, max_samples: int | None) -> Tensor:
    """The float32 values (NaN/Inf as 0) this rank histograms: its shard, or a fixed sample
    of it in proportion to its share of the full tensor when that exceeds ``max_samples``."""
    flat = torch.nan_to_num(local.reshape(-1).float(), nan=0.0, posinf=0.0, neginf=0.0)
    full = tensor.numel()
    if max_samples is None or full <= max_samples or flat.numel() == 0:
        return flat
    count = max(1, round(max_samples * flat.numel() / full))
    return flat.index_select(0, _sample_positions(flat.numel(), count, flat.device))


def _histogram_ranges(values: list[Tensor], counts: list[bool], device: torch.device) -> Tensor:
    """``[n, 2]`` float64 ``[max, -min]`` of this rank's counted values (``-inf`` if none)."""
    extremes = []
    for flat, counted in zip(values, counts, strict=True):
        if flat.numel() == 0 or not counted:
            extremes.append(torch.full((2,), -math.inf, dtype=torch.float64, device=device))
        else:
            extremes.append(torch.stack([flat.amax(), -flat.amin()]).double().to(device))
    return (torch.stack(extremes) if extremes
            else torch.zeros(0, 2, dtype=torch.float64, device=device))


def _histogram_counts(values: list[Tensor], counts: list[bool], ranges: Tensor,
                      bins: int, device: torch.device) -> Tensor:
    """``[n, 3 + bins]`` float64: num, sum, sum of squares, then the bin counts, of this
    rank's counted values, with the bins of the reduced ranges (``torch.histc``'s rule)."""
    rows = []
    for flat, counted, (high, neg_low) in zip(values, counts, ranges.tolist(), strict=True):
        if flat.numel() == 0 or not counted:
            rows.append(torch.zeros(3 + bins, dtype=torch.float64, device=device))
            continue
        low = torch.tensor(-neg_low, dtype=torch.float32, device=flat.device)
        high_t = torch.tensor(high, dtype=torch.float32, device=flat.device)
        low, high_t = _widened(low, high_t)
        width = (high_t - low) / bins
        index = ((flat - low) / width).int().clamp_(0, bins - 1)
        histogram = torch.bincount(index, minlength=bins).double()
        head = torch.stack([torch.tensor(float(flat.numel()), device=flat.device).double(),
                            flat.sum(dtype=torch.float64), torch.dot(flat, flat).double()])
        rows.append(torch.cat([head, histogram]).to(device))
    return (torch.stack(rows) if rows
            else torch.zeros(0, 3 + bins, dtype=torch.float64, device=device))


def _widened(low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.histc``'s range: an empty one widened by 1 on each side."""
    flat = low == high
    return torch.where(flat, low - 1, low), torch.where(flat, high + 1, high)


def full_histograms(tensors: Sequence[Tensor], bins: int,
                    max_samples: int | None = None) -> Tensor:
    """A histogram of each full tensor over ``bins`` equal bins of its range, from the ranks'
    shards: the range is reduced across ranks (one MAX), each rank counts its values into
    those bins, and the counts are summed (one SUM). Replicated copies count once; ``Partial``
    DTensors are reduced first; non-finite values count as 0; plain tensors are histogrammed
    locally. With ``max_samples``, a rank histograms a fixed sample of its shard in proportion
    to its share of a full tensor of more than ``max_samples`` elements.

    Returns:
        A ``[len(tensors), 5 + 2 * bins]`` float64 tensor: ``min, max, num, sum,
        sum_of_squares`` of the histogrammed values, the ``bins`` right bin edges, then the
        ``bins`` counts (the layout of the diagnostics' histograms).

    Example:
        >>> full_histograms([torch.tensor([0.0, 1.0, 1.0, 2.0])], bins=2).tolist()
        [[0.0, 2.0, 4.0, 4.0, 6.0, 1.0, 2.0, 1.0, 3.0]]
    """
    import torch.distributed as dist

    device = _reduce_device(tensors)
    sharded = [is_dtensor(t) for t in tensors]
    collective = any(sharded) and _world()
    plain = torch.tensor([not s for s in sharded], dtype=torch.bool, device=device)
    error: BaseException | None = None
    values: list[Tensor] = []
    counts: list[bool] = []
    try:
        reduced = _reduce_partials(tensors) if collective else {}
        for i, tensor in enumerate(tensors):
            local, counted = _local_view(tensor, reduced, i)
            values.append(_histogram_values(tensor, local, max_samples))
            counts.append(counted)
        ranges = _histogram_ranges(values, counts, device)
    except Exception as caught:  # join the collectives, then raise
        error = caught
        ranges = torch.full((len(tensors), 2), math.nan, dtype=torch.float64, device=device)
    if collective:
        local_ranges = ranges.clone()
        dist.all_reduce(ranges, op=dist.ReduceOp.MAX)
        ranges[plain] = local_ranges[plain]
    if error is None:
        try:
            summed = _histogram_counts(values, counts, ranges, bins, device)
        except Exception as caught:
            error = caught
    if error is not None:
        summed = torch.full((len(tensors), 3 + bins), math.nan, dtype=torch.float64,
                            device=device)
    if collective:
        local_summed = summed.clone()
        dist.all_reduce(summed)
        summed[plain] = local_summed[plain]
    if error is not None:
        raise error
    low, high = _widened((-ranges[:, 1]).float(), ranges[:, 0].float())
    steps = torch.arange(1, bins + 1, device=device, dtype=torch.float32)
    edges = low[:, None] + ((high - low) / bins)[:, None] * steps
    return torch.cat([(-ranges[:, 1:2]), ranges[:, 0:1], summed[:, :3], edges.double(),
                      summed[:, 3:]], 1)


def full_fingerprint(module: nn.Module, *, include_buffers: bool = True) -> str:
    """:func:`~lightning_init.fingerprint.weights_fingerprint` of the full tensors: the digest an
    unsharded copy of ``module`` with the same values gets. Collective when the module holds
    DTensors (every rank calls it, in the same order); each DTensor is gathered whole on every
    rank, one at a time, so the peak memory is one full tensor beyond the shards.

    Example:
        >>> from lightning_init.fingerprint import weights_fingerprint
        >>> layer = torch.nn.Linear(3, 2)
        >>> full_fingerprint(layer) == weights_fingerprint(layer)
        True
    """
    named: list[tuple[str, Tensor]] = list(module.named_parameters())
    if include_buffers:
        named += [(n, b) for n, b in module.named_buffers() if b is not None]
    return digest(named, _full_tensor)


def _full_tensor(tensor: Tensor) -> Tensor:
    tensor = tensor.detach()
    return tensor.full_tensor() if is_dtensor(tensor) else tensor  # type: ignore[attr-defined]


def local_fingerprints(module: nn.Module, *,
                       include_buffers: bool = True) -> list[tuple[str, int, str]]:
    """``(name, shard key, fingerprint)`` of each tensor as this rank holds it, by name: the
    key tells which piece of the full tensor it is, so that two ranks with the same key for a
    tensor (data-parallel replicas: the same coordinates on every ``Shard`` mesh dimension)
    must hold the same values. Replicated mesh dimensions do not enter the key (a plain tensor's
    key is the same on every rank); ``Partial`` DTensors (unreduced addends that differ by
    design) are left out. Local: no collective.

    Example:
        >>> from lightning_init.fingerprint import weights_fingerprint
        >>> layer = torch.nn.Linear(3, 2)
        >>> [name for name, _, _ in local_fingerprints(layer)]
        ['bias', 'weight']
    """
    named: list[tuple[str, Tensor]] = list(module.named_parameters())
    if include_buffers:
        named += [(n, b) for n, b in module.named_buffers() if b is not None]
    return [
        (name, zlib.crc32(repr(_shard_coordinates(tensor)).encode()),
         digest([(name, tensor)], _local_tensor))
        for name, tensor in sorted(named, key=lambda item: item[0])
        if _partial_key(tensor) is None
    ]


def _shard_coordinates(tensor: Tensor) -> tuple[int, ...]:
    """This rank's coordinates on the mesh dimensions that shard ``tensor`` (``()`` for a plain
    or fully replicated tensor)."""
    if not is_dtensor(tensor):
        return ()
    coordinate, _ = _mesh_facts(tensor.device_mesh)  # type: ignore[attr-defined]
    if coordinate is None:
        return (-1,)
    placements = tensor.placements  # type: ignore[attr-defined]
    return tuple(coordinate[d] for d, p in enumerate(placements) if not _is_copy(p))


def _local_tensor(tensor: Tensor) -> Tensor:
    tensor = tensor.detach()
    return tensor.to_local() if is_dtensor(tensor) else tensor  # type: ignore[attr-defined]
