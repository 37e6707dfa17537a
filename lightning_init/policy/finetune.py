"""Which parameters a checkpoint did not provide: the ones to initialize when fine-tuning.

Three sources, as :func:`missing_parameters` reads them:

- ``True``: Hugging Face's own loading flags. ``from_pretrained`` marks every parameter it
  loads from the checkpoint with ``_is_hf_initialized = True``; a new head (missing or
  mismatched keys) carries no mark. A model in which *no* parameter carries the mark was not
  loaded by ``from_pretrained`` (or ``transformers`` changed its marking): that is an error, never
  a reason to initialize every parameter of what may be a pretrained model.
- a state dict (a mapping of names to tensors): the parameters whose names it lacks.
- a path to a file ``torch.load`` reads (``weights_only=True``): a state dict, or a Lightning
  checkpoint, whose ``"state_dict"`` is used.

Names are the model's own (``model.named_parameters()``), so pass the module the checkpoint
was written from: the Hugging Face model, or the LightningModule for a Lightning checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_init._text import did_you_mean
from lightning_init.errors import PolicyError

__all__ = ["missing_parameters"]

_HF_FLAG = "_is_hf_initialized"


def _from_hf_flags(model: nn.Module, prefix: str) -> list[str]:
    named = list(model.named_parameters(prefix=prefix))
    if not any(getattr(param, _HF_FLAG, False) for _, param in named):
        raise PolicyError(
            f"no parameter of {type(model).__name__} carries Hugging Face's "
            f"loading mark ({_HF_FLAG}), so nothing tells what the checkpoint provided: load "
            "the model with from_pretrained(...), or give the checkpoint's state dict or path "
            "instead of True", where="only_missing")
    return [name for name, param in named if not getattr(param, _HF_FLAG, False)]


def _read(path: Path) -> Mapping[str, Any]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as err:
        raise PolicyError(f"cannot read checkpoint {str(path)!r}: {err}",
                          where="only_missing") from None
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        return loaded["state_dict"]
    if not isinstance(loaded, Mapping):
        raise PolicyError(f"checkpoint {str(path)!r} holds a {type(loaded).__name__}, not a "
                          "state dict", where="only_missing")
    return loaded


def _from_state_dict(model: nn.Module, state: Mapping[str, Any], prefix: str) -> list[str]:
    names = [name for name, _ in model.named_parameters()]
    keys = set(state)
    if names and keys and not keys.intersection(names):
        example = sorted(keys)[0]
        hint = did_you_mean(example, names) or f" The model's names look like {names[0]!r}."
        raise PolicyError(
            f"none of the checkpoint's {len(keys)} keys names a parameter of "
            f"{type(model).__name__} (first key: {example!r}): the keys are relative to the "
            f"module the checkpoint was saved from.{hint}", where="only_missing")
    lead = prefix + "." if prefix else ""
    return [lead + name for name in names if name not in keys]


def missing_parameters(model: nn.Module, source: bool | Mapping[str, Any] | str | os.PathLike,
                       *, prefix: str = "") -> list[str]:
    """Qualified names of the parameters of ``model`` that ``source`` did not provide.

    Args:
        model: the model (a tied parameter is listed under its first name).
        source: ``True`` (Hugging Face's loading marks), a state dict, or a checkpoint path.
        prefix: prepended to the names (a submodule's place in a larger model).

    Raises:
        PolicyError: no parameter carries Hugging Face's mark (``True``), the file cannot be
            read, or no key of the state dict names a parameter of the model.

    Example:
        >>> from torch import nn
        >>> body = nn.Sequential(nn.Linear(4, 4))
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
        >>> missing_parameters(model, body.state_dict())
        ['1.weight', '1.bias']
    """
    if source is True:
        return _from_hf_flags(model, prefix)
    if isinstance(source, Mapping):
        return _from_state_dict(model, source, prefix)
    if isinstance(source, str | os.PathLike):
        return _from_state_dict(model, _read(Path(source)), prefix)
    raise PolicyError(f"only_missing takes True, a state dict or a checkpoint path, got "
                      f"{source!r}", where="only_missing")
