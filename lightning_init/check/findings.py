"""Init findings that are notes, not verdicts: read from the weights and the recorded shapes.

- uninitialized memory: a parameter holding values no initializer draws (denormal numbers,
  magnitudes above ``1e6``), the sign of ``torch.empty`` / ``to_empty`` that nothing filled;
- an LSTM whose forget-gate bias is about 0 over long sequences: at init the cell state is
  halved at every step (``sigmoid(0) = 1/2``), so a gradient through ``T`` steps shrinks like
  ``2^-T``; Jozefowicz et al. 2015 ("An Empirical Exploration of Recurrent Network
  Architectures") set it to 1.

Every note starts with :data:`PREFIX` so that a suggestion can count what it answers.

Example:
    >>> import torch
    >>> layer = torch.nn.Linear(4, 4)
    >>> with torch.no_grad():
    ...     layer.weight[0, 0] = 1e-40
    >>> init_findings(layer, [])  # doctest: +ELLIPSIS
    ['init: `weight` holds 1 denormal value(s) ... -> initialize it (it looks like torch.empty ...']
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lightning_init.check.report import LayerRecord

__all__ = ["LONG_SEQUENCE", "PREFIX", "init_findings"]

PREFIX = "init: "
LONG_SEQUENCE = 50  # steps from which a forget-gate bias of 0 is noted
_HUGE = 1e6
_ABOUT_ZERO = 0.25


def _uninitialized(model: nn.Module) -> list[str]:
    notes = []
    for name, param in model.named_parameters():
        if not param.is_floating_point() or param.is_meta or param.numel() == 0:
            continue
        values = param.detach().abs()
        tiny = torch.finfo(values.dtype).tiny
        denormal = int(((values > 0) & (values < tiny)).sum())
        huge = int((torch.isfinite(values) & (values > _HUGE)).sum())
        if denormal or huge:
            found = ", ".join(part for part in (
                f"{denormal} denormal value(s) (below {tiny:.1e})" if denormal else "",
                f"{huge} value(s) above {_HUGE:.0e} in magnitude" if huge else "") if part)
            notes.append(f"{PREFIX}`{name}` holds {found}, which no initializer draws -> "
                         "initialize it (it looks like torch.empty / to_empty memory that "
                         "nothing filled)")
    return notes


def _sequence_length(module: nn.LSTM, record: LayerRecord) -> int | None:
    if len(record.shape) != 3:
        return None
    return record.shape[1] if module.batch_first else record.shape[0]


def _forget_bias(model: nn.Module, layers: Sequence[LayerRecord]) -> list[str]:
    modules = dict(model.named_modules())
    notes = []
    for record in layers:
        module = modules.get(record.name)
        if not isinstance(module, nn.LSTM) or not module.bias:
            continue
        steps = _sequence_length(module, record)
        if steps is None or steps < LONG_SEQUENCE:
            continue
        size = module.hidden_size
        with torch.no_grad():
            forget = torch.stack([
                (getattr(module, f"bias_ih_l{k}")[size:2 * size]
                 + getattr(module, f"bias_hh_l{k}")[size:2 * size]).float().mean()
                for k in range(module.num_layers)])
        if float(forget.abs().max()) < _ABOUT_ZERO:
            notes.append(
                f"{PREFIX}`{record.name}` (LSTM): the forget-gate bias is about 0 (mean "
                f"{float(forget.mean()):.2g}) over sequences of {steps} steps: at init the cell "
                "state is halved at every step and gradients through the sequence vanish -> "
                "forget-gate bias 1 (Jozefowicz et al. 2015): the `lstm` preset, or "
                "report.suggest_policy()")
    return notes


def init_findings(model: nn.Module, layers: Sequence[LayerRecord]) -> list[str]:
    """The notes on ``model``'s weights: uninitialized memory, LSTM forget-gate bias.

    Args:
        model: the checked model.
        layers: the check's layer records (their output shapes give sequence lengths).

    Returns:
        One sentence per finding, each starting with :data:`PREFIX`.
    """
    return [*_uninitialized(model), *_forget_bias(model, layers)]
