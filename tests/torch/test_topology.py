"""Supernet.fix_topology: the supernet restricted to a decoded architecture's edges, its cells
still searched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from msnas_graph.backends.torch import ArchWeights, build_supernet
from msnas_graph.backends.torch.training import SearchConfig, search
from msnas_graph.decode import decode
from msnas_graph.errors import BackendError, RunError
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState
from msnas_graph.topology import state_topology

THREE = SearchSpace(
    name="three", layers=4, scales=3, channels=4, blocks=2,
    ops=("conv_3x3", "conv_3x3_dil2", "skip_connect", "none"), input_size=32,
)  # fmt: skip


def _arch(space: SearchSpace, seed: int, paths: int = 2):
    return decode(SearchState.random(space, seed=seed), paths=paths)


@pytest.mark.parametrize("seed", [0, 3])
def test_the_restricted_supernet_is_the_whole_one_with_beta_one_on_the_kept_edges(
    seed: int,
) -> None:
    torch.manual_seed(seed)
    net = build_supernet(THREE).eval()
    with torch.no_grad():
        for t in net.cell_parameters():
            t.normal_()
    arch = _arch(THREE, seed)
    x = torch.randn(2, 1, 32, 32)
    free = net.arch_weights()
    beta = ArchWeights.from_architecture(arch).beta
    want = net(x, weights=ArchWeights(free.alpha, free.p, beta))
    net.fix_topology(arch)
    assert net.topology
    got = net(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    net.fix_topology(None)
    assert not net.topology
    torch.testing.assert_close(net(x), net(x, weights=free))


def test_only_the_kept_cells_run_and_only_the_cell_logits_learn() -> None:
    torch.manual_seed(0)
    net = build_supernet(THREE)
    arch = _arch(THREE, 1)
    net.fix_topology(arch)
    loss = net(torch.randn(2, 1, 32, 32)).square().mean()
    loss.backward()
    kept = {f"L{e.dst.layer}_s{e.dst.scale}_{e.kind}" for e in arch.edges if e.kind != "skip"}
    assert kept, "the architecture has cells"
    for key, cell in net.cells.items():
        grads = [p.grad for p in cell.parameters() if p.requires_grad]
        assert all(g is not None for g in grads) == (key in kept), key
        assert any(g is not None for g in grads) == (key in kept), key
    assert all(p.grad is None for p in net.network_parameters())
    used = {c for c in THREE.cell_types if any(e.kind == c for e in arch.edges)}
    for c in THREE.cell_types:
        got = [a.grad is not None and bool(a.grad.abs().sum() > 0) for a in net.alpha_logits[c]]
        assert all(got) == (c in used), c


def test_the_fixed_beta_follows_the_supernet_to_another_dtype() -> None:
    net = build_supernet(THREE)
    arch = _arch(THREE, 2)
    net.fix_topology(arch)
    net = net.double()
    assert all(v.dtype == torch.float64 for v in net.arch_weights().beta.values())
    assert net(torch.randn(1, 1, 32, 32, dtype=torch.float64)).dtype == torch.float64


def test_an_architecture_of_another_trellis_is_refused() -> None:
    net = build_supernet(THREE)
    other = THREE.model_copy(update={"layers": 5, "name": "five"})
    with pytest.raises(BackendError, match=r"layers 5 against the search's 4"):
        net.fix_topology(_arch(other, 0))
    assert not net.topology


def test_a_wider_architecture_of_the_same_trellis_is_accepted() -> None:
    net = build_supernet(THREE)
    arch = _arch(THREE, 0).widen(16)
    net.fix_topology(arch)
    assert net(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_only_the_networks_cell_types_are_searched_and_the_state_names_the_network() -> None:
    net = build_supernet(THREE)
    assert net.searched_cell_parameters() == net.cell_parameters()  # the whole trellis
    arch = _arch(THREE, 1)
    net.fix_topology(arch)
    used = {e.kind for e in arch.edges if e.kind != "skip"}
    want = [p for c in THREE.cell_types if c in used for p in net.alpha_logits[c]]
    want += [p for c in THREE.cell_types if c in used for p in net.p_logits[c]]
    assert net.searched_cell_parameters() == want
    assert state_topology(net.state()) == arch
    net.fix_topology(None)
    assert net.topology is None and state_topology(net.state()) is None


def _config(**kw):
    return SearchConfig(space=THREE, data="phantom:8", batch_size=2, max_steps_per_epoch=2,
                        device="cpu", **kw)  # fmt: skip


def test_a_topology_search_has_no_network_phase_and_refuses_one(tmp_path: Path) -> None:
    arch = _arch(THREE, 4).widen(8)
    path = arch.save(tmp_path / "net.json")
    cfg = _config(topology=str(path))
    assert cfg.epochs == (2, 0) and cfg.topology == arch
    with pytest.raises(RunError, match="give epochs .* as CELL,0"):
        _config(topology=arch, epochs=(2, 1))
    with pytest.raises(RunError, match="give arch_steps .* as CELL,0"):
        _config(topology=arch, arch_steps=(4, 4))
    with pytest.raises(RunError, match="layers 3 against the search's 4"):
        _config(topology=_arch(SearchSpace.preset("tiny"), 0))


def test_a_topology_search_decodes_to_the_network_and_resumes_to_the_same_state(
    tmp_path: Path, resumed_search
) -> None:
    arch = _arch(THREE, 4).widen(8)
    cfg = _config(topology=arch, arch_steps=(4, 0), warmup_steps=2)
    whole = search(cfg, tmp_path / "whole", progress=False)
    assert whole.architecture is not None
    assert whole.architecture.edges == arch.edges and whole.architecture.space.channels == 8
    assert whole.diagnostics is not None and whole.diagnostics.nodes == ()
    saved = SearchConfig.load(tmp_path / "whole" / "config.json")
    assert saved.topology == arch  # the run keeps the network, not the file's path

    parts = resumed_search(cfg, tmp_path / "parts")
    assert parts.state.content_hash == whole.state.content_hash
    assert parts.architecture == whole.architecture
