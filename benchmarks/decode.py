"""Decoding benchmark: exact top-K paths, against brute force and networkx, in one run.

For each space and K it times (median of repeats) and measures peak Python memory
(tracemalloc) of:

- ``top_k_paths`` (ours: K-best dynamic programme over the DAG),
- brute-force enumeration of every path, then sorting (where the space is small enough),
- networkx's generic ``shortest_simple_paths`` (Yen) on costs ``1 - w``, on the multigraph made
  simple by splitting every edge with a midpoint node (networkx does not take multigraphs);
  skipped where it would take minutes.

Every method's scores are checked against ours. Prints a table and writes it to
``benchmarks/results/decode.md``.

    python benchmarks/decode.py [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
from _common import markdown_table

from msnas_graph.graph import Supergraph
from msnas_graph.paths import brute_force_paths, count_paths, top_k_paths
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

RESULTS = Path(__file__).parent / "results" / "decode.md"


def measure(fn: Callable[[], Any], repeats: int) -> tuple[float, int, Any]:
    """Median wall time (s) over ``repeats`` and the peak traced memory (bytes) of one run."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(times), peak, out


def networkx_top_k(graph: Supergraph, w: np.ndarray, k: int) -> list[float]:
    """Yen's algorithm (networkx) on costs ``1 - w``; returns the K best scores."""
    G = nx.DiGraph()
    for i, e in enumerate(graph.edges):
        mid = ("e", i)
        G.add_edge(str(e.src), mid, cost=1.0 - w[i])
        G.add_edge(mid, str(e.dst), cost=0.0)
    for o in graph.output_nodes:
        G.add_edge(str(o), "sink", cost=0.0)
    layers = graph.space.layers
    scores = []
    for path in itertools.islice(
        nx.shortest_simple_paths(G, str(graph.input_node), "sink", weight="cost"), k
    ):
        cost = sum(G[u][v]["cost"] for u, v in itertools.pairwise(path))
        scores.append(layers - cost)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases (smoke test)")
    args = parser.parse_args()

    spaces = {
        "paper 10x5": SearchSpace.preset("paper"),
        "100x8": SearchSpace(
            layers=100, scales=8, channels=4, blocks=1, partial_k=1, input_size=256
        ),
    }
    ks = [1, 5, 100] if args.quick else [1, 5, 100, 1000]
    rows = []
    for name, space in spaces.items():
        graph = Supergraph(space)
        state = SearchState.random(space, seed=0, graph=graph)
        w = state.edge_weights()
        n_paths = count_paths(graph)
        brute = None
        if n_paths <= 100_000:
            t_bf, m_bf, every = measure(lambda g=graph, w=w: brute_force_paths(g, w), 1)
            brute = (t_bf, m_bf, every)
        for k in ks:
            t_ours, m_ours, best = measure(lambda g=graph, w=w, k=k: top_k_paths(g, w, k), 7)
            row = {
                "space": name,
                "paths in space": f"{n_paths:.3g}",
                "K": k,
                "ours ms": f"{1e3 * t_ours:.2f}",
                "ours peak KiB": f"{m_ours / 1024:.0f}",
            }
            if brute is not None:
                t_bf, m_bf, every = brute
                assert [p.path_score for p in every[:k]] == [p.path_score for p in best]
                row["brute ms"] = f"{1e3 * t_bf:.0f}"
                row["brute/ours time"] = f"{t_bf / t_ours:.0f}x"
                row["brute/ours mem"] = f"{m_bf / max(m_ours, 1):.0f}x"
            else:
                row["brute ms"] = "infeasible"
            feasible_nx = not (args.quick and k > 5) and (k <= 100 or graph.space.layers <= 10)
            if feasible_nx:
                t_nx, m_nx, nx_scores = measure(
                    lambda g=graph, w=w, k=k: networkx_top_k(g, w, k), 1
                )
                np.testing.assert_allclose(nx_scores, [p.path_score for p in best], atol=1e-9)
                row["networkx ms"] = f"{1e3 * t_nx:.0f}"
                row["networkx/ours time"] = f"{t_nx / t_ours:.0f}x"
                row["networkx/ours mem"] = f"{m_nx / max(m_ours, 1):.0f}x"
            else:
                row["networkx ms"] = "skipped (minutes)"
            rows.append(row)
            print(row, flush=True)

    lines = [
        "# Decoding benchmark (exact top-K input->output paths)",
        "",
        f"`python benchmarks/decode.py{' --quick' if args.quick else ''}` on "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d')}. Times are medians (ours: 7 runs; others: 1 run); memory is "
        "the tracemalloc peak of one run. Ratios are measured in the same run.",
        "",
        markdown_table(rows),
    ]
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
