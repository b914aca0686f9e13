"""Resume: an interrupted search or training, resumed, ends exactly where an uninterrupted run
ends (CPU, same process, so the same thread count)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from msnas_graph.backends.torch.losses import DiceCELoss
from msnas_graph.backends.torch.training import SearchConfig, TrainConfig, search, train
from msnas_graph.backends.torch.training.run_dir import load_checkpoint
from msnas_graph.errors import RunError
from msnas_graph.spec import SearchSpace


def _stop_after(epoch: int):
    def hook(row: dict) -> None:
        if row["epoch"] == epoch:
            raise KeyboardInterrupt

    return hook


def _same_weights(a: Path, b: Path) -> None:
    wa = torch.load(a, weights_only=True)
    wb = torch.load(b, weights_only=True)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def _strip_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in history]


def test_search_resume_equals_uninterrupted(tmp_path):
    cfg = SearchConfig(
        space=SearchSpace.preset("tiny"),
        data="phantom:8",
        batch_size=1,
        epochs=(2, 2),
        max_steps_per_epoch=2,
        device="cpu",
    )
    whole = search(cfg, tmp_path / "whole", progress=False)

    run = tmp_path / "parts"
    with pytest.raises(KeyboardInterrupt):
        search(cfg, run, progress=False, on_epoch_end=_stop_after(1))
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    assert not (run / "DONE").exists()
    with pytest.raises(RunError, match="unfinished run; use --resume"):
        search(cfg, run, progress=False)
    changed = SearchConfig(**{**cfg.__dict__, "lr": 0.1})
    with pytest.raises(RunError, match="fields differ: lr"):
        search(changed, run, resume=True, progress=False)

    resumed = search(None, run, resume=True, progress=False)  # config.json of the run
    assert resumed.state.content_hash == whole.state.content_hash
    for c in whole.state.space.cell_types:
        for x, y in zip(whole.state.alpha_logits[c], resumed.state.alpha_logits[c], strict=True):
            np.testing.assert_array_equal(x, y)
    assert resumed.architecture == whole.architecture
    _same_weights(tmp_path / "whole" / "supernet.pt", run / "supernet.pt")
    assert _strip_time(resumed.history) == _strip_time(whole.history)
    assert (run / "DONE").is_file()
    assert sorted(p.name for p in (run / "states").iterdir()) == [
        f"epoch_{e:03d}.json"
        for e in (1, 2, 3, 4, 5)  # 1 warm-up + 2 + 2 epochs
    ]


def test_train_resume_after_interrupt_mid_epoch(tmp_path, monkeypatch):
    cfg = TrainConfig(
        model="unet",
        unet_base_channels=4,
        unet_depth=3,
        data="phantom:10",
        input_size=32,
        epochs=3,
        batch_size=2,
        max_steps_per_epoch=2,
        device="cpu",
    )
    whole = train(cfg, tmp_path / "whole", progress=False)

    run = tmp_path / "parts"
    calls = {"n": 0}
    real = DiceCELoss.forward

    def interrupted(self, logits, target):
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 1: 2 steps + 1 validation batch; then mid epoch 2
            raise KeyboardInterrupt
        return real(self, logits, target)

    monkeypatch.setattr(DiceCELoss, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, progress=False)
    monkeypatch.setattr(DiceCELoss, "forward", real)
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1

    resumed = train(cfg, run, resume=True, progress=False)
    assert _strip_time(resumed.history) == _strip_time(whole.history)
    assert (resumed.best_epoch, resumed.best_dice) == (whole.best_epoch, whole.best_dice)
    _same_weights(tmp_path / "whole" / "last.pt", run / "last.pt")
    _same_weights(tmp_path / "whole" / "best.pt", run / "best.pt")


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(RunError, match="no checkpoint.pt to resume from"):
        train(TrainConfig(device="cpu"), tmp_path / "empty", resume=True)
    with pytest.raises(RunError, match="only a resumed run reads config.json"):
        search(None, tmp_path / "empty")
