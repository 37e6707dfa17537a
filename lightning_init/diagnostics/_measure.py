"""The measurement at a logged step: weight and gradient statistics, histograms and the weights'
snapshot for the update ratio, all left on device until the step's end."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn

from lightning_init.diagnostics._options import DiagnosticsOptions
from lightning_init.diagnostics._stats import TensorBatch, sparse_histograms, sparse_stats
from lightning_init.diagnostics._tags import tag
from lightning_init.runtime.sparse import coalesced

__all__ = ["Measured", "Measurer"]


class _Snapshot(Protocol):
    """The weights as they were at a logged step (:class:`TensorBatch`, or the sharded
    engine's snapshot)."""

    def change_norms(self, weights: Sequence[Tensor]) -> Tensor: ...


@dataclass
class Measured:
    """What one optimizer call at a logged step left on device, waiting for the step's end.

    Attributes:
        step: the optimizer step index.
        names: the measured parameters' qualified names.
        numels: their numbers of elements.
        weights: their values (detached), read again after the step for the update ratio.
        weight_stats: ``[n, 4]`` rows of :meth:`TensorBatch.stats`.
        grad_rows: indices (into ``names``) of the parameters that have a gradient.
        grad_stats: ``[m, 4]`` rows of those gradients, or ``None`` when none has one.
        grads: those gradients (sparse ones coalesced).
        weight_batch: holds the weights' snapshot for the update ratio (``None`` without it).
        histograms: ``(tags, [k, 5 + 2 * bins] rows)`` blocks of histograms.
        grad_nonfinite: ``[m]`` NaN/Inf counts of the gradients when measured with the
            statistics (sharded parameters), else ``None`` (counted when a norm is not finite).
    """

    step: int
    names: list[str]
    numels: list[int]
    weights: list[Tensor]
    weight_stats: Tensor
    grad_rows: list[int]
    grad_stats: Tensor | None
    grads: list[Tensor]
    weight_batch: _Snapshot | None = None
    histograms: list[tuple[list[str], Tensor]] = field(default_factory=list)
    grad_nonfinite: Tensor | None = None


def _in_order(blocks: list[Tensor], rows: list[int]) -> Tensor:
    """The rows of ``blocks`` (stacked) put back in order: row ``i`` of the stack is row
    ``rows[i]`` of the result.

    Example:
        >>> _in_order([torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0]])], [0, 2, 1]).tolist()
        [[1.0], [2.0], [3.0]]
    """
    stacked = torch.cat(blocks) if len(blocks) > 1 else blocks[0]
    if rows == sorted(rows):
        return stacked
    index = torch.tensor(rows, device=stacked.device)
    return torch.empty_like(stacked).index_copy_(0, index, stacked)


@dataclass
class _Gradients:
    """The gradients of a step's parameters, dense ones batched, sparse ones apart."""

    rows: list[int]  # indices of the parameters that have a gradient
    tensors: list[Tensor]  # their gradients, sparse ones coalesced
    dense: list[int]  # indices into `tensors`
    sparse: list[int]
    batch: TensorBatch | None  # the dense ones' layout

    def names(self, names: list[str], which: list[int]) -> list[str]:
        return [names[self.rows[k]] for k in which]


class Measurer:
    """Measures parameters on device with :class:`TensorBatch` layouts built at their first
    logged step and reused (rebuilt when a tensor's shape or dtype changes).

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> layer(torch.ones(1, 3)).sum().backward()
        >>> measured = Measurer(DiagnosticsOptions()).measure(
        ...     0, [("weight", layer.weight), ("bias", layer.bias)], row_sparse=())
        >>> measured.names, measured.weight_stats.shape, measured.grad_stats.shape
        (['weight', 'bias'], torch.Size([2, 4]), torch.Size([2, 4]))
    """

    def __init__(self, options: DiagnosticsOptions) -> None:
        self.options = options
        self._batches: dict[tuple[str, ...], tuple[list[object], TensorBatch]] = {}

    def clear(self) -> None:
        """Forget the layouts (and the snapshots they hold)."""
        self._batches = {}

    def _batch(
        self, kind: str, names: list[str], tensors: list[Tensor], row_sparse: Collection[str]
    ) -> TensorBatch:
        key = (kind, *names)
        signature: list[object] = [(t.shape, t.dtype) for t in tensors]
        cached = self._batches.get(key)
        if cached is None or cached[0] != signature:
            batch = TensorBatch(
                tensors,
                keep_copy=kind == "weight" and self.options.update_ratio,
                copy_max_numel=self.options.update_ratio_max_samples,
                copy_whole=[name in row_sparse for name in names],
            )
            cached = self._batches[key] = (signature, batch)
        return cached[1]

    @torch.no_grad()
    def measure(
        self, step: int, params: list[tuple[str, nn.Parameter]], row_sparse: Collection[str]
    ) -> Measured:
        """Statistics of ``params`` at ``step`` (with ``update_ratio``, also their snapshot).

        Args:
            step: the optimizer step index.
            params: ``(qualified name, parameter)`` to measure.
            row_sparse: names of embedding tables, whose snapshot is copied whole.
        """
        if not params:
            return Measured(step, [], [], [], torch.zeros(0, 4), [], None, [])
        names = [name for name, _ in params]
        weights = [_real(p.detach()) for _, p in params]
        weight_batch = self._batch("weight", names, weights, row_sparse)
        # With update_ratio, this also copies the weights: the snapshot read after the step.
        weight_stats = weight_batch.stats(weights)
        grads = self._gradients(params, row_sparse)
        measured = Measured(
            step, names, [w.numel() for w in weights], weights, weight_stats, grads.rows,
            self._grad_stats(grads), grads.tensors,
            weight_batch if self.options.update_ratio else None,
        )
        if self.options.histograms:
            measured.histograms = self._histograms(names, weights, weight_batch, grads)
        return measured

    def _gradients(
        self, params: list[tuple[str, nn.Parameter]], row_sparse: Collection[str]
    ) -> _Gradients:
        rows = [i for i, (_, p) in enumerate(params) if p.grad is not None]
        tensors = [_real(params[i][1].grad.detach()) for i in rows]  # type: ignore[union-attr]
        # Sparse gradients (embeddings with sparse=True) are measured from their values.
        sparse = [k for k, grad in enumerate(tensors) if grad.layout is not torch.strided]
        for k in sparse:
            tensors[k] = coalesced(tensors[k])
        dense = [k for k, grad in enumerate(tensors) if grad.layout is torch.strided]
        dense_grads = [tensors[k] for k in dense]
        names = [params[rows[k]][0] for k in dense]
        batch = self._batch("grad", names, dense_grads, row_sparse) if dense_grads else None
        return _Gradients(rows, tensors, dense, sparse, batch)

    @staticmethod
    def _grad_stats(grads: _Gradients) -> Tensor | None:
        if not grads.tensors:
            return None
        blocks = [] if grads.batch is None else [grads.batch.stats(
            [grads.tensors[k] for k in grads.dense]
        )]
        if grads.sparse:
            blocks.append(sparse_stats([grads.tensors[k] for k in grads.sparse]))
        return _in_order(blocks, grads.dense + grads.sparse)

    def _histograms(
        self, names: list[str], weights: list[Tensor], weight_batch: TensorBatch,
        grads: _Gradients,
    ) -> list[tuple[list[str], Tensor]]:
        """``weight_hist`` of every weight, ``grad_hist`` of the dense, then sparse, gradients."""
        bins, samples = self.options.histogram_bins, self.options.histogram_max_samples
        blocks = [
            ([tag("weight_hist", name) for name in names],
             weight_batch.histograms(weights, bins, samples))
        ]
        if grads.batch is not None:
            blocks.append(
                ([tag("grad_hist", name) for name in grads.names(names, grads.dense)],
                 grads.batch.histograms([grads.tensors[k] for k in grads.dense], bins, samples))
            )
        if grads.sparse:
            blocks.append(
                ([tag("grad_hist", name) for name in grads.names(names, grads.sparse)],
                 sparse_histograms([grads.tensors[k] for k in grads.sparse], bins, samples))
            )
        return blocks


def _real(tensor: Tensor) -> Tensor:
    """A complex tensor as the real view of its parts (``[..., 2]``, sharing its storage): its
    norm, and the norm of a change, are the true ones (of the magnitudes); the sum, max |x|,
    std and histogram are the real and imaginary parts'. Any other tensor as it is.

    Example:
        >>> z = torch.tensor([3 + 4j, 0j])
        >>> float(torch.linalg.vector_norm(_real(z))), tuple(_real(z).shape)
        (5.0, (2, 2))
    """
    if tensor.is_complex() and tensor.layout is torch.strided:
        return torch.view_as_real(tensor)
    return tensor
