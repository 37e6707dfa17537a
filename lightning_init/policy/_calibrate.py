"""The measured variables of the automatic policy: passes over a policy-initialized model.

Some of the automatic policy's scales depend on values that only a forward pass shows: the rms
of the features the output layer reads (a final norm, a pooled feature, a hidden state the
model rescales), the rms of the residual stream the blocks add to, and the spread of the
attention logits where a model leaves out the ``1 / sqrt(d_k)`` of scaled dot-product
attention (T5 folds it into the query's init). Each is measured on the model initialized by
the policy as it stands, so that it sees the values it will see, and becomes a policy
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
    >>> input_rms(Trial(net), torch.ones(8, 4), None, policy, "0")  # the sample itself
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from lightning_init._lightning import call_model, model_copy
from lightning_init.runtime.hooks import HookHandles
from lightning_init.runtime.no_trace import no_side_effects

__all__ = ["Trial", "attention_logit_rms", "input_rms", "quiet_pass"]


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


def quiet_pass(model: nn.Module, sample: Any, forward: Callable[..., Any] | None) -> None:
    """One pass of ``sample`` (``forward(model, sample)``, or the model called on it) in the
    check's mode (dropout off, BatchNorm by batch statistics), no grad, leaving no trace."""
    with no_side_effects(model), torch.no_grad():
        if forward is None:
            call_model(model, sample)
        else:
            forward(model, sample)


def _rounded(value: float | None) -> float:
    return float(f"{value:.4g}") if value is not None and math.isfinite(value) and value > 0 \
        else 1.0


def input_rms(trial: Trial, sample: Any, forward: Callable[..., Any] | None, policy: Any,
              name: str) -> float:
    """The rms of module ``name``'s first input, on the ``trial`` model initialized by
    ``policy`` (1.0 when it is never called or not finite), to 4 significant digits."""
    model = trial.initialized(policy)
    found: list[torch.Tensor] = []

    def record(_m: nn.Module, inputs: Any) -> None:
        first = inputs[0] if isinstance(inputs, tuple) and inputs else None
        if not found and isinstance(first, torch.Tensor) and first.is_floating_point():
            found.append(first.detach().float().square().mean().sqrt())

    with HookHandles() as handles:
        handles.add(model.get_submodule(name).register_forward_pre_hook(record))
        quiet_pass(model, sample, forward)
    return _rounded(float(found[0]) if found else None)


class _AttentionLogits(TorchFunctionMode):
    """The std of each attention's logits: ``q k^T * scale`` of every
    ``scaled_dot_product_attention`` call, and the input of every softmax over a 4-D
    (batch, heads, queries, keys) tensor, masked entries left out."""

    def __init__(self) -> None:
        super().__init__()
        self.stds: list[torch.Tensor] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name == "scaled_dot_product_attention" and len(args) >= 2:
            # positional order: query, key, value, attn_mask, dropout_p, is_causal, scale
            scale = args[6] if len(args) > 6 else kwargs.get("scale")
            self.stds.append(_sdpa_logit_std(args[0], args[1], scale))
        elif name == "softmax" and args and isinstance(args[0], torch.Tensor) \
                and args[0].dim() == 4 and args[0].is_floating_point():
            logits = args[0].detach().float()
            kept = logits[logits > torch.finfo(args[0].dtype).min / 2]
            if kept.numel() > 1:
                self.stds.append(kept.std())
        return func(*args, **kwargs)


def _sdpa_logit_std(query: torch.Tensor, key: torch.Tensor, scale: float | None) -> torch.Tensor:
    query, key = query.detach().float(), key.detach().float()
    if key.dim() >= 3 and query.dim() >= 3 and key.shape[-3] != query.shape[-3]:
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], dim=-3)  # grouped heads
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    return (query @ key.transpose(-1, -2) * scale).std()


def attention_logit_rms(trial: Trial, sample: Any, forward: Callable[..., Any] | None,
                        policy: Any) -> float | None:
    """The rms over attention calls of their logits' std, on the ``trial`` model initialized
    by ``policy``; ``None`` when the pass computes no attention it can see."""
    model = trial.initialized(policy)
    with _AttentionLogits() as logits:
        quiet_pass(model, sample, forward)
    if not logits.stds:
        return None
    return _rounded(float(torch.stack(logits.stds).square().mean().sqrt()))
