"""A short, exact fingerprint of a module's weights (parameters and buffers)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import nn

from lightning_init.runtime.sparse import coalesced

__all__ = ["weights_fingerprint"]


def weights_fingerprint(module: nn.Module, *, include_buffers: bool = True) -> str:
    """A 16-hex-digit digest of every parameter's (and buffer's) name, dtype, shape and bytes.

    Bit-exact: two modules share it only when their named tensors are identical. Tied
    parameters count once. Meta tensors contribute their name, dtype and shape only.
    DTensor parameters contribute their local shard. A sparse tensor (a graph's adjacency
    buffer, any sparse layout) contributes the indices and values of its coalesced COO form,
    so it equals its coalesced self and differs from the dense tensor of the same values.

    Example:
        >>> torch.manual_seed(0); a = torch.nn.Linear(3, 2)  # doctest: +ELLIPSIS
        <...>
        >>> b = torch.nn.Linear(3, 2); _ = b.load_state_dict(a.state_dict())
        >>> weights_fingerprint(a) == weights_fingerprint(b)
        True
        >>> with torch.no_grad(): _ = b.weight[0, 0].add_(1e-7)
        >>> weights_fingerprint(a) == weights_fingerprint(b)
        False
    """
    named: list[tuple[str, torch.Tensor]] = list(module.named_parameters())
    if include_buffers:
        named += [(n, b) for n, b in module.named_buffers() if b is not None]
    return digest(named, lambda tensor: _to_local(tensor.detach()))


def _to_local(tensor: torch.Tensor) -> torch.Tensor:
    local = getattr(tensor, "to_local", None)
    return local() if callable(local) else tensor


def digest(
    named: list[tuple[str, torch.Tensor]], read: Callable[[torch.Tensor], torch.Tensor]
) -> str:
    """The fingerprint of ``named`` tensors, each hashed as ``read`` returns it (in name order,
    one at a time: ``read`` may gather a sharded tensor whole)."""
    digest = hashlib.sha256()
    for qualified_name, original in sorted(named, key=lambda item: item[0]):
        tensor = read(original)
        digest.update(f"{qualified_name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.is_meta or tensor.numel() == 0:
            continue
        if tensor.layout is torch.strided:
            digest.update(_bytes(tensor))
            continue
        sparse = coalesced(tensor)  # any sparse layout: its one canonical COO form
        digest.update(f"sparse|{sparse.sparse_dim()}|{sparse.indices().shape[1]}|".encode())
        digest.update(_bytes(sparse.indices()))
        digest.update(_bytes(sparse.values()))
    return digest.hexdigest()[:16]


def _bytes(tensor: torch.Tensor) -> bytes | memoryview:
    """The raw bytes of a dense tensor's elements, in row-major order: a view of a contiguous
    CPU tensor's memory, no copy."""
    if tensor.numel() == 0:
        return b""
    flat = tensor.contiguous().view(-1).cpu()
    return memoryview(flat.view(torch.uint8).numpy())
