"""Trained runs side by side: accuracy against cost, and where each run stands against the
U-Net family (the ``compare`` command; no torch here).

A backend measures the runs (``Backend.compare``; the torch backend's
:func:`~msnas_graph.backends.torch.compare.compare_runs`) into a :class:`Comparison`: one
:class:`ComparedRun` per run with its Dice, IoU and HD95 (as ``evaluate`` reported them),
parameters, MACs and measured inference latency. This module holds what needs no measuring:
the frontier classification (:func:`frontier_status`, a pure function), the table and the
JSON form.

**The frontier.** A user picks a network by accuracy and speed and compares it with what they
would otherwise do: scale a U-Net up or down. The U-Net runs are the reference family; their
Pareto front (the U-Nets that no other U-Net beats) is the frontier. A run is *dominated* by
a U-Net that is no slower (no more MACs) and at least as accurate (mean foreground Dice),
and better in one of the two; a run no U-Net dominates is *on the frontier*:

>>> points = [
...     FrontierPoint("U-Net(8, 4)", dice=0.90, cost=1.0, reference=True),
...     FrontierPoint("U-Net(16, 4)", dice=0.95, cost=2.0, reference=True),
...     FrontierPoint("U-Net(12, 4)", dice=0.89, cost=1.5, reference=True),
...     FrontierPoint("MS-NAS(3, C8)", dice=0.93, cost=1.5, reference=False),
...     FrontierPoint("MS-NAS(5, C8)", dice=0.92, cost=3.0, reference=False),
... ]
>>> for p, status in zip(points, frontier_status(points)):
...     print(f"{p.name}: {status}")
U-Net(8, 4): U-Net frontier
U-Net(16, 4): U-Net frontier
U-Net(12, 4): dominated by U-Net(8, 4)
MS-NAS(3, C8): on the frontier
MS-NAS(5, C8): dominated by U-Net(16, 4)
>>> pareto_front(points)
[0, 1]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .tables import markdown_table

__all__ = [
    "FRONTIER_COSTS",
    "ComparedRun",
    "Comparison",
    "FrontierPoint",
    "dice_window",
    "dominators",
    "frontier_status",
    "pareto_front",
]

#: What a run's cost on the frontier can be: its measured latency or its MACs.
FRONTIER_COSTS = ("latency", "macs")


@dataclass(frozen=True)
class FrontierPoint:
    """One run on an accuracy-against-cost plane: ``dice`` (higher is better), ``cost``
    (lower is better, e.g. ms per image), and whether it belongs to the ``reference`` family
    (the U-Nets) whose Pareto front is the frontier. ``None`` figures are never compared."""

    name: str
    dice: float | None
    cost: float | None
    reference: bool


def _known(p: FrontierPoint) -> bool:
    return p.dice is not None and p.cost is not None and math.isfinite(p.dice + p.cost)


def _dominates(a: FrontierPoint, b: FrontierPoint) -> bool:
    """``a`` is no worse than ``b`` in both figures and better in one."""
    assert a.dice is not None and a.cost is not None and b.dice is not None and b.cost is not None
    no_worse = a.cost <= b.cost and a.dice >= b.dice
    return no_worse and (a.cost < b.cost or a.dice > b.dice)


def dominators(points: Sequence[FrontierPoint]) -> list[int | None]:
    """For each point, the index of the reference point that dominates it (the most accurate
    of them, then the cheapest, then the first), or ``None``: not dominated, or figures
    missing.

    >>> dominators([FrontierPoint("u", 0.9, 1.0, True), FrontierPoint("m", 0.9, 2.0, False)])
    [None, 0]
    """
    out: list[int | None] = []
    for i, p in enumerate(points):
        best: int | None = None
        if _known(p):
            for j, q in enumerate(points):
                if j == i or not q.reference or not _known(q) or not _dominates(q, p):
                    continue
                if best is None or _better_dominator(q, points[best]):
                    best = j
        out.append(best)
    return out


def _better_dominator(q: FrontierPoint, current: FrontierPoint) -> bool:
    assert q.dice is not None and q.cost is not None
    assert current.dice is not None and current.cost is not None
    return (q.dice, -q.cost) > (current.dice, -current.cost)


def pareto_front(points: Sequence[FrontierPoint]) -> list[int]:
    """Indices of the reference points that no other reference point dominates, cheapest
    first: the frontier line."""
    owners = dominators(points)
    front = [i for i, p in enumerate(points) if p.reference and _known(p) and owners[i] is None]
    return sorted(front, key=lambda i: (points[i].cost, -(points[i].dice or 0.0)))


def frontier_status(points: Sequence[FrontierPoint]) -> list[str]:
    """Per point: ``"U-Net frontier"`` (a reference point on the front), ``"on the
    frontier"`` (any other point no reference point dominates), ``"dominated by NAME"``, or
    ``"n/a"`` where a figure is missing (see the module doc for an example)."""
    out = []
    for p, owner in zip(points, dominators(points), strict=True):
        if not _known(p):
            out.append("n/a")
        elif owner is not None:
            out.append(f"dominated by {points[owner].name}")
        else:
            out.append("U-Net frontier" if p.reference else "on the frontier")
    return out


def dice_window(points: Sequence[FrontierPoint]) -> tuple[float, float] | None:
    """The Dice range a frontier picture shows: from below the worst reference point (by the
    references' Dice span, at least 0.02) to above the best point, so that a few runs far
    below the U-Nets (a collapsed search) do not squash the frontier into a line. ``None``
    without a reference point with figures. Points below the window are drawn on its lower
    edge, with their Dice in the label.

    >>> pts = [FrontierPoint("U-Net(8, 4)", 0.95, 1.0, True),
    ...        FrontierPoint("U-Net(16, 4)", 0.96, 2.0, True),
    ...        FrontierPoint("collapsed", 0.70, 0.5, False)]
    >>> [round(x, 4) for x in dice_window(pts)]
    [0.93, 0.965]
    """
    known = [p for p in points if _known(p)]
    refs = [float(p.dice) for p in known if p.reference and p.dice is not None]
    if not refs:
        return None
    span = max(refs) - min(refs)
    top = max(float(p.dice) for p in known if p.dice is not None)
    return min(refs) - max(0.02, span), top + max(0.005, span / 4)


@dataclass(frozen=True)
class ComparedRun:
    """One trained run's figures.

    ``run`` is the folder as given; ``model`` a short label (``U-Net(16, 4)`` = base width 16,
    depth 4; ``MS-NAS(3, C8)`` = 3 paths at base width 8); ``kind`` the model kind of its
    ``model.json`` (``unet`` is the reference family). ``dice``, ``iou`` and ``hd95`` are the
    means ``evaluate`` wrote (mean over the foreground classes; HD95 in ``hd95_unit``).
    ``params`` and ``macs`` are counted at ``input_size``, the side latency was measured at;
    ``ms_per_image`` maps a batch size to the median milliseconds per image of the
    ``runtime`` actually used (``auto`` resolved).
    """

    run: str
    model: str
    kind: str
    dice: float | None
    iou: float | None
    hd95: float | None
    hd95_unit: str | None
    params: int
    macs: int
    input_size: int
    ms_per_image: Mapping[int, float] = field(default_factory=dict)
    runtime: str | None = None

    @property
    def is_reference(self) -> bool:
        """Whether the run belongs to the reference family (a U-Net)."""
        return self.kind == "unet"

    def cost(self, by: str, batch: int = 1) -> float | None:
        """The run's cost on the frontier: ms per image at ``batch``, or MACs."""
        if by == "macs":
            return float(self.macs)
        return self.ms_per_image.get(batch)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (batch sizes as string keys)."""
        data = asdict(self)
        data["ms_per_image"] = {str(k): v for k, v in sorted(self.ms_per_image.items())}
        return data


@dataclass(frozen=True)
class Comparison:
    """Runs side by side, and how they were measured (``settings``: the runtime asked for,
    threads, device, rounds, batch sizes). The frontier uses the latency at
    ``frontier_batch``.

    >>> row = ComparedRun("runs/u", "U-Net(4, 3)", "unet", 0.9, 0.8, 3.0, "mm", 1000, 2000000,
    ...                   32, {1: 0.5, 8: 0.2}, "eager")
    >>> c = Comparison([row], {"threads": 1})
    >>> c.status()
    ['U-Net frontier']
    >>> c.rows()[0]["MACs"], c.rows()[0]["ms/image b8"]
    ('2.00 M', '0.200')
    >>> Comparison.from_dict(c.to_dict()) == c
    True
    """

    runs: Sequence[ComparedRun]
    settings: Mapping[str, Any] = field(default_factory=dict)
    frontier_batch: int = 1

    def points(self, by: str = "latency") -> list[FrontierPoint]:
        """The runs as :class:`FrontierPoint`\\ s costed ``by`` latency or MACs."""
        return [
            FrontierPoint(self.label(i), r.dice, r.cost(by, self.frontier_batch), r.is_reference)
            for i, r in enumerate(self.runs)
        ]

    def label(self, index: int) -> str:
        """A run's model label, with its folder where another run has the same label."""
        run = self.runs[index]
        same = [r for r in self.runs if r.model == run.model]
        return run.model if len(same) == 1 else f"{run.model} [{run.run}]"

    def status(self, by: str = "latency") -> list[str]:
        """:func:`frontier_status` of the runs costed ``by`` latency or MACs."""
        return frontier_status(self.points(by))

    def batches(self) -> list[int]:
        """The batch sizes latency was measured at."""
        return sorted({b for r in self.runs for b in r.ms_per_image})

    def rows(self) -> list[dict[str, str]]:
        """The table's rows, as text."""
        units = {r.hd95_unit for r in self.runs if r.hd95_unit}
        hd95 = f"HD95 ({units.pop()})" if len(units) == 1 else "HD95"
        by_latency, by_macs = self.status("latency"), self.status("macs")
        out = []
        for i, r in enumerate(self.runs):
            row = {
                "run": r.run,
                "model": r.model,
                "Dice": _num(r.dice, 4),
                "IoU": _num(r.iou, 4),
                hd95: _num(r.hd95, 2),
                "params": _count(r.params),
                "MACs": _count(r.macs),
                "input": f"{r.input_size}",
            }
            for b in self.batches():
                row[f"ms/image b{b}"] = _num(r.ms_per_image.get(b), 3)
            row["runtime"] = r.runtime or "-"
            row["vs U-Nets (latency)"] = by_latency[i]
            row["vs U-Nets (MACs)"] = by_macs[i]
            out.append(row)
        return out

    def markdown(self) -> str:
        """The table (GitHub markdown) and a line saying how latency was measured."""
        return markdown_table(self.rows()) + "\n\n" + self.note() + "\n"

    def note(self) -> str:
        """How the figures were measured, in one line."""
        s = self.settings
        runtimes = ", ".join(sorted({r.runtime for r in self.runs if r.runtime})) or "-"
        sizes = sorted({r.input_size for r in self.runs})
        text = (
            f"Latency: median ms per image over {s.get('rounds', '?')} interleaved rounds, "
            f"runtime {s.get('runtime', '?')} (used: {runtimes}), {s.get('threads') or 'all'} "
            f"thread(s), device {s.get('device', '?')}; frontier at batch "
            f"{self.frontier_batch}. Dice, IoU, HD95: the runs' `evaluate` summaries "
            f"(split {s.get('split', 'test')})."
        )
        if len(sizes) > 1:
            text += (
                f" The runs take different input sizes ({', '.join(map(str, sizes))}): MACs and "
                f"latency are each run's at its own size, as predict runs it (--input-size N "
                f"measures all at one size)."
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``runs`` (each with its ``frontier`` and ``frontier_macs`` status),
        ``settings``, ``frontier_batch``, ``u_net_front`` (indices, cheapest first)."""
        by_latency, by_macs = self.status("latency"), self.status("macs")
        runs = [
            {**r.to_dict(), "frontier": a, "frontier_macs": b}
            for r, a, b in zip(self.runs, by_latency, by_macs, strict=True)
        ]
        return {
            "format": "msnas-graph/comparison",
            "runs": runs,
            "settings": dict(self.settings),
            "frontier_batch": self.frontier_batch,
            "u_net_front": pareto_front(self.points("latency")),
            "u_net_front_macs": pareto_front(self.points("macs")),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        """The inverse of :meth:`to_dict` (derived fields ignored)."""
        names = {f for f in ComparedRun.__dataclass_fields__}
        runs = []
        for r in data["runs"]:
            kept = {k: v for k, v in r.items() if k in names}
            kept["ms_per_image"] = {int(k): float(v) for k, v in kept["ms_per_image"].items()}
            runs.append(ComparedRun(**kept))
        return cls(runs, dict(data.get("settings", {})), int(data.get("frontier_batch", 1)))


def _num(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _count(n: int) -> str:
    """``1.23 M``, ``4.56 G``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)
