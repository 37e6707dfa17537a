"""The measured variables of the automatic policy: passes over a policy-initialized copy.

Some of the automatic policy's scales depend on values that only a forward pass shows: the rms
of the features a head reads (a final norm, a pooled feature, a hidden state the model
rescales), the rms of the residual stream the branches add to, the spread of the attention
logits where a model leaves out the ``1 / sqrt(d_k)`` of scaled dot-product attention (T5 folds
it into the query's init), and the initial loss the head's scale gives once ties are in place.
Each is read from the anatomy of the model initialized by the policy as it stands
(:func:`measured_anatomy`), so that it sees the values it will see, and becomes a policy
variable: the YAML then reproduces the init without the sample batch.

The passes run on a :class:`Trial`: one deep copy of the model, made once and initialized
again before each pass (the model is left as it was), or, ``in_place``, the model itself, for
weights that are about to be replaced (``InitCallback(policy="auto")``): no copy at all. The
policy is applied without a snapshot (nothing to undo), and with its own seed, so each pass
sees the same values on the copy and in place.

Example:
    >>> import torch
    >>> from lightning_init import InitPolicy
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> policy = InitPolicy.from_dict({"rules": [{"match": {"type": "Linear"},
    ...                                           "weight": {"init": "normal", "std": 0.5}}]})
    >>> anatomy, logits = measured_anatomy(Trial(net), torch.ones(8, 4), None, policy, "2")
    >>> anatomy.layers["0"].input_rms, tuple(logits.shape)  # the sample itself; the head's
    (1.0, (8, 2))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lightning_init._lightning import model_copy
from lightning_init.runtime.hooks import HookHandles

__all__ = ["Trial", "label_free_loss", "logit_scale_for", "measured_anatomy"]


class Trial:
    """The model the measuring passes run on, initialized by a policy before each.

    Args:
        model: the model the policy is built for.
        in_place: run the passes on ``model`` itself (its weights are overwritten: only for
            weights that are about to be replaced); else on one deep copy, made on first use
            and kept for every pass.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> trial = Trial(net)
        >>> from lightning_init import InitPolicy
        >>> policy = InitPolicy.from_dict({"rules": [{"match": {"type": "Linear"},
        ...                                           "weight": "ones"}]})
        >>> copied = trial.initialized(policy)
        >>> copied is trial.initialized(policy), copied is net, net.weight.sum().item() == 4
        (True, False, False)
        >>> Trial(net, in_place=True).initialized(policy) is net, net.weight.sum().item()
        (True, 4.0)
    """

    def __init__(self, model: nn.Module, *, in_place: bool = False) -> None:
        self.model = model
        self._trial: nn.Module | None = model if in_place else None

    def initialized(self, policy: Any) -> nn.Module:
        """The trial model, with ``policy`` applied over it (no snapshot, global RNG kept)."""
        if self._trial is None:
            self._trial = model_copy(self.model)
        with torch.random.fork_rng(devices=[]):
            policy._apply(self._trial, atomic=False, report=False)
        return self._trial


def measured_anatomy(trial: Trial, sample: Any, forward: Callable[..., Any] | None,
                     policy: Any, head: str | None = None) -> tuple[Any, torch.Tensor | None]:
    """The anatomy of the ``trial`` model initialized by ``policy`` (every rms, branch ratio
    and attention logit std as the policy leaves them, ties in place), and the output of
    module ``head`` in that pass (its logits), if given and called."""
    from lightning_init.anatomy import anatomy_of

    model = trial.initialized(policy)
    found: list[torch.Tensor] = []

    def record(_m: nn.Module, _inputs: Any, output: Any) -> None:
        if not found and isinstance(output, torch.Tensor) and output.is_floating_point():
            found.append(output.detach())

    with HookHandles() as handles:
        if head is not None:
            handles.add(model.get_submodule(head).register_forward_hook(record))
        anatomy = anatomy_of(model, sample, forward=forward)
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
