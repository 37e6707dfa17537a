"""Which parameters and leaf modules the diagnostics watch: the ``parameters``, ``modules`` and
``exclude`` globs of :class:`~lightning_init.diagnostics.DiagnosticsOptions`."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from lightning_init.diagnostics._options import DiagnosticsOptions

__all__ = ["Watched", "select"]


@dataclass(frozen=True)
class Watched:
    """What one ``fit`` watches, collected once the model is on its final device.

    Attributes:
        parameters: ``(qualified name, parameter)``, each parameter once, in module order.
        leaf_modules: ``(qualified name, module)`` of the leaf modules whose outputs are
            recorded (with ``activations``).
        row_sparse: names of embedding tables (``nn.Embedding``, ``nn.EmbeddingBag``): their
            updates touch only the rows looked up, so their snapshot is copied whole.
        device: where the activation statistics are reduced (the module's device).
    """

    parameters: list[tuple[str, nn.Parameter]]
    leaf_modules: list[tuple[str, nn.Module]]
    row_sparse: frozenset[str]
    device: torch.device


def _matches(name: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, glob) for glob in globs)


def _watched_modules(
    root: nn.Module, options: DiagnosticsOptions
) -> Iterator[tuple[str, nn.Module]]:
    """Modules whose name the ``modules`` globs match and ``exclude`` does not (metrics never)."""
    for name, module in root.named_modules():
        if not _matches(name, options.modules) or _matches(name, options.exclude):
            continue
        if type(module).__module__.startswith("torchmetrics"):
            continue
        yield name, module


def _is_watched(name: str, parameter: nn.Parameter, options: DiagnosticsOptions) -> bool:
    return (
        _matches(name, options.parameters)
        and not _matches(name, options.exclude)
        and parameter.numel() > 0
    )


def select(root: nn.Module, options: DiagnosticsOptions) -> Watched:
    """The parameters and leaf modules of ``root`` the options watch.

    A parameter is watched when its module is and its own name matches too; a parameter
    shared by several modules is watched once, under the first name that qualifies. Frozen
    parameters are watched too: each logged step measures those its optimizer trains then
    (``requires_grad`` on, in one of its parameter groups), so parameters unfrozen mid-run are
    logged from that step on.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Embedding(5, 2))
        >>> watched = select(net, DiagnosticsOptions(parameters=("*.weight",)))
        >>> [name for name, _ in watched.parameters], [name for name, _ in watched.leaf_modules]
        (['0.weight', '2.weight'], ['0', '1', '2'])
        >>> sorted(watched.row_sparse)
        ['2.weight']
    """
    seen: set[int] = set()
    parameters: list[tuple[str, nn.Parameter]] = []
    leaves: list[tuple[str, nn.Module]] = []
    row_sparse: set[str] = set()
    for module_name, module in _watched_modules(root, options):
        if next(module.children(), None) is None and module is not root:
            leaves.append((module_name, module))
        for local_name, parameter in module.named_parameters(recurse=False):
            name = f"{module_name}.{local_name}" if module_name else local_name
            if id(parameter) in seen or not _is_watched(name, parameter, options):
                continue
            seen.add(id(parameter))
            parameters.append((name, parameter))
            if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
                row_sparse.add(name)
    device = getattr(root, "device", None)
    return Watched(
        parameters,
        leaves,
        frozenset(row_sparse),
        device if isinstance(device, torch.device) else torch.device("cpu"),
    )
