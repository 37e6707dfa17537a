"""InitCallback: apply an init policy at the right moment of a Lightning ``fit``.

This module is about the life cycle only; the policy engine, the check and the diagnostics
live in their own modules and are reached through their public names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn
from torch.nn.parameter import is_lazy
from typing_extensions import override

# Modules, not names: attributes are looked up at call time (the wiring tests patch them).
import lightning_init.check as _check
import lightning_init.diagnostics as _diagnostics
from lightning_init._distributed import full_fingerprint
from lightning_init._sample_batch import find_sample_batch, run_sample_forward
from lightning_init._sharded_init import defer_to_materialization
from lightning_init.errors import InitCheckError

__all__ = ["InitCallback"]

_SEED_BOUND = 2**31 - 1


class InitCallback(Callback):
    """Applies an init policy once, at the start of the first ``fit``, then checks and watches it.

    When the policy is applied, and when it is not:

    - ``fit`` only; ``validate``, ``test`` and ``predict`` never change a weight.
    - Once: the first ``fit`` initializes; a second ``fit`` with the same callback continues
      training. ``state_dict`` records the policy's name and the fingerprint of the initialized
      weights (:func:`~lightning_init._fingerprint.weights_fingerprint` of the full tensors, also
      for sharded DTensor parameters), so a resumed run knows.
    - Never over a checkpoint: when ``fit`` resumes from ``ckpt_path`` the checkpoint's weights
      win. Modules built in ``__init__`` are initialized in ``setup`` (before the restore, which
      overwrites them); modules built in ``configure_model`` in ``on_fit_start``, skipped when
      resuming.
    - Lazy modules (``nn.LazyLinear``...) are materialized in ``setup`` by one no-grad forward
      of ``example_input_array`` (else one ``training_step`` on the first training batch, logging
      muted), then initialized. DDP refuses to wrap unmaterialized modules, so this is needed.
      Lazy modules created in ``configure_model`` cannot be materialized by a callback (no hook
      runs between ``configure_model`` and the DDP wrap): build those in ``__init__``.
    - Every rank gets the same weights: rank 0 draws the seed (unless the policy has its own)
      and the strategy broadcasts it; ``policy.apply(model, seed=shared_seed)`` then derives
      each parameter's numbers from ``(seed, qualified name, shape)``, whatever each rank's
      global RNG holds. Under DDP the weights' fingerprint (parameters and buffers) is compared
      across ranks after init and a mismatch raises ``RuntimeError`` naming the ranks.

    What the loggers get (rank 0; no logger is fine): hyperparameters
    ``lightning_init/policy`` and ``lightning_init/fingerprint``, written in ``on_fit_start``
    together with the module's own (TensorBoard's HParams view reads a run's first session),
    and the table of what was applied as TensorBoard text ``lightning_init/policy``, once.

    Meta-device and empty-init models get the policy as their one real initialization::

        trainer = Trainer(callbacks=[InitCallback(policy="my_policy.yaml")])
        with trainer.init_module(empty_init=True):   # no default init is paid
            model = MyModule()
        trainer.fit(model)                           # the policy fills every tensor

    or build the model under ``torch.device("meta")``; the policy materializes the tensors it
    covers. Give such a policy ``default: reset`` (or rules for every parameter): a tensor left
    on the meta device raises a clear error, and empty-init memory the policy leaves alone
    holds garbage.

    Sharded training with Lightning's ``ModelParallelStrategy`` (FSDP2 ``fully_shard``, tensor
    parallel ``parallelize_module``, tested on 2 CPU ranks over gloo): a seeded policy fills each
    DTensor from the full tensor's generator, so the full weights equal an unsharded model's;
    the recorded fingerprint, the check's norms and the diagnostics are the full tensors' (from
    the shards' partial sums, :mod:`lightning_init._distributed`). A meta-device or empty-init
    model gets the policy when the strategy materializes its shards, after ``configure_model``,
    instead of ``reset_parameters()`` (:mod:`lightning_init._sharded_init`). Not verified here,
    as they need a GPU in Lightning: the older ``FSDPStrategy`` (the cross-rank fingerprint
    comparison is skipped for it and for DTensor parameters) and DeepSpeed (ZeRO-3 partitions
    parameters before ``on_fit_start``; its ``configure_model`` modules are not supported yet).

    Args:
        policy: a YAML path, a preset name, a mapping, an ``InitPolicy``, or ``None`` to leave
            the weights alone (the check and the diagnostics still run).
        check: ``True``, ``False`` or a mapping of check options (e.g. ``{"on_fail": "raise"}``).
            Runs once in ``on_fit_start`` of the first ``fit``, on every rank.
        diagnostics: ``True``, ``False`` or a mapping of diagnostics options
            (e.g. ``{"every_n_steps": 10}``).

    Raises:
        TypeError: ``check`` or ``diagnostics`` is neither a bool nor a mapping.
        PolicyError: the policy cannot be loaded (raised here, before any training).

    Example:
        >>> callback = InitCallback(policy=None, check=False, diagnostics=False)
        >>> callback.state_dict()["applied"], callback.state_key
        (False, "InitCallback{'policy': None}")
    """

    def __init__(
        self,
        policy: str | dict[str, Any] | None = None,
        check: bool | dict[str, Any] = True,
        diagnostics: bool | dict[str, Any] = True,
    ) -> None:
        self._arguments = {"policy": policy, "check": check, "diagnostics": diagnostics}
        self._policy = _load_policy(policy)
        self._check_options = _options("check", check, _check.CheckOptions)
        diagnostics_options = _options("diagnostics", diagnostics, _diagnostics.DiagnosticsOptions)
        self._diagnostics = (
            None
            if diagnostics_options is None
            else _diagnostics.TrainingDiagnostics(diagnostics_options)
        )
        # What the state_dict records.
        self._applied = False  # the first fit has initialized (or resumed) the weights
        self._policy_name: str | None = None
        self._fingerprint: str | None = None
        self._seed: int | None = None
        # Per-fit bookkeeping, reset in setup.
        self._fresh = False  # this fit is the first: initialize
        self._state_loaded = False
        self._setup_modules: list[nn.Module] = []  # held, so that their ids stay unique
        self._reports: list[Any] = []
        self._check_report: Any = None

    @property
    def check_report(self) -> Any:
        """The :class:`~lightning_init.InitCheckReport` of the last fit's check, or ``None``.

        Example:
            >>> InitCallback(check=False, diagnostics=False).check_report is None
            True
        """
        return self._check_report

    def __repr__(self) -> str:
        shown = dict(self._arguments)
        if not isinstance(shown["policy"], (str, os.PathLike, Mapping, type(None))):
            shown["policy"] = _policy_label(self._policy)
        listing = ", ".join(f"{key}={value!r}" for key, value in shown.items())
        return f"{type(self).__name__}({listing})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_setup_modules=[], _reports=[])  # per-fit, never pickled with the module
        return state

    # ----------------------------------------------------------------------------- state

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(policy=_policy_label(self._policy))

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "applied": self._applied,
            "policy_name": self._policy_name,
            "fingerprint": self._fingerprint,
            "seed": self._seed,
        }
        if self._diagnostics is not None:
            state["diagnostics"] = self._diagnostics.state_dict()
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._applied = bool(state_dict.get("applied", False))
        self._policy_name = state_dict.get("policy_name")
        self._fingerprint = state_dict.get("fingerprint")
        self._seed = state_dict.get("seed")
        self._state_loaded = True
        if self._diagnostics is not None and "diagnostics" in state_dict:
            self._diagnostics.load_state_dict(state_dict["diagnostics"])

    # ------------------------------------------------------------------------ life cycle

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._state_loaded = False
        self._reports = []
        self._fresh = stage == "fit" and not self._applied
        if self._fresh:
            self._materialize_lazy(trainer, pl_module)
            if self._policy is not None:
                self._seed = self._shared_seed(trainer)
                if defer_to_materialization(
                    trainer, pl_module, self._policy, self._seed, self._reports
                ):
                    pass  # the strategy applies it to the shards, after configure_model
                elif _has_tensors(pl_module):
                    self._reports.append(self._policy.apply(pl_module, seed=self._seed))
                    _raise_if_meta_left(pl_module)
            self._setup_modules = list(pl_module.modules())
        if self._diagnostics is not None:
            self._diagnostics.setup(trainer, pl_module, stage)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._fresh:
            return
        resuming = trainer.ckpt_path is not None or self._state_loaded
        self._fresh = False
        if resuming:
            self._applied = True
            if not self._state_loaded:  # the checkpoint holds no InitCallback state
                self._policy_name = _policy_label(self._policy)
                self._fingerprint = self._seed = None
            self._reports = []
            self._log(trainer, pl_module)
            return
        if self._policy is not None:
            known = {id(module) for module in self._setup_modules}
            for name, module in _modules_added_since(pl_module, known):
                self._reports.append(self._policy.apply(module, seed=self._seed, prefix=name))
        fingerprint = full_fingerprint(pl_module)  # of the full tensors: equal on every rank
        _verify_same_on_all_ranks(trainer, pl_module, fingerprint)
        self._applied = True
        self._policy_name = _policy_label(self._policy)
        self._fingerprint = fingerprint
        self._log(trainer, pl_module)
        self._run_check(trainer, pl_module)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._diagnostics is not None:
            self._diagnostics.on_train_start(trainer, pl_module)

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._diagnostics is not None:
            self._diagnostics.on_train_batch_start(trainer, pl_module, batch, batch_idx)

    @override
    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._diagnostics is not None:
            self._diagnostics.on_before_optimizer_step(trainer, pl_module, optimizer)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._diagnostics is not None:
            self._diagnostics.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._setup_modules = []
        self._reports = []
        if self._diagnostics is not None:
            self._diagnostics.teardown(trainer, pl_module, stage)

    @override
    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        if self._diagnostics is not None:
            self._diagnostics.on_exception(trainer, pl_module, exception)

    # --------------------------------------------------------------------------- helpers

    def _shared_seed(self, trainer: Trainer) -> int | None:
        """Rank 0's draw, broadcast; ``None`` when the policy has its own seed."""
        if getattr(self._policy, "seed", None) is not None:
            return None
        seed = int(torch.randint(_SEED_BOUND, (1,)))  # every rank draws: RNG streams stay aligned
        return int(trainer.strategy.broadcast(seed, src=0))

    def _materialize_lazy(self, trainer: Trainer, pl_module: LightningModule) -> None:
        lazy = [name for name, tensor in _named_tensors(pl_module) if is_lazy(tensor)]
        if not lazy:
            return
        device = _tensor_device(pl_module)
        sample = find_sample_batch(trainer, pl_module, device)
        if sample is None:
            if self._policy is None:
                return  # nothing to initialize: leave them to the first training step
            raise ValueError(
                f"InitCallback: {type(pl_module).__name__} has lazy parameters ({', '.join(lazy)})"
                " and no sample batch to materialize them: set `example_input_array` or give"
                " `fit` a training dataloader."
            )
        run_sample_forward(pl_module, sample)

    def _run_check(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The check on every rank; ``on_fail="raise"`` raises on all ranks if one fails."""
        options = self._check_options
        if options is None:
            return
        sample = find_sample_batch(trainer, pl_module, pl_module.device, example_first=False)
        if sample is None and getattr(pl_module, "example_input_array", None) is None:
            rank_zero_info("InitCallback: no sample batch for the init check; skipped.")
            return
        with isolate_rng():
            report = _check.check_lightning_module(
                pl_module, None if sample is None else sample.batch, options
            )
        self._check_report = report
        if trainer.is_global_zero:
            _check.publish_check_report(report, trainer)
        failed = not report.ok and getattr(options, "on_fail", "warn") == "raise"
        if trainer.strategy.reduce_boolean_decision(failed, all=False):
            if not failed:
                raise InitCheckError("the init check failed on another rank; see rank 0's report")
            _check.raise_or_warn(report, options)
            raise InitCheckError(f"the init check failed: {report}", report=report)
        if not report.ok and trainer.is_global_zero:
            _check.raise_or_warn(report, options)  # warns

    def _log(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Hyperparameters to every logger; the applied table as TensorBoard text, once."""
        if not trainer.loggers:
            return
        hparams = {
            "lightning_init/policy": self._policy_name or "none",
            "lightning_init/fingerprint": self._fingerprint or "unknown",
        }
        text = "\n\n".join(
            report.to_markdown() for report in self._reports if hasattr(report, "to_markdown")
        )
        # TensorBoard's HParams view reads the first session a run writes, and Lightning writes
        # the module's hyperparameters after on_fit_start: write them here, ours added.
        merged = {**_module_hparams(trainer, pl_module), **hparams}
        for logger in trainer.loggers:
            logger.log_hyperparams(merged)
            if text and trainer.is_global_zero and isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text(
                    "lightning_init/policy", text, global_step=trainer.global_step
                )


# ------------------------------------------------------------------------------- helpers


def _options(argument: str, value: Any, options_class: Any) -> Any:
    """Parse ``True``/``False``/a mapping with ``<class_name>.from_arg``; ``None`` when off."""
    if not isinstance(value, (bool, Mapping)):
        raise TypeError(
            f"InitCallback({argument}=...) takes True, False or a mapping of options, "
            f"got {value!r} of type {type(value).__name__}"
        )
    if value is False:
        return None
    return options_class.from_arg(dict(value) if isinstance(value, Mapping) else value)


def _module_hparams(trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
    """The hyperparameters Lightning logs after on_fit_start (module's, then datamodule's)."""
    merged: dict[str, Any] = {}
    if getattr(pl_module, "_log_hyperparams", False):
        merged.update(pl_module.hparams_initial)
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None and getattr(datamodule, "_log_hyperparams", False):
        merged.update(datamodule.hparams_initial)
    merged.pop("_class_path", None)
    return merged


def _load_policy(spec: Any) -> Any:
    """``None``, an ``InitPolicy`` (or anything with ``apply``) as is, else ``InitPolicy.load``."""
    if spec is None or callable(getattr(spec, "apply", None)):
        return spec
    if not isinstance(spec, (str, os.PathLike, Mapping)):
        raise TypeError(
            "InitCallback(policy=...) takes a YAML path, a preset name, a mapping, an InitPolicy"
            f" or None, got {spec!r} of type {type(spec).__name__}"
        )
    from lightning_init.policy import InitPolicy

    return InitPolicy.load(spec)


def _policy_label(policy: Any) -> str | None:
    if policy is None:
        return None
    return getattr(policy, "name", None) or type(policy).__name__


def _named_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    named = list(module.named_parameters())
    return named + [(name, buffer) for name, buffer in module.named_buffers() if buffer is not None]


def _has_tensors(module: nn.Module) -> bool:
    return bool(_named_tensors(module))


def _tensor_device(module: nn.Module) -> torch.device:
    """Where the module's tensors are now (in ``setup``: where they were built)."""
    for _, tensor in _named_tensors(module):
        if not tensor.is_meta:
            return tensor.device
    return torch.device("cpu")


def _raise_if_meta_left(module: nn.Module) -> None:
    left = [name for name, tensor in _named_tensors(module) if tensor.is_meta]
    if left:
        # Allocate them (uninitialized) so that Lightning's teardown, which moves the model to
        # the CPU, does not fail on them and hide this error.
        device = _tensor_device(module)
        for owner in module.modules():
            if any(t.is_meta for t in (*owner.parameters(False), *owner.buffers(False))):
                owner.to_empty(device=device, recurse=False)
        shown = ", ".join(left[:10]) + (f", ... ({len(left) - 10} more)" if len(left) > 10 else "")
        raise ValueError(
            f"InitCallback: after the policy, {len(left)} tensor(s) are still on the meta device:"
            f" {shown}. Add rules for them or set `default: reset` in the policy."
        )


def _modules_added_since(root: nn.Module, known_ids: set[int]) -> list[tuple[str, nn.Module]]:
    """The outermost submodules that did not exist in ``setup`` (built in configure_model)."""
    added: list[tuple[str, nn.Module]] = []
    for name, module in root.named_modules():
        if id(module) in known_ids or any(name.startswith(f"{outer}.") for outer, _ in added):
            continue
        if _has_tensors(module):
            added.append((name, module))
    return added


def _is_replicated(trainer: Trainer, module: nn.Module) -> bool:
    """Whether every rank should hold the same full tensors (DDP, no DTensor parameters)."""
    strategy_classes = {cls.__name__ for cls in type(trainer.strategy).__mro__}
    if "DDPStrategy" not in strategy_classes or "DeepSpeedStrategy" in strategy_classes:
        return False  # DeepSpeed subclasses DDPStrategy but partitions parameters (ZeRO-3)
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - old torch
        return True
    return not any(isinstance(tensor, DTensor) for _, tensor in _named_tensors(module))


def _verify_same_on_all_ranks(trainer: Trainer, module: nn.Module, fingerprint: str) -> None:
    """All-gather each rank's fingerprint; raise on every rank if they differ."""
    if trainer.world_size <= 1 or not _is_replicated(trainer, module):
        return
    halves = [int(fingerprint[:8], 16), int(fingerprint[8:], 16)]
    local = torch.tensor(halves, dtype=torch.int64, device=trainer.strategy.root_device)
    gathered = trainer.strategy.all_gather(local).reshape(-1, 2).cpu().tolist()
    per_rank = [f"{high:08x}{low:08x}" for high, low in gathered]
    if len(set(per_rank)) > 1:
        listing = ", ".join(f"rank {rank}: {value}" for rank, value in enumerate(per_rank))
        raise RuntimeError(
            "InitCallback: after init the ranks hold different weights (fingerprints of parameters"
            f" and buffers: {listing}). Training would diverge across ranks. Look for rank-"
            "dependent code in configure_model or on_fit_start, or an initializer that draws"
            " from the global RNG without the seed it is given."
        )
