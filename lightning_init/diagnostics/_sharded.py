"""The diagnostics' statistics of sharded (``DTensor``) parameters: their full tensors'.

Under FSDP2 and tensor parallelism no rank holds a full parameter, so every rank measures its
shards and the ranks reduce their partial sums
(:mod:`lightning_init.runtime.distributed`): a handful of collectives per logging step, on
every rank, in the same order. Rows come in the layouts of
:class:`~lightning_init.diagnostics._stats.TensorBatch`, so the writing side is shared.

A rank whose local part fails still joins the collectives and contributes NaN, which reaches
every rank as a NaN element count: every rank then stops its diagnostics at the same step, and
none waits for a collective the others skip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_init.diagnostics._measure import Measured
from lightning_init.diagnostics._options import DiagnosticsOptions
from lightning_init.diagnostics._tags import tag
from lightning_init.runtime.distributed import (
    ABSMAX,
    NONFINITE,
    NORM,
    NUMEL,
    STD,
    SUM,
    full_histograms,
    full_stats,
    reduce_squares,
)

__all__ = [
    "Precomputed",
    "ShardedSnapshot",
    "measure_sharded",
    "reduce_sharded_updates",
    "sharded_histograms",
    "sharded_rows",
]


def _local(tensor: Tensor) -> Tensor:
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def sharded_rows(tensors: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """``TensorBatch.stats`` rows of the full tensors (the exact-std column holds the std from
    the reduced sums) and their non-finite counts. Collective: every rank, same list.

    Raises:
        RuntimeError: another rank's part failed (this rank's own error is raised as is).

    Example:
        >>> rows, nonfinite = sharded_rows([torch.tensor([3.0, -4.0])])
        >>> [round(v, 4) for v in rows[0].tolist()], nonfinite.tolist()
        ([5.0, -1.0, 4.0, 4.9497], [0.0])
    """
    stats = full_stats(tensors)
    if bool(stats[:, NUMEL].isnan().any()):
        raise RuntimeError("another rank could not measure its shards")
    columns = [stats[:, NORM], stats[:, SUM], stats[:, ABSMAX], stats[:, STD]]
    return torch.stack(columns, 1), stats[:, NONFINITE]


def sharded_histograms(tensors: Sequence[Tensor], bins: int, max_samples: int) -> Tensor:
    """``TensorBatch.histograms`` rows of the full tensors. Collective: every rank, same list.

    Raises:
        RuntimeError: another rank's part failed (this rank's own error is raised as is).

    Example:
        >>> sharded_histograms([torch.tensor([0.0, 2.0])], bins=2, max_samples=10).tolist()
        [[0.0, 2.0, 2.0, 2.0, 4.0, 1.0, 2.0, 1.0, 1.0]]
    """
    rows = full_histograms(tensors, bins, max_samples)
    if bool(rows[:, 2].isnan().any()):
        raise RuntimeError("another rank could not histogram its shards")
    return rows


class ShardedSnapshot:
    """This rank's shards of the weights at a logged step; :meth:`change_norms` gives the full
    ``||w_(t+1) - w_t||`` of each after the optimizer step (one collective).

    Example:
        >>> weight = torch.ones(4)
        >>> snapshot = ShardedSnapshot([weight])
        >>> _ = weight.sub_(torch.tensor([0.0, 0.0, 3.0, 4.0]))
        >>> snapshot.change_norms([weight]).tolist()
        [5.0]
    """

    def __init__(self, weights: Sequence[Tensor]) -> None:
        self._copies = [_local(w).detach().float().clone() for w in weights]

    @torch.no_grad()
    def change_norms(self, weights: Sequence[Tensor]) -> Tensor:
        """Collective: every rank calls it, with the weights it was built from."""
        try:
            changes = [(_local(w).detach().float() - copy).reshape(-1)
                       for w, copy in zip(weights, self._copies, strict=True)]
            squares = torch.stack([torch.dot(c, c).double() for c in changes])
        except Exception:  # join the collective; NaN tells every rank
            device = _local(weights[0]).device if weights else None
            squares = torch.full((len(weights),), math.nan, dtype=torch.float64, device=device)
        self._copies = []
        return reduce_squares(squares, weights).sqrt()


class Precomputed:
    """Change norms reduced already, standing in for a snapshot where only rank 0 writes."""

    def __init__(self, values: Tensor) -> None:
        self.values = values

    def change_norms(self, weights: Sequence[Tensor]) -> Tensor:
        """The stored values.

        Example:
            >>> Precomputed(torch.tensor([1.0])).change_norms([]).tolist()
            [1.0]
        """
        return self.values


@torch.no_grad()
def measure_sharded(
    step: int, params: Sequence[tuple[str, nn.Parameter]], options: DiagnosticsOptions
) -> Measured:
    """The full tensors' statistics of ``params`` at ``step`` (with ``update_ratio``, also
    this rank's snapshot of its shards). Collective: every rank, same parameters.

    Raises:
        RuntimeError: another rank's part failed (this rank's own error is raised as is).

    Example:
        >>> layer = nn.Linear(2, 1)
        >>> layer(torch.ones(1, 2)).sum().backward()
        >>> measured = measure_sharded(0, [("weight", layer.weight)], DiagnosticsOptions())
        >>> [round(v, 4) for v in measured.grad_stats[0].tolist()], measured.grad_nonfinite.tolist()
        ([1.4142, 2.0, 1.0, 0.0], [0.0])
    """
    names = [name for name, _ in params]
    weights = [p.detach() for _, p in params]
    weight_stats, _ = sharded_rows(weights)
    grad_rows = [i for i, (_, p) in enumerate(params) if p.grad is not None]
    grads = [params[i][1].grad.detach() for i in grad_rows]  # type: ignore[union-attr]
    grad_stats, nonfinite = sharded_rows(grads) if grads else (None, None)
    measured = Measured(
        step, names, [w.numel() for w in weights], weights, weight_stats, grad_rows,
        grad_stats, grads, ShardedSnapshot(weights) if options.update_ratio else None,
        grad_nonfinite=nonfinite,
    )
    if options.histograms:
        bins, samples = options.histogram_bins, options.histogram_max_samples
        measured.histograms.append(
            ([tag("weight_hist", name) for name in names],
             sharded_histograms(weights, bins, samples))
        )
        if grads:
            measured.histograms.append(
                ([tag("grad_hist", names[i]) for i in grad_rows],
                 sharded_histograms(grads, bins, samples))
            )
    return measured


def reduce_sharded_updates(pending: Sequence[Measured]) -> None:
    """After the optimizer step, on every rank: the full change norms of the snapshotted
    weights, stored in place of each snapshot (only rank zero reads them). Collective.

    Raises:
        RuntimeError: a rank could not measure its weights' change (raised on every rank).

    Example:
        >>> weight = torch.ones(2)
        >>> measured = Measured(0, ["w"], [2], [weight], torch.zeros(1, 4), [], None, [],
        ...                     ShardedSnapshot([weight]))
        >>> _ = weight.add_(torch.tensor([3.0, 4.0]))
        >>> reduce_sharded_updates([measured])
        >>> measured.weight_batch.change_norms([]).tolist()
        [5.0]
    """
    for entry in pending:
        if entry.weight_batch is not None:
            changes = entry.weight_batch.change_norms(entry.weights)
            if bool(changes.isnan().any()):
                raise RuntimeError("a rank could not measure its weights' change")
            entry.weight_batch = Precomputed(changes)
