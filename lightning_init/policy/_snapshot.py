"""Undo for one apply: copies of the tensors it may write, and the meta tensors it replaced.

:class:`Snapshot` copies every tensor handed to it before anything runs (meta tensors have no
values to copy), remembers each meta tensor that materialization replaces, and ``restore``
puts all of it back bit for bit, reporting the tensors it could not restore instead of
assuming it did.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping

import torch

from lightning_init.policy.targets import local

__all__ = ["Snapshot", "same_bits"]


class Snapshot:
    """Copies of ``tensors`` (by identity, meta tensors excluded), restorable.

    Example:
        >>> weight = torch.ones(2)
        >>> snapshot = Snapshot([weight])
        >>> _ = weight.mul_(3)
        >>> snapshot.roll_back(), weight.tolist()
        ([], [1.0, 1.0])
    """

    def __init__(self, tensors: Iterable[torch.Tensor | None]) -> None:
        self._saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._swapped: list[tuple[MutableMapping[str, torch.Tensor | None], str,
                                  torch.Tensor | None]] = []
        for tensor in tensors:
            if tensor is None or id(tensor) in self._saved or local(tensor).is_meta:
                continue
            self._saved[id(tensor)] = (tensor, local(tensor).detach().clone())

    def __contains__(self, tensor: torch.Tensor) -> bool:
        return id(tensor) in self._saved

    def replaced(self, owner: MutableMapping[str, torch.Tensor | None], key: str,
                 old: torch.Tensor | None) -> None:
        """Remember that ``owner[key]`` (a module's ``_parameters`` or ``_buffers``) was
        ``old`` before materialization; ``restore`` sets it back."""
        self._swapped.append((owner, key, old))

    def restore(self, *, keep: set[int] | frozenset[int] = frozenset()) -> list[torch.Tensor]:
        """Put back the values of every saved tensor whose id is not in ``keep``; return the
        tensors that could not be restored (their values differ)."""
        return [tensor for key, (tensor, value) in self._saved.items()
                if key not in keep and not _put_back(tensor, value)]

    def roll_back(self) -> list[torch.Tensor]:
        """:meth:`restore` every value and put every replaced meta tensor back; return the
        tensors that could not be restored."""
        lost = self.restore()
        for owner, key, old in reversed(self._swapped):
            owner[key] = old
        self._swapped.clear()
        return lost


def _put_back(tensor: torch.Tensor, value: torch.Tensor) -> bool:
    """Restore ``tensor`` from ``value``; whether it now holds ``value``'s bits."""
    target = local(tensor)
    try:
        with torch.no_grad():
            if (target.shape, target.dtype, target.device, target.layout) != (
                    value.shape, value.dtype, value.device, value.layout):
                tensor.data = value  # the data was replaced by another shape or dtype
            else:
                target.copy_(value)
    except Exception:  # a tensor that cannot be written (expanded...) may not have changed
        return same_bits(local(tensor), value)
    return True


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` have the same shape, dtype and bytes (NaN payloads included).

    Example:
        >>> nan = torch.tensor([float("nan")])
        >>> same_bits(nan, nan.clone()), torch.equal(nan, nan.clone())
        (True, False)
    """
    if (a.shape, a.dtype) != (b.shape, b.dtype):
        return False
    try:
        a, b = (t.to_dense() if t.layout != torch.strided else t for t in (a, b))
        return torch.equal(a.detach().contiguous().view(-1).view(torch.uint8),
                           b.detach().contiguous().view(-1).view(torch.uint8).to(a.device))
    except Exception:
        return False
