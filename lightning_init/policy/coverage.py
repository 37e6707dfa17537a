"""Weights a preset left alone: the sign of a preset written for another family of models.

A shipped preset is written for the module types and names of one family (GPT-2's ``c_attn``,
BERT's ``Linear``, ...). On a model of another family its rules can miss whole layers, which
then keep whatever values they had: HF GPT-2's 16 ``Conv1D`` weights (4 layers) under the
``bert`` preset, for instance. A weight (a parameter of 2 or more dimensions) that no rule
covers is named in one warning line on the ``lightning_init`` logger, layer indices folded.

Example:
    >>> import logging
    >>> from torch import nn
    >>> from lightning_init.policy import InitPolicy
    >>> model = nn.Sequential(nn.Linear(4, 4), nn.Conv1d(4, 4, 3))
    >>> class Lines(logging.Handler):
    ...     def emit(self, record):
    ...         print(record.getMessage())
    >>> logging.getLogger("lightning_init").addHandler(lines := Lines())
    >>> _ = InitPolicy.from_preset("bert").explain(model)  # doctest: +NORMALIZE_WHITESPACE
    preset 'bert' leaves 1 weight that no rule covers: 1.weight (Conv1d). The preset is
    written for another family of models: add rules for these layers, or skip them.
    >>> logging.getLogger("lightning_init").removeHandler(lines)
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from lightning_init._log import LOGGER

__all__ = ["UncoveredWeightWarning", "uncovered_weights", "warn_uncovered"]

_INDEX = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)")
_SHOWN = 8


class UncoveredWeightWarning(UserWarning):
    """A preset left weights alone: no rule of it covers their layer type or name. Kept for
    code that filters it; the notice itself is a ``lightning_init`` log line.

    Example:
        >>> issubclass(UncoveredWeightWarning, UserWarning)
        True
    """


def uncovered_weights(model: nn.Module, left_alone: Iterable[tuple[str, str]], *,
                      prefix: str = "") -> list[tuple[str, str]]:
    """``(qualified name, module class)`` of each weight left alone for want of a rule.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
        >>> uncovered_weights(net, [("0.weight", "no rule"), ("1.weight", "no rule")])
        [('0.weight', 'Linear')]
    """
    found = []
    strip = prefix + "." if prefix else ""
    for name, reason in left_alone:
        if reason != "no rule":
            continue
        local = name[len(strip):] if strip and name.startswith(strip) else name
        module_name, _, param_name = local.rpartition(".")
        module = model.get_submodule(module_name)
        tensor = getattr(module, param_name, None)
        if tensor is not None and tensor.dim() >= 2:
            found.append((name, type(module).__name__))
    return found


def _folded(weights: list[tuple[str, str]]) -> str:
    """``h.*.attn.c_attn.weight (Conv1D, x4)``: one entry per name with its indices folded."""
    folded: dict[tuple[str, str], list[str]] = {}
    for name, class_name in weights:
        folded.setdefault((_INDEX.sub("*", name), class_name), []).append(name)
    parts = [f"{names[0]} ({class_name})" if len(names) == 1
             else f"{key} ({class_name}, x{len(names)})"
             for (key, class_name), names in folded.items()]
    more = f", and {len(parts) - _SHOWN} more" if len(parts) > _SHOWN else ""
    return ", ".join(parts[:_SHOWN]) + more


def warn_uncovered(preset: str, model: nn.Module, left_alone: Iterable[tuple[str, str]], *,
                   prefix: str = "") -> None:
    """One warning line on the ``lightning_init`` logger, naming the weights of ``model`` that
    the preset ``preset`` left alone."""
    weights = uncovered_weights(model, left_alone, prefix=prefix)
    if not weights:
        return
    plural = "s" if len(weights) > 1 else ""
    LOGGER.warning(
        f"preset {preset!r} leaves {len(weights)} weight{plural} that no rule covers: "
        f"{_folded(weights)}. The preset is written for another family of models: add rules "
        "for these layers, or skip them.")
