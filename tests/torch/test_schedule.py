"""The search schedule: weight warm-up, automatic architecture lr, schedules in steps, resume
of a step schedule, the per-epoch diagnostics, and configs written before the schedule existed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from msnas_graph.backends.torch.training import SearchConfig, search
from msnas_graph.backends.torch.training.run_dir import load_checkpoint
from msnas_graph.backends.torch.training.schedule import PhaseSchedule, auto_arch_lr
from msnas_graph.backends.torch.training.search import SearchStep, _ArchAdam
from msnas_graph.errors import RunError
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

TINY = SearchSpace.preset("tiny")


def config(**kw: object) -> SearchConfig:
    base: dict[str, object] = dict(
        space=TINY, data="phantom:8", batch_size=1, max_steps_per_epoch=2, device="cpu"
    )
    base.update(kw)
    return SearchConfig(**base)  # type: ignore[arg-type]


def _flat(state: SearchState) -> tuple[np.ndarray, np.ndarray]:
    cts = state.space.cell_types
    cell = np.concatenate(
        [a.ravel() for c in cts for a in state.alpha_logits[c]]
        + [a.ravel() for c in cts for a in state.p_logits[c]]
    )
    beta = np.concatenate([state.beta_logits[n] for n in state.graph.searchable_nodes])
    return cell, beta


def _strip_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in history]


# --------------------------------------------------------------------------- the schedule


def test_schedule_from_epochs_and_steps():
    cfg = config(epochs=(4, 2))
    assert cfg.warmup == 2  # auto: half the cell epochs
    s = PhaseSchedule.from_config(cfg, steps_per_epoch=3)
    assert (s.warmup_steps, s.cell_steps, s.network_steps, s.epochs) == (6, 12, 6, 8)
    assert [s.epoch_phase(e) for e in range(s.epochs)] == ["warmup"] * 2 + ["cell"] * 4 + [
        "network"
    ] * 2
    assert s.lr("cell") == auto_arch_lr(12) == 0.03 and s.lr("warmup") == 0.0

    steps = config(arch_steps=(5, 3))
    assert steps.warmup_steps == 2 and steps.warmup is None
    s = PhaseSchedule.from_config(steps, steps_per_epoch=4)
    assert (s.total_steps, s.epochs, list(s.epoch_steps(2))) == (10, 3, [8, 9])
    assert [s.phase(i) for i in (1, 2, 6, 7)] == ["warmup", "cell", "cell", "network"]
    assert config(arch_steps=(5, 3), warmup_steps=0).warmup_steps == 0
    assert PhaseSchedule.from_config(config(arch_lr=0.01), 2).lr("network") == 0.01
    # the paper preset keeps 20 + 20, with 10 warm-up epochs before them
    paper = SearchConfig(space="paper")
    assert (paper.epochs, paper.warmup) == ((20, 20), 10)


def test_auto_arch_lr_is_two_over_steps_clipped():
    assert auto_arch_lr(200) == pytest.approx(0.01)
    assert auto_arch_lr(1) == 0.03 and auto_arch_lr(0) == 0.03
    assert auto_arch_lr(10**6) == 3e-4


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(warmup=-1), "warmup=-1 must be >= 0"),
        (dict(arch_steps=(5, 5), warmup_steps=-2), "warmup_steps=-2 must be >= 0"),
        (dict(arch_steps=(0, 0)), r"arch_steps=\(0, 0\) must be non-negative with a total >= 1"),
        (dict(arch_steps=(-1, 3)), "must be non-negative"),
        (dict(arch_steps=(5, 5), warmup=2), "give the warm-up in steps"),
        (dict(warmup_steps=3), "warmup_steps is given but the schedule is in epochs"),
        (dict(arch_lr=0.0), "arch_lr=0.0 must be a positive number"),
        (dict(arch_lr=float("nan")), "arch_lr=nan must be a positive number"),
        (dict(arch_weight_decay=-1e-3), "arch_weight_decay=-0.001 must be >= 0"),
        (dict(arch_weight_decay=float("inf")), "arch_weight_decay=inf must be >= 0"),
        (dict(arch_weight_decay="a lot"), "arch_weight_decay='a lot' must be a number$"),
    ],
)
def test_schedule_config_errors(kw, message):
    with pytest.raises(RunError, match=message) as info:
        config(**kw)
    assert "\n" not in str(info.value)


def test_a_config_written_before_the_schedule_means_no_warmup(tmp_path):
    old = config(epochs=(2, 2), arch_lr=3e-4).to_dict()
    for key in ("warmup", "warmup_steps", "arch_steps"):
        del old[key]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    loaded = SearchConfig.load(path)
    assert loaded.warmup == 0 and loaded.arch_lr == 3e-4
    assert loaded.resume_conflicts(old) == []
    assert config(epochs=(2, 2), arch_lr=3e-4).resume_conflicts(old) == ["warmup"]


@pytest.mark.parametrize("flag, mode", [(True, "low"), (False, "fast")])
def test_a_config_written_with_the_checkpoint_flag_loads_as_its_memory_mode(tmp_path, flag, mode):
    old = config(epochs=(2, 2)).to_dict()
    del old["memory"]
    old["checkpoint"] = flag
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    loaded = SearchConfig.load(path)
    assert loaded.memory == mode
    assert loaded.resume_conflicts(old) == []  # a run started before `memory` still resumes
    assert SearchConfig.from_dict(loaded.to_dict()) == loaded


def test_an_unknown_memory_mode_is_one_line_with_the_modes():
    with pytest.raises(RunError, match="unknown memory mode 'slow' \\(known: fast, low\\)"):
        config(memory="slow")


def test_arch_optimizer_loads_a_single_group_checkpoint():
    cell = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))]
    net = [torch.nn.Parameter(torch.zeros(4))]
    old = torch.optim.Adam([*cell, *net], lr=3e-4)
    for p in (*cell, *net):
        p.grad = torch.ones_like(p)
    old.step()
    new = _ArchAdam([{"params": cell, "lr": 1.0}, {"params": net, "lr": 2.0}])
    new.load_state_dict(old.state_dict())
    assert [len(g["params"]) for g in new.param_groups] == [2, 1]
    assert torch.equal(new.state[net[0]]["exp_avg"], old.state[net[0]]["exp_avg"])


# --------------------------------------------------------------------------- real searches


def test_warmup_leaves_the_architecture_alone_then_moves_it(tmp_path):
    rows: list[dict] = []
    result = search(
        config(epochs=(1, 1), warmup=1), tmp_path / "run", progress=False, on_epoch_end=rows.append
    )
    run = tmp_path / "run"
    zero_cell, zero_beta = _flat(SearchState.zeros(result.state.space))
    e1, e2, e3 = (SearchState.load(run / "states" / f"epoch_{e:03d}.json") for e in (1, 2, 3))
    assert [s.meta["phase"] for s in (e1, e2, e3)] == ["warmup", "cell", "network"]
    c1, b1 = _flat(e1)
    assert np.array_equal(c1, zero_cell) and np.array_equal(b1, zero_beta)  # nothing moved
    c2, b2 = _flat(e2)
    c3, b3 = _flat(e3)
    assert not np.array_equal(c2, zero_cell) and np.array_equal(b2, zero_beta)
    assert np.array_equal(c3, c2) and not np.array_equal(b3, b2)
    assert [r["phase"] for r in rows] == ["warmup", "cell", "network"]
    assert rows[0]["arch_loss"] is None and rows[0]["arch_steps"] == 0
    assert rows[0]["arch_lr"] == 0.0 and rows[1]["arch_lr"] == rows[2]["arch_lr"] == 0.03
    assert rows[0]["flips"] == 0 and rows[0]["edges_vs_prior"] == 0
    # the decisions: per epoch in metrics.csv, in a plot, and at the end
    columns = set(next(csv.DictReader((run / "metrics.csv").open())))
    assert set(result.diagnostics.flat_metrics()) <= columns
    assert {"arch_lr", "step", "arch_steps"} <= columns
    assert (run / "plots" / "decisions.png").stat().st_size > 1000
    assert result.diagnostics.summary().startswith(f"{rows[-1]['cell_decided']} of ")


def test_step_schedule_switches_phase_at_the_exact_step(tmp_path, monkeypatch):
    seen: list[str] = []
    real = SearchStep.arch_step

    def recording(self, x, y, active):
        seen.append("cell" if active is self.groups["cell"] else "network")
        return real(self, x, y, active)

    monkeypatch.setattr(SearchStep, "arch_step", recording)
    rows: list[dict] = []
    cfg = config(warmup_steps=3, arch_steps=(2, 2), arch_lr=0.01)
    search(cfg, tmp_path / "run", progress=False, on_epoch_end=rows.append)
    # 7 steps in epochs of 2: [w w] [w c] [c n] [n]
    assert seen == ["cell", "cell", "network", "network"]
    assert [r["arch_steps"] for r in rows] == [0, 1, 2, 1]
    assert [r["step"] for r in rows] == [2, 4, 6, 7]
    assert [r["phase"] for r in rows] == ["warmup", "cell", "network", "network"]
    assert [r["arch_lr"] for r in rows] == [0.0, 0.01, 0.01, 0.01]


def test_step_schedule_resume_equals_uninterrupted(tmp_path):
    cfg = config(warmup_steps=1, arch_steps=(2, 2))
    whole = search(cfg, tmp_path / "whole", progress=False)

    def stop(row: dict) -> None:
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    run = tmp_path / "parts"
    with pytest.raises(KeyboardInterrupt):
        search(cfg, run, progress=False, on_epoch_end=stop)
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    resumed = search(None, run, resume=True, progress=False)
    assert resumed.state.content_hash == whole.state.content_hash
    assert _strip_time(resumed.history) == _strip_time(whole.history)
    assert resumed.diagnostics.to_dict() == whole.diagnostics.to_dict()
    wa = torch.load(tmp_path / "whole" / "supernet.pt", weights_only=True)
    wb = torch.load(run / "supernet.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # a finished run, resumed, reports the same diagnostics
    again = search(None, run, resume=True, progress=False)
    assert again.diagnostics.summary() == whole.diagnostics.summary()


def test_search_result_logs_its_decisions(tmp_path, caplog):
    caplog.set_level("INFO", logger="msnas_graph")
    result = search(config(epochs=(1, 0), warmup=0), tmp_path / "run", progress=False)
    logged = [r for r in caplog.records if r.getMessage().startswith("search decisions:")]
    assert logged and result.diagnostics.summary() in logged[0].getMessage()
    assert any("search schedule: 0 warm-up + 2 cell + 0 network steps" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    warning = result.diagnostics.warning()
    if warning is not None:  # logged once, at INFO: the CLI shows it on stderr itself
        assert [r.levelname for r in caplog.records if warning in r.getMessage()] == ["INFO"]


def test_paths_for_metrics_row_match_a_fresh_diagnosis(tmp_path):
    from msnas_graph.diagnostics import diagnose

    rows: list[dict] = []
    search(config(epochs=(2, 0), warmup=0, paths=2), tmp_path / "run", progress=False,
           on_epoch_end=rows.append)  # fmt: skip
    run = Path(tmp_path / "run")
    e1, e2 = (SearchState.load(run / "states" / f"epoch_{e:03d}.json") for e in (1, 2))
    expected = diagnose(e2, paths=2, previous=e1).flat_metrics()
    assert {k: rows[-1][k] for k in expected} == expected


def test_a_step_schedule_cut_into_too_many_epochs_is_refused() -> None:
    """Issue 18 item 3: steps in epochs of --max-steps are bounded as epochs are."""
    from msnas_graph.backends.torch.training.config import MAX_EPOCHS
    from msnas_graph.backends.torch.training.schedule import PhaseSchedule
    from msnas_graph.errors import RunError

    assert PhaseSchedule(0, MAX_EPOCHS, 0, 1).epochs == MAX_EPOCHS
    with pytest.raises(RunError, match="10,001 steps in epochs of 1 = 10,001 epochs, more than"):
        PhaseSchedule(1, MAX_EPOCHS, 0, 1)
