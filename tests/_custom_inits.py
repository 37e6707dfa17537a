"""Custom initializers that tests/policy/test_initializers.py names by import path
(``tests._custom_inits:...``); it stays at the top of tests/ because the tests assert
those paths."""

from __future__ import annotations

import torch


def scaled_normal(tensor: torch.Tensor, scale: float = 1.0, generator=None) -> torch.Tensor:
    """N(0, scale^2 / fan_in) in place, honouring ``generator``."""
    return tensor.normal_(0.0, scale / tensor.shape[-1] ** 0.5, generator=generator)


def fill_value(tensor: torch.Tensor, value: float) -> None:
    """In place, no generator parameter, one required argument."""
    tensor.fill_(value)


def returns_new(tensor: torch.Tensor) -> torch.Tensor:
    """Returns a new tensor instead of filling in place: the values are copied in."""
    return torch.full_like(tensor, 7.0)


def flexible(tensor: torch.Tensor, **options: float) -> None:
    """Accepts any keyword argument."""
    tensor.fill_(sum(options.values()))


not_callable = 3


def positional_only(tensor: torch.Tensor, scale: float, /) -> None:
    """A required argument that a policy cannot pass by keyword."""
    tensor.fill_(scale)


def keyword_only(tensor: torch.Tensor, *, value: float, generator=None) -> None:
    """A required keyword-only argument, and a generator."""
    tensor.fill_(value)


def fan_in_normal(tensor: torch.Tensor, gain: float = 1.0, generator=None, fans=None) -> None:
    """N(0, gain^2 / fan_in), fan_in as the policy reads it (the layer type's layout)."""
    tensor.normal_(0.0, gain / fans[0] ** 0.5, generator=generator)
