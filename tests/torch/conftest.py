"""Torch tests run single-threaded: on a shared 2-core machine intra-op threads make tiny
convolutions hundreds of times slower, and pytest-xdist already runs tests in parallel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def resumed_search() -> Callable[[Any, Any], Any]:
    """``resumed_search(cfg, run)``: a search of ``cfg`` into ``run`` interrupted (as Ctrl-C
    would) after its first epoch's checkpoint, then resumed; the resumed result."""
    from msnas_graph.backends.torch.training import search

    def stop(row: dict[str, object]) -> None:
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    def run(cfg: Any, run_dir: Any) -> Any:
        with pytest.raises(KeyboardInterrupt):
            search(cfg, run_dir, progress=False, on_epoch_end=stop)
        return search(None, run_dir, resume=True, progress=False)

    return run
