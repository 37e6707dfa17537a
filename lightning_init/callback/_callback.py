"""InitCallback: apply an init policy at the right moment of a Lightning ``fit``.

This module is about the life cycle and the callback's state only; the steps live in their own
modules (``_arguments``, ``_materialize``, ``_provenance``, ``_agreement``, ``_engines``,
``_publish``, ``_sharded_init``, ``_auto_fit``) and the engines are reached through their
public names.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from torch import nn
from typing_extensions import override

from lightning_init.callback._agreement import shared_seed, verify_same_on_all_ranks
from lightning_init.callback._arguments import (
    argument_repr,
    load_policy,
    only_arguments,
    policy_label,
)
from lightning_init.callback._auto_fit import AutoPolicy
from lightning_init.callback._engines import check_options, diagnostics_for, run_check
from lightning_init.callback._materialize import (
    has_tensors,
    materialize_lazy,
    modules_added_since,
    raise_if_meta_left,
    visible_through_teardown,
)
from lightning_init.callback._provenance import keeps_loaded_weights, loaded_parts_kept
from lightning_init.callback._publish import announce, publish_record
from lightning_init.callback._sharded_init import defer_to_materialization
from lightning_init.check import CheckOptions, InitCheckReport
from lightning_init.check.metrics import check_metrics
from lightning_init.diagnostics import DiagnosticsOptions, TrainingDiagnostics
from lightning_init.fingerprint import weights_fingerprint
from lightning_init.policy import InitPolicy
from lightning_init.runtime.distributed import full_fingerprint

__all__ = ["InitCallback"]

_P = ParamSpec("_P")


@dataclass
class _Record:
    """What :meth:`InitCallback.state_dict` saves about the initialization."""

    applied: bool = False  # the first fit has initialized (or resumed) the weights
    policy_name: str | None = None
    fingerprint: str | None = None  # of the weights right after the initialization
    seed: int | None = None  # the rank-shared seed given to the policy


@dataclass
class _Fit:
    """What one ``fit``'s ``setup`` leaves for its ``on_fit_start``; never pickled."""

    # The modules initialized in setup, when this fit initializes (held: their ids stay unique).
    known_modules: list[nn.Module] | None = None
    # Why setup could not materialize the lazy modules (on_fit_start does, then initializes all).
    lazy_deferred: str | None = None
    keep_loaded: bool = False  # the weights were loaded or trained before: the policy is skipped
    loaded: set[str] = field(default_factory=set)  # tensors loaded into parts: kept, not written
    state_loaded: bool = False  # load_state_dict ran: the fit resumes an initialized run
    reports: list[object] = field(default_factory=list)  # what the policy did, for the loggers


@dataclass
class _Left:
    """What a ``fit`` that stopped between ``setup`` and ``on_fit_start`` left: the weights'
    local fingerprint, and that fit's setup (the modules it knew, the policy's reports)."""

    fingerprint: str
    fit: _Fit


def _to_diagnostics(
    hook: Callable[Concatenate[TrainingDiagnostics, _P], None],
) -> Callable[Concatenate[InitCallback, _P], None]:
    """An ``InitCallback`` hook that passes its arguments on to the same hook of the
    diagnostics, when they are on."""
    name = hook.__name__

    def forward(self: InitCallback, /, *args: _P.args, **kwargs: _P.kwargs) -> None:
        if self._diagnostics is not None:
            getattr(self._diagnostics, name)(*args, **kwargs)

    forward.__name__, forward.__qualname__ = name, f"InitCallback.{name}"
    forward.__doc__ = f"Passes the hook on to :meth:`TrainingDiagnostics.{name}`."
    return forward


class InitCallback(Callback):
    """Applies an init policy at the start of the first ``fit``, checks the init, and watches
    early training.

    - ``fit`` only, once: ``validate``, ``test`` and ``predict`` never change a weight, and a
      second ``fit`` with the same callback continues training.
    - Never over a checkpoint: when ``fit`` resumes from ``ckpt_path``, its weights win. The
      checkpoint holds the callback's state (policy name, seed, weights' fingerprint).
    - Modules built in ``configure_model`` and lazy modules (``nn.LazyLinear``, materialized by
      one forward of ``example_input_array`` or of the first training batch) are initialized
      too. Build lazy modules in ``__init__``, not in ``configure_model``.
    - Every rank gets the same weights: rank 0 draws the seed (unless the policy has one) and
      the numbers of each parameter follow from ``(seed, qualified name, shape)``. Under DDP,
      ranks that end up with different weights raise ``RuntimeError``.
    - Models built on the meta device or under ``trainer.init_module(empty_init=True)`` get the
      policy as their only initialization; give such a policy ``default: reset`` (or rules for
      every parameter).
    - The loggers get the hyperparameters ``lightning_init/policy`` and
      ``lightning_init/fingerprint``, and TensorBoard the table of what was applied.

    Sharded training under ``ModelParallelStrategy`` (FSDP2, tensor parallel) is supported: the
    fingerprint, the check and the diagnostics are the full tensors', and an empty-init model
    gets the policy as the strategy materializes its shards. ``FSDPStrategy`` and DeepSpeed are
    not verified (docs/callback.md, "Sharded training").

    Args:
        policy: a YAML path, a preset name, a mapping, an :class:`~lightning_init.InitPolicy`,
            ``"auto"`` (built from the module and one sample batch, see
            :meth:`~lightning_init.InitPolicy.auto`; its YAML goes to the log directory as
            ``init_policy.yaml``), or ``None`` to leave the weights alone (the check and the diagnostics still run).
        check: ``True``, ``False``, :class:`~lightning_init.check.CheckOptions` or a mapping
            of them (e.g. ``{"on_fail": "raise"}``). Runs once, before the first training step.
        diagnostics: ``True``, ``False``,
            :class:`~lightning_init.diagnostics.DiagnosticsOptions` or a mapping of them
            (e.g. ``{"every_n_steps": 10}``).
        only_missing: fine-tuning: apply the policy only to the parameters a checkpoint did
            not provide, and keep every loaded one bit for bit. ``True`` reads Hugging Face's
            loading marks (``from_pretrained`` marks what it loaded: a new head is
            unmarked); a state dict or a checkpoint path gives the provided names, relative
            to the LightningModule. See :func:`lightning_init.policy.missing_parameters`.

    Raises:
        TypeError: ``policy``, ``check`` or ``diagnostics`` is of a type it cannot be.
        PolicyError: the policy cannot be loaded (raised here, before any training).
        OptionError: an unknown or invalid check or diagnostics option.

    Example:
        >>> from lightning.pytorch import Trainer
        >>> callback = InitCallback("kaiming_relu", check={"on_fail": "raise"},
        ...                         diagnostics={"every_n_steps": 10})
        >>> trainer = Trainer(callbacks=[callback], logger=False)  # then trainer.fit(model)
        >>> callback
        InitCallback(policy='kaiming_relu', check={'on_fail': 'raise'}, diagnostics={'every_n_steps': 10})
        >>> callback.state_dict()["applied"], callback.state_key
        (False, "InitCallback{'policy': 'kaiming_relu'}")
    """  # noqa: E501

    def __init__(
        self,
        policy: str | dict[str, Any] | InitPolicy | None = None,
        check: bool | dict[str, Any] | CheckOptions = True,
        diagnostics: bool | dict[str, Any] | DiagnosticsOptions = True,
        overwrite_loaded: bool = False,
        only_missing: bool | str | os.PathLike[str] | Mapping[str, Any] = False,
    ) -> None:
        self._arguments = {"policy": policy, "check": check, "diagnostics": diagnostics}
        if only_missing is not False:
            self._arguments["only_missing"] = only_missing
        self._only_missing = only_missing
        if not isinstance(overwrite_loaded, bool):
            raise TypeError(
                f"InitCallback(overwrite_loaded=...) takes True or False, got {overwrite_loaded!r}"
            )
        self._overwrite_loaded = overwrite_loaded
        self._check_asked = isinstance(check, (Mapping, CheckOptions))
        # policy="auto" is built during the fit: the callback resolves it, then applies it
        self._auto = AutoPolicy() if isinstance(policy, str) and policy == "auto" else None
        self._policy = self._auto or load_policy(policy)
        self._check_options = check_options(check)
        self._diagnostics = diagnostics_for(diagnostics)
        self._record = _Record()
        self._fit = _Fit()
        # a tuner's fit (Tuner.lr_find, scale_batch_size) ends before on_fit_start and puts
        # the weights of its setup back: the next fit knows them as this policy's
        self._left: _Left | None = None
        self._check_report: InitCheckReport | None = None

    @property
    def check_report(self) -> InitCheckReport | None:
        """The :class:`~lightning_init.InitCheckReport` of the last fit's check, or ``None``.

        Example:
            >>> InitCallback(check=False, diagnostics=False).check_report is None
            True
        """
        return self._check_report

    def __repr__(self) -> str:
        shown = {key: argument_repr(value) for key, value in self._arguments.items()}
        if not isinstance(self._arguments["policy"], (str, os.PathLike, Mapping, type(None))):
            shown["policy"] = repr(policy_label(self._policy))
        if self._overwrite_loaded:
            shown["overwrite_loaded"] = "True"
        listing = ", ".join(f"{key}={value}" for key, value in shown.items())
        return f"{type(self).__name__}({listing})"

    def __getstate__(self) -> dict[str, Any]:
        # per fit: never pickled with the modules
        return {**self.__dict__, "_fit": _Fit(), "_left": None}

    # ----------------------------------------------------------------------------- state

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(policy=policy_label(self._policy))

    @override
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = dataclasses.asdict(self._record)
        if self._diagnostics is not None:
            state["diagnostics"] = self._diagnostics.state_dict()
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._record = _Record(
            applied=bool(state_dict.get("applied", False)),
            policy_name=state_dict.get("policy_name"),
            fingerprint=state_dict.get("fingerprint"),
            seed=state_dict.get("seed"),
        )
        self._fit.state_loaded = True
        if self._diagnostics is not None and "diagnostics" in state_dict:
            self._diagnostics.load_state_dict(state_dict["diagnostics"])

    # ------------------------------------------------------------------------ life cycle

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._fit, left, self._left = _Fit(), self._left, None
        # weights a tuner's fit left are taken up: not re-drawn (see _policy_left)
        if (stage == "fit" and not self._record.applied
                and not self._policy_left(left, pl_module)):
            # only_missing names what to initialize: the loaded weights are kept anyway
            overwrite = self._overwrite_loaded or self._only_missing is not False
            self._fit.keep_loaded = keeps_loaded_weights(
                trainer, pl_module, self._policy, overwrite=overwrite
            )
            if not self._fit.keep_loaded:
                self._fit.loaded = loaded_parts_kept(
                    trainer, pl_module, self._policy, overwrite=overwrite
                )
            self._initialize(trainer, pl_module)
            deferred = self._fit.lazy_deferred is not None
            self._fit.known_modules = [] if deferred else list(pl_module.modules())
        if self._diagnostics is not None:
            self._diagnostics.setup(trainer, pl_module, stage)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        known_modules, self._fit.known_modules = self._fit.known_modules, None
        if known_modules is None:
            return
        resuming = trainer.ckpt_path is not None or self._fit.state_loaded
        if resuming:
            self._resume()
        else:
            if self._fit.lazy_deferred is not None:
                materialize_lazy(trainer, pl_module, self._policy, deferred=True)
            self._initialize_added(trainer, pl_module, known_modules)
        if trainer.is_global_zero:
            announce(trainer, self._fit.reports)
        if not resuming and self._check_options is not None:
            self._check_report = run_check(
                trainer, pl_module, self._check_options, asked=self._check_asked
            )
        self._log(trainer, pl_module)  # after the check: its numbers are HParams metrics

    on_train_start = _to_diagnostics(TrainingDiagnostics.on_train_start)
    on_train_batch_start = _to_diagnostics(TrainingDiagnostics.on_train_batch_start)
    on_before_optimizer_step = _to_diagnostics(TrainingDiagnostics.on_before_optimizer_step)
    on_train_batch_end = _to_diagnostics(TrainingDiagnostics.on_train_batch_end)
    on_exception = _to_diagnostics(TrainingDiagnostics.on_exception)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        fit = self._fit
        if (stage == "fit" and fit.known_modules is not None and not self._record.applied
                and self._policy is not None and not fit.keep_loaded
                and fit.lazy_deferred is None):  # setup initialized, on_fit_start did not run
            self._left = _Left(weights_fingerprint(pl_module), fit)
        self._fit = _Fit()
        if self._diagnostics is not None:
            self._diagnostics.teardown(trainer, pl_module, stage)

    # --------------------------------------------------------------------------- helpers

    def _policy_left(self, left: _Left | None, pl_module: LightningModule) -> bool:
        """Whether the weights are still those a fit that stopped before ``on_fit_start`` (a
        tuner's) left: then they are this policy's, not re-drawn, and that fit's setup is
        taken up (its seed; the modules it knew, so that ``configure_model``'s get the
        policy)."""
        if left is None or weights_fingerprint(pl_module) != left.fingerprint:
            return False
        self._fit = dataclasses.replace(left.fit, state_loaded=False)
        return True

    def _initialize(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Materialize lazy modules, then apply the policy to what exists in ``setup``."""
        self._fit.lazy_deferred = materialize_lazy(trainer, pl_module, self._policy)
        if self._policy is None or self._fit.keep_loaded:
            return
        self._record.seed = shared_seed(trainer, self._policy)
        if defer_to_materialization(
            trainer, pl_module, self._policy, self._record.seed, self._fit.reports
        ):
            return  # the strategy applies it to each module's shards, after configure_model
        if has_tensors(pl_module) and self._fit.lazy_deferred is None:
            only = only_arguments(pl_module, self._only_missing, self._fit.loaded)
            if self._auto is not None:  # in place when the policy replaces all
                self._auto.resolve(trainer, pl_module, in_place=not only)
            with visible_through_teardown(pl_module):
                self._fit.reports.append(
                    self._policy.apply(pl_module, seed=self._record.seed, **only)
                )
            raise_if_meta_left(pl_module)

    def _initialize_added(
        self, trainer: Trainer, pl_module: LightningModule, known_modules: list[nn.Module]
    ) -> None:
        """Apply the policy to the modules built since ``setup``; record the weights."""
        if self._policy is not None and not self._fit.keep_loaded:
            if self._auto is not None:
                self._auto.resolve(trainer, pl_module)
                self._auto.write(trainer)
            known = {id(module) for module in known_modules}
            added = modules_added_since(pl_module, known)
            only = (only_arguments(pl_module, self._only_missing, self._fit.loaded) if added
                    else {})
            for name, module in added:
                within = {key: [n for n in names if n.startswith(name + ".")]
                          for key, names in only.items()}
                with visible_through_teardown(pl_module):
                    self._fit.reports.append(
                        self._policy.apply(module, seed=self._record.seed, prefix=name, **within)
                    )
        fingerprint = full_fingerprint(pl_module)  # of the full tensors: equal on every rank
        verify_same_on_all_ranks(trainer, pl_module, fingerprint)
        self._record.applied = True
        self._record.policy_name = None if self._fit.keep_loaded else policy_label(self._policy)
        self._record.fingerprint = fingerprint

    def _resume(self) -> None:
        """The checkpoint's weights win; a checkpoint without our state leaves them unknown."""
        self._record.applied = True
        if not self._fit.state_loaded:
            self._record.policy_name = policy_label(self._policy)
            self._record.fingerprint = self._record.seed = None
        self._fit.reports = []

    def _log(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Hyperparameters to every logger; the applied table as TensorBoard text, once."""
        if not trainer.loggers:
            return
        hparams = {
            "lightning_init/policy": self._record.policy_name or "none",
            "lightning_init/fingerprint": self._record.fingerprint or "unknown",
        }
        appendix = ""
        if self._auto is not None and self._auto.rules is not None:
            appendix = "\n\n```yaml\n" + self._auto.rules.yaml() + "```\n"
        metrics = {} if self._check_report is None else check_metrics(self._check_report)
        publish_record(trainer, pl_module, hparams, self._fit.reports, metrics, appendix)

