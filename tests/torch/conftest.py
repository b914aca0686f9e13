"""Torch tests run single-threaded: on a shared 2-core machine intra-op threads make tiny
convolutions hundreds of times slower, and pytest-xdist already runs tests in parallel."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread() -> None:
    torch.set_num_threads(1)
