"""Tests for msnas_graph.render: DOT text, real image files, layout, and every failure path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from msnas_graph import render as render_mod
from msnas_graph.decode import decode
from msnas_graph.diff import ArchDiff, diff
from msnas_graph.errors import RenderError
from msnas_graph.graph import Supergraph
from msnas_graph.render import (
    DOT_MISSING_MESSAGE,
    render,
    render_architecture,
    render_cell,
    render_diff,
    render_supergraph,
    save_rendering,
)
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` not installed")

TINY = SearchSpace.preset("tiny")
QUICK = SearchSpace.preset("quick")


@pytest.fixture(scope="module")
def objects() -> dict[str, object]:
    s0, s1 = SearchState.random(QUICK, seed=0), SearchState.random(QUICK, seed=1)
    arch = decode(s0, paths=3)
    return {
        "space": QUICK,
        "supergraph": Supergraph(QUICK),
        "state": s0,
        "architecture": arch,
        "cell": arch.cells["keep"],
        "diff": diff(s0, s1, paths=3),
    }


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------- DOT


@pytest.mark.parametrize("kind", ["space", "supergraph", "state", "architecture", "cell", "diff"])
@pytest.mark.parametrize("suffix", [".dot", ".gv"])
def test_dot_source_is_written_for_every_object(
    objects: dict[str, object], kind: str, suffix: str, tmp_path: Path
) -> None:
    out = render(objects[kind], tmp_path / f"x{suffix}")
    assert out == tmp_path / f"x{suffix}"
    text = out.read_text()
    assert text.lstrip().startswith("digraph")
    if kind != "cell":
        assert '"L1.s1"' in text and "rankdir=LR" in text
    assert _leftovers(tmp_path) == [f"x{suffix}"]


def test_dot_node_names_are_node_ids() -> None:
    src = render_supergraph(TINY).source
    for node in Supergraph(TINY).nodes:
        assert f'\t\t"{node}" [' in src
    assert '"L0.s0" -> "L1.s0"' in src
    # Stable: the same object gives byte-identical DOT (it diffs well).
    assert render_supergraph(TINY).source == src


def test_supergraph_with_state_shows_weights() -> None:
    state = SearchState.random(TINY, seed=2)
    src = render_supergraph(state.graph, state).source
    w = state.edge_weights()
    e0 = state.graph.edges[0]
    assert f"{e0}: weight {w[0]:.3f}" in src
    assert f"label={w[0]:.2f}" in src
    assert "penwidth" in src
    no_labels = render_supergraph(state.graph, state, edge_labels=False).source
    assert f"label={w[0]:.2f}" not in no_labels and "penwidth" in no_labels
    assert "penwidth" not in render_supergraph(TINY).source


def test_supergraph_rejects_a_state_of_another_space() -> None:
    with pytest.raises(RenderError, match="render the state's own graph"):
        render_supergraph(TINY, SearchState.random(QUICK, seed=0))


def test_architecture_marks_paths_fusion_and_cells() -> None:
    arch = decode(SearchState.random(SearchSpace.preset("paper"), seed=0), paths=5)
    src = render_architecture(arch).source
    for i, p in enumerate(arch.paths, start=1):
        assert f"path {i}  score {p.path_score:.4f}" in src
    for n in arch.fusion_nodes:
        assert f'"{n}" [' in src and "peripheries=2" in src
    for c in arch.cells:
        assert f"cluster_cell_{c}" in src
    plain = render_architecture(arch, show_cells=False, show_supergraph=False).source
    assert "cluster_cell" not in plain
    faint_nodes = set(arch.supergraph.nodes) - set(arch.nodes)
    assert all(f'\t\t"{n}" [' not in plain for n in faint_nodes)
    assert all(f'\t\t"{n}" [' in src for n in faint_nodes)


def test_cell_has_op_names_on_edges() -> None:
    arch = decode(SearchState.random(QUICK, seed=3), paths=2)
    cell = next(iter(arch.cells.values()))
    src = render_cell(cell).source
    for block in cell.blocks:
        for inp in block:
            assert f"label={inp.op}" in src
            assert f"{inp.source_name} -> b" in src
    assert "b1 -> out" in src


def test_render_diff_needs_its_architectures() -> None:
    a = decode(SearchState.random(TINY, seed=0), paths=2)
    b = decode(SearchState.random(TINY, seed=1), paths=2)
    d = diff(a, b)
    bare = ArchDiff(**{k: getattr(d, k) for k in ("a", "b", "edges_added", "edges_removed")})
    with pytest.raises(RenderError, match=r"render_diff\(d, a, b\)"):
        render_diff(bare)

    def edge_lines(src: str) -> list[str]:
        return [line for line in src.splitlines() if "->" in line and "tooltip" in line]

    assert edge_lines(render_diff(bare, a, b).source) == edge_lines(render_diff(d).source)
    src = render_diff(d).source
    for e in d.edges_added:
        assert f"added: {e}" in src
    for e in d.edges_removed:
        assert f"removed: {e}" in src


def test_render_rejects_unknown_objects(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="cannot render a dict"):
        render({}, tmp_path / "x.svg")
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------------ real images


@needs_dot
@pytest.mark.parametrize("kind", ["space", "state", "architecture", "cell", "diff"])
def test_svg_parses_and_names_the_nodes(
    objects: dict[str, object], kind: str, tmp_path: Path
) -> None:
    out = render(objects[kind], tmp_path / "x.svg")
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg")
    titles = {el.text for el in root.iter() if el.tag.endswith("title")}
    if kind == "cell":
        assert {"in", "b1", "out"} <= titles
    else:
        assert {"L0.s0", "L1.s1", "L4.s0"} <= titles
    assert _leftovers(tmp_path) == ["x.svg"]


@needs_dot
def test_png_and_pdf_are_real_files(objects: dict[str, object], tmp_path: Path) -> None:
    png = render(objects["architecture"], tmp_path / "a.PNG")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = render(objects["space"], tmp_path / "s.pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert _leftovers(tmp_path) == ["a.PNG", "s.pdf"]


@needs_dot
def test_save_rendering_creates_parent_folders(tmp_path: Path) -> None:
    out = save_rendering(render_supergraph(TINY), tmp_path / "deep" / "er" / "g.svg")
    assert out.is_file()


def _positions(dot_source: str) -> dict[str, tuple[float, float]]:
    """Node centres from graphviz's ``plain`` output."""
    plain = subprocess.run(
        ["dot", "-Tplain"], input=dot_source, capture_output=True, text=True, check=True
    ).stdout
    pos = {}
    for line in plain.splitlines():
        parts = line.split()
        if parts and parts[0] == "node":
            pos[parts[1].strip('"')] = (float(parts[2]), float(parts[3]))
    return pos


@needs_dot
@pytest.mark.parametrize("preset", ["tiny", "quick", "paper"])
def test_trellis_layout_is_a_grid(preset: str) -> None:
    """Layers are columns left to right, scales rows top to bottom, cells below the grid."""
    space = SearchSpace.preset(preset)
    arch = decode(SearchState.random(space, seed=4), paths=3)
    for dot in (render_supergraph(space), render_architecture(arch)):
        pos = _positions(dot.source)
        row_y = [pos[f"scale.s{s}"][1] for s in range(space.scales)]
        assert row_y == sorted(row_y, reverse=True)  # scale 0 on top
        grid = {k: v for k, v in pos.items() if k.startswith(("L", "pad.L"))}
        col_x: dict[int, set[float]] = {}
        for name, (x, y) in grid.items():
            layer, scale = name.removeprefix("pad.").removeprefix("L").split(".s")
            assert y == pytest.approx(row_y[int(scale)]), name
            col_x.setdefault(int(layer), set()).add(round(x, 3))
        assert sorted(col_x) == list(range(space.layers + 1))
        assert all(len(xs) == 1 for xs in col_x.values())  # one column per layer
        xs = [next(iter(col_x[layer])) for layer in sorted(col_x)]
        assert xs == sorted(xs) and len(set(xs)) == len(xs)  # left to right
        cells = [pos[f"{c}.in"][1] for c in ("contract", "keep", "expand") if f"{c}.in" in pos]
        assert cells == sorted(cells, reverse=True)
        assert all(y < min(row_y) for y in cells)


# ------------------------------------------------------------------------------ failures


def test_unknown_suffix_lists_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"'\.jpg'.*\.svg, \.png, \.pdf, \.dot, \.gv"):
        save_rendering(render_supergraph(TINY), tmp_path / "g.jpg")
    with pytest.raises(RenderError, match="no suffix"):
        render(TINY, tmp_path / "graph")
    assert _leftovers(tmp_path) == []


def test_missing_dot_program_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    target = tmp_path / "out" / "g.svg"
    with pytest.raises(RenderError) as info:
        render(TINY, target)
    assert str(info.value) == DOT_MISSING_MESSAGE
    assert "apt-get install graphviz" in str(info.value) and ".dot file" in str(info.value)
    assert not target.exists()
    # A .dot file needs no program.
    assert render(TINY, tmp_path / "g.dot").is_file()


def test_missing_dot_found_by_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`which` says yes but the program cannot run: graphviz's ExecutableNotFound."""
    monkeypatch.setattr(render_mod.shutil, "which", lambda name: "/nonexistent/dot")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    (tmp_path / "g.png").write_bytes(b"good old file")
    with pytest.raises(RenderError, match="`dot` program was not found"):
        render(TINY, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes() == b"good old file"
    assert _leftovers(tmp_path) == ["g.png"]


def test_which_returning_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_mod.shutil, "which", lambda name: None)
    with pytest.raises(RenderError, match="brew install graphviz"):
        render(decode(SearchState.random(TINY, seed=0), paths=1), tmp_path / "a.pdf")
    assert _leftovers(tmp_path) == []


@needs_dot
def test_failed_layout_leaves_nothing_behind(tmp_path: Path) -> None:
    import graphviz

    bad = graphviz.Source("digraph { a -> }")
    target = tmp_path / "bad.svg"
    target.write_text("previous")
    with pytest.raises(RenderError, match=r"bad\.svg: graphviz's dot failed"):
        save_rendering(bad, target)
    assert target.read_text() == "previous"
    assert _leftovers(tmp_path) == ["bad.svg"]


def test_missing_graphviz_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(RenderError, match=r"pip install 'msnas-graph\[render\]'"):
        render_supergraph(TINY)


def test_import_is_cheap() -> None:
    code = (
        "import sys, msnas_graph.render, msnas_graph.diff; "
        "assert 'graphviz' not in sys.modules, 'graphviz imported'; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --------------------------------------------------------------------------- bounds on dot


def test_dot_elements_counts_nodes_and_edges() -> None:
    from msnas_graph.render import dot_elements

    graph = Supergraph(TINY)
    src = render_supergraph(TINY).source
    # every real node and edge is a statement, plus the padding, labels and scaffolding
    assert dot_elements(src) >= len(graph.nodes) + len(graph.edges)
    assert dot_elements('digraph {\n\tnode [shape=box]\n\t"a" -> "b" [label="x -> y"]\n}') == 1


def test_a_rendering_over_the_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # refused before dot runs: a dot that would fail proves it was never called
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    target = tmp_path / "g.svg"
    with pytest.raises(RenderError) as info:
        render(TINY, target, max_elements=10)
    message = str(info.value)
    assert "\n" not in message and "(limit 10)" in message and "max_elements=" in message
    assert not target.exists()
    # a .dot file has no limit
    assert render(TINY, tmp_path / "g.dot", max_elements=10).is_file()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_slow_dot_is_stopped_with_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text(
        f'#!/bin/sh\necho $$ > "{tmp_path}/dot.pid"\n'
        f'sleep 60 &\necho $! > "{tmp_path}/sleep.pid"\nwait\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    target = tmp_path / "g.svg"
    start = time.monotonic()
    with pytest.raises(RenderError) as info:
        render(TINY, target, timeout=1)
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert "\n" not in message and "within 1 s" in message and "timeout=" in message
    assert not target.exists()
    pids = [int((tmp_path / f"{n}.pid").read_text()) for n in ("dot", "sleep")]
    deadline = time.monotonic() + 5
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, pids)), "dot or its child is still running"


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"timeout": -1.0}, "timeout must be a positive number"),
        ({"timeout": float("nan")}, "timeout must be a positive number"),
        ({"max_elements": 0}, "max_elements must be at least 1"),
    ],
)
def test_bad_dot_limits_are_refused(tmp_path: Path, limits: dict, message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render(TINY, tmp_path / "g.svg", **limits)
    assert not (tmp_path / "g.svg").exists()
