"""Undo for one apply: copies of the tensors it may write, and the meta tensors it replaced.

:class:`Snapshot` copies every tensor handed to it before anything runs (meta tensors have no
values to copy), remembers each meta tensor that materialization replaces, and ``restore``
puts all of it back bit for bit, reporting the tensors it could not restore instead of
assuming it did.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import TypeAlias

import torch

from lightning_init.policy.targets import local

__all__ = ["Snapshot", "same_bits"]

_Entries: TypeAlias = MutableMapping[str, "torch.Tensor | None"]


class Snapshot:
    """Copies of tensors (by identity; meta tensors and fresh ones excluded) and of modules'
    parameter and buffer entries, restorable.

    Example:
        >>> layer = torch.nn.Linear(2, 2)
        >>> snapshot = Snapshot()
        >>> snapshot.take([layer.bias], [layer])
        >>> old = layer.bias
        >>> _ = layer.bias.data.mul_(3)
        >>> layer.bias = torch.nn.Parameter(torch.zeros(2))
        >>> snapshot.roll_back(), layer.bias is old
        ([], True)
    """

    def __init__(self) -> None:
        self._saved: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._entries: list[tuple[_Entries, str, torch.Tensor | None]] = []
        self._swapped: list[tuple[_Entries, str, torch.Tensor | None]] = []
        self._fresh: set[int] = set()
        self._attributes: list[tuple[object, str, object]] = []

    def take(self, tensors: Iterable[torch.Tensor | None],
             modules: Iterable[torch.nn.Module] = ()) -> None:
        """Copy ``tensors``' values and remember which tensor objects ``modules`` hold."""
        for tensor in tensors:
            if (tensor is None or id(tensor) in self._saved or id(tensor) in self._fresh
                    or local(tensor).is_meta):
                continue
            self._saved[id(tensor)] = (tensor, local(tensor).detach().clone())
        seen: set[int] = set()
        for module in modules:
            if id(module) not in seen:
                seen.add(id(module))
                self._entries += [(owner, key, value) for owner in (module._parameters,
                                                                    module._buffers)
                                  for key, value in owner.items()]

    def attribute(self, owner: object, name: str) -> None:
        """Remember ``owner.name`` (a weight the old ``weight_norm`` hook computes) so that
        :meth:`roll_back` sets it back."""
        self._attributes.append((owner, name, getattr(owner, name)))

    def replaced(self, owner: _Entries, key: str, old: torch.Tensor | None,
                 new: torch.Tensor) -> None:
        """Remember that ``owner[key]`` (a module's ``_parameters`` or ``_buffers``) held the
        meta tensor ``old`` before materialization gave it ``new`` (no values to copy)."""
        self._swapped.append((owner, key, old))
        self._fresh.add(id(new))

    def restore(self, *, keep: set[int] | frozenset[int] = frozenset()) -> list[torch.Tensor]:
        """Put back every remembered entry and saved value whose tensor's id is not in
        ``keep``; return the tensors that could not be restored (their values differ)."""
        for owner, key, old in self._entries:
            if owner.get(key) is not old and (old is None or id(old) not in keep):
                owner[key] = old
        return [tensor for key, (tensor, value) in self._saved.items()
                if key not in keep and not _put_back(tensor, value)]

    def roll_back(self) -> list[torch.Tensor]:
        """:meth:`restore` everything and put every replaced meta tensor back; return the
        tensors that could not be restored."""
        lost = self.restore()
        for owner, key, old in reversed(self._swapped):
            owner[key] = old
        self._swapped.clear()
        for holder, name, value in self._attributes:
            setattr(holder, name, value)
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
