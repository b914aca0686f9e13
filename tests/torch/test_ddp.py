"""Data-parallel search and training on the CPU: two gloo processes under ``torchrun``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from msnas_graph.state import SearchState

SCRIPT = textwrap.dedent(
    """
    import os, sys, json
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from msnas_graph.backends.torch.training import SearchConfig, TrainConfig, search, train
    from msnas_graph.spec import SearchSpace

    out = Path(sys.argv[1])
    rank = os.environ["RANK"]
    cfg = SearchConfig(
        space=SearchSpace.preset("tiny"), data="phantom:12", batch_size=1, epochs=(1, 1),
        max_steps_per_epoch=2, device="cpu",
    )
    result = search(cfg, out / "search", progress=False)
    (out / f"state{rank}.json").write_text(result.state.to_json())
    from msnas_graph.decode import decode
    net = decode(result.state, paths=1)  # cells searched on one network: idle cells elsewhere
    topo = search(SearchConfig(**{**cfg.__dict__, "epochs": (1, 0), "topology": net}),
                  out / "topology", progress=False)
    (out / f"topology{rank}.json").write_text(topo.state.to_json())
    tcfg = TrainConfig(
        model="unet", unet_base_channels=4, unet_depth=3, data="phantom:12", input_size=32,
        epochs=1, batch_size=2, max_steps_per_epoch=2, device="cpu",
    )
    res = train(tcfg, out / "train", progress=False)
    (out / f"train{rank}.json").write_text(json.dumps(res.history))
    """
)


@pytest.mark.slow
def test_two_process_search_and_train(tmp_path: Path) -> None:
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nnodes=1",
            "--nproc_per_node=2",
            str(script),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    s0 = SearchState.load(tmp_path / "state0.json")
    s1 = SearchState.load(tmp_path / "state1.json")
    assert s0 == s1  # architecture parameters identical on every rank
    assert s0 != SearchState.zeros(s0.space, graph=s0.graph)  # and they moved
    run = tmp_path / "search"
    assert (run / "DONE").is_file()
    assert SearchState.load(run / "state.json").content_hash == s0.content_hash
    # rank 0 wrote the run folder once; both ranks saw the same (all-reduced) metrics
    assert len((run / "metrics.csv").read_text().splitlines()) == 3
    t0 = SearchState.load(tmp_path / "topology0.json")
    assert t0 == SearchState.load(tmp_path / "topology1.json")  # no rank waited on idle cells
    assert t0 != SearchState.zeros(t0.space, graph=t0.graph)  # its cells moved
    assert (tmp_path / "topology" / "DONE").is_file()
    h0 = json.loads((tmp_path / "train0.json").read_text())
    h1 = json.loads((tmp_path / "train1.json").read_text())
    strip = [{k: v for k, v in r.items() if k != "time_s"} for r in h0]
    assert strip == [{k: v for k, v in r.items() if k != "time_s"} for r in h1]
    assert (tmp_path / "train" / "best.pt").is_file()
