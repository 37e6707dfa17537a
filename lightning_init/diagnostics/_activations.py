"""Activation statistics: forward hooks on the watched leaf modules during a logged step, and
their reduction over the ranks.

Per leaf module and rank, a hook accumulates the sum, the sum of squares, the count and the
per-unit max ``|output|`` of every micro-batch of the step. At the step's end every rank
reduces them together (:meth:`ActivationWatch.reduce`); a unit is dead when no rank saw it
output anything but zero.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_init.runtime.hooks import HookHandles, forward_hooks

__all__ = ["ActivationWatch"]


class _ActivationRecord:
    """Per leaf module, per rank: sum, sum of squares, count and per-unit max |output|."""

    __slots__ = ("count", "sum", "sum_sq", "unit_absmax")

    def __init__(self) -> None:
        self.sum: Tensor | None = None
        self.sum_sq: Tensor | None = None
        self.count = 0
        self.unit_absmax: Tensor | None = None

    @torch.no_grad()
    def update(self, output: Tensor) -> None:
        values = output.detach().float()
        total, total_sq = values.sum(), values.pow(2).sum()
        if values.ndim >= 2:  # units: channels of images/volumes, else the last dimension
            unit_dim = 1 if values.ndim in (4, 5) else values.ndim - 1
            other = tuple(d for d in range(values.ndim) if d != unit_dim)
            unit_absmax = values.abs().amax(dim=other)
        else:
            unit_absmax = values.abs()
        if self.sum is None or self.sum_sq is None or self.unit_absmax is None:
            self.sum, self.sum_sq, self.unit_absmax = total, total_sq, unit_absmax
        else:
            self.sum, self.sum_sq = self.sum + total, self.sum_sq + total_sq
            if self.unit_absmax.shape == unit_absmax.shape:
                self.unit_absmax = torch.maximum(self.unit_absmax, unit_absmax)
        self.count += values.numel()


def _first_tensor(output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, Tensor):
                return item
    return None


def _world_size() -> int:
    """The number of ranks of the default process group; 1 without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


class ActivationWatch:
    """Forward hooks on the watched leaf modules for the micro-batches of one logged step.

    A hook never raises into the model's forward: its error is kept in :attr:`error` (and
    stays there) for the caller to report.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        >>> watch = ActivationWatch()
        >>> watch.watch(list(net.named_children()), torch.device("cpu"))
        >>> watch.start(step=0)
        >>> _ = net(torch.randn(8, 3))
        >>> rows = watch.reduce()  # sum, sum of squares, count, dead units, units
        >>> watch.stop()
        >>> rows.shape, rows[:, 2].tolist(), rows[:, 4].tolist(), watch.hook_count
        (torch.Size([2, 5]), [32.0, 32.0], [4.0, 4.0], 0)
    """

    def __init__(self) -> None:
        self.modules: list[tuple[str, nn.Module]] = []
        self.device = torch.device("cpu")  # where the statistics are reduced
        self.error: BaseException | None = None
        self._records: dict[str, _ActivationRecord] = {}
        self._hooks = HookHandles()
        self._step: int | None = None

    @property
    def hook_count(self) -> int:
        """How many forward hooks are registered right now."""
        return len(self._hooks)

    def watch(self, modules: list[tuple[str, nn.Module]], device: torch.device) -> None:
        """The leaf modules to hook at the next logged steps, and where to reduce."""
        self.modules = modules
        self.device = device

    def start(self, step: int) -> None:
        """Hook the modules for ``step``, unless they are hooked for it already."""
        if self._step == step:
            return
        self.stop()
        self._step = step
        self._hooks = forward_hooks(self.modules, self._make_hook)

    def stop(self) -> None:
        """Remove the hooks and forget what they recorded; idempotent."""
        self._hooks.remove()
        self._records = {}
        self._step = None

    def _make_hook(self, name: str, _module: nn.Module) -> Any:
        record = self._records[name] = _ActivationRecord()

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            tensor = _first_tensor(output)
            if tensor is None or not tensor.is_floating_point() or tensor.numel() == 0:
                return
            try:
                record.update(tensor)
            except Exception as error:  # never break the model's forward
                self.error = error

        return hook

    def reduce(self) -> Tensor | None:
        """``[n_modules, 5]`` float64 rows ``sum, sum_sq, count, dead units, units`` of every
        watched leaf module's output over all ranks' micro-batches of the step.

        Every rank calls this at the same steps; under DDP it makes two collectives: the units
        per module (MAX, so that the per-unit vectors line up), then one SUM of the sums and of
        a per-unit "alive on this rank" indicator. A rank whose own part failed contributes
        zeros, never skips the collectives (the other ranks would wait forever).
        """
        if not self.modules:
            return None
        sums, alive = self._local_part()
        units = torch.tensor(
            [0 if a is None else a.numel() for a in alive], dtype=torch.int64, device=self.device
        )
        distributed = _world_size() > 1
        if distributed:
            torch.distributed.all_reduce(units, op=torch.distributed.ReduceOp.MAX)
        sizes = units.tolist()
        indicators = [
            torch.zeros(size, dtype=torch.float64, device=self.device)
            if a is None or a.numel() != size else a
            for a, size in zip(alive, sizes, strict=True)
        ]
        payload = torch.cat([sums.reshape(-1), *indicators])
        if distributed:
            torch.distributed.all_reduce(payload)
        sums = payload[: sums.numel()].view(-1, 3)
        per_module = payload[sums.numel():].split(sizes)
        dead = torch.stack([(part == 0).sum().double() for part in per_module])
        return torch.cat([sums, dead[:, None], units.double()[:, None]], 1)

    def _local_part(self) -> tuple[Tensor, list[Tensor | None]]:
        """This rank's ``[n, 3]`` sums and per-unit alive indicators (``None``: no output)."""
        sums = torch.zeros(len(self.modules), 3, dtype=torch.float64, device=self.device)
        alive: list[Tensor | None] = [None] * len(self.modules)
        try:
            for i, (name, _) in enumerate(self.modules):
                record = self._records.get(name)
                if record is None or record.sum is None or record.unit_absmax is None:
                    continue
                sums[i, 0], sums[i, 1], sums[i, 2] = record.sum, record.sum_sq, record.count
                alive[i] = (record.unit_absmax.reshape(-1) > 0).double().to(self.device)
        except Exception as error:  # keep the collectives in step with the other ranks
            sums.zero_()
            alive = [None] * len(self.modules)
            self.error = self.error or error
        return sums, alive
