"""``msnas-graph compare`` on tiny real runs (a U-Net and a decoded network trained for a
step at 32x32 on the phantom), and each of its bad inputs: one line, exit code 1, nothing
written (issue 19 item 6)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from msnas_graph.cli.main import main

torch = pytest.importorskip("torch")

SMOKE = ["--device", "cpu", "--no-progress", "--max-steps", "1", "--batch-size", "2",
         "--input-size", "32"]  # fmt: skip
FAST = ["--rounds", "1", "--device", "cpu"]


def _cli(*args: Any) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def _ok(*args: Any) -> str:
    code, out, err = _cli(*args)
    assert code == 0, err
    return out


def _train(run: Path, data: str, *model: str, seed: int = 0) -> Path:
    _ok("train", run, *model, "--data", data, "--epochs", "1", "--seed", seed, *SMOKE)
    return run


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained and evaluated runs: two U-Nets and an MS-NAS network on phantom:8; a U-Net
    on other data and one with another test fold (both evaluated); a trained run not
    evaluated, a search run, an empty folder."""
    w = tmp_path_factory.mktemp("compare")
    _ok("search", w / "s", "--space", "tiny", "--data", "phantom:8", "--epochs", "1,1", *SMOKE)
    unet = ["--model", "unet", "--unet-depth", "3"]
    for run, model, data, seed in [
        ("u4", [*unet, "--unet-base", "4"], "phantom:8", 0),
        ("u8", [*unet, "--unet-base", "8"], "phantom:8", 0),
        ("m", ["--model", str(w / "s")], "phantom:8", 0),
        ("other_data", [*unet, "--unet-base", "4"], "phantom:10", 0),
        ("other_cases", [*unet, "--unet-base", "4"], "phantom:8", 1),
    ]:
        _train(w / run, data, *model, seed=seed)
        _ok("evaluate", w / run, "--device", "cpu")
    _train(w / "not_evaluated", "phantom:8", *unet, "--unet-base", "4")
    (w / "empty").mkdir()
    return w


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def test_table_json_and_picture(ws: Path, tmp_path: Path) -> None:
    table, plot = tmp_path / "table.md", tmp_path / "frontier.png"
    runs = [ws / "u4", ws / "u8", ws / "m"]
    out = _ok("compare", *runs, "-o", table, "--plot", plot, *FAST)
    text = table.read_text()
    assert text in out + "\n" and f"wrote {table}" in out and f"wrote {plot}" in out
    header = text.splitlines()[0]
    for column in ("Dice", "IoU", "HD95 (mm)", "params", "MACs", "ms/image b1", "ms/image b8"):
        assert f" {column} |" in header
    lines = {line.split(" | ")[1]: line for line in text.splitlines()[2:5]}
    assert set(lines) == {"U-Net(4, 3)", "U-Net(8, 3)", "MS-NAS(3, C4)"}
    summary = json.loads((ws / "m" / "eval_test" / "summary.json").read_text())
    assert f"| {summary['mean_dice']:.4f} |" in lines["MS-NAS(3, C4)"]
    status = lines["MS-NAS(3, C4)"].split(" | ")[-2]
    assert status == "on the frontier" or status.startswith("dominated by U-Net(")
    assert "interleaved rounds" in text and "runtime auto" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    data = json.loads(_ok("compare", *runs, "--json", *FAST, "--input-size", "64"))
    assert [r["model"] for r in data["runs"]] == ["U-Net(4, 3)", "U-Net(8, 3)", "MS-NAS(3, C4)"]
    first = data["runs"][0]
    assert first["kind"] == "unet" and first["input_size"] == 64 and first["hd95_unit"] == "mm"
    assert set(first["ms_per_image"]) == {"1", "8"} and first["ms_per_image"]["1"] > 0
    assert first["params"] > 0 and first["macs"] > 0
    assert data["runs"][2]["frontier"] in ("on the frontier",) or data["runs"][2][
        "frontier"
    ].startswith("dominated by U-Net(")
    assert data["settings"]["threads"] == 1 and data["frontier_batch"] == 1


def test_the_api_restores_the_callers_threads(ws: Path) -> None:
    from msnas_graph.backends.torch.compare import compare_runs

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        c = compare_runs([ws / "u4"], threads=1, rounds=1, device="cpu", runtime="eager")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert c.status() == ["U-Net frontier"] and c.runs[0].runtime == "eager"


def _refused(ws: Path, tmp_path: Path, *args: Any) -> str:
    before = _files(ws)
    code, out, err = _cli("compare", *args, *FAST)
    assert code == 1, (out, err)
    assert err.count("\n") == 1 and "Traceback" not in err and "unexpected" not in err
    assert _files(ws) == before and not list(tmp_path.iterdir())
    return err


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        (["u4", "empty"], "no model.json, so this is not a training run"),
        (["u4", "s"], "this is a search run: train its architecture first"),
        (["u4", "missing"], "no such run folder"),
        (["u4", "not_evaluated"], "trained but not evaluated"),
        (["u4", "other_data"], "data 'phantom:10', but"),
        (["u4", "other_cases"], "tested on other cases than"),
        (["u4", "m", "u4"], "the same run as"),
    ],
    ids=["never-trained", "search-run", "missing", "not-evaluated", "other-data", "cases", "twice"],
)
def test_bad_runs(ws: Path, tmp_path: Path, runs: list[str], message: str) -> None:
    err = _refused(ws, tmp_path, *[ws / r for r in runs], "-o", tmp_path / "t.md")
    assert message in err
    if "not evaluated" in message:
        assert f"run `msnas-graph evaluate {ws / 'not_evaluated'}`" in err


def test_a_run_retrained_after_its_evaluation(ws: Path, tmp_path: Path) -> None:
    stale = tmp_path.parent / f"{tmp_path.name}_stale"
    shutil.copytree(ws / "u8", stale)
    later = (stale / "eval_test" / "summary.json").stat().st_mtime + 60
    os.utime(stale / "best.pt", (later, later))
    try:
        err = _refused(ws, tmp_path, ws / "u4", stale, "-o", tmp_path / "t.md")
        assert "evaluated before its last training" in err and "evaluate" in err
    finally:
        shutil.rmtree(stale)


@pytest.mark.parametrize(
    ("option", "target", "message"),
    [
        ("-o", "u4/eval_test/summary.json", "is an input of this command"),
        ("--plot", "u4/model.json", "must end in .png"),
        ("--plot", "u4/plots/loss.png", "would replace a file of the run"),
        ("-o", "u4/metrics.csv", "would replace a file of the run"),
    ],
)
def test_outputs_that_would_overwrite_an_input(
    ws: Path, tmp_path: Path, option: str, target: str, message: str
) -> None:
    err = _refused(ws, tmp_path, ws / "u4", ws / "m", option, ws / target)
    assert message in err


def test_the_table_and_the_picture_on_one_path(ws: Path, tmp_path: Path) -> None:
    same = tmp_path / "x.png"
    err = _refused(ws, tmp_path, ws / "u4", "-o", same, "--plot", same)
    assert "both the table and the picture" in err
