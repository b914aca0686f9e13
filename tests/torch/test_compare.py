"""The frontier picture and the interleaved timing of ``compare`` (issue 19 item 6), without
training: hand-made comparisons, tiny modules, no timing asserted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from msnas_graph.backends.torch.compare import interleaved_latency
from msnas_graph.backends.torch.plots import plot_frontier
from msnas_graph.compare import ComparedRun, Comparison
from msnas_graph.errors import RunError


def _comparison(with_latency: bool = True) -> Comparison:
    def run(name: str, kind: str, dice: float, ms: float, macs: int) -> ComparedRun:
        return ComparedRun(name, name, kind, dice, dice, 2.0, "mm", 1000, macs, 64,
                           {1: ms, 8: ms / 2} if with_latency else {}, "eager")  # fmt: skip

    return Comparison(
        [
            run("U-Net(8, 4)", "unet", 0.90, 1.0, 10**9),
            run("U-Net(16, 4)", "unet", 0.95, 2.0, 4 * 10**9),
            run("MS-NAS(3, C8)", "architecture", 0.93, 1.5, 2 * 10**9),
        ]
    )


@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG"), (".svg", b"<?xml"),
                                               (".pdf", b"%PDF")])  # fmt: skip
def test_the_frontier_picture_in_each_format(tmp_path: Path, suffix: str, magic: bytes) -> None:
    path = plot_frontier(tmp_path / f"frontier{suffix}", _comparison())
    assert path.read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [f"frontier{suffix}"]  # no temporary left


def test_a_picture_without_latency_still_draws_the_macs_panel(tmp_path: Path) -> None:
    path = plot_frontier(tmp_path / "f.png", _comparison(with_latency=False))
    assert path.stat().st_size > 1000


def test_interleaved_latency_runs_every_model_at_every_batch() -> None:
    calls: list[tuple[int, int]] = []

    class Counting(nn.Module):
        def __init__(self, tag: int) -> None:
            super().__init__()
            self.tag = tag

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append((self.tag, x.shape[0]))
            return x

    runners = [Counting(0), Counting(1)]
    ms = interleaved_latency(runners, [(1, 1, 8, 8)] * 2, device=torch.device("cpu"),
                             batch_sizes=(1, 4), rounds=2, repeats=3, warmup=1)  # fmt: skip
    assert [sorted(m) for m in ms] == [[1, 4], [1, 4]]
    # build + warm-up (2 passes per batch), then 2 rounds x 3 passes per batch, per model
    for tag in (0, 1):
        assert sum(1 for t, _ in calls if t == tag) == 2 * 2 + 2 * 2 * 3
    timed = calls[8:]  # after both models' untimed passes: rounds alternate the order
    assert [t for t, _ in timed[::6]] == [0, 1, 1, 0]
    with pytest.raises(RunError, match="rounds and repeats"):
        interleaved_latency(runners, [(1, 1, 8, 8)] * 2, device=torch.device("cpu"), rounds=0)


def test_a_crowded_picture_with_a_collapsed_run_draws(tmp_path: Path) -> None:
    runs = list(_comparison().runs)
    extra = [
        replace(runs[2], run=f"m{i}", model=f"MS-NAS {i}", dice=0.9 + i / 1000) for i in range(16)
    ]
    collapsed = replace(runs[2], run="c", model="collapsed", dice=0.4)
    path = plot_frontier(tmp_path / "f.png", Comparison([*runs, *extra, collapsed]))
    assert path.stat().st_size > 1000
