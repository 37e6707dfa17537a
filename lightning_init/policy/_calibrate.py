"""The measured variables of the automatic policy: passes over a policy-initialized copy.

Some of the automatic policy's scales depend on values that only a forward pass shows: the rms
of the features a head reads (a final norm, a pooled feature, a hidden state the model
rescales), the rms of the residual stream the branches add to, the spread of the attention
logits where a model leaves out the ``1 / sqrt(d_k)`` of scaled dot-product attention (T5 folds
it into the query's init), and the initial loss the head's scale gives once ties are in place.
Each is read from the anatomy of a copy of the model initialized by the policy as it stands
(:func:`measured_anatomy`), so that it sees the values it will see, and becomes a policy
variable: the YAML then reproduces the init without the sample batch.

Example:
    >>> import torch
    >>> from lightning_init import InitPolicy
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> policy = InitPolicy.from_dict({"rules": [{"match": {"type": "Linear"},
    ...                                           "weight": {"init": "normal", "std": 0.5}}]})
    >>> anatomy, logits = measured_anatomy(net, torch.ones(8, 4), None, policy, "2")
    >>> anatomy.layers["0"].input_rms, tuple(logits.shape)  # the sample itself; the head's
    (1.0, (8, 2))
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lightning_init.runtime.hooks import HookHandles

__all__ = ["label_free_loss", "logit_scale_for", "measured_anatomy"]


def _initialized_copy(model: nn.Module, policy: Any) -> nn.Module:
    """A deep copy initialized by ``policy``. A LightningModule's copy keeps its trainer
    (``LightningModule.__getstate__`` drops it), so that a ``training_step`` reading
    ``self.trainer`` runs on the copy as on the module."""
    trial = copy.deepcopy(model)
    if getattr(model, "_trainer", None) is not None and getattr(trial, "_trainer", 0) is None:
        trial._trainer = model._trainer
    with torch.random.fork_rng(devices=[]):
        policy.apply(trial)
    return trial


def measured_anatomy(model: nn.Module, sample: Any, forward: Callable[..., Any] | None,
                     policy: Any, head: str | None = None) -> tuple[Any, torch.Tensor | None]:
    """The anatomy of a copy of ``model`` initialized by ``policy`` (every rms, branch ratio
    and attention logit std as the policy leaves them, ties in place), and the output of
    module ``head`` in that pass (its logits), if given and called."""
    from lightning_init.anatomy import anatomy_of

    trial = _initialized_copy(model, policy)
    found: list[torch.Tensor] = []

    def record(_m: nn.Module, _inputs: Any, output: Any) -> None:
        if not found and isinstance(output, torch.Tensor) and output.is_floating_point():
            found.append(output.detach())

    with HookHandles() as handles:
        if head is not None:
            handles.add(trial.get_submodule(head).register_forward_hook(record))
        anatomy = anatomy_of(trial, sample, forward=forward)
    return anatomy, (found[0] if found else None)


def label_free_loss(logits: torch.Tensor, scale: float = 1.0) -> float:
    """The cross-entropy of ``scale * logits`` (classes on the last dimension) against
    uniformly drawn labels: ``mean(logsumexp(z) - mean(z))``, ln(C) for uniform predictions.

    Example:
        >>> import math
        >>> round(label_free_loss(torch.zeros(4, 10)), 4) == round(math.log(10), 4)
        True
    """
    z = scale * logits.detach().float().reshape(-1, logits.shape[-1])
    return float((torch.logsumexp(z, dim=-1) - z.mean(dim=-1)).mean())


def logit_scale_for(logits: torch.Tensor, target: float) -> float:
    """The factor ``s <= 1`` with ``label_free_loss(logits, s) = target`` (1 when the loss is
    already at most ``target``), by bisection: the loss grows with ``s`` (its derivative is
    the softmax-weighted mean logit less the plain mean, never negative).

    Example:
        >>> import math
        >>> logits = torch.zeros(2, 100)
        >>> logits[:, 0] = 20.0  # one class far ahead: loss about 20 - 0.2
        >>> s = logit_scale_for(logits, 1.1 * math.log(100))
        >>> round(label_free_loss(logits, s) / math.log(100), 3)
        1.1
    """
    if label_free_loss(logits) <= target:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if label_free_loss(logits, middle) < target else (low, middle)
    return low
