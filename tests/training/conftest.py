"""Shared fixtures of the training tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny nets gain nothing from intra-op threads, and spinning OpenMP workers slow down by 10x
    or more when the cores are shared (CI): one thread per test module, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
