"""InitCallback: apply an init policy at the right moment of a Lightning ``fit``.

This module is about the life cycle only; the policy engine, the check and the diagnostics
live in their own modules and are reached through their public names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast, runtime_checkable

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn
from torch.nn.parameter import is_lazy
from typing_extensions import override

from lightning_init._auto_fit import AutoPolicy
from lightning_init._distributed import full_fingerprint, is_dtensor, local_fingerprints
from lightning_init._lightning import SampleUnavailable, find_sample_batch, run_sample_forward
from lightning_init._log import LOGGER
from lightning_init._provenance import weights_origin
from lightning_init._publishing import guarded_writes
from lightning_init._sharded_init import defer_to_materialization
from lightning_init.check import (
    CheckOptions,
    InitCheckReport,
    check_lightning_module,
    publish_check_report,
    raise_or_warn,
)
from lightning_init.check._metrics import check_metrics
from lightning_init.diagnostics import DiagnosticsOptions, TrainingDiagnostics
from lightning_init.errors import InitCheckError
from lightning_init.policy import InitPolicy

__all__ = ["InitCallback"]

_SEED_BOUND = 2**31 - 1
_log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_O = TypeVar("_O")


class _Policy(Protocol):
    """What the callback needs of a policy: :class:`~lightning_init.InitPolicy`, or any object
    with its ``apply`` (a ``name`` and a ``seed`` are read when present)."""

    def apply(self, model: nn.Module, *, seed: int | None = ..., prefix: str = ...) -> object: ...


@runtime_checkable
class _Markdown(Protocol):
    """A report that renders as a Markdown table (:class:`~lightning_init.policy.InitReport`)."""

    def to_markdown(self) -> str: ...


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
    state_loaded: bool = False  # load_state_dict ran: the fit resumes an initialized run
    reports: list[object] = field(default_factory=list)  # what the policy did, for the loggers


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
        self._policy = _load_policy(policy)
        self._check_options = CheckOptions.from_arg(_options_arg("check", check, CheckOptions))
        diagnostics_options = DiagnosticsOptions.from_arg(
            _options_arg("diagnostics", diagnostics, DiagnosticsOptions)
        )
        self._diagnostics = (
            None if diagnostics_options is None else TrainingDiagnostics(diagnostics_options)
        )
        self._record = _Record()
        self._fit = _Fit()
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
        shown = {key: _shown(value) for key, value in self._arguments.items()}
        if not isinstance(self._arguments["policy"], (str, os.PathLike, Mapping, type(None))):
            shown["policy"] = repr(_policy_label(self._policy))
        if self._overwrite_loaded:
            shown["overwrite_loaded"] = "True"
        listing = ", ".join(f"{key}={value}" for key, value in shown.items())
        return f"{type(self).__name__}({listing})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fit": _Fit()}  # per fit: never pickled with the modules

    # ----------------------------------------------------------------------------- state

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(policy=_policy_label(self._policy))

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
        self._fit = _Fit()
        if stage == "fit" and not self._record.applied:
            self._fit.keep_loaded = _keeps_loaded_weights(
                trainer, pl_module, self._policy,
                # only_missing names what to initialize: the loaded weights are kept anyway
                overwrite=self._overwrite_loaded or self._only_missing is not False,
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
                _materialize_lazy(trainer, pl_module, self._policy, deferred=True)
            self._initialize_added(trainer, pl_module, known_modules)
        if trainer.is_global_zero:
            _announce(trainer, self._fit.reports)
        if not resuming and self._check_options is not None:
            self._check_report = _run_check(
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
        self._fit = _Fit()
        if self._diagnostics is not None:
            self._diagnostics.teardown(trainer, pl_module, stage)

    # --------------------------------------------------------------------------- helpers

    def _initialize(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Materialize lazy modules, then apply the policy to what exists in ``setup``."""
        self._fit.lazy_deferred = _materialize_lazy(trainer, pl_module, self._policy)
        if self._policy is None or self._fit.keep_loaded:
            return
        self._record.seed = self._shared_seed(trainer)
        if defer_to_materialization(
            trainer, pl_module, self._policy, self._record.seed, self._fit.reports
        ):
            return  # the strategy applies it to each module's shards, after configure_model
        if _has_tensors(pl_module) and self._fit.lazy_deferred is None:
            only = self._only(pl_module)
            if isinstance(self._policy, AutoPolicy):  # in place when the policy replaces all
                self._policy.resolve(trainer, pl_module, in_place=not only)
            with _visible_through_teardown(pl_module):
                self._fit.reports.append(self._policy.apply(pl_module, seed=self._record.seed,
                                                            **only))
            _raise_if_meta_left(pl_module)

    def _initialize_added(
        self, trainer: Trainer, pl_module: LightningModule, known_modules: list[nn.Module]
    ) -> None:
        """Apply the policy to the modules built since ``setup``; record the weights."""
        if self._policy is not None and not self._fit.keep_loaded:
            if isinstance(self._policy, AutoPolicy):
                self._policy.resolve(trainer, pl_module)
                self._policy.write(trainer)
            known = {id(module) for module in known_modules}
            added = _modules_added_since(pl_module, known)
            only = self._only(pl_module) if added else {}
            for name, module in added:
                within = {key: [n for n in names if n.startswith(name + ".")]
                          for key, names in only.items()}
                with _visible_through_teardown(pl_module):
                    self._fit.reports.append(
                        self._policy.apply(module, seed=self._record.seed, prefix=name, **within)
                    )
        fingerprint = full_fingerprint(pl_module)  # of the full tensors: equal on every rank
        _verify_same_on_all_ranks(trainer, pl_module, fingerprint)
        self._record.applied = True
        self._record.policy_name = None if self._fit.keep_loaded else _policy_label(self._policy)
        self._record.fingerprint = fingerprint

    def _resume(self) -> None:
        """The checkpoint's weights win; a checkpoint without our state leaves them unknown."""
        self._record.applied = True
        if not self._fit.state_loaded:
            self._record.policy_name = _policy_label(self._policy)
            self._record.fingerprint = self._record.seed = None
        self._fit.reports = []

    def _only(self, pl_module: LightningModule) -> dict[str, list[str]]:
        """``{"only": names}`` for ``apply`` under ``only_missing``, else ``{}``."""
        if self._only_missing is False:
            return {}
        from lightning_init.policy import missing_parameters

        return {"only": missing_parameters(pl_module, self._only_missing)}

    def _shared_seed(self, trainer: Trainer) -> int | None:
        """Rank 0's draw, broadcast; ``None`` when the policy has its own seed."""
        if getattr(self._policy, "seed", None) is not None:
            return None
        seed = int(torch.randint(_SEED_BOUND, (1,)))  # every rank draws: RNG streams stay aligned
        return int(trainer.strategy.broadcast(seed, src=0))

    def _log(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Hyperparameters to every logger; the applied table as TensorBoard text, once."""
        if not trainer.loggers:
            return
        hparams = {
            "lightning_init/policy": self._record.policy_name or "none",
            "lightning_init/fingerprint": self._record.fingerprint or "unknown",
        }
        text = "\n\n".join(
            report.to_markdown() for report in self._fit.reports if isinstance(report, _Markdown)
        )
        if text and isinstance(self._policy, AutoPolicy) and self._policy.rules is not None:
            text += "\n\n```yaml\n" + self._policy.rules.yaml() + "```\n"
        # TensorBoard's HParams view reads the first session a run writes, and Lightning writes
        # the module's hyperparameters after on_fit_start: write them here, ours added.
        merged = {**_module_hparams(trainer, pl_module), **hparams}
        metrics = {} if self._check_report is None else check_metrics(self._check_report)
        with guarded_writes("the initialization's record") as attempt:
            for logger in trainer.loggers:
                with attempt(f"the hyperparameters to {type(logger).__name__}"):
                    _log_hyperparams(logger, merged, metrics)
                if text and trainer.is_global_zero and isinstance(logger, TensorBoardLogger):
                    with attempt("TensorBoard text 'lightning_init/policy'"):
                        logger.experiment.add_text(
                            "lightning_init/policy", text, global_step=trainer.global_step
                        )


# ------------------------------------------------------------------ loaded weights, the check


def _keeps_loaded_weights(
    trainer: Trainer, pl_module: LightningModule, policy: _Policy | None, *, overwrite: bool
) -> bool:
    """Whether the policy is skipped because the weights were loaded or trained before this
    fit (rank 0 decides); says so on rank 0 either way."""
    if policy is None:
        return False
    origin = weights_origin(pl_module) if trainer.is_global_zero else None
    origin = trainer.strategy.broadcast(origin, src=0)
    if origin is None:
        return False
    name, label = type(pl_module).__name__, _policy_label(policy)
    if overwrite:
        _log.warning(
            "InitCallback: %s's weights were %s; policy %r overwrites them as asked"
            " (overwrite_loaded=True).", name, origin, label,
        )
        return False
    if trainer.is_global_zero:
        warnings.warn(
            f"InitCallback: {name}'s weights were {origin} before this fit: policy {label!r}"
            " is NOT applied and they are kept. To initialize them anyway, pass"
            " InitCallback(..., overwrite_loaded=True).",
            UserWarning,
            stacklevel=2,
        )
    return True


def _materialize_lazy(
    trainer: Trainer, pl_module: LightningModule, policy: _Policy | None, *, deferred: bool = False
) -> str | None:
    """One forward of a sample batch materializes the lazy modules. In ``setup`` a training
    dataloader that cannot be built yet (its data made in ``LightningModule.setup``) defers this
    to ``on_fit_start``: the return says why; ``None`` when done or not needed."""
    lazy = [name for name, tensor in _named_tensors(pl_module) if is_lazy(tensor)]
    if not lazy:
        return None
    try:
        sample = find_sample_batch(trainer, pl_module, _tensor_device(pl_module))
        why = "no sample batch"
    except SampleUnavailable as error:
        sample, why = None, str(error)
    except Exception as error:
        if deferred:
            raise
        reason = f"{type(error).__name__}: {error}"
        _log.info(
            "InitCallback: no sample batch in setup (%s); the lazy modules are materialized and"
            " initialized in on_fit_start.", reason,
        )
        return reason
    if sample is None:
        if policy is None:
            return None  # nothing to initialize: leave them to the first training step
        raise ValueError(
            f"InitCallback: {type(pl_module).__name__} has lazy parameters ({', '.join(lazy)})"
            f" and no sample batch to materialize them ({why}): set `example_input_array` or"
            " give `fit` a training dataloader."
        )
    run_sample_forward(pl_module, sample)
    return None


def _run_check(
    trainer: Trainer, pl_module: LightningModule, options: CheckOptions, *, asked: bool
) -> InitCheckReport | None:
    """The check on every rank; ``on_fail="raise"`` raises on all ranks if one fails. ``None``
    when it could not run (one line said why)."""
    report = _checked(trainer, pl_module, options, asked)
    if report is not None and trainer.is_global_zero:
        publish_check_report(report, trainer, options)
    failed = report is not None and not report.ok and options.on_fail == "raise"
    if trainer.strategy.reduce_boolean_decision(failed, all=False) and not failed:
        raise InitCheckError("the init check failed on another rank; see rank 0's report")
    if report is not None and (failed or (not report.ok and trainer.is_global_zero)):
        raise_or_warn(report, options)  # raises when it failed here, else warns
    return report


def _checked(
    trainer: Trainer, pl_module: LightningModule, options: CheckOptions, asked: bool
) -> InitCheckReport | None:
    """The check's report, or ``None`` when it cannot run: then one line says why."""
    try:
        sample = find_sample_batch(trainer, pl_module, pl_module.device, example_first=False)
        why = "no sample batch: no training dataloader and no `example_input_array`"
    except SampleUnavailable as error:
        sample, why = None, str(error)
    if sample is None and getattr(pl_module, "example_input_array", None) is None:
        _step_aside(trainer, why, asked)
        return None
    try:
        with isolate_rng():
            return check_lightning_module(
                pl_module, None if sample is None else sample.batch, options
            )
    except Exception as error:  # the check never stops a valid fit
        first_line = (str(error).strip().splitlines() or [""])[0]
        _step_aside(trainer, f"{type(error).__name__}: {first_line}", asked)
        return None


def _step_aside(trainer: Trainer, why: str, asked: bool) -> None:
    """One line on rank 0: a warning when the user configured the check, else a log line."""
    if not trainer.is_global_zero:
        return
    message = f"InitCallback: the init check did not run ({why}); training goes on."
    if asked:
        warnings.warn(message, UserWarning, stacklevel=4)
    else:
        _log.warning(message)


# ------------------------------------------------------------------------------- helpers


def _announce(trainer: Trainer, reports: list[object]) -> None:
    """One console line per policy report: what was set, what was left, where the table is."""
    tensorboard = any(isinstance(logger, TensorBoardLogger) for logger in trainer.loggers)
    where = "TensorBoard, TEXT tab, lightning_init/policy" if tensorboard else None
    for report in reports:
        summary = getattr(report, "summary", None)
        if callable(summary):
            LOGGER.info(summary(where))


def _options_arg(
    argument: str, value: bool | Mapping[str, Any] | _O, options_class: type[_O]
) -> bool | dict[str, Any] | _O:
    """``value`` for ``<options_class>.from_arg`` (a mapping copied to a ``dict``), or a
    ``TypeError`` in the user's words."""
    if not isinstance(value, (bool, Mapping, options_class)):
        raise TypeError(
            f"InitCallback({argument}=...) takes True, False or a mapping of options (or "
            f"{options_class.__name__}), got {value!r} of type {type(value).__name__}"
        )
    return dict(value) if isinstance(value, Mapping) else value


def _shown(value: object) -> str:
    """An argument as ``repr`` shows it; options objects with their non-default fields only."""
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return repr(value)
    defaults = type(value)()
    changed = [
        f"{option.name}={getattr(value, option.name)!r}"
        for option in dataclasses.fields(value)
        if getattr(value, option.name) != getattr(defaults, option.name)
    ]
    return f"{type(value).__name__}({', '.join(changed)})"


def _log_hyperparams(logger: Any, params: dict[str, Any], metrics: dict[str, float]) -> None:
    """``params``, with ``metrics`` as TensorBoard HParams metrics (runs sort by them); other
    loggers get the metrics as values at step 0."""
    if not metrics:
        logger.log_hyperparams(params)
    elif isinstance(logger, TensorBoardLogger):
        if getattr(logger, "_default_hp_metric", False):
            metrics = {"hp_metric": -1, **metrics}  # Lightning's placeholder, kept
        logger.log_hyperparams(params, metrics=metrics, step=0)
    else:
        logger.log_hyperparams(params)
        logger.log_metrics(metrics, step=0)


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


def _load_policy(spec: object) -> _Policy | None:
    """``None``, an ``InitPolicy`` (or anything with ``apply``) as is, else ``InitPolicy.load``."""
    if spec is None:
        return None
    if spec == "auto":
        return AutoPolicy()
    if callable(getattr(spec, "apply", None)):
        return cast(_Policy, spec)
    if not isinstance(spec, (str, os.PathLike, Mapping)):
        raise TypeError(
            "InitCallback(policy=...) takes a YAML path, a preset name, a mapping, an InitPolicy"
            f" or None, got {spec!r} of type {type(spec).__name__}"
        )
    return InitPolicy.load(spec)


def _policy_label(policy: _Policy | None) -> str | None:
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


@contextlib.contextmanager
def _visible_through_teardown(module: nn.Module) -> Iterator[None]:
    """On an error, allocate the meta tensors the failed policy left (uninitialized), so that
    Lightning's teardown, which moves the model to the CPU, does not fail on them and replace
    the error with its own ``NotImplementedError``."""
    try:
        yield
    except BaseException:
        _allocate_meta(module)
        raise


def _allocate_meta(module: nn.Module) -> None:
    from lightning_init.policy.apply import materialize  # only meta tensors are replaced

    materialize(module, [], recurse=True, device=_tensor_device(module))


def _raise_if_meta_left(module: nn.Module) -> None:
    left = [name for name, tensor in _named_tensors(module) if tensor.is_meta]
    if left:
        _allocate_meta(module)  # so that Lightning's teardown does not hide this error
        shown = ", ".join(left[:10]) + (f", ... ({len(left) - 10} more)" if len(left) > 10 else "")
        raise ValueError(
            f"InitCallback: after the policy, {len(left)} tensor(s) are still on the meta device:"
            f" {shown}. Add rules for them or set `default: reset` in the policy."
        )


def _modules_added_since(root: nn.Module, known_ids: set[int]) -> list[tuple[str, nn.Module]]:
    """The outermost submodules that did not exist in ``setup`` (built in configure_model)."""
    if id(root) not in known_ids:
        return [("", root)] if _has_tensors(root) else []
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
    """All-gather each rank's fingerprint; raise on every rank if they differ. For a sharded
    model, the ranks that hold the same shards (data-parallel replicas) are compared instead."""
    if trainer.world_size <= 1:
        return
    if not _is_replicated(trainer, module):
        if any(is_dtensor(tensor) for _, tensor in _named_tensors(module)):
            _verify_same_shards_on_replicas(trainer, module)
        return
    gathered = _gather_fingerprints(trainer, [(0, fingerprint)])
    per_rank = [f"{high:08x}{low:08x}" for [[_, high, low]] in gathered]
    if len(set(per_rank)) > 1:
        listing = ", ".join(f"rank {rank}: {value}" for rank, value in enumerate(per_rank))
        raise RuntimeError(
            "InitCallback: after init the ranks hold different weights (fingerprints of parameters"
            f" and buffers: {listing}). Training would diverge across ranks. Look for rank-"
            "dependent code in configure_model or on_fit_start, or an initializer that draws"
            " from the global RNG without the seed it is given."
        )


def _gather_fingerprints(trainer: Trainer, rows: list[tuple[int, str]]) -> list[list[list[int]]]:
    """Every rank's ``[key, fingerprint high, fingerprint low]`` rows, by rank (every rank
    passes the same number of rows)."""
    halves = [[key, int(value[:8], 16), int(value[8:], 16)] for key, value in rows]
    local = torch.tensor(halves, dtype=torch.int64, device=trainer.strategy.root_device)
    return trainer.strategy.all_gather(local).reshape(-1, len(rows), 3).cpu().tolist()


def _verify_same_shards_on_replicas(trainer: Trainer, module: nn.Module) -> None:
    """For each tensor, compare the local shards' fingerprints of the ranks that hold the same
    shard coordinates (data-parallel replicas); raise on every rank if a group disagrees."""
    local = local_fingerprints(module)
    if not local:
        return
    gathered = _gather_fingerprints(trainer, [(key, value) for _, key, value in local])
    differing: dict[str, list[str]] = {}
    for index, (name, _, _) in enumerate(local):
        groups: dict[int, dict[int, str]] = {}
        for rank, rows in enumerate(gathered):
            key, high, low = rows[index]
            groups.setdefault(key, {})[rank] = f"{high:08x}{low:08x}"
        for ranks in groups.values():
            if len(set(ranks.values())) > 1:
                differing.setdefault(name, []).append(
                    ", ".join(f"rank {r}: {v}" for r, v in ranks.items()))
    if differing:
        shown = list(differing.items())[:5]
        listing = "; ".join(f"{name} ({' / '.join(sets)})" for name, sets in shown)
        more = f"; ... ({len(differing) - 5} more)" if len(differing) > 5 else ""
        raise RuntimeError(
            "InitCallback: after init, ranks that hold the same shards (replicas along a mesh"
            " dimension that does not shard the tensor) hold different values (fingerprints of"
            f" their local shards: {listing}{more}). Training would diverge across these ranks."
            " Look for rank-dependent code in configure_model or on_fit_start, or an initializer"
            " that draws from the global RNG without the seed it is given."
        )
