"""The torch commands end to end through the CLI, and their documented errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from msnas_graph.cli.main import main

pytest.importorskip("torch")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


SMOKE = ["--device", "cpu", "--no-progress", "--max-steps", "1", "--batch-size", "2"]


@pytest.mark.slow
def test_search_decode_train_evaluate_predict_export(tmp_path: Path) -> None:
    s, t = tmp_path / "s", tmp_path / "t"
    code, out, err = run(
        "search", s, "--space", "tiny", "--data", "phantom:8", "--epochs", "1,1", *SMOKE
    )
    assert code == 0, err
    assert (s / "state.json").is_file() and (s / "DONE").is_file()
    # a finished run is refused without --overwrite
    code, _, err = run("search", s, "--space", "tiny", "--data", "phantom:8", *SMOKE)
    assert code == 1 and "--overwrite" in err

    arch = tmp_path / "arch.json"
    code, out, err = run("decode", s, "--paths", "2", "-o", arch)
    assert code == 0, err

    code, out, err = run(
        "train", t, "--model", arch, "--data", "phantom:8", "--epochs", "1", *SMOKE
    )
    assert code == 0, err
    assert "best validation Dice" in out

    code, out, err = run("evaluate", t, "--device", "cpu", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary

    code, out, err = run("predict", t, "phantom:2", "-o", tmp_path / "masks", "--device", "cpu")
    assert code == 0, err
    assert len(list((tmp_path / "masks").glob("*.png"))) == 2

    code, out, err = run("export", t, "--onnx", tmp_path / "m.onnx", "--input-size", "32")
    assert code == 0, err
    assert "max abs difference" in out and (tmp_path / "m.onnx").is_file()


def test_cost_of_unet_and_architecture(tmp_path: Path) -> None:
    code, out, _ = run("cost", "--model", "unet", "--input-size", "64", "--json", "--no-memory")
    assert code == 0
    data = json.loads(out)
    assert data["params"] == 13_217_178 and data["flops"] == 2 * data["macs"]
    state = tmp_path / "s.json"
    run("sample", "--space", "tiny", "-o", state)
    run("decode", state, "-o", tmp_path / "a.json")
    code, out, _ = run("cost", tmp_path / "a.json", "--input-size", "32")
    assert code == 0 and "MACs" in out and "activation memory" in out


def test_cost_and_export_errors(tmp_path: Path) -> None:
    code, _, _ = run("cost")
    assert code == 2
    code, _, err = run("cost", tmp_path / "missing.json")
    assert code == 1 and "no such architecture file" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    code, _, err = run("export", bad, "--onnx", tmp_path / "x.onnx")
    assert code == 1 and "not an architecture" in err
    assert not (tmp_path / "x.onnx").exists()
    state = tmp_path / "s.json"
    run("sample", "--space", "paper", "--seed", "0", "-o", state)  # its paths reach scale 4
    run("decode", state, "--score", "paper", "-o", tmp_path / "a.json")
    code, _, err = run("cost", tmp_path / "a.json", "--input-size", "36")
    assert code == 1 and "not divisible by 16" in err


def test_search_bad_data_and_sizes(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run("search", tmp_path / "r", "--space", "tiny", "--data", empty, *SMOKE)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    code, _, err = run(
        "search", tmp_path / "r2", "--space", "quick", "--data", "phantom:8", "--input-size",
        "30", *SMOKE,
    )  # fmt: skip
    assert code == 1 and "input_size=30" in err
    code, _, err = run("train", tmp_path / "t", "--model", tmp_path / "nope.json", *SMOKE)
    assert code == 1 and "nope.json" in err


def _png(path: Path, array) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def _pairs(root: Path, n: int = 6, size: int = 32) -> Path:
    import numpy as np

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = (np.random.default_rng(i).random((size, size)) * 255).astype("uint8")
        _png(root / "images" / f"{i:03d}_HC.png", img)
        mask = np.zeros((size, size), "uint8")
        mask[8:20, 8:20] = 1
        _png(root / "masks" / f"{i:03d}_HC.png", mask)
    return root


def _full(shape: tuple[int, int], value: int):
    import numpy as np

    return np.full(shape, value, "uint8")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "masks" / "001_HC.png").unlink(), "001_HC"),
        (lambda r: (r / "images" / "002_HC.png").write_bytes(b"not a png"), "002_HC.png"),
        (lambda r: _png(r / "masks" / "000_HC.png", _full((16, 16), 0)), "size"),
    ],
    ids=["unmatched", "corrupt", "size"],
)
def test_bad_data_through_the_cli(tmp_path: Path, damage, message: str) -> None:
    data = _pairs(tmp_path / "data")
    damage(data)
    args = ["--space", "tiny", "--data", data, "--epochs", "1,1", "--input-size", "32"]
    code, _, err = run("search", tmp_path / "run", *args, *SMOKE)
    assert code == 1, err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_mask_labels_beyond_the_architecture_classes(tmp_path: Path) -> None:
    data = _pairs(tmp_path / "data")
    _png(data / "masks" / "000_HC.png", _full((32, 32), 7))  # data now reads as 8 classes
    state = tmp_path / "s.json"
    run("sample", "--space", "tiny", "-o", state)  # tiny: num_classes=2
    run("decode", state, "-o", tmp_path / "a.json")
    code, _, err = run(
        "train", tmp_path / "t", "--model", tmp_path / "a.json", "--data", data, *SMOKE
    )
    assert code == 1 and "2 classes" in err and "8" in err and err.count("\n") == 1


@pytest.mark.slow
def test_kfold_evaluation_reports_mean_and_std(tmp_path: Path) -> None:
    runs = []
    for fold in (0, 1):
        run_dir = tmp_path / f"fold{fold}"
        code, _, err = run(
            "train", run_dir, "--model", "unet", "--unet-base", "4", "--unet-depth", "3",
            "--data", "phantom:10", "--input-size", "32", "--epochs", "1",
            "--test-fold", fold, *SMOKE,
        )  # fmt: skip
        assert code == 0, err
        runs.append(run_dir)
    code, out, err = run("evaluate", *runs, "--device", "cpu", "-o", tmp_path / "cv")
    assert code == 0, err
    assert "2 folds" in out and "mean dice over folds:" in out and "+-" in out
    summary = json.loads((tmp_path / "cv" / "kfold_summary.json").read_text())
    assert summary["num_folds"] == 2 and set(summary["mean_dice"]) == {"mean", "std"}
    assert (tmp_path / "cv" / "00_fold0" / "per_case.csv").is_file()


@pytest.mark.slow
def test_run_folder_errors_and_resume_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import stat

    _pairs(tmp_path / "work" / "data")
    monkeypatch.chdir(tmp_path / "work")
    unet = ["--model", "unet", "--unet-base", "4", "--unet-depth", "3", "--input-size", "32"]
    code, _, err = run("train", "t", *unet, "--data", "data", "--epochs", "1", *SMOKE)
    assert code == 0, err
    # files get the umask's permissions, not mkstemp's 0600
    assert stat.S_IMODE(os.stat("t/best.pt").st_mode) & 0o044
    # the run finds its (relative) data from another working directory
    monkeypatch.chdir(tmp_path)
    code, _, err = run("evaluate", "work/t", "--device", "cpu")
    assert code == 0, err
    # options fixed by config.json are refused on --resume instead of being ignored
    code, _, err = run("train", "work/t", "--resume", "--epochs", "5")
    assert code == 2 and "--epochs cannot change when resuming" in err
    # broken run folders give one line
    (tmp_path / "work" / "t" / "model.json").write_text('{"format": "msnas-graph/model"}')
    code, _, err = run("evaluate", "work/t", "--device", "cpu")
    assert code == 1 and "model.json" in err and err.count("\n") == 1
    (tmp_path / "work" / "t" / "best.pt").write_bytes(b"garbage")
    (tmp_path / "work" / "t" / "model.json").write_text("[1, 2]")
    code, _, err = run("predict", "work/t", "phantom:1", "-o", "m", "--device", "cpu")
    assert code == 1 and err.count("\n") == 1
    # an impossible U-Net input size is refused before anything is written
    code, _, err = run("train", "u", "--model", "unet", "--input-size", "8", *SMOKE)
    assert code == 1 and "too small for a U-Net" in err
    assert not (tmp_path / "u" / "checkpoint.pt").exists()


def test_search_schedule_options_and_decisions(tmp_path: Path) -> None:
    s = tmp_path / "s"
    code, out, err = run(
        "search", s, "--space", "tiny", "--data", "phantom:8", "--arch-steps", "1,1",
        "--warmup-steps", "1", "--arch-lr", "0.01", "--arch-weight-decay", "0", *SMOKE,
    )  # fmt: skip
    assert code == 0, err
    assert "decisions: " in out and "cell decisions" in out
    cfg = json.loads((s / "config.json").read_text())
    assert (cfg["arch_steps"], cfg["warmup_steps"], cfg["arch_lr"]) == ([1, 1], 1, 0.01)
    assert cfg["arch_weight_decay"] == 0.0  # and the architecture optimiser runs with it:
    groups = torch.load(s / "checkpoint.pt", weights_only=False)["arch_opt"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.0, 0.0]
    assert (s / "plots" / "decisions.png").is_file()
    # decode writes the architecture at another width
    code, out, err = run("decode", s, "--paths", "1", "--channels", "12", "-o", tmp_path / "w.json")
    assert code == 0, err
    assert json.loads((tmp_path / "w.json").read_text())["space"]["channels"] == 12
    # any width builds: the search's partial_k (2 in ``tiny``) need not divide it
    code, out, err = run("decode", s, "--paths", "1", "--channels", "13", "-o", tmp_path / "o.json")
    assert code == 0, err
    odd = json.loads((tmp_path / "o.json").read_text())["space"]
    assert (odd["channels"], odd["partial_k"]) == (13, 1)
    code, out, err = run("cost", tmp_path / "o.json", "--input-size", "32", "--no-memory", "--json")
    assert code == 0 and json.loads(out)["params"] > 0, err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--arch-lr", "fast"], 2, "expected a number or 'auto'"),
        (["--arch-lr", "-1"], 2, "must be a positive number"),
        (["--arch-weight-decay", "nan"], 2, "finite number >= 0"),
        (["--arch-weight-decay", "-1e-3"], 2, "finite number >= 0"),
        (["--arch-steps", "10"], 2, "expected CELL,NETWORK steps"),
        (["--arch-steps", "0,0"], 2, "total >= 1"),
        (["--warmup", "-1"], 2, "--warmup"),
        (["--epochs", "1,1", "--arch-steps", "2,2"], 2, "not both"),
        (["--arch-steps", "2,2", "--warmup", "1"], 1, "give the warm-up in steps"),
        (["--warmup-steps", "3"], 1, "warmup_steps is given but the schedule is in epochs"),
    ],
)
def test_search_schedule_option_errors(tmp_path: Path, args, code, message) -> None:
    got, _, err = run("search", tmp_path / "r", "--space", "tiny", "--data", "phantom:8",
                      *args, *SMOKE)  # fmt: skip
    assert got == code and message in err, err
    if code == 1:
        assert err.count("\n") == 1
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_train_decode_and_cost_width_options(tmp_path: Path) -> None:
    code, out, _ = run("cost", "--model", "unet", "--unet-base", "8", "--unet-depth", "3",
                       "--input-size", "32", "--json", "--no-memory")  # fmt: skip
    assert code == 0
    small = json.loads(out)
    assert small["model"]["base_channels"] == 8 and small["model"]["depth"] == 3
    assert small["params"] < 13_217_178 / 50
    code, _, err = run("cost", tmp_path / "a.json", "--unet-base", "8")
    assert code == 2 and "--model unet" in err
    code, _, err = run("cost", "--model", "unet", "--unet-depth", "1")
    assert code == 2
    code, _, err = run("decode", "x.json", "--channels", "0")
    assert code == 2 and "--channels" in err
    code, _, err = run("train", tmp_path / "t", "--model", "unet", "--channels", "8", *SMOKE)
    assert code == 1 and "--unet-base" in err and err.count("\n") == 1
    code, _, err = run("train", tmp_path / "t", "--init-from", tmp_path / "nope", *SMOKE)
    assert code == 2 and "--init-from" in err
    state = tmp_path / "s.json"
    run("sample", "--space", "tiny", "-o", state)
    run("decode", state, "-o", tmp_path / "a.json")
    data = _pairs(tmp_path / "data")  # two classes, as the sampled space
    code, _, err = run("train", tmp_path / "t2", "--model", tmp_path / "a.json", "--init-from",
                       tmp_path, "--data", data, *SMOKE)  # fmt: skip
    assert code == 1 and "no supernet.pt" in err and err.count("\n") == 1
    # --cell-glue: the run's architecture carries it, so evaluate and export rebuild the same
    code, _, err = run("train", tmp_path / "t3", "--model", tmp_path / "a.json", "--cell-glue",
                       "lean", "--data", data, "--epochs", "1", *SMOKE)  # fmt: skip
    assert code == 0, err
    spec = json.loads((tmp_path / "t3" / "model.json").read_text())
    assert spec["architecture"]["space"]["cell_glue"] == "lean"
    code, _, err = run("train", tmp_path / "t4", "--model", tmp_path / "a.json", "--cell-glue",
                       "thin", "--data", data, *SMOKE)  # fmt: skip
    assert code == 2 and "--cell-glue" in err
    code, _, err = run("train", tmp_path / "t5", "--model", "unet", "--cell-glue", "lean",
                       "--data", data, *SMOKE)  # fmt: skip
    assert code == 1 and "the U-Net has none" in err and err.count("\n") == 1
    assert not (tmp_path / "t5").exists()


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path: Path) -> None:
    """The README's main job, at toy size: search -> decode -> render -> train -> evaluate."""
    out = tmp_path / "q"
    code, text, err = run(
        "quickstart", out, "--space", "tiny", "--data", "phantom:10", "--search-epochs", "1,1",
        "--train-epochs", "1", "--input-size", "32", "--device", "cpu", "--max-steps", "1",
        "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    assert (out / "search" / "DONE").is_file() and (out / "train" / "DONE").is_file()
    evaluation = out / "train" / "eval_test"  # where `evaluate` writes it and `compare` reads it
    assert (out / "architecture.json").is_file() and (evaluation / "summary.json").is_file()
    summary = json.loads((evaluation / "summary.json").read_text())
    assert 0.0 <= summary["mean_dice"] <= 1.0
    assert "architecture.json" in text and "decisions: " in text
    # the search aimed below 0.8x the MACs of the U-Net of its width (--target-macs)
    config = json.loads((out / "search" / "config.json").read_text())
    assert (config["cost"], config["cost_target_unet"]) == ("macs", 0.8)
