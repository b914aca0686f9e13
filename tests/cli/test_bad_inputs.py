"""A catalogue of bad inputs through the CLI (issue 9): each one ends with its exit code and one
line (no traceback, no "unexpected"), and changes no file that was there before, inputs
included (hashes before and after). Commands run in-process with click's ``CliRunner``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from msnas_graph.cli.main import main
from msnas_graph.decode import decode
from msnas_graph.operations import register_operation_name
from msnas_graph.spec import load_space
from msnas_graph.state import SearchState

pytest.importorskip("torch")

SMOKE = ["--device", "cpu", "--max-steps", "1", "--batch-size", "2"]
UNET = ["--model", "unet", "--unet-base", "4", "--unet-depth", "3", "--input-size", "32"]


def _cli(*args: Any, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    return result.exit_code, result.stdout, result.stderr


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace: a state, an architecture, a space, a trained run, a dataset, bad files."""
    w = tmp_path_factory.mktemp("ws")
    cwd = os.getcwd()
    os.chdir(w)
    try:
        assert _cli("sample", "--space", "tiny", "-o", "s.json")[0] == 0
        assert _cli("decode", "s.json", "--paths", "2", "-o", "a.json")[0] == 0
        Path("space.yaml").write_text("layers: 2\nscales: 2\nchannels: 4\npartial_k: 2\n")
        rng = np.random.default_rng(0)
        for i in range(10):
            _png(w / "data" / "images" / f"c{i}.png", rng.integers(0, 255, (32, 32), np.uint8))
            _png(w / "data" / "masks" / f"c{i}.png", (rng.random((32, 32)) > 0.5).astype(np.uint8))
        code, _, err = _cli("train", "t", *UNET, "--data", "data", "--epochs", "1", *SMOKE,
                            "--no-progress")  # fmt: skip
        assert code == 0, err
        _bad_files(w)
        _round2_items_6_to_11_files(w)
        _config_type_files(w)
    finally:
        os.chdir(cwd)
    return w


def _bad_files(w: Path) -> None:
    state = json.loads((w / "s.json").read_text())
    arch = json.loads((w / "a.json").read_text())
    arch.pop("content_hash")
    (w / "bin.dat").write_bytes(bytes(range(256)) * 4)
    (w / "empty.json").write_text("")
    (w / "list.json").write_text("[1, 2]")
    (w / "deep.json").write_text("[" * 50000 + "]" * 50000)
    (w / "deep.yaml").write_text("a: " + "[" * 50000 + "]" * 50000 + "\n")
    (w / "bigint.json").write_text('{"layers": ' + "9" * 5000 + "}")
    (w / "bigint.yaml").write_text("layers: " + "9" * 5000 + "\n")
    (w / "future.json").write_text(json.dumps({**state, "schema_version": 99}))
    for name, value in [("nan", float("nan")), ("inf", float("inf")), ("str", "1"), ("bool", True)]:
        s = json.loads(json.dumps(state))
        first = next(iter(s["alpha_logits"]))
        s["alpha_logits"][first][0][0][0] = value
        (w / f"state_{name}.json").write_text(json.dumps(s))
        s = json.loads(json.dumps(state))
        node = next(iter(s["beta_logits"]))
        s["beta_logits"][node][next(iter(s["beta_logits"][node]))] = value
        (w / f"beta_{name}.json").write_text(json.dumps(s))
    for name, value in [("frac", 0.9), ("inf", 1e999), ("neg", -1), ("str", "0"), ("big", 10**30)]:
        a = json.loads(json.dumps(arch))
        a["cells"][next(iter(a["cells"]))]["blocks"][0][0]["source"] = value
        (w / f"arch_src_{name}.json").write_text(json.dumps(a))
    a = json.loads(json.dumps(arch))
    a["cells"][next(iter(a["cells"]))]["blocks"][0][0]["weight"] = float("nan")
    (w / "arch_w_nan.json").write_text(json.dumps(a))
    a = json.loads(json.dumps(arch))
    a["paths"][0]["path_score"] = float("inf")
    (w / "arch_score_inf.json").write_text(json.dumps(a))
    a = json.loads(json.dumps(arch))
    a["space"]["layers"] = True
    (w / "arch_layers_bool.json").write_text(json.dumps(a))
    (w / "space_tab.yaml").write_text("layers:\t2\n  - x: [\n")
    os.mkfifo(w / "fifo")
    (w / "link.json").symlink_to(w / "s.json")
    (w / "link.dot").symlink_to(w / "s.json")
    (w / "loop.json").symlink_to(w / "loop.json")
    (w / "dangling.json").symlink_to(w / "nowhere.json")
    (w / "adir").mkdir()
    # a training run whose checkpoint and weights are damaged in several ways
    t = w / "t"
    for name, damage in [
        ("ck_garbage", lambda p: (p / "checkpoint.pt").write_bytes(b"garbage")),
        ("ck_empty", lambda p: (p / "checkpoint.pt").write_bytes(b"")),
        ("best_garbage", lambda p: (p / "best.pt").write_bytes(b"\x80\x04garbage")),
        ("model_list", lambda p: (p / "model.json").write_text("[1, 2]")),
        ("model_bin", lambda p: (p / "model.json").write_bytes(bytes(range(256)))),
        ("model_huge", lambda p: (p / "model.json").write_text(
            json.dumps({**json.loads((t / "model.json").read_text()), "in_channels": 10**6}))),
        ("model_deep", lambda p: (p / "model.json").write_text("[" * 50000 + "]" * 50000)),
    ]:  # fmt: skip
        copy = w / name
        copy.mkdir()
        for f in t.iterdir():
            if f.is_file() and not f.name.startswith("."):
                (copy / f.name).write_bytes(f.read_bytes())
        damage(copy)
    import torch

    ck = torch.load(t / "checkpoint.pt", weights_only=True)
    changes = [("ck_epoch_big", {"epoch": 10**6}), ("ck_epoch_neg", {"epoch": -3}),
               ("ck_no_rng", {"rng": None}), ("ck_kind", {"kind": "search"})]  # fmt: skip
    for name, change in changes:
        copy = w / name
        copy.mkdir()
        for f in t.iterdir():
            if f.is_file() and f.name not in ("DONE", ".lock"):
                (copy / f.name).write_bytes(f.read_bytes())
        torch.save({**ck, **change}, copy / "checkpoint.pt")
    for c in (0, 2):  # channel files with a gap, and two-channel cases for a one-channel model
        _png(w / "chgap" / f"x_{c:04d}.png", np.zeros((32, 32), np.uint8))
    for c in (0, 1):
        _png(w / "chn" / "imagesTs" / f"x_{c:04d}.png", np.zeros((32, 32), np.uint8))
    nan = w / "t_nan"
    nan.mkdir()
    for f in t.iterdir():
        if f.is_file() and not f.name.startswith("."):
            (nan / f.name).write_bytes(f.read_bytes())
    weights = torch.load(t / "best.pt", weights_only=True)
    first = next(k for k, v in weights.items() if v.is_floating_point())
    weights[first] = torch.full_like(weights[first], float("nan"))
    torch.save(weights, nan / "best.pt")
    _round2_files(w)


# issue 18, round 2 (items 1-5, 12): the files of the cases below
def _copy_run(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and not f.name.startswith(".") and f.name not in skip:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _round2_files(w: Path) -> None:
    t = w / "t"
    _png(w / "r2_images" / "images" / "c0.png", np.zeros((32, 32), np.uint8))
    os.mkfifo(w / "r2_images" / "images" / "c1.png")  # predict must not skip it silently
    (w / "r2_msd" / "imagesTr").mkdir(parents=True)
    os.mkfifo(w / "r2_msd" / "dataset.json")
    _png(w / "r2_csv" / "images" / "c0.png", np.zeros((32, 32), np.uint8))
    os.mkfifo(w / "r2_csv" / "pixel_sizes.csv")  # read for the pixel sizes (HC18's CSV)
    os.mkfifo(_copy_run(t, w / "r2_best_fifo", ("best.pt",)) / "best.pt")
    (_copy_run(t, w / "r2_best_dir", ("best.pt",)) / "best.pt").mkdir()
    os.mkfifo(_copy_run(t, w / "r2_lock_fifo") / ".lock")
    (_copy_run(t, w / "r2_lock_link") / ".lock").symlink_to(w / "s.json")
    os.mkfifo(_copy_run(t, w / "r2_ck_fifo", ("checkpoint.pt", "DONE")) / "checkpoint.pt")
    os.mkfifo(_copy_run(t, w / "r2_model_fifo", ("model.json",)) / "model.json")
    (w / "r2_run").mkdir()  # item 5: the same search by another path, by a link, by content
    (w / "r2_run" / "state.json").write_bytes((w / "s.json").read_bytes())
    os.link(w / "s.json", w / "r2_hard.json")
    assert _cli("sample", "--space", "tiny", "--seed", "1", "-o", w / "r2_b.json")[0] == 0
    import nibabel as nib  # item 4: three channels that are not the colours of an RGB image
    import tifffile

    (w / "r2_ch_nii").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 2, 3), np.float32), np.eye(4)),
             str(w / "r2_ch_nii" / "v.nii.gz"))  # fmt: skip
    (w / "r2_ch_tif").mkdir()
    tifffile.imwrite(w / "r2_ch_tif" / "p.tif", np.zeros((3, 32, 32), np.uint8),
                     photometric="minisblack")  # fmt: skip
    nan = nib.Nifti1Image(np.zeros((32, 32, 2), np.float32), np.eye(4))  # item 12
    nan.header.set_zooms((float("nan"), 1.0, 1.0))
    (w / "r2_nanvox").mkdir()
    nib.save(nan, str(w / "r2_nanvox" / "v.nii.gz"))
    (w / "r2_huge").mkdir()  # item 2: 18000x18000 pixels in a few hundred KB
    tifffile.imwrite(w / "r2_huge" / "h.tif", np.zeros((18000, 18000), np.uint8),
                     compression="zlib", tile=(1024, 1024))  # fmt: skip
    (w / "r2_complex").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((32, 32, 2), np.complex64), np.eye(4)),
             str(w / "r2_complex" / "c.nii.gz"))  # fmt: skip


TRAIN = ["train", "new_run", *UNET, "--data", "data", "--epochs", "1", *SMOKE]
R2_SEARCH = ["search", "new_run", "--space", "tiny", "--data", "data"]  # issue 18, round 2

#: (command line, exit code, a piece of the message or "").
CASES: list[tuple[list[str], int, str]] = [
    # --- clobbering and output paths (items 1-4)
    (["decode", "s.json", "-o", "s.json"], 1, "is an input of this command"),
    (["decode", "s.json", "-o", "link.json"], 1, "symbolic link"),
    (["decode", "s.json", "-o", "fifo"], 1, "FIFO"),
    (["decode", "s.json", "-o", "adir"], 2, ""),
    (["decode", "s.json", "-o", "s.json/x.json"], 1, "not a folder"),
    (["decode", "s.json", "-o", "a.json/x.json"], 1, "not a folder"),
    (["decode", "s.json", "--render", "s.json.dot", "-o", "s.json"], 1, "input"),
    (["decode", "s.json", "--render", "s.json"], 1, ""),
    (["decode", "s.json", "--render", "link.dot"], 1, ""),
    (["sample", "--space", "tiny", "-o", "/dev/null"], 1, "character device"),
    (["sample", "--space", "tiny", "-o", "fifo"], 1, "FIFO"),
    (["sample", "--space", "tiny", "-o", "link.json"], 1, "symbolic link"),
    (["sample", "--space", "tiny", "-o", "dangling.json"], 1, "symbolic link"),
    (["sample", "--space", "space.yaml", "-o", "space.yaml"], 1, "input"),
    (["render", "s.json", "-o", "s.json"], 1, ""),
    (["render", "a.json", "-o", "fifo"], 1, ""),
    (["render", "space.yaml", "-o", "space.yaml"], 1, ""),
    (["diff", "a.json", "s.json", "--render", "a.json"], 1, ""),
    (["diff", "a.json", "a.json", "--render", "link.dot"], 1, "symbolic link"),
    (["predict", "t", "data/images", "-o", "data/images", "--device", "cpu"], 1, "input"),
    (["predict", "t", "data/images", "-o", "data/masks", "--device", "cpu"], 1, "input"),
    (["predict", "t", "data", "-o", "data/masks", "--device", "cpu"], 1, "input"),
    (["predict", "t", "data", "-o", "data", "--device", "cpu"], 1, "input"),
    (["predict", "t", "data/images", "-o", ".", "--device", "cpu"], 1, "input"),
    (["predict", "t", "data/images", "-o", "data/images/sub", "--device", "cpu"], 1, "input"),
    (["predict", "t", "data/images/c0.png", "-o", "data/images", "--device", "cpu"], 1, "input"),
    (["predict", "t", "data/images", "-o", "data/labels", "--device", "cpu"], 1, "ground truth"),
    (["predict", "t", "data/images/c0.png", "-o", "data/masks", "--device", "cpu"], 1, "input"),
    (["export", "t", "--onnx", "t/best.pt"], 1, "input"),
    (["export", "t", "--onnx", "t/model.json"], 1, "input"),
    (["export", "t", "--onnx", "fifo"], 1, ""),
    (["export", "t", "--onnx", "link.json"], 1, "symbolic link"),
    # --- documents that are not documents (items 7, 10)
    (["decode", "bin.dat"], 1, "not a text file"),
    (["decode", "empty.json"], 1, ""),
    (["decode", "list.json"], 1, "not a search state"),
    (["decode", "deep.json"], 1, "nested too deeply"),
    (["decode", "bigint.json"], 1, ""),
    (["decode", "future.json"], 1, "schema_version"),
    (["decode", "loop.json"], 1, "symbolic link"),
    (["decode", "dangling.json"], 1, "symbolic link"),
    (["decode", "adir"], 1, ""),
    (["decode", "nope.json"], 1, ""),
    (["decode", "space.yaml"], 1, ""),
    (["decode", "a.json"], 1, ""),
    *[(["decode", f"state_{n}.json"], 1, "alpha_logits") for n in ("nan", "inf", "str", "bool")],
    *[(["decode", f"beta_{n}.json"], 1, "beta_logits") for n in ("nan", "inf", "str", "bool")],
    *[
        (["render", f"arch_src_{n}.json", "-o", "x.dot"], 1, "")
        for n in ("frac", "inf", "neg", "str", "big")
    ],
    (["render", "arch_w_nan.json", "-o", "x.dot"], 1, "finite number"),
    (["render", "arch_score_inf.json", "-o", "x.dot"], 1, "finite number"),
    (["render", "arch_layers_bool.json", "-o", "x.dot"], 1, "layers"),
    (["render", "deep.yaml", "-o", "x.dot"], 1, ""),
    (["render", "bigint.yaml", "-o", "x.dot"], 1, ""),
    (["render", "bin.dat", "-o", "x.dot"], 1, ""),
    (["render", "a.json", "-o", "x.bmp"], 1, "cannot render"),
    (["diff", "space.yaml", "a.json"], 1, ""),
    (["diff", "a.json", "bin.dat"], 1, ""),
    (["diff", "a.json", "deep.json"], 1, ""),
    (["diff", "a.json", "arch_src_frac.json"], 1, ""),
    (["count", "--space", "deep.yaml"], 1, ""),
    (["count", "--space", "bigint.yaml"], 1, ""),
    (["count", "--space", "space_tab.yaml"], 1, ""),
    (["count", "--space", "bin.dat"], 1, ""),
    (["count", "--space", "nope"], 1, ""),
    (["count", "--space", "fifo"], 1, ""),
    (["sample", "--space", "tiny", "--scale", "-1", "-o", "x.json"], 1, ""),
    (["sample", "--space", "tiny", "--scale", "nan", "-o", "x.json"], 1, ""),
    (["sample", "--space", "tiny", "--scale", "inf", "-o", "x.json"], 1, ""),
    (["sample", "--space", "tiny", "--seed", "-1", "-o", "x.json"], 1, ""),
    (["decode", "s.json", "--paths", "0"], 2, ""),
    (["decode", "s.json", "--paths", "100000"], 1, ""),
    # --- run folders, checkpoints, interrupts (items 5, 9)
    (["train", "ck_garbage", "--resume"], 1, ""),
    (["train", "ck_empty", "--resume"], 1, ""),
    (["train", "ck_epoch_big", "--resume"], 1, "epoch"),
    (["train", "ck_epoch_neg", "--resume"], 1, "epoch"),
    (["train", "ck_no_rng", "--resume"], 1, "damaged"),
    (["train", "ck_kind", "--resume"], 1, "not a train checkpoint"),
    (["train", "t", *UNET, "--data", "data", "--epochs", "1", *SMOKE], 1, "finished run"),
    (["train", "t", "--resume", "--overwrite"], 1, "contradict"),
    (["train", "new_run", *UNET, "--data", "nope_data", "--epochs", "1", *SMOKE], 1, ""),
    (["train", "new_run", *UNET, "--data", "bin.dat", "--epochs", "1", *SMOKE], 1, ""),
    (["train", "s.json", *UNET, "--data", "data", "--epochs", "1", *SMOKE], 2, ""),
    (["train", "new_run", "--model", "arch_src_frac.json", "--data", "data", *SMOKE], 1, ""),
    (["train", "new_run", "--model", "bin.dat", "--data", "data", *SMOKE], 1, ""),
    (["search", "new_run", "--space", "deep.yaml", "--data", "data", *SMOKE], 1, ""),
    (["search", "new_run", "--space", "bigint.yaml", "--data", "data", *SMOKE], 1, ""),
    (["search", "new_run", "--space", "tiny", "--data", "phantom:0", *SMOKE], 1, ""),
    # --- trained models that are not usable (items 6, 10)
    (["evaluate", "t_nan", "--device", "cpu"], 1, "NaN"),
    (["predict", "t_nan", "data/images", "-o", "preds", "--device", "cpu"], 1, "NaN"),
    (["export", "t_nan", "--onnx", "nan.onnx"], 1, "NaN"),
    (["evaluate", "best_garbage", "--device", "cpu"], 1, ""),
    (["evaluate", "model_list", "--device", "cpu"], 1, ""),
    (["evaluate", "model_bin", "--device", "cpu"], 1, ""),
    (["evaluate", "model_deep", "--device", "cpu"], 1, ""),
    (["export", "model_bin", "--onnx", "x.onnx"], 1, ""),
    (["export", "bin.dat", "--onnx", "x.onnx"], 1, ""),
    (["cost", "bin.dat"], 1, ""),
    (["cost", "deep.json"], 1, ""),
    (["cost", "arch_src_frac.json"], 1, ""),
    (["cost", "--model", "bin.dat"], 2, ""),
    (["predict", "t", "nope_data", "-o", "preds", "--device", "cpu"], 1, ""),
    (["predict", "t", "data/images", "-o", "s.json", "--device", "cpu"], 2, ""),
    (["evaluate", "t", "--device", "cpu", "--split", "bogus"], 2, ""),
    # --- later surfaces: latency budgets, dot limits, channel files, devices
    (["decode", "s.json", "--max-latency-ms", "nan"], 2, "--max-latency-ms"),
    (["decode", "s.json", "--max-latency-ms", "-1"], 2, "--max-latency-ms"),
    (["decode", "s.json", "--max-latency-ms", "1e-9"], 1, "--max-latency-ms to at least"),
    (["decode", "s.json", "--max-latency-ms", "5", "--latency-device", "tpu"], 1, "device"),
    (["decode", "s.json", "--max-latency-ms", "5", "s.json"], 1, "counts each search once"),
    (["render", "a.json", "-o", "x.svg", "--dot-timeout", "0"], 2, "--dot-timeout"),
    (["render", "a.json", "-o", "x.svg", "--dot-timeout", "nan"], 2, "--dot-timeout"),
    (["render", "a.json", "-o", "x.svg", "--max-dot-elements", "0"], 2, "--max-dot-elements"),
    (["render", "a.json", "-o", "x.svg", "--max-dot-elements", "1"], 1, "--max-dot-elements"),
    (["predict", "t", "chgap", "-o", "preds", "--device", "cpu"], 1, "no channel 0001"),
    (["predict", "t", "chn/imagesTs", "-o", "preds", "--device", "cpu"], 1, "channel"),
    (["evaluate", "t", "--device", "cuda"], 1, "CUDA is not available"),
    (["train", "new_run", *UNET, "--data", "data", "--device", "tpu", "--epochs", "1"], 1, ""),
    # issue 18, round 2 (items 6-11)
    *[
        ([f"env:MSNAS_NO_MEMORY_CHECK={v}", "count", "--space", "tiny"], 1, "not a yes/no")
        for v in ("maybe", "2", "-1", "nein")
    ],
    *[
        (
            [f"env:MSNAS_NO_MEMORY_CHECK={v}", "env:MSNAS_MEMORY_LIMIT=1K", "cost", *UNET],
            1,
            "memory",
        )
        for v in ("false", "No", "OFF", "0", "")
    ],
    (["predict", "t", "r2/zero_z.nii.gz", "-o", "preds", "--device", "cpu"], 1, "no voxels"),
    (["predict", "t", "r2/zero_y.nii.gz", "-o", "preds", "--device", "cpu"], 1, "no voxels"),
    (["predict", "t", "r2/nan_affine.nii", "-o", "preds", "--device", "cpu"], 1, "affine"),
    (["render", "fmt_list.json", "-o", "x.dot"], 1, "unknown document format"),
    (["diff", "fmt_dict.json", "a.json"], 1, "unknown document format"),
    (["predict", "t", "r2/mixed", "-o", "r2_out/m", "--device", "cpu"], 1, "truncated"),
    (["quickstart", "r2_qs/run", "--data", "r2", "--device", "cpu", "--max-steps", "1"], 1, ""),
    *[
        (["path:r2", "--plugin", "r2_ops", *cmd], 1, f"operation 'r2_{op}' (registered by r2_ops)")
        for op in ("wide", "shrink", "raises")
        for cmd in (
            ["decode", f"r2/s_{op}.json", "--paths", "1", "--max-macs", "1G"],
            ["cost", f"r2/a_{op}.json", "--input-size", "32"],
            ["search", "new_run", "--space", f"r2/{op}.yaml", "--data", "phantom:10", *SMOKE],
            ["train", "new_run", "--model", f"r2/a_{op}.json", "--data", "phantom:10", *SMOKE],
        )
    ],
    (["train", "new_run", *UNET, "--data", "r2/labels", "--epochs", "1", *SMOKE], 1, "outside"),
    (["train", "new_run", *UNET, "--data", "r2/cut", "--epochs", "1", *SMOKE], 1, "truncated"),
    (["search", "new_run", "--space", "tiny", "--data", "r2/cut", *SMOKE], 1, "truncated"),
    # issue 18, round 2 (items 1-5, 12)
    # item 1: a FIFO (or other special file) as any input: one line, never opened
    ([*TRAIN, "--folds", "fifo"], 1, "FIFO"),
    (["search", "new_run", "--space", "tiny", "--data", "data", "--folds", "fifo"], 1, "FIFO"),
    (["evaluate", "t", "--folds", "fifo", "--device", "cpu"], 1, "FIFO"),
    (["diff", "a.json", "fifo"], 1, "FIFO"),
    (["diff", "fifo", "a.json"], 1, "FIFO"),
    (["render", "fifo", "-o", "x.svg"], 1, "FIFO"),
    (["predict", "t", "fifo", "-o", "preds", "--device", "cpu"], 1, "FIFO"),
    (["train", "new_run", "--model", "fifo", "--data", "data", *SMOKE], 1, "FIFO"),
    (["train", "new_run", *UNET, "--data", "fifo", "--epochs", "1", *SMOKE], 1, "FIFO"),
    (["train", "new_run", *UNET, "--data", "r2_msd", "--epochs", "1", *SMOKE], 1, "FIFO"),
    (["predict", "t", "r2_csv", "-o", "preds", "--device", "cpu"], 1, "pixel_sizes.csv"),
    (["evaluate", "fifo", "--device", "cpu"], 1, "FIFO"),
    (["export", "fifo", "--onnx", "x.onnx"], 1, "FIFO"),
    (["cost", "fifo"], 1, "FIFO"),
    (["train", "r2_ck_fifo", "--resume"], 1, "FIFO"),
    (["evaluate", "r2_model_fifo", "--device", "cpu"], 1, "model.json: not a regular file"),
    (["decode", "/dev/zero"], 1, "character device"),
    # item 12: messages
    (["decode", "fifo"], 1, "not a regular file (a FIFO)"),  # was "no such state file"
    (["count", "--space", "fifo"], 1, "not a regular file (a FIFO)"),
    (["train", "r2_lock_fifo", "--resume"], 1, "lock file is a FIFO"),
    (["train", "r2_lock_link", "--resume"], 1, "lock file is a symbolic link"),
    (["evaluate", "r2_best_fifo", "--device", "cpu"], 1, "best.pt: not a regular file (a FIFO)"),
    (["evaluate", "r2_best_dir", "--device", "cpu"], 1, "best.pt: not a regular file (a folder)"),
    (["predict", "t", "r2_images/images", "-o", "preds", "--device", "cpu"], 1, "c1.png"),
    (["predict", "t", "r2_nanvox", "-o", "preds", "--device", "cpu"], 1, "v.nii.gz: the header"),
    (["evaluate", "t", "--data", "r2_nanvox", "--device", "cpu"], 1, "r2_nanvox/v.nii.gz"),
    (["predict", "t", "r2_complex", "-o", "preds", "--device", "cpu"], 1, "complex-valued"),
    (["decode", "space.yaml", "--json"], 1, "a search space, not a search state"),
    (["--threads", "99999999999999999999", "count", "--space", "tiny"], 2, "--threads"),
    # item 2: a huge image refused from its header, counting what preparing it allocates
    (["env:MSNAS_MEMORY_LIMIT=3G", "predict", "t", "r2_huge", "-o", "x"], 1, "needs about 7.2 GiB"),
    # item 3: schedules that cannot finish
    ([*R2_SEARCH, "--epochs", "1000000000,1000000000"], 1, "a run may take"),
    ([*R2_SEARCH, "--warmup", "1000000000"], 1, "a run may take"),
    ([*R2_SEARCH, "--arch-steps", "100000000,0"], 1, "steps, more than the 10,000,000"),
    ([*R2_SEARCH, "--arch-steps", "1,1", "--warmup-steps", "100000000"], 1, "a run may take"),
    ([*R2_SEARCH, "--arch-steps", "20000,0", "--max-steps", "1"], 1, "steps in epochs of 1"),
    (["train", "new_run", *UNET, "--data", "data", "--epochs", "1000000000"], 1, "a run may take"),
    # item 5: the same source twice in a consensus
    (["decode", "s.json", "s.json"], 1, "the same file as s.json"),
    (["decode", "s.json", "r2_b.json", "s.json"], 1, "the same file as s.json"),
    (["decode", "s.json", "link.json", "--consensus", "majority"], 1, "the same file as s.json"),
    (["decode", "s.json", "r2_hard.json"], 1, "the same file as s.json"),
    (["decode", "r2_run", "r2_run/state.json"], 1, "the same file as r2_run"),
    (["decode", "s.json", "r2_run", "-o", "x.json"], 1, "holds the same search state as s.json"),
    # item 4: a 4D NIfTI with 3 channels, a 3-page TIFF, for a 1-channel model
    (
        ["predict", "t", "r2_ch_nii", "-o", "preds", "--device", "cpu"],
        1,
        "not the colours of an RGB",
    ),
    (
        ["predict", "t", "r2_ch_tif", "-o", "preds", "--device", "cpu"],
        1,
        "not the colours of an RGB",
    ),
    (["evaluate", "t", "--data", "r2_ch_tif", "--device", "cpu"], 1, "not the colours of an RGB"),
    # a hand-edited config.json: each field of the wrong type is named, with the file
    (
        ["train", "cfg_lr_str", "--resume"],
        1,
        "config.json: train config: lr='abc' must be a number",
    ),
    (["train", "cfg_augment_str", "--resume"], 1, "augment='false' must be true or false"),
    (["train", "cfg_epochs_float", "--resume"], 1, "epochs=2.5 must be an integer"),
]


R2_OPS = """
from torch import nn
from msnas_graph.backends.torch import register_op

@register_op("r2_wide", "a 1x1 conv that doubles the channels")
def wide(channels, spatial_dims=2, affine=True):
    return nn.Conv2d(channels, 2 * channels, 1)

@register_op("r2_shrink", "a pooling with stride 2")
def shrink(channels, spatial_dims=2, affine=True):
    return nn.AvgPool2d(2)

@register_op("r2_raises", "a factory that raises")
def raises(channels, spatial_dims=2, affine=True):
    raise ValueError("no such width")
"""


def _config_type_files(w: Path) -> None:
    """Unfinished copies of the trained run whose config.json holds a field of the wrong type."""
    for name, field, value in [("cfg_lr_str", "lr", "abc"), ("cfg_augment_str", "augment", "false"),
                               ("cfg_epochs_float", "epochs", 2.5)]:  # fmt: skip
        run = _copy_run(w / "t", w / name, skip=("DONE",))
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, field: value}))


def _round2_items_6_to_11_files(w: Path) -> None:
    """Files for the issue 18 round 2 cases (items 6-11)."""
    import nibabel as nib

    r2 = w / "r2"
    r2.mkdir()
    for name, shape in [("zero_z", (32, 32, 0)), ("zero_y", (32, 0, 3))]:
        nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), r2 / f"{name}.nii.gz")
    header = nib.Nifti1Image(np.zeros((32, 32, 2), np.float32), np.eye(4)).header
    header.set_sform(np.eye(4), code=1)
    header["qform_code"] = 0
    header["srow_x"] = [np.nan, 0, 0, 0]  # an affine nibabel reads back with a NaN
    nib.Nifti1Image(np.zeros((32, 32, 2), np.float32), None, header=header).to_filename(
        r2 / "nan_affine.nii"
    )
    noise = np.random.default_rng(1).integers(0, 255, (32, 32), np.uint8)
    for i in range(8):  # a batch of good images, then a truncated one
        _png(r2 / "mixed" / f"a{i}.png", noise)
    (r2 / "mixed" / "a8.png").write_bytes((r2 / "mixed" / "a0.png").read_bytes()[:400])
    (r2 / "r2_ops.py").write_text(R2_OPS)  # plug-in operations that break the shape rule
    for op in ("wide", "shrink", "raises"):
        register_operation_name(f"r2_{op}")  # the core learns the name; the plug-in, the op
        space = f"layers: 2\nscales: 2\nchannels: 4\npartial_k: 1\nnum_classes: 4\nops: [r2_{op}]\n"
        (r2 / f"{op}.yaml").write_text(space)
        state = SearchState.random(load_space(r2 / f"{op}.yaml"), seed=0)
        state.save(r2 / f"s_{op}.json")
        decode(state, paths=5).save(r2 / f"a_{op}.json")  # every edge: the cells use the op
    for i in range(10):  # nnU-Net layout whose dataset.json has 2 classes, a mask with 3
        _png(r2 / "labels" / "imagesTr" / f"c_{i:03d}_0000.png", noise)
        _png(r2 / "labels" / "labelsTr" / f"c_{i:03d}.png", (noise > 128).astype(np.uint8))
        _png(r2 / "cut" / "images" / f"c{i}.png", noise)  # images/masks with one cut image
        _png(r2 / "cut" / "masks" / f"c{i}.png", (noise > 128).astype(np.uint8))
    _png(r2 / "labels" / "labelsTr" / "c_009.png", np.full((32, 32), 2, np.uint8))
    spec = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}}
    (r2 / "labels" / "dataset.json").write_text(json.dumps({**spec, "file_ending": ".png"}))
    (r2 / "cut" / "images" / "c9.png").write_bytes((r2 / "mixed" / "a8.png").read_bytes())
    (w / "fmt_list.json").write_text(json.dumps({"format": ["x"]}))
    (w / "fmt_dict.json").write_text(json.dumps({"format": {"a": 1}}))


def _space_cases() -> list[tuple[list[str], int, str]]:
    return [
        (["count", "--space", f"@{field}:{value}"], 1, field)
        for field, value in [
            ("layers", "true"), ("layers", '"3"'), ("layers", "3.0"), ("layers", "0"),
            ("layers", "100000"), ("scales", "17"), ("channels", "100000000"),
            ("in_channels", "100000000"), ("num_classes", "1"), ("ops", "[]"),
            ("ops", "[sep_conv_7x7]"), ("fusion", "mean"), ("lyers", "3"),
            ("output_scales", "[true]"), ("input_size", "1e308"),
        ]
    ]  # fmt: skip


CASES += _space_cases()


def _snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs:  # a folder a failed command created counts as a change
            out[str((Path(dirpath) / name).relative_to(root))] = "folder"
        for name in files:
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                out[str(p.relative_to(root))] = "special"
                continue
            if p.name == ".lock":
                continue
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("args", "code", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_gives_one_line_and_changes_nothing(
    ws: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], code: int, message: str
) -> None:
    monkeypatch.chdir(ws)
    while args[0].startswith(("env:", "path:")):  # an environment variable, a sys.path entry
        kind, _, setting = args[0].partition(":")
        if kind == "env":
            monkeypatch.setenv(*setting.split("=", 1))
        else:
            monkeypatch.syspath_prepend(str(ws / setting))
        args = args[1:]
    if args[-1].startswith("@"):  # a space file with one bad field
        field, value = args[-1][1:].split(":", 1)
        text = "layers: 2\nscales: 2\nchannels: 4\npartial_k: 2\n"
        text = "\n".join(line for line in text.splitlines() if not line.startswith(field))
        path = ws / f"space_{field}.yaml"
        path.write_text(f"{text}\n{field}: {value}\n")
        args = [*args[:-1], path.name]
    before = _snapshot(ws)
    got, out, err = _cli(*args)
    assert got == code, (got, out, err)
    assert "Traceback" not in err + out and "unexpected" not in err
    lines = err.strip().splitlines()
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("msnas-graph: error: "), err
    else:
        assert lines and lines[-1].startswith("Error:"), err
    assert message in err
    assert _snapshot(ws) == before  # nothing changed, nothing created


@pytest.mark.slow
def test_predict_writes_beside_the_images_it_reads(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``data/images -o data/predictions`` is accepted (issue 17): only the folders the data
    reads and their ground truth are refused, not every sibling."""
    monkeypatch.chdir(ws)
    before = _snapshot(ws / "data")
    try:
        got, out, err = _cli("predict", "t", "data/images", "-o", "data/predictions",
                             "--device", "cpu", "--runtime", "eager")  # fmt: skip
        assert got == 0, (out, err)
        assert sorted(p.name for p in (ws / "data" / "predictions").iterdir()) == sorted(
            f"c{i}.png" for i in range(10)
        )
        after = _snapshot(ws / "data")
        assert {k: v for k, v in after.items() if not k.startswith("predictions")} == before
    finally:
        shutil.rmtree(ws / "data" / "predictions", ignore_errors=True)
