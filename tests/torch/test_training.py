"""Searching and training: a real (tiny) search and training, run folders, refusals, NaN handling,
evaluation and prediction, data loaders and losses."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from msnas_graph.architecture import Architecture
from msnas_graph.backends.torch.data import (
    EpochSampler,
    SegmentationTorchDataset,
    make_loader,
    split_by_group,
)
from msnas_graph.backends.torch.inference import evaluate, load_model, predict
from msnas_graph.backends.torch.losses import DiceCELoss, dice_scores
from msnas_graph.backends.torch.training import (
    SearchConfig,
    SearchResult,
    TrainConfig,
    TrainResult,
    search,
    train,
)
from msnas_graph.backends.torch.training.run_dir import load_checkpoint
from msnas_graph.data import load_dataset
from msnas_graph.errors import DataError, RunError
from msnas_graph.metrics import dice_iou
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

TINY = SearchSpace.preset("tiny")


DATA = "phantom:8"


def search_config(**kw: object) -> SearchConfig:
    base: dict[str, object] = dict(
        space=TINY, data=DATA, batch_size=2, epochs=(1, 1), max_steps_per_epoch=2, device="cpu"
    )
    base.update(kw)
    return SearchConfig(**base)  # type: ignore[arg-type]


def unet_config(**kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        model="unet",
        unet_base_channels=4,
        unet_depth=3,
        data=DATA,
        input_size=32,
        epochs=2,
        batch_size=2,
        max_steps_per_epoch=2,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def search_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SearchResult]:
    run = tmp_path_factory.mktemp("search") / "run"
    return run, search(search_config(), run, progress=False)


def _logits(state: SearchState) -> tuple[np.ndarray, np.ndarray]:
    cell = np.concatenate(
        [a.ravel() for c in state.space.cell_types for a in state.alpha_logits[c]]
        + [a.ravel() for c in state.space.cell_types for a in state.p_logits[c]]
    )
    beta = np.concatenate([state.beta_logits[n] for n in state.graph.searchable_nodes])
    return cell, beta


# ------------------------------------------------------------------------------------ search


def test_search_phases_update_their_own_parameters(search_run):
    run, result = search_run
    start = SearchState.zeros(result.state.space)
    e1 = SearchState.load(run / "states" / "epoch_001.json")
    e2 = SearchState.load(run / "states" / "epoch_002.json")
    assert (e1.meta["phase"], e2.meta["phase"]) == ("cell", "network")
    c0, b0 = _logits(start)
    c1, b1 = _logits(e1)
    c2, b2 = _logits(e2)
    assert not np.array_equal(c0, c1)  # phase 1 moves alpha and p ...
    assert np.array_equal(b0, b1)  # ... and not beta
    assert np.array_equal(c1, c2)  # phase 2 leaves alpha and p ...
    assert not np.array_equal(b1, b2)  # ... and moves beta
    assert result.state.content_hash == e2.content_hash


def test_search_run_folder(search_run):
    run, result = search_run
    for name in (
        "config.json",
        "state.json",
        "architecture.json",
        "supernet.pt",
        "checkpoint.pt",
        "metrics.csv",
        "plots/loss.png",
        "plots/arch_weights.png",
        "DONE",
        "states/epoch_001.json",
        "states/epoch_002.json",
    ):
        assert (run / name).is_file(), name
    # the data has 4 classes: the space follows the data
    assert result.state.space.num_classes == 4
    assert Architecture.load(run / "architecture.json") == result.architecture
    assert len(result.architecture.paths) == 3
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["phase"] for r in rows] == ["cell", "network"]
    assert {"epoch", "train_loss", "arch_loss", "val_loss", "val_dice", "lr"} <= set(rows[0])
    assert float(rows[1]["lr"]) < float(rows[0]["lr"])  # cosine
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and ckpt["kind"] == "search"
    assert set(ckpt["split"]) == {"train", "val", "test", "weights", "arch"}
    assert not set(ckpt["split"]["weights"]) & set(ckpt["split"]["arch"])
    assert not set(ckpt["split"]["train"]) & set(ckpt["split"]["test"])
    assert {"cell_decided", "node_decided", "flips", "edges_vs_prior", "arch_lr"} <= set(rows[0])
    assert (run / "plots" / "decisions.png").is_file()
    assert result.diagnostics is not None and result.diagnostics.summary().endswith(".")
    weights = torch.load(run / "supernet.pt", weights_only=True)
    assert any(k.startswith("beta_logits") for k in weights)
    assert SearchConfig.load(run / "config.json").to_dict() == search_config().to_dict()


def test_search_refuses_finished_run_and_resume_returns_it(search_run):
    run, result = search_run
    with pytest.raises(RunError, match="already holds a finished run; use --overwrite"):
        search(search_config(), run, progress=False)
    again = search(None, run, resume=True, progress=False)
    assert again.state == result.state
    with pytest.raises(RunError, match="contradict"):
        search(search_config(), run, resume=True, overwrite=True)


def test_search_config_errors():
    with pytest.raises(RunError, match="amp mode"):
        search_config(amp="fp8")
    with pytest.raises(RunError, match="multiple of"):
        search_config(input_size=33)
    with pytest.raises(RunError, match="unknown config field 'epoch'"):
        SearchConfig.from_dict({"epoch": 3})
    assert SearchConfig(space="paper").epochs == (20, 20)
    assert SearchConfig(space="quick").epochs == (2, 2)
    with pytest.raises(RunError, match="fp16.*CUDA"):
        search(search_config(amp="fp16"), "/nonexistent/never-written")


def test_schedules_that_cannot_finish_are_refused():
    """Issue 18 item 3: epochs, warm-up and steps are bounded, in one line with the time."""
    from msnas_graph.backends.torch.training.config import MAX_EPOCHS, MAX_STEPS

    for kw in (
        {"epochs": (10**9, 10**9)},
        {"epochs": (1, 1), "warmup": 10**9},
        {"epochs": (MAX_EPOCHS // 2, MAX_EPOCHS // 2), "warmup": 1},
        {"arch_steps": (MAX_STEPS, 1)},
        {"arch_steps": (1, 1), "warmup_steps": MAX_STEPS},
    ):
        with pytest.raises(RunError, match=r"more than the [\d,]+ a run may take \(at even"):
            search_config(**kw)
    assert search_config(epochs=(MAX_EPOCHS // 2, MAX_EPOCHS // 2), warmup=0).warmup == 0
    with pytest.raises(RunError, match="epochs = 10,001 epochs, more than the 10,000"):
        unet_config(epochs=MAX_EPOCHS + 1)
    assert unet_config(epochs=MAX_EPOCHS).epochs == MAX_EPOCHS


def test_search_keeps_the_newest_states(tmp_path, monkeypatch):
    """Issue 18 item 3: ``states/`` keeps the newest KEEP_STATES epoch files."""
    from msnas_graph.backends.torch.training import run_dir

    monkeypatch.setattr(run_dir, "KEEP_STATES", 2)
    run = tmp_path / "run"
    search(search_config(epochs=(2, 1), warmup=1, max_steps_per_epoch=1), run, progress=False)
    assert sorted(p.name for p in (run / "states").iterdir()) == [
        "epoch_003.json",
        "epoch_004.json",
    ]
    assert (run / "plots" / "arch_weights.png").is_file()


def test_search_paths_more_than_the_space_has(tmp_path):
    with pytest.raises(RunError, match="paths=999"):
        search(search_config(paths=999), tmp_path / "run", progress=False)


def test_nan_loss_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    calls = {"n": 0}
    real = DiceCELoss.forward

    def poisoned(self, logits, target):
        calls["n"] += 1
        loss = real(self, logits, target)
        # epoch 1: one step (3 weight-half cases, batch 2, no lone last batch) x 2 losses
        # + 1 validation batch; then NaN in epoch 2
        return loss * float("nan") if calls["n"] > 3 else loss

    monkeypatch.setattr(DiceCELoss, "forward", poisoned)
    with pytest.raises(RunError, match=r"loss became NaN at epoch 2 step 1; the last good"):
        search(search_config(), run, progress=False)
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (run / "DONE").exists()
    with pytest.raises(RunError, match="unfinished run; use --resume"):
        search(search_config(), run, progress=False)


def test_nan_from_huge_learning_rate_in_training(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RunError, match="loss became NaN at epoch"):
        train(unet_config(lr=1e12, grad_clip=None, epochs=3), run, progress=False)
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] >= 0


# ------------------------------------------------------------------------------------- train


def test_train_architecture_from_search_run_then_evaluate_and_predict(search_run, tmp_path):
    search_dir, result = search_run
    run = tmp_path / "train"
    res = train(
        TrainConfig(
            model=str(search_dir),
            data=DATA,
            epochs=2,
            batch_size=2,
            max_steps_per_epoch=2,
            device="cpu",
        ),
        run,
        progress=False,
    )
    for name in ("config.json", "model.json", "best.pt", "last.pt", "checkpoint.pt",
                 "metrics.csv", "plots/loss.png", "DONE"):  # fmt: skip
        assert (run / name).is_file(), name
    assert 1 <= res.best_epoch <= 2 and len(res.history) == 2
    spec = json.loads((run / "model.json").read_text())
    assert spec["kind"] == "architecture" and spec["input_size"] == TINY.input_size
    assert Architecture.from_dict(spec["architecture"]) == result.architecture

    model, info = load_model(run)
    assert info["num_classes"] == 4 and not model.training

    summary = evaluate(run, device="cpu", out_dir=tmp_path / "eval")
    test_ids = load_checkpoint(run / "checkpoint.pt")["split"]["test"]
    assert summary["num_cases"] == len(test_ids) > 0
    assert summary["split"] == "test" and summary["hd95_unit"] == "mm"
    assert 0.0 <= summary["mean_dice"] <= 1.0
    rows = list(csv.DictReader((tmp_path / "eval" / "per_case.csv").open()))
    assert len(rows) == len(test_ids)
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["num_cases"] == len(rows)

    # predictions come back at each case's original size (phantom: 64x64)
    masks = predict(run, "phantom:2", tmp_path / "pred", overlay=True, device="cpu")
    assert [m.name for m in masks] == ["phantom_000.png", "phantom_001.png"]
    from PIL import Image

    assert Image.open(masks[0]).size == (64, 64)
    assert (tmp_path / "pred" / "overlays" / "phantom_000.png").is_file()


def test_train_unet_same_path(tmp_path):
    run = tmp_path / "unet"
    res = train(unet_config(), run, progress=False)
    spec = json.loads((run / "model.json").read_text())
    assert spec["kind"] == "unet" and spec["unet"] == {"base_channels": 4, "depth": 3}
    assert res.best_dice is not None
    model, _ = load_model(run / "last.pt")
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 4, 32, 32)
    with pytest.raises(RunError, match="already holds a finished run"):
        train(unet_config(), run, progress=False)
    train(unet_config(epochs=1), run, overwrite=True, progress=False)
    assert len(load_checkpoint(run / "checkpoint.pt")["history"]) == 1


def test_train_errors(tmp_path, search_run):
    with pytest.raises(RunError, match="no such architecture file"):
        train(unet_config(model=str(tmp_path / "missing.json")), tmp_path / "a", progress=False)
    with pytest.raises(RunError, match="optimizer"):
        unet_config(optimizer="sgdd")
    search_dir, _ = search_run
    with pytest.raises(RunError, match="search run"):
        load_model(search_dir)
    with pytest.raises(RunError, match="unknown split"):
        evaluate(search_dir, split="tset")


def test_train_wider_than_searched_and_from_the_supernet(search_run, tmp_path):
    from msnas_graph.backends.torch.models import init_from_search
    from msnas_graph.backends.torch.nn.network import build_network

    search_dir, result = search_run
    width = result.architecture.space.channels
    cfg = dict(model=str(search_dir), data=DATA, epochs=1, batch_size=2, max_steps_per_epoch=1,
               device="cpu", input_size=32)  # fmt: skip
    train(TrainConfig(**cfg, channels=2 * width), tmp_path / "wide", progress=False)
    spec = json.loads((tmp_path / "wide" / "model.json").read_text())
    wide = Architecture.from_dict(spec["architecture"])
    assert wide == result.architecture.widen(2 * width) and wide.space.channels == 2 * width
    assert wide.edges == result.architecture.edges and wide.cells == result.architecture.cells

    # init_from copies the supernet's stem, head, preprocess and projections
    net = build_network(result.architecture)
    stats = init_from_search(net, search_dir)
    assert stats["copied"] > 0 and stats["skipped"] > 0  # tiny has partial_k > 1
    supernet = torch.load(search_dir / "supernet.pt", weights_only=True)
    for k, v in net.stem.state_dict().items():
        assert torch.equal(v, supernet[f"stem.{k}"]), k
    res = train(TrainConfig(**cfg, init_from=str(search_dir)), tmp_path / "ft", progress=False)
    assert res.best_epoch == 1
    assert TrainConfig.load(tmp_path / "ft" / "config.json").init_from == str(search_dir)

    with pytest.raises(RunError, match=f"search ran at base width {width}.*drop --channels"):
        train(TrainConfig(**cfg, channels=2 * width, init_from=str(search_dir)),
              tmp_path / "bad", progress=False)  # fmt: skip

    # the lean cell glue: the run's own architecture says so; the supernet's glue does not fit
    train(TrainConfig(**cfg, cell_glue="lean"), tmp_path / "lean", progress=False)
    spec = json.loads((tmp_path / "lean" / "model.json").read_text())
    lean = Architecture.from_dict(spec["architecture"])
    assert lean == result.architecture.with_cell_glue("lean")
    with pytest.raises(RunError, match="cell_glue='thin' is not darts or lean"):
        train(TrainConfig(**cfg, cell_glue="thin"), tmp_path / "thin", progress=False)
    assert not (tmp_path / "thin").exists()
    with pytest.raises(RunError, match="lean' cell glue leaves out.*--cell-glue darts"):
        train(TrainConfig(**cfg, cell_glue="lean", init_from=str(search_dir)),
              tmp_path / "bad_lean", progress=False)  # fmt: skip
    with pytest.raises(RunError, match="no supernet.pt and state.json"):
        train(TrainConfig(**cfg, init_from=str(tmp_path / "wide")), tmp_path / "bad2",
              progress=False)  # fmt: skip
    with pytest.raises(RunError, match="unet_base_channels"):
        unet_config(channels=8)
    with pytest.raises(RunError, match="does not apply to the U-Net"):
        unet_config(init_from=str(search_dir))
    with pytest.raises(RunError, match="channels=0 must be at least 1"):
        TrainConfig(**cfg, channels=0)


# ------------------------------------------------------------------------- data and losses


def test_dataset_and_sampler_are_pure_functions_of_seed_and_epoch():
    ds = load_dataset("phantom:6")
    tds = SegmentationTorchDataset(ds, [0, 2, 4], 32, augment=True, seed=3)
    assert torch.equal(tds[(1, 5)][0], tds[(1, 5)][0])
    assert not torch.equal(tds[(1, 5)][0], tds[(1, 6)][0])
    loader, sampler = make_loader(tds, 2, shuffle=True, seed=3)
    sampler.set_epoch(2)
    first = [b[0] for b in loader]
    sampler.set_epoch(2)
    again = [b[0] for b in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert len(first) == 1  # drop_last: no lone sample for BatchNorm
    shares = []
    for rank in range(2):
        s = EpochSampler(5, shuffle=True, seed=0, distributed=(rank, 2))
        s.set_epoch(1)
        shares.append([i for i, _ in s])
    # DistributedSampler pads 5 cases to 3 per rank: every case once, one case twice
    assert len(shares[0]) == len(shares[1]) == 3
    assert set(shares[0]) | set(shares[1]) == set(range(5))
    assert len(set(shares[0] + shares[1])) == 5


def test_split_by_group_never_splits_a_group():
    groups = ["a", "a", "b", "b", "c", "d", "d", "e"]
    w, a = split_by_group(range(8), groups, seed=1)
    assert sorted(w + a) == list(range(8))
    assert not {groups[i] for i in w} & {groups[i] for i in a}
    with pytest.raises(DataError, match="at least 2"):
        split_by_group([0, 1], ["a", "a"])


def test_dice_scores_match_core_metrics():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, size=(4, 8, 8))
    target = rng.integers(0, 3, size=(4, 8, 8))
    target[0] = 0  # classes absent on one or both sides
    pred[0] = 0
    ours = dice_scores(torch.from_numpy(pred), torch.from_numpy(target), 3).numpy()
    ref = [dice_iou(p, t, 3)[0][1:].mean() for p, t in zip(pred, target, strict=True)]
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_loss_is_low_for_a_confident_correct_prediction():
    target = torch.randint(0, 3, (2, 8, 8))
    good = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * 20
    bad = torch.zeros(2, 3, 8, 8)
    loss = DiceCELoss(3)
    assert float(loss(good, target)) < 1e-3 < float(loss(bad, target))
    ignored = target.clone()
    ignored[:] = -100
    assert torch.isfinite(loss(bad, ignored))


def _memory_formats(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each loss call saw channels-last logits (records through DiceCELoss)."""
    seen: list[bool] = []
    real = DiceCELoss.forward

    def spy(self, logits, target):
        seen.append(logits.is_contiguous(memory_format=torch.channels_last))
        return real(self, logits, target)

    monkeypatch.setattr(DiceCELoss, "forward", spy)
    return seen


_AMP_TRAIN = dict(epochs=1, max_steps_per_epoch=1)
_AMP_SEARCH = dict(epochs=(1, 0), max_steps_per_epoch=1)


@pytest.fixture(scope="module")
def fp32_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, SearchResult]:
    d = tmp_path_factory.mktemp("fp32")
    return (
        train(unet_config(**_AMP_TRAIN), d / "train", progress=False),
        search(search_config(**_AMP_SEARCH), d / "search", progress=False),
    )


@pytest.mark.parametrize("amp,channels_last", [("bf16", False), ("none", True)])
def test_amp_and_channels_last_run(tmp_path, monkeypatch, fp32_runs, amp, channels_last):
    """bf16 autocast and the channels-last format change the numerics only: the losses stay
    finite and close to the fp32 run's (equal for channels-last); channels-last is used."""
    ref, sref = fp32_runs
    cfg = _AMP_TRAIN
    seen = _memory_formats(monkeypatch)
    res = train(
        unet_config(**cfg, amp=amp, channels_last=channels_last), tmp_path / "run", progress=False
    )
    assert seen and all(s == channels_last for s in seen)
    got, want = res.history[0], ref.history[0]
    tol = 1e-5 if amp == "none" else 5e-2
    for key in ("train_loss", "val_loss"):
        assert np.isfinite(got[key])
        assert got[key] == pytest.approx(want[key], rel=tol), key
    out = search(
        search_config(**_AMP_SEARCH, amp=amp, channels_last=channels_last),
        tmp_path / "search",
        progress=False,
    )
    assert out.state.meta["phase"] == "done"
    for key in ("train_loss", "arch_loss"):
        assert np.isfinite(out.history[0][key])
        assert out.history[0][key] == pytest.approx(sref.history[0][key], rel=tol), key


def test_architecture_steps_freeze_the_weights_and_give_them_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from msnas_graph.backends.torch.nn.supernet import Supernet

    seen: list[tuple[bool, bool]] = []  # (architecture trainable, weights trainable) per forward
    forward = Supernet.forward

    def spy(self: Supernet, *args: object, **kwargs: object) -> torch.Tensor:
        if torch.is_grad_enabled():
            arch = any(p.requires_grad for p in self.arch_parameters())
            weights = [p.requires_grad for p in self.weight_parameters()]
            assert len(set(weights)) == 1
            seen.append((arch, weights[0]))
        return forward(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Supernet, "forward", spy)
    search(search_config(epochs=(0, 2)), tmp_path / "run", progress=False)
    assert (True, False) in seen and (False, True) in seen  # both kinds of step ran
    assert (True, True) not in seen


def test_weight_steps_use_the_fused_sgd_where_the_device_has_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from msnas_graph.backends.torch.training.search import _weight_sgd

    kinds: set[tuple[object, object]] = set()
    step = torch.optim.SGD.step

    def spy(self: torch.optim.SGD, *args: object, **kwargs: object) -> object:
        kinds.add((self.defaults["fused"], self.defaults["foreach"]))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    search(search_config(epochs=(0, 1)), tmp_path / "run", progress=False)
    assert kinds == {(True, None)}
    # a device without the kernel (PyTorch would refuse only at the first step): foreach
    meta = [torch.nn.Parameter(torch.zeros(2, device="meta"))]
    assert _weight_sgd(meta, 0.1, 0.9, 0.0).defaults["foreach"] is True
    ints = [torch.nn.Parameter(torch.zeros(2, dtype=torch.int64), requires_grad=False)]
    assert _weight_sgd(ints, 0.1, 0.9, 0.0).defaults["fused"] is None
