"""Sparse gradients (``nn.Embedding(sparse=True)``, ``nn.EmbeddingBag(sparse=True)``), shared by
the check and the diagnostics, which measure them as their dense equivalents."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["coalesced", "stored_values"]


def coalesced(tensor: Tensor) -> Tensor:
    """A sparse tensor (COO, CSR...) as a coalesced COO tensor: no duplicate indices, which would
    make its values' norm and max wrong (an embedding's backward repeats looked-up rows).

    Example:
        >>> rows = torch.tensor([[2, 2]])
        >>> values = torch.tensor([[1.0], [2.0]])
        >>> grad = torch.sparse_coo_tensor(rows, values, (4, 1), check_invariants=True)
        >>> coalesced(grad).values().tolist()
        [[3.0]]
    """
    return (tensor if tensor.layout is torch.sparse_coo else tensor.to_sparse()).coalesce()


def stored_values(tensor: Tensor) -> Tensor:
    """A dense tensor itself; a sparse one's coalesced values, whose sums, norm and max are those
    of its dense equivalent (the implicit zeros add nothing).

    Example:
        >>> grad = torch.tensor([[0.0, 0.0], [3.0, -4.0]]).to_sparse()
        >>> float(stored_values(grad).norm())
        5.0
    """
    return tensor if tensor.layout is torch.strided else coalesced(tensor).values()
