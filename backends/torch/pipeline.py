"""The whole job in one call: search -> decode (and render) -> train -> evaluate.

This is what ``msnas-graph quickstart`` runs. Each stage writes its own run folder under
``out_dir`` (``search/``, ``train/``) plus the decoded ``architecture.json`` and its picture, so
every stage can also be re-run or inspected alone with the other commands.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msnas_graph.architecture import Architecture
from msnas_graph.decode import decode
from msnas_graph.errors import RenderError
from msnas_graph.spec import SearchSpace, load_space

__all__ = ["QuickstartResult", "quickstart"]

logger = logging.getLogger(__name__)


@dataclass
class QuickstartResult:
    """Where everything went, and the headline figures."""

    out_dir: Path
    architecture: Architecture
    files: dict[str, Path] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    #: The search's decision summary (and its warning when undecided), for people.
    decisions: str | None = None


def _cost(target_macs: int | None, target_macs_unet: float | None) -> dict[str, Any]:
    """The search config's cost fields for a MACs target, absolute or relative (or none)."""
    if target_macs is not None:
        return {"cost": "macs", "cost_target": target_macs}
    if target_macs_unet is None:
        return {}
    return {"cost": "macs", "cost_target_unet": target_macs_unet}


def quickstart(
    out_dir: str | Path,
    *,
    data: str = "phantom:96",
    space: str | SearchSpace = "quick",
    search_epochs: tuple[int, int] = (4, 4),
    train_epochs: int = 40,
    paths: int = 3,
    batch_size: int = 8,
    input_size: int | None = None,
    folds: str | None = None,
    test_fold: int = 0,
    device: str = "auto",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    max_steps_per_epoch: int | None = None,
    target_macs_unet: float | None = 0.8,
    target_macs: int | None = None,
) -> QuickstartResult:
    """Search an architecture on ``data``, decode the top ``paths`` paths, train the network
    from scratch and evaluate it on the held-out fold. Returns where the results are.

    The search weighs MACs above a target (:attr:`SearchConfig.cost_target_unet
    <msnas_graph.backends.torch.training.SearchConfig>`): by default 0.8x the MACs of the
    U-Net of the network's width, ``target_macs`` for an absolute count instead, and neither
    (``target_macs_unet=None``) for accuracy alone, the paper's search. On HC18 and on the
    phantom the target gave a faster network at the same or a better Dice (README).
    """
    from msnas_graph.backends.torch.inference import evaluate
    from msnas_graph.backends.torch.training import SearchConfig, TrainConfig, search, train

    out = Path(out_dir)
    sp = space if isinstance(space, SearchSpace) else load_space(space)
    seconds: dict[str, float] = {}

    shared: dict[str, Any] = {
        "data": data, "input_size": input_size, "batch_size": batch_size, "seed": seed,
        "device": device, "folds": folds, "test_fold": test_fold,
        "max_steps_per_epoch": max_steps_per_epoch,
    }  # fmt: skip
    t0 = time.perf_counter()
    search_cfg = SearchConfig(
        space=sp,
        epochs=search_epochs,
        paths=paths,
        **shared,
        **_cost(target_macs, target_macs_unet),
    )
    result = search(search_cfg, out / "search", overwrite=overwrite, progress=progress)
    seconds["search"] = time.perf_counter() - t0

    arch = decode(result.state, paths=paths)
    files = {"search": out / "search", "architecture": arch.save(out / "architecture.json")}
    try:
        from msnas_graph.render import render

        files["picture"] = render(arch, out / "architecture.svg")
    except RenderError as exc:  # the picture is a bonus: say why it is missing, go on
        logger.warning("architecture not rendered: %s", exc)

    t0 = time.perf_counter()
    train_cfg = TrainConfig(model=str(files["architecture"]), epochs=train_epochs, **shared)
    train(train_cfg, out / "train", overwrite=overwrite, progress=progress)
    seconds["train"] = time.perf_counter() - t0
    files["train"] = out / "train"

    t0 = time.perf_counter()
    summary = evaluate(out / "train", device=device)  # train/eval_test, where compare reads
    seconds["evaluate"] = time.perf_counter() - t0
    files["evaluation"] = out / "train" / "eval_test"
    diag = result.diagnostics
    decisions = None
    if diag is not None:
        warnings = [w for w in (diag.warning(), arch.context_warning()) if w]
        decisions = diag.summary() + "".join(f"\nwarning: {w}" for w in warnings)
    return QuickstartResult(out, arch, files, summary, seconds, decisions)
