"""The policy as the one initialization of a meta-device model under ModelParallelStrategy.

With ``trainer.init_module(empty_init=True)`` (or a model built under ``torch.device("meta")``)
Lightning's ``ModelParallelStrategy`` runs ``configure_model`` (``fully_shard``,
``parallelize_module``) on the meta tensors, then materializes them in ``strategy.setup``: the
root's ``to_empty`` allocates each rank's shards, then every module with tensors gets its
``reset_parameters()``. No callback hook runs in between, so :func:`defer_to_materialization`
gives each meta module an instance ``reset_parameters`` that applies the policy to that module's
own tensors instead: the policy is the one real initialization, it fills the DTensor shards,
and no rank allocates an unsharded copy of a sharded model (each parameter's values are drawn
at full size, one parameter at a time, so that they equal an unsharded model's).

A module whose tensors the policy leaves alone gets its class's ``reset_parameters()`` first
(the memory is uninitialized otherwise), then the policy for the rest.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["defer_to_materialization"]


def _materializes_meta_modules(trainer: Any) -> bool:
    """Whether the strategy shards meta modules, then materializes them with
    ``reset_parameters()`` (Lightning's ``ModelParallelStrategy``)."""
    return any(cls.__name__ == "ModelParallelStrategy" for cls in type(trainer.strategy).__mro__)


def _has_meta_tensors(module: nn.Module) -> bool:
    tensors = (*module.parameters(recurse=False), *module.buffers(recurse=False))
    return any(tensor is not None and tensor.is_meta for tensor in tensors)


class _PolicyReset:
    """Stands in for one module's ``reset_parameters`` until the strategy calls it once."""

    def __init__(self, policy: Any, module: nn.Module, name: str, seed: int | None,
                 reports: list[Any]) -> None:
        self.policy, self.module, self.name = policy, module, name
        self.seed, self.reports = seed, reports

    def __call__(self) -> None:
        module = self.module
        del module.reset_parameters  # the class's own again (the policy may fall back to it)
        report = self.policy.init_module(module, prefix=self.name, seed=self.seed)
        if getattr(report, "left_alone", None) and callable(
            getattr(module, "reset_parameters", None)
        ):
            module.reset_parameters()  # fills what the policy left, then the policy again
            report = self.policy.init_module(module, prefix=self.name, seed=self.seed)
        self.reports.append(report)


def defer_to_materialization(trainer: Any, model: nn.Module, policy: Any, seed: int | None,
                             reports: list[Any]) -> bool:
    """Make the strategy's materialization of ``model``'s meta modules apply ``policy``.

    Returns whether it did: the strategy is ``ModelParallelStrategy``, ``model`` has meta
    tensors and ``policy`` initializes one module at a time (``init_module``, as
    :class:`~lightning_init.InitPolicy` does). Each applied module's
    :class:`~lightning_init.policy.InitReport` is appended to ``reports`` as the strategy
    materializes it (in ``strategy.setup``, before ``on_fit_start``).

    Example:
        >>> class Trainer: strategy = object()
        >>> defer_to_materialization(Trainer(), nn.Linear(2, 2), None, None, [])
        False
    """
    if not callable(getattr(policy, "init_module", None)) or not _materializes_meta_modules(
        trainer
    ):
        return False
    meta = [(name, module) for name, module in model.named_modules() if _has_meta_tensors(module)]
    for name, module in meta:
        module.reset_parameters = _PolicyReset(  # type: ignore[method-assign]
            policy, module, name, seed, reports
        )
    return bool(meta)
