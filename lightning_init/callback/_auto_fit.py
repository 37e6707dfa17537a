"""``InitCallback(policy="auto")``: the automatic policy, built when the fit has a sample batch.

:class:`AutoPolicy` stands in for the policy until ``setup``: the callback asks it to
:meth:`~AutoPolicy.resolve` against the trainer (one sample batch: ``example_input_array``,
else the first training batch through ``training_step``), then applies it like any policy.
Its YAML text goes to the run's log directory as ``init_policy.yaml`` so the run can be
reproduced with a fixed policy.

Under the callback the module's weights are about to be replaced, so the policy's measuring
passes run on the module itself (``in_place``) and the policy is then applied over them
without a snapshot: no copy of the model. An error in the user's code shows in the structural
pass, which comes first and writes nothing; a failure after it leaves the module with the
policy's values (its own init was to be replaced anyway). Under ``only_missing`` the loaded
weights must stay, and the passes run on a copy.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from lightning_init._lightning import (
    call_model,
    find_sample_batch,
    forward_input,
    is_manual_optimization,
    muted_logging,
)
from lightning_init._publishing import guarded_writes
from lightning_init.policy.auto import AutoRules, auto_rules

__all__ = ["AutoPolicy"]

_log = logging.getLogger("lightning_init")
POLICY_FILE = "init_policy.yaml"


class AutoPolicy:
    """The automatic policy of a fit: built from the module and one batch on first use.

    Example:
        >>> import lightning as L, torch
        >>> class Net(L.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
        ...     def forward(self, x):
        ...         return self.net(x)
        >>> module = Net(); module.example_input_array = torch.zeros(2, 4)
        >>> policy = AutoPolicy()
        >>> policy.resolve(None, module).rules[0].role
        'followed by relu'
        >>> _ = policy.apply(module)
    """

    name = "auto"
    seed = 0

    def __init__(self) -> None:
        self.rules: AutoRules | None = None
        self._policy: Any = None
        self._overwritten: nn.Module | None = None  # the module measured in place

    def resolve(self, trainer: Any, pl_module: nn.Module, *, in_place: bool = False) -> AutoRules:
        """Build the rules from ``pl_module`` and one sample batch (once); ``in_place``: measure
        on ``pl_module`` itself, whose weights the policy then replaces (no copy)."""
        if self.rules is not None:
            return self.rules
        device = next((p.device for p in pl_module.parameters()), None)
        sample = find_sample_batch(trainer, pl_module, device)
        if sample is None:
            raise ValueError("InitCallback(policy='auto') needs one sample batch: set "
                             "`example_input_array` or give the fit a training dataloader")
        if sample.source == "example_input_array":
            forward = None
        elif is_manual_optimization(pl_module):
            def forward(module: Any, batch: Any) -> Any:
                return call_model(module, forward_input(module, batch, "InitCallback"))
        else:
            def forward(module: Any, batch: Any) -> Any:
                with muted_logging(module):
                    return module.training_step(batch, 0)
        rules = auto_rules(pl_module, sample.batch, forward=forward, in_place=in_place)
        self._overwritten = pl_module if in_place else None
        if trainer is not None and trainer.world_size > 1:
            # the measured variables come from each rank's own batch: rank 0's serve all,
            # so that every rank applies the same policy
            rules.variables = trainer.strategy.broadcast(rules.variables, src=0)
        self.rules = rules
        self._policy = self.rules.policy()
        _log.info("InitCallback: policy 'auto' built from %s (%d rules)", sample.source,
                  len(self.rules.rules))
        if not self.rules.rules and any(True for _ in pl_module.parameters()):
            how = ("the forward of example_input_array" if forward is None
                   else "training_step on the first training batch")
            _log.warning(
                "InitCallback: policy 'auto' found no module to initialize in %s: %s ran none"
                " of its weight layers (a training_step that returns before calling the model?)."
                " The weights keep their constructors' init; set `self.example_input_array` to"
                " build the policy from the forward instead.", type(pl_module).__name__, how,
            )
        return self.rules

    def apply(self, model: nn.Module, **kwargs: Any) -> Any:
        """Apply the built policy (:meth:`resolve` first, or it resolves without a trainer);
        over a module measured in place, without a snapshot (its weights are the policy's)."""
        if self._policy is None:
            self.resolve(None, model)
        if model is self._overwritten and kwargs.get("only") is None:
            return self._policy._apply(model, atomic=False, **kwargs)
        return self._policy.apply(model, **kwargs)

    def write(self, trainer: Any) -> Path | None:
        """Write the YAML text to ``trainer.log_dir`` (rank 0), behind the library's write
        guard (a failed write warns, training goes on); the path, or ``None``."""
        log_dir = getattr(trainer, "log_dir", None)
        if self.rules is None or not log_dir or not trainer.is_global_zero:
            return None
        path = Path(log_dir) / POLICY_FILE
        with guarded_writes("the auto policy's YAML") as attempt, attempt(str(path)):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.rules.yaml())
            return path
        return None
