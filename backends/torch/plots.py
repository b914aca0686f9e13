"""The plots of a run folder: loss curves, architecture weights and decision confidence
(matplotlib, no pyplot).

Drawn by rank 0 after each stop and at the end of a run; a failure to draw is logged, never
raised (:func:`draw_run_plots`).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from msnas_graph._util import atomic_write
from msnas_graph.backends.torch.training.run_dir import epoch_files
from msnas_graph.compare import Comparison, FrontierPoint, dice_window, pareto_front
from msnas_graph.state import SearchState, softmax

__all__ = [
    "draw_run_plots",
    "plot_arch_weights",
    "plot_decisions",
    "plot_frontier",
    "plot_losses",
    "plot_prior_distance",
]

#: Background colours of the search phases in the per-epoch plots.
PHASE_COLOURS = {"warmup": "#dddddd", "cell": "#d6e6f5", "network": "#f8e3cc"}

logger = logging.getLogger(__name__)


def draw_run_plots(run_dir: Path, history: list[dict[str, Any]], *, states: bool) -> None:
    """``plots/loss.png`` from ``history`` and, with ``states``, ``plots/arch_weights.png``
    from ``states/epoch_*.json`` and ``plots/decisions.png`` from ``history``'s diagnostics
    columns; a failure is logged as a warning (plots never end a run)."""
    try:
        plot_losses(run_dir / "plots" / "loss.png", history)
        if states:
            plot_decisions(run_dir / "plots" / "decisions.png", history)
            saved = epoch_files(run_dir / "states")
            plot_arch_weights(
                run_dir / "plots" / "arch_weights.png", [SearchState.load(p) for p in saved]
            )
    except Exception as exc:  # plots never end a run
        logger.warning("could not draw the plots: %s", exc)


def _figure(width: float, height: float) -> Any:
    # The object-oriented API with an Agg canvas: no pyplot, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_fig(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".").lower() or "png", bbox_inches="tight")
    return atomic_write(path, buf.getvalue())


def plot_losses(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path | None:
    """Loss curves (train, and val/arch when present) and validation Dice per epoch."""
    if not rows:
        return None
    epochs = [r["epoch"] for r in rows]
    fig = _figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    for key, label in (
        ("train_loss", "train loss"),
        ("arch_loss", "architecture loss"),
        ("val_loss", "val loss"),
    ):
        ys = [r.get(key) for r in rows]
        if any(y is not None for y in ys):
            ax.plot(epochs, [np.nan if y is None else y for y in ys], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (Dice + CE)")
    _phase_marks(ax, rows, shade=False)
    dice = [r.get("val_dice") for r in rows]
    lines, labels = ax.get_legend_handles_labels()
    if any(d is not None for d in dice):
        ax2 = ax.twinx()
        ax2.plot(
            epochs,
            [np.nan if d is None else d for d in dice],
            color="black",
            marker="s",
            linestyle="--",
            label="val Dice",
        )
        ax2.set_ylabel("mean foreground Dice")
        ax2.set_ylim(0, 1)
        l2, lab2 = ax2.get_legend_handles_labels()
        lines, labels = lines + l2, labels + lab2
    ax.legend(lines, labels, loc="best", fontsize="small")
    return _save_fig(fig, Path(path))


def _phase_marks(ax: Any, rows: Sequence[Mapping[str, Any]], shade: bool) -> None:
    """A dotted line where the phase changes; with ``shade``, each phase's epochs shaded."""
    phases = [r.get("phase") for r in rows]
    epochs = [r["epoch"] for r in rows]
    for i in range(1, len(rows)):
        if phases[i] != phases[i - 1]:
            ax.axvline(epochs[i] - 0.5, color="grey", linestyle=":", linewidth=1)
    if not shade:
        return
    seen: set[str] = set()
    for e, phase in zip(epochs, phases, strict=True):
        if phase in PHASE_COLOURS:
            label = None if phase in seen else str(phase)
            seen.add(str(phase))
            ax.axvspan(e - 0.5, e + 0.5, color=PHASE_COLOURS[phase], zorder=0, label=label)


def _fraction(row: Mapping[str, Any], group: str) -> float:
    decided, total = row.get(f"{group}_decided"), row.get(f"{group}_total")
    if decided is None or not total:
        return float("nan")
    return float(decided) / float(total)


def plot_decisions(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path | None:
    """ "Decision confidence" per epoch, from the diagnostics columns of a search's metrics rows
    (:meth:`~msnas_graph.diagnostics.Diagnostics.flat_metrics`): the fraction of cell and of
    node decisions decided, the mean normalised entropies (1 = uniform) and the flips, with the
    warm-up, cell and network phases shaded; below, the distance from the untrained prior
    (:func:`plot_prior_distance`). ``None`` when no row has diagnostics."""
    rows = [r for r in rows if r.get("cell_total") is not None]
    if not rows:
        return None
    epochs = [r["epoch"] for r in rows]
    fig = _figure(7, 6)
    ax, below = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    _phase_marks(ax, rows, shade=True)

    def nan(v: Any) -> float:
        return float("nan") if v is None else float(v)

    ax.plot(epochs, [_fraction(r, "cell") for r in rows], marker="o", label="cell decided")
    ax.plot(epochs, [_fraction(r, "node") for r in rows], marker="s", label="node decided")
    for key, label in (
        ("mean_norm_entropy_cell", "cell entropy"),
        ("mean_norm_entropy_node", "node entropy"),
    ):
        ys = [nan(r.get(key)) for r in rows]
        ax.plot(epochs, ys, linestyle="--", label=label)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("fraction decided / normalised entropy")
    ax.set_title("decision confidence", fontsize=10)
    ax2 = ax.twinx()
    ax2.bar(epochs, [nan(r.get("flips")) for r in rows], width=0.3, color="black", alpha=0.35,
            label="flips")  # fmt: skip
    ax2.set_ylabel("decisions flipped in the epoch")
    ax2.set_ylim(bottom=0)
    lines, labels = ax.get_legend_handles_labels()
    l2, lab2 = ax2.get_legend_handles_labels()
    ax.legend(lines + l2, labels + lab2, loc="best", fontsize="small")
    plot_prior_distance(below, rows)
    return _save_fig(fig, Path(path))


def plot_prior_distance(ax: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """On ``ax``: per epoch, the edges by which the decoded architecture differs from the one
    the untrained (all-zero) state decodes (``edges_vs_prior``), phases marked. At 0 the
    search has not moved the network away from its prior."""
    epochs = [r["epoch"] for r in rows]
    ys = [float("nan") if r.get("edges_vs_prior") is None else r["edges_vs_prior"] for r in rows]
    _phase_marks(ax, rows, shade=False)
    ax.plot(epochs, ys, marker="^", color="tab:purple", label="edges vs untrained prior")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("edges differing\nfrom the prior")
    ax.set_title("distance from the untrained prior", fontsize=10)


def plot_arch_weights(path: str | Path, states: Sequence[SearchState]) -> Path | None:
    """Heatmaps: ``softmax(beta)`` of every network edge over epochs, and the latest
    ``softmax(alpha)`` of every cell type (rows: block <- input, with ``softmax(p)``)."""
    if not states:
        return None
    last = states[-1]
    space, graph = last.space, last.graph
    cell_types = list(space.cell_types)
    fig = _figure(4 + 0.35 * len(states) + 4.5 * len(cell_types), max(4, 0.22 * len(graph.edges)))
    gs = fig.add_gridspec(1, 1 + len(cell_types), width_ratios=[2] + [1] * len(cell_types))
    ax = fig.add_subplot(gs[0, 0])
    beta = np.stack([s.edge_weights() for s in states], axis=1)  # (edges, epochs)
    im = ax.imshow(beta, aspect="auto", vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(graph.edges)))
    ax.set_yticklabels([str(e) for e in graph.edges], fontsize=6)
    ticks = list(range(len(states)))
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(s.meta.get("epoch", i + 1)) for i, s in enumerate(states)], fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_title("network edges softmax(beta)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    for k, c in enumerate(cell_types):
        axc = fig.add_subplot(gs[0, 1 + k])
        rows, labels = [], []
        for b in range(space.blocks):
            p = softmax(last.p_logits[c][b])
            alpha = softmax(last.alpha_logits[c][b], axis=-1)
            for j in range(b + 1):
                rows.append(alpha[j])
                labels.append(f"b{b + 1}<-{'in' if j == 0 else f'b{j}'} (p {p[j]:.2f})")
        mat = np.stack(rows)
        imc = axc.imshow(mat, aspect="auto", cmap="magma", interpolation="nearest")
        if mat.size <= 160:
            mid = (mat.max() + mat.min()) / 2
            for (r, o), v in np.ndenumerate(mat):
                axc.text(o, r, f"{v:.3f}", ha="center", va="center", fontsize=5,
                         color="black" if v > mid else "white")  # fmt: skip
        axc.set_xticks(range(len(space.ops)))
        axc.set_xticklabels(space.ops, rotation=60, ha="right", fontsize=6)
        axc.set_yticks(range(len(labels)))
        axc.set_yticklabels(labels, fontsize=6)
        axc.set_title(f"{c} cell softmax(alpha) (epoch {last.meta.get('epoch', '?')})", fontsize=8)
        fig.colorbar(imc, ax=axc, fraction=0.05).ax.tick_params(labelsize=6)
    return _save_fig(fig, Path(path))


def plot_frontier(path: str | Path, comparison: Comparison) -> Path:
    """Mean foreground Dice against measured latency (left, ms per image at the comparison's
    frontier batch) and against MACs (right): U-Net runs as circles, the others as
    triangles, each labelled with its model (with more than :data:`CROWDED` runs, only the
    U-Nets and the runs on the frontier inside the Dice window); the U-Net runs' Pareto front
    drawn as a step line (the best Dice a U-Net reaches at or below each cost). The Dice axis
    spans :func:`~msnas_graph.compare.dice_window`; runs far below it sit on its lower edge as
    downward triangles, labelled with their Dice where few. Written as ``.png``, ``.svg`` or
    ``.pdf`` by ``path``'s suffix."""
    fig = _figure(11, 4.5)
    batch = comparison.frontier_batch
    for k, (by, xlabel) in enumerate(
        (("latency", f"latency (ms per image, batch {batch})"), ("macs", "MACs"))
    ):
        ax = fig.add_subplot(1, 2, k + 1)
        points = comparison.points(by)
        front = pareto_front(points)
        known = [p.cost for p in points if p.cost is not None and p.dice is not None]
        if front:  # each U-Net's Dice holds at any higher cost: the line runs to the right end
            xs = [points[i].cost for i in front] + [max(known)]
            ys = [points[i].dice for i in front] + [points[front[-1]].dice]
            ax.plot(xs, ys, drawstyle="steps-post", color="#1f77b4", label="U-Net frontier")
        _draw_points(ax, points, comparison.status(by))
        if known and min(known) > 0 and max(known) / min(known) > 10:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap
        ax.set_xlabel(xlabel)
        ax.set_ylabel("mean foreground Dice (test)")
        ax.set_title(f"Dice against {'latency' if by == 'latency' else 'MACs'}", fontsize=10)
        handles = [
            _marker("o", "#1f77b4", "U-Net"),
            _marker("^", "#d62728", "on the frontier"),
            _marker("^", "#999999", "dominated by a U-Net"),
        ]
        ax.legend(handles=ax.get_legend_handles_labels()[0] + handles, loc="best",
                  fontsize="small")  # fmt: skip
    return _save_fig(fig, Path(path))


#: Above this many runs a picture labels only the U-Nets and the runs on the frontier.
CROWDED = 15


def _draw_points(ax: Any, points: list[FrontierPoint], statuses: list[str]) -> None:
    """Each run as a marker (U-Nets circles, others triangles; red on the frontier, grey
    dominated), inside :func:`~msnas_graph.compare.dice_window`: a run below it is drawn on
    its lower edge as a downward triangle, its Dice in its label."""
    window = dice_window(points)
    if window is not None:
        ax.set_ylim(*window)
    crowded = len(points) > CROWDED
    for p, status in zip(points, statuses, strict=True):
        if p.cost is None or p.dice is None:
            continue
        dominated = status.startswith("dominated")
        colour = "#1f77b4" if p.reference else ("#999999" if dominated else "#d62728")
        below = window is not None and p.dice < window[0]
        y = window[0] + 0.02 * (window[1] - window[0]) if window is not None and below else p.dice
        shape = "v" if below else ("o" if p.reference else "^")
        ax.scatter([p.cost], [y], marker=shape, color=colour, zorder=3)
        if crowded and not p.reference and (dominated or below):
            continue
        label = f"{p.name} ({p.dice:.3f})" if below else p.name
        ax.annotate(label, (p.cost, y), textcoords="offset points", xytext=(4, 4), fontsize=7)


def _marker(shape: str, colour: str, label: str) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], marker=shape, color=colour, linestyle="", label=label)
