"""Shared fixtures. Tests make their own small data; nothing is downloaded."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("PL_DISABLE_FORK", "1")  # no fork-based launchers in tests
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(1234)
