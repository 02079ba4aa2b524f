from __future__ import annotations

import os

import pytest
import torch

from tests.parity import shared_dir


@pytest.fixture(scope="session")
def shared():
    return shared_dir()


@pytest.fixture(autouse=True, scope="session")
def _threads():
    # CI has 2 cores; keep torch from oversubscribing when pytest runs in one process.
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield
