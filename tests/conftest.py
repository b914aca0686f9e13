"""Shared fixtures and hypothesis settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Torch runs single-threaded in tests (read when torch is imported, inherited by subprocesses):
# pytest-xdist already runs two workers on two cores, and oversubscribed intra-op threads make
# tiny convolutions many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

settings.register_profile(
    "ci", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


REPO = Path(__file__).resolve().parents[1]
HC18 = REPO.parent / "shared" / "data" / "hc18"


@pytest.fixture
def hc18_dir() -> Path:
    """The shared HC18 dataset (read in place, never copied); skips if absent."""
    if not (HC18 / "images").is_dir():
        pytest.skip("../shared/data/hc18 not present")
    return HC18


@pytest.fixture(autouse=True)
def _backend_registry_restored():
    """Backends a test (or a plugin it loads) registers do not outlive it: doctests and later
    tests in the same worker see the built-in registry."""
    from msnas_graph import backend

    registered, instances = dict(backend._REGISTERED), dict(backend._INSTANCES)
    yield
    backend._REGISTERED.clear()
    backend._REGISTERED.update(registered)
    backend._INSTANCES.clear()
    backend._INSTANCES.update(instances)
