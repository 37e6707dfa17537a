"""Hooks as a resource: one owner of many handles, removed exactly once."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

__all__ = ["HookHandles", "forward_hooks"]


class HookHandles:
    """Owns removable hook handles; ``remove()`` is idempotent; usable as a context manager.

    Modeled on Lightning's model summary and fastai's ``Hooks``: whoever registers hooks keeps
    them here and removes them in ``finally``/teardown/on_exception.

    Example:
        >>> layer = torch.nn.Linear(2, 2)
        >>> seen = []
        >>> with HookHandles() as hooks:
        ...     _ = hooks.add(layer.register_forward_hook(lambda m, i, o: seen.append(o.shape)))
        ...     _ = layer(torch.zeros(1, 2))
        >>> _ = layer(torch.zeros(1, 2))  # removed: not recorded again
        >>> seen, len(layer._forward_hooks)
        ([torch.Size([1, 2])], 0)
    """

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []

    def add(self, handle: RemovableHandle) -> RemovableHandle:
        """Take ownership of ``handle`` and return it."""
        self._handles.append(handle)
        return handle

    def remove(self) -> None:
        """Remove every owned hook; calling it again does nothing."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def __len__(self) -> int:
        return len(self._handles)

    def __enter__(self) -> HookHandles:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.remove()

    def __del__(self) -> None:  # a forgotten owner must not leave hooks behind
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.remove()


def forward_hooks(
    modules: Iterable[tuple[str, torch.nn.Module]],
    make_hook: Callable[[str, torch.nn.Module], Callable[..., Any]],
    *,
    with_kwargs: bool = False,
) -> HookHandles:
    """Register ``make_hook(qualified_name, module)`` as a forward hook on each module
    (``hook(module, args, kwargs, output)`` with ``with_kwargs=True``).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
        >>> shapes = {}
        >>> def make_hook(name, module):
        ...     return lambda m, i, o: shapes.__setitem__(name, tuple(o.shape))
        >>> with forward_hooks(net.named_children(), make_hook):
        ...     _ = net(torch.zeros(4, 2))
        >>> shapes
        {'0': (4, 3), '1': (4, 3)}
    """
    hooks = HookHandles()
    try:
        for qualified_name, module in modules:
            hooks.add(module.register_forward_hook(make_hook(qualified_name, module),
                                                   with_kwargs=with_kwargs))
    except BaseException:
        hooks.remove()
        raise
    return hooks
