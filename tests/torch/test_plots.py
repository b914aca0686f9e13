"""The decision plot draws the distance from the untrained prior."""

from __future__ import annotations

import struct

import pytest

pytest.importorskip("matplotlib")

from msnas_graph.backends.torch.plots import _figure, plot_decisions, plot_prior_distance

ROWS = [
    {"epoch": e, "phase": ph, "cell_decided": d, "cell_total": 6, "node_decided": d,
     "node_total": 6, "mean_norm_entropy_cell": 0.9, "mean_norm_entropy_node": 0.8,
     "flips": 1, "edges_vs_prior": v}
    for e, ph, d, v in [(1, "warmup", 0, 0), (2, "cell", 2, 3), (3, "network", 5, 7)]
]  # fmt: skip


def test_prior_distance_panel_draws_edges_vs_prior() -> None:
    ax = _figure(4, 3).add_subplot(1, 1, 1)
    plot_prior_distance(ax, ROWS)
    (line,) = [x for x in ax.get_lines() if x.get_label() == "edges vs untrained prior"]
    assert list(line.get_xdata()) == [1, 2, 3] and list(line.get_ydata()) == [0, 3, 7]
    assert "prior" in ax.get_title()


def test_decision_plot_has_the_prior_panel_below(tmp_path) -> None:
    out = plot_decisions(tmp_path / "decisions.png", ROWS)
    assert out is not None
    width, height = struct.unpack(">II", out.read_bytes()[16:24])  # PNG IHDR
    assert height > 0.75 * width  # two panels stacked (one alone was 7 x 4 inches)
