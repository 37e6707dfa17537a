"""How many classes the initial-loss test compares with: read from the classification loss
that the pass computes, never guessed from a tensor that merely fits the range.

The test against ln(C) holds for a cross-entropy averaged over samples: ln(C) is the loss of
uniform predictions over C classes. So C is taken from the ``F.cross_entropy`` / ``F.nll_loss``
calls of the pass itself (``nn.CrossEntropyLoss`` and ``nn.NLLLoss`` call them, and so do the
models of ``transformers`` for their own loss): C is the input's class dimension, and only a
``mean`` reduction counts (a summed loss grows with the batch). An autoencoder fed
``(image, label)`` batches whose loss is a summed binary cross-entropy computes none: no C,
however well its labels fit the output's width.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["ClassificationLosses"]

_LOSSES = (F.cross_entropy, F.nll_loss)
_REDUCTION_AT = 6  # position of ``reduction`` in both signatures
_LEGACY_AT = (3, 5)  # positions of ``size_average`` and ``reduce``


def _reduction(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The reduction a call uses (``None``: the legacy ``size_average``/``reduce`` flags)."""
    legacy = [kwargs.get("size_average"), kwargs.get("reduce")]
    legacy += [args[i] for i in _LEGACY_AT if len(args) > i]
    if any(flag is not None for flag in legacy):
        return None
    if "reduction" in kwargs:
        return kwargs["reduction"]
    return args[_REDUCTION_AT] if len(args) > _REDUCTION_AT else "mean"


class _Recorder(TorchFunctionMode):
    def __init__(self, found: list[int | None], values: list[torch.Tensor]) -> None:
        super().__init__()
        self.found, self.values = found, values

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None
                           ) -> Any:
        kwargs = kwargs or {}
        if func in _LOSSES and args and isinstance(args[0], torch.Tensor):
            logits = args[0]
            classes = int(logits.shape[1] if logits.dim() >= 2 else logits.shape[0]) \
                if logits.dim() >= 1 else None
            self.found.append(classes if _reduction(tuple(args), kwargs) == "mean" else None)
            result = func(*args, **kwargs)
            if isinstance(result, torch.Tensor) and result.numel() == 1:
                self.values.append(result.detach())
            return result
        return func(*args, **kwargs)


class ClassificationLosses:
    """Records the classification losses a pass computes; :attr:`classes` is their C.

    Example:
        >>> losses = ClassificationLosses()
        >>> with losses.recording():
        ...     _ = F.cross_entropy(torch.zeros(4, 7), torch.tensor([0, 1, 2, 3]))
        >>> losses.classes
        7
        >>> with losses.recording():
        ...     _ = F.binary_cross_entropy_with_logits(torch.zeros(4, 64), torch.ones(4, 64))
        >>> losses.classes is None
        True
    """

    def __init__(self) -> None:
        self._found: list[int | None] = []
        self._values: list[torch.Tensor] = []

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Record the calls made inside (the previous pass's are forgotten)."""
        self._found.clear()
        self._values.clear()
        with _Recorder(self._found, self._values):
            yield

    @property
    def classes(self) -> int | None:
        """C when every classification loss of the last pass is a mean over the same C >= 2
        classes, else ``None``."""
        found = set(self._found)
        if len(found) != 1:
            return None
        (classes,) = found
        return classes if classes is not None and classes >= 2 else None

    @property
    def term(self) -> float | None:
        """The value of the last pass's one classification loss (a mean over C classes), or
        ``None`` when it computed none or several: what the initial-loss test compares with
        ln(C) when the loss adds other terms to it (a multi-task loss: cross-entropy plus a
        regression's mean-squared error).

        Example:
            >>> losses = ClassificationLosses()
            >>> logits, labels = torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])
            >>> value, zero = torch.ones(4), torch.zeros(4)
            >>> with losses.recording():
            ...     loss = F.cross_entropy(logits, labels) + F.mse_loss(value, zero)
            >>> round(losses.term, 4), round(float(loss), 4)
            (1.0986, 2.0986)
        """
        if self.classes is None or len(self._values) != 1:
            return None
        return float(self._values[0].float())
