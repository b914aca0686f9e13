"""The accuracy-latency frontier: searched MS-NAS networks against the U-Net family.

A user picks a network by accuracy *and* speed, and would otherwise scale a U-Net up or down.
This benchmark trains, with one identical recipe and budget (given in steps, whatever the
dataset's size), over ``--train-seeds`` training seeds each:

* the U-Net family: base widths ``--unet-widths`` (default 8, 12, 16, 24, 32) at depth 4
  (and ``--unet-depths``, e.g. ``4,5``);
* MS-NAS: the mean consensus of ``--search-seeds`` searches per search group, decoded at
  ``N_l = 3`` with the ``relative`` and the ``paper`` path score, trained at ``--train-width``.
  Groups (``--groups``): ``dense`` (the dense operation set, accuracy alone), ``dense-lat@F``
  (the same with ``--cost latency --target-latency`` at ``F`` times U-Net(16)'s measured
  batch-1 latency, default 0.5, the cost measured at the training width), ``dense-w@W``
  (``--cost latency --cost-weight W``), ``convs-macs@F`` (convolutions and ``none`` only, a
  MACs target of ``F`` times U-Net(16)'s), ``convs-lat@F`` (a latency target with the same
  operations), ``convs`` (the same operations, no cost), ``paper-ops`` (the paper's
  operations); the suffix ``+deep`` searches a 6-layer x 4-scale trellis instead of
  ``quick``'s 4 x 3, ``+1b`` cells of one block, ``+noskip`` a trellis without identity edges,
  ``+lean`` the lean cell glue (no 1x1 preprocess or projection where dense convolutions do
  without; the search's cost table counts it), ``+lean-build`` the darts cells in the search
  and the lean glue in the trained networks (``train --cell-glue lean``), ``+min<k>`` the
  consensus decoded with ``--min-scale k``, ``+blat<F>`` decoded under ``--max-latency-ms Fx``
  at the training size and width (``+bmacs<F>``: ``--max-macs Fx``; both counted in the glue
  the network is built with, ``decode --cell-glue``), ``+gumbel`` searched with
  ``--path-sampling gumbel``, ``+awd0`` searched without the architecture parameters' weight
  decay (DARTS's 1e-3), ``+fit`` that budget met by narrowing the unbudgeted consensus
  to the widest base width that fits (``decode --fit-width``; ``+fit8``: a multiple of 8); a
  network that two groups or scores share is trained and counted once.
  ``--first-search-seed K`` makes an independent
  search run (seeds K, K+1, ...); ``--randoms R`` adds MACs-matched random architectures of
  the first group's space, decoded alike (N_l, ``--min-scale``), at ``--random-width``.

Per model: Dice, IoU and HD95 on the test fold (HD95 in the unit the evaluation reports: mm
where the data has a pixel size), params, MACs at the training size, and latency in the
runtime ``predict --runtime auto`` resolves (ONNX Runtime where installed), one thread, batch 1
and 8, the median of interleaved rounds. For each MS-NAS model: "on the frontier" or
"dominated by U-Net(w)" (a U-Net at most as slow and at least as accurate, by the mean over
training seeds). Writes a results file (``--results``) and a picture of Dice against latency
and against MACs (``--plot``).

    python benchmarks/frontier.py --data hc18 --jobs 2            # ~1.5 h on two cores
    python benchmarks/frontier.py --data hc18 --jobs 2 --reuse    # keep finished runs

Runs go to ``--out``; finished searches and trainings are kept with ``--reuse``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
HC18 = ROOT.parent / "shared" / "data" / "hc18"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, markdown_table, write_results  # noqa: E402
from search_vs_random import _ms, bootstrap_diff  # noqa: E402

from msnas_graph.consensus import consensus  # noqa: E402
from msnas_graph.diagnostics import diagnose  # noqa: E402
from msnas_graph.operations import DEFAULT_OPERATIONS  # noqa: E402
from msnas_graph.spec import SearchSpace  # noqa: E402
from msnas_graph.state import SearchState  # noqa: E402

if TYPE_CHECKING:
    from msnas_graph.architecture import Architecture

DENSE_OPS = ["conv_3x3", "conv_3x3_dil2", "avg_pool_3x3", "skip_connect", "none"]
CONV_OPS = ["conv_3x3", "conv_3x3_dil2", "none"]  # no free operation for the cost to choose
BUDGET_FRACTIONS = ("0.5", "0.6", "0.7", "0.8", "0.9", "1.0")
#: Group suffixes and the space fields they set (group_ops).
SUFFIXES: dict[str, dict[str, Any]] = {
    "+deep": {"layers": 6, "scales": 4},
    "+1b": {"blocks": 1},
    "+noskip": {"edge_kinds": ("contract", "keep", "expand")},
    "+lean": {"cell_glue": "lean"},
    "+lean-build": {},  # searched with the darts cells, built lean (build_glue)
    **{f"+min{k}": {} for k in range(1, 5)},  # decoded with --min-scale k (decode_min_scale)
    **{f"+b{k}{f}": {} for k in ("lat", "macs") for f in BUDGET_FRACTIONS},  # decode_budget
    "+gumbel": {},  # searched with --path-sampling gumbel (search_config)
    "+awd0": {},  # searched without the architecture weight decay (search_config)
    "+fit": {},  # the budget met by the width, not the paths (decode --fit-width): _fit
    "+fit8": {},  # the same, a width that is a multiple of 8 (--width-multiple 8)
}
MACS_TOLERANCE = 0.15  # a random architecture is MACs-matched within this


@dataclass(frozen=True)
class Budget:
    """The CPU budget, in one place so that the results file says what was cut."""

    search_size: int = 64
    warmup_steps: int = 60
    arch_steps: tuple[int, int] = (100, 100)
    arch_lr: float | None = None  # automatic: 2 / the phase's steps, at most 3e-2
    search_steps_per_epoch: int = 50
    train_size: int = 64
    train_steps: int = 400
    steps_per_epoch: int = 40
    batch_size: int = 8
    train_width: int = 16
    unet_depth: int = 4


# ------------------------------------------------------------------------------- workers


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def group_cost(group: str, unet16: dict[str, float], width: int) -> dict[str, Any]:
    """The cost settings of a search group: ``dense`` (none), ``dense-lat[@F]`` (a latency
    target of ``F`` times U-Net(16)'s, default 0.5), ``dense-w@W`` (latency by weight ``W``),
    ``convs-macs@F`` (a MACs target of ``F`` times U-Net(16)'s, convolutions only),
    ``convs-lat@F`` (a latency target, convolutions only).

    >>> group_cost("dense-lat@0.9", {"ms": 2.0}, 16)["cost_target"], group_cost("dense", {}, 16)
    (1.8, {})
    >>> group_cost("convs-lat@0.5", {"ms": 2.0}, 12)["cost_target"]
    1.0
    """
    name, _, value = _suffixes(group)[0].partition("@")
    if name in ("dense-lat", "convs-lat"):
        target = round(float(value or 0.5) * unet16["ms"], 6)
        return {"cost": "latency", "cost_target": target, "cost_channels": width}
    if name == "dense-w":
        return {"cost": "latency", "cost_weight": float(value), "cost_channels": width}
    if name == "convs-macs":
        target = round(float(value) * unet16["macs"])
        return {"cost": "macs", "cost_target": target, "cost_channels": width}
    return {}


def group_ops(group: str) -> dict[str, Any]:
    """The space fields a group changes: the operation set; with the suffix ``+deep`` a
    deeper trellis (6 layers x 4 scales: paths can reach 1/8 of the input's side and come back,
    where the ``quick`` space's 4 x 3 stop at 1/4); with ``+1b`` cells of one block (one
    operation each, where ``quick``'s two blocks hold two); with ``+noskip`` no identity
    (``skip``) network edges, so that a cost term cannot meet its target with free edges and
    must trade real cells; with ``+lean`` the lean cell glue. Suffixes combine in any order.

    >>> group_ops("convs-macs@0.8+deep")["scales"], group_ops("paper-ops")["ops"][0]
    (4, 'sep_conv_3x3')
    >>> group_ops("convs+1b")["blocks"], group_cost("convs-macs@0.8+1b", {"macs": 10}, 8)
    (1, {'cost': 'macs', 'cost_target': 8, 'cost_channels': 8})
    >>> fields = group_ops("convs-lat@0.7+noskip+deep")
    >>> fields["edge_kinds"], fields["scales"]
    (('contract', 'keep', 'expand'), 4)
    >>> group_cost("convs-lat@0.7+deep+noskip", {"ms": 1}, 8)["cost_target"]
    0.7
    >>> group_ops("convs-macs@0.8+lean")["cell_glue"]
    'lean'
    """
    name, extra = _suffixes(group)
    extra = {"cell_glue": "darts", **extra}  # the paper's cells unless +lean
    if name == "paper-ops":
        return {"ops": [*DEFAULT_OPERATIONS, "none"], **extra}
    return {"ops": CONV_OPS if name.startswith("convs") else DENSE_OPS, **extra}


def build_glue(group: str) -> str | None:
    """The cell glue a group's networks are trained with when it differs from the searched
    space's: ``+lean-build`` searches with the darts cells (and the darts cost table) and
    builds the decoded networks lean, as ``train --cell-glue lean`` does.

    >>> build_glue("convs-macs@0.8+lean-build"), build_glue("convs-macs@0.8+lean")
    ('lean', None)
    """
    return "lean" if "+lean-build" in group else None


def network_key(arch: Any, width: int) -> str:
    """What the network built from ``arch`` at base width ``width`` depends on (its edges,
    cells, glue and fusion, not the decoding weights): two groups that decode the same
    network share one key, and the network is trained and counted once."""
    return json.dumps(
        [
            width,
            sorted(e.key for e in arch.edges),
            {c: str(g) for c, g in arch.cells.items()},
            arch.space.cell_glue,
            arch.space.fusion,
        ]
    )


def trained_other(run: Path, source: str, width: int) -> bool:
    """Whether the finished training run in ``run`` trained another network than the
    architecture file ``source`` at ``width`` (a U-Net source is never checked)."""
    if source.startswith("unet") or not (run / "DONE").is_file():
        return False
    from msnas_graph.architecture import Architecture

    trained = json.loads((run / "model.json").read_text())["architecture"]
    mine = network_key(Architecture.load(source), width)
    return network_key(Architecture.from_dict(trained), width) != mine


def decode_min_scale(group: str) -> int:
    """The ``decode --min-scale`` a group's consensus is decoded with: ``k`` for the suffix
    ``+min<k>`` (the same searches, each kept set with a path down to scale ``k``), else 0.

    >>> decode_min_scale("convs-macs@0.8+deep+lean-build+min3"), decode_min_scale("convs")
    (3, 0)
    """
    found = [k for k in range(1, 5) if f"+min{k}" in group]
    return found[0] if found else 0


def decode_budget(group: str) -> tuple[str, float] | None:
    """The budget a group's consensus is decoded under (at the training size and width, in
    the glue it is built with): ``("lat", F)``, ``decode --max-latency-ms Fx``, for the suffix
    ``+blat<F>``; ``("macs", F)``, ``--max-macs Fx``, for ``+bmacs<F>``; else ``None``.

    >>> decode_budget("convs+deep+lean-build+min3+blat0.8"), decode_budget("convs")
    (('lat', 0.8), None)
    >>> decode_budget("convs+deep+lean-build+bmacs0.7+gumbel")
    ('macs', 0.7)
    """
    found = [k for k in SUFFIXES if k.startswith(("+blat", "+bmacs")) and k in group]
    if not found:
        return None
    kind = found[0][2:].rstrip("0123456789.")
    return kind, float(found[0].removeprefix(f"+b{kind}"))


def _budget_args(group: str, space: SearchSpace, b: Budget, width: int) -> dict[str, Any]:
    """``consensus``'s budget and cost model for a ``+blat<F>`` or ``+bmacs<F>`` group: ``F``
    times U-Net(``width``)'s eager batch-1 latency (or MACs) at the training size, each part
    of the network timed (counted) alike at ``width`` in ``space``'s cell glue (the build's:
    ``decode --cell-glue``)."""
    found = decode_budget(group)
    if found is None:
        return {}
    from msnas_graph.backends.torch.cost_model import edge_cost_model, unet_cost
    from msnas_graph.budget import Budget

    (kind, frac), timed = found, found[0] == "lat"
    wide, size = space.widen(width), b.train_size
    unet = unet_cost(wide, size, latency=timed)
    limit = frac * (unet.latency_ms if timed else unet.macs)
    print(f"[{group}] decode budget: {frac}x U-Net({width})'s {kind} = {limit:.4g}")
    return {
        "budget": Budget(max_latency_ms=limit) if timed else Budget(max_macs=round(limit)),
        "cost_model": lambda cells: edge_cost_model(cells, wide, size, latency=timed),
    }


def _fit(arch: Architecture, budget: Any, size: int, start: int, multiple: int = 1) -> Architecture:
    """``+fit`` (``decode --fit-width``): ``arch``, decoded without the budget, at the widest
    base width whose built network fits it, counted (timed) at ``size`` as ``_budget_args``
    counts."""
    from msnas_graph.backends.torch.cost_model import edge_cost_model
    from msnas_graph.budget import fit_width, network_cost

    def cost_at(width: int) -> Any:
        wide, timed = arch.space.widen(width), budget.max_latency_ms is not None
        return network_cost(arch.edges, edge_cost_model(arch.cells, wide, size, latency=timed))

    width, cost = fit_width(budget, cost_at, start, multiple)
    print(f"fitted to {budget}: base width {width}, {cost}")
    return arch.widen(width)


def _suffixes(group: str) -> tuple[str, dict[str, Any]]:
    """A group's name without its space suffixes, and the fields they set."""
    extra: dict[str, Any] = {}
    found = True
    while found:  # the suffixes in any order
        found = False
        for suffix, fields in SUFFIXES.items():
            if group.endswith(suffix):
                group, extra, found = group.removesuffix(suffix), {**extra, **fields}, True
    return group, extra


def variants(
    paths: list[int], widths: list[int], width: int, width_paths: tuple[int, ...] = (3,)
) -> list[tuple[int, int]]:
    """The (N_l, width) pairs each group's consensus is trained at: every ``N_l`` of ``paths``
    at the main ``width``, and every width of ``widths`` at each ``N_l`` of ``width_paths``.

    >>> variants([1, 3], [8, 16], 16)
    [(1, 16), (3, 16), (3, 8)]
    >>> variants([2, 3], [32], 16, (2, 3))
    [(2, 16), (3, 16), (2, 32), (3, 32)]
    """
    pairs = [(n, width) for n in paths] + [(n, w) for w in widths for n in width_paths]
    return list(dict.fromkeys(pairs))


def model_name(group: str, score: str, paths: int, width: int, main_width: int) -> str:
    """A model's label: ``group score``, with ``N<n>`` where ``N_l != 3`` and ``w<width>`` away
    from the main width.

    >>> model_name("dense", "paper", 3, 16, 16), model_name("dense", "paper", 5, 8, 16)
    ('dense paper', 'dense paper N5 w8')
    """
    return " ".join(
        [group, score]
        + ([f"N{paths}"] if paths != 3 else [])
        + ([f"w{width}"] if width != main_width else [])
    )


def unet_name(width: int, depth: int, b: Budget) -> str:
    """A U-Net's label: ``U-Net(width)`` at the budget's depth, ``U-Net(width, depth)`` at
    another.

    >>> unet_name(16, 4, Budget()), unet_name(8, 5, Budget())
    ('U-Net(16)', 'U-Net(8, 5)')
    """
    return f"U-Net({width})" if depth == b.unet_depth else f"U-Net({width}, {depth})"


def _arch_macs(arch: Any, b: Budget) -> int:
    """MACs of a decoded architecture built at the training width and size."""
    from msnas_graph.backends.torch.cost import model_cost

    cost = model_cost(arch.widen(b.train_width), input_size=b.train_size, activation=False)
    return int(cost["macs"])


def _random_models(
    space: SearchSpace, ref: str, models: dict[str, tuple[str, int]], count: int, score: str,
    b: Budget, out: Path, glue: str | None = None, paths: int = 3, min_scale: int = 0,
) -> list[str]:  # fmt: skip
    """Add ``count`` random architectures of ``space`` (a search group's), decoded at
    ``paths`` (``ref``'s N_l) and ``min_scale`` (its group's), whose MACs lie within
    ``MACS_TOLERANCE`` of model ``ref``'s (the first ``count`` such random states, seeds 1000,
    1001, ...) to ``models``, trained at ``ref``'s width; returns their names. MACs are matched
    at the training width, as searched
    (in ``space``'s cell glue); with ``glue`` (a ``+lean-build`` group's) both sides are then
    built with it, so the random architectures are the ones a darts-built comparison picks."""
    from msnas_graph.architecture import Architecture
    from msnas_graph.decode import decode

    target = _arch_macs(Architecture.load(models[ref][0]).with_cell_glue(space.cell_glue), b)
    names: list[str] = []
    for seed in range(1000, 1000 + 50 * count):
        if len(names) == count:
            break
        state = SearchState.random(space, seed=seed)
        arch = decode(state, paths=paths, score=score, min_scale=min_scale)
        if abs(_arch_macs(arch, b) / target - 1) > MACS_TOLERANCE:
            continue
        width = models[ref][1]
        tag = f"r{seed}" + ("" if paths == 3 else f"_N{paths}") + (f"+{glue}" if glue else "")
        tag += (f"_min{min_scale}" if min_scale else "") + (
            f"_w{width}" if width != b.train_width else "")  # fmt: skip
        path = out / f"arch_random_{tag}.json"
        (arch.with_cell_glue(glue) if glue else arch).save(path)
        names.append(f"random {tag}")
        models[names[-1]] = (str(path), width)
    return names


def search_config(
    group: str, data: dict[str, Any], b: Budget, seed: int, unet16: dict[str, float]
) -> Any:
    """The :class:`SearchConfig` of one search of ``group``: what :func:`run_search` runs and
    what a reused search folder must have been run with."""
    from msnas_graph.backends.torch.training import SearchConfig

    space = SearchSpace.preset("quick", **group_ops(group))
    cost = group_cost(group, unet16, b.train_width)
    return SearchConfig(
        space=space, input_size=b.search_size, epochs=(1, 1), warmup_steps=b.warmup_steps,
        arch_steps=b.arch_steps, arch_lr=b.arch_lr, max_steps_per_epoch=b.search_steps_per_epoch,
        batch_size=b.batch_size, seed=seed, device="cpu", paths=3, **data, **cost,
        path_sampling="gumbel" if "+gumbel" in group else "softmax",
        **({"arch_weight_decay": 0.0} if "+awd0" in group else {}),
    )  # fmt: skip


#: Fields of a search's ``config.json`` that may differ in a reused search folder.
_FREE_FIELDS = frozenset({"device", "num_workers", "memory", "deterministic"})


def reuse_mismatch(run: Path, cfg: Any) -> list[str]:
    """The fields in which the finished search in ``run`` differs from ``cfg`` (empty: it may be
    reused). A folder linked in from another benchmark run keeps its own size, schedule and
    target; reusing one made under other settings would report figures it was not run with."""
    raw = json.loads((run / "config.json").read_text())
    stored = json.loads(type(cfg).from_dict(raw).to_json())  # older configs as meant
    wanted = json.loads(cfg.to_json())

    def same(x: Any, y: Any) -> bool:  # a measured target, rounded differently once
        if isinstance(x, float) and isinstance(y, float):
            return math.isclose(x, y, rel_tol=1e-6)
        return bool(x == y)

    keys = sorted((set(stored) | set(wanted)) - _FREE_FIELDS)
    return [f"{k}: {stored.get(k)!r} there, {wanted.get(k)!r} here" for k in keys
            if not same(stored.get(k), wanted.get(k))]  # fmt: skip


def run_search(
    group: str, data: dict[str, Any], b: Budget, seed: int, out: str, unet16: dict[str, float]
) -> str:
    """One search (in a worker process); returns its run folder."""
    _one_thread()
    from msnas_graph.backends.torch.training import search

    run = Path(out)
    if (run / "DONE").is_file():
        return str(run)
    search(search_config(group, data, b, seed, unet16), run, overwrite=True, progress=False)
    return str(run)


def run_train(
    model: str, width: int, seed: int, steps: int, data: dict[str, Any], b: Budget, out: str
) -> dict[str, Any]:
    """Train ``steps`` steps and evaluate one model (in a worker process)."""
    _one_thread()
    from msnas_graph.backends.torch.inference import evaluate
    from msnas_graph.backends.torch.training import TrainConfig, train

    run = Path(out)
    per_epoch = min(b.steps_per_epoch, data.pop("batches_per_epoch"), steps)
    epochs = math.ceil(steps / per_epoch)
    t0 = time.perf_counter()
    if not (run / "DONE").is_file():
        kind, _, depth = model.partition(":")  # "unet" or "unet:<depth>"
        unet = kind == "unet"
        width_of = {"unet_base_channels": width} if unet else {"channels": width}
        cfg = TrainConfig(
            model=kind if unet else model, unet_depth=int(depth or b.unet_depth), **width_of,
            input_size=b.train_size, epochs=epochs, max_steps_per_epoch=per_epoch,
            batch_size=b.batch_size, seed=seed, device="cpu", **data,
        )  # fmt: skip
        train(cfg, run, overwrite=True, progress=False)
    train_s = time.perf_counter() - t0
    summary = evaluate(run, device="cpu", out_dir=run / "eval_test")
    with open(run / "eval_test" / "per_case.csv", encoding="utf-8") as fh:
        dice = [float(r["mean_dice"]) for r in csv.DictReader(fh)]
    return {"summary": summary, "dice": dice, "train_s": train_s, "steps": epochs * per_epoch}


# ------------------------------------------------------------------------ measurements


def _batches_per_epoch(data: dict[str, Any], b: Budget) -> int:
    """Batches in one pass over the training split (what an epoch of training has)."""
    from msnas_graph.backends.torch.data import load_cases, split_cases
    from msnas_graph.backends.torch.training import TrainConfig

    cfg = TrainConfig(model="unet", input_size=b.train_size, batch_size=b.batch_size, **data)
    train_idx, _, _ = split_cases(load_cases(cfg.data, labelled=True), cfg)
    return max(1, math.ceil(len(train_idx) / b.batch_size))


def _unet_macs(width: int, b: Budget, in_ch: int, classes: int, size: int) -> int:
    """MACs of a U-Net at ``size`` (deterministic: a MACs target needs no timing)."""
    from msnas_graph.backends.torch.cost import count_macs_flops
    from msnas_graph.backends.torch.nn.unet import UNet

    net = UNet(in_ch, classes, base_channels=width, depth=b.unet_depth).eval()
    return count_macs_flops(net, (1, in_ch, size, size))[0]


def _unet_ms(width: int, b: Budget, in_ch: int, classes: int, size: int) -> float:
    """Batch-1 latency of an untrained U-Net at ``size`` in the eager runtime (the fastest of 30
    passes): the measure the cost-aware search's table uses, for its target."""
    import torch

    from msnas_graph.backends.torch.cost_model import fastest_ns
    from msnas_graph.backends.torch.nn.unet import UNet

    net = UNet(in_ch, classes, base_channels=width, depth=b.unet_depth).eval()
    return fastest_ns(net, (1, in_ch, size, size), torch.device("cpu"), 30) / 1e6


def _search_unet16(out: Path, b: Budget, in_ch: int, classes: int) -> dict[str, float]:
    """U-Net(16)'s eager batch-1 latency and MACs at the search size: what the searches'
    targets are relative to (the cost table is measured at the search size). The latency is
    timed once per size and kept in ``out`` (reused searches keep their targets); a bare
    ``unet16_ms.json`` is the 64x64 figure of earlier runs."""
    size = b.search_size
    kept, legacy = out / f"unet16_ms_{size}.json", out / "unet16_ms.json"
    if not kept.is_file():
        found = legacy.read_text() if size == 64 and legacy.is_file() else None
        kept.write_text(found or json.dumps(_unet_ms(16, b, in_ch, classes, size)))
    ms = float(json.loads(kept.read_text()))
    return {"ms": ms, "macs": _unet_macs(16, b, in_ch, classes, size)}


def _compared(runs: dict[str, list[Path]], args: Any) -> Any:
    """``msnas-graph compare``'s measurement of every model (its first training seed: latency
    does not depend on the seed), then each model's figures replaced by the mean over its
    training seeds: a :class:`~msnas_graph.compare.Comparison` of models."""
    from dataclasses import replace

    from msnas_graph.backends.torch.compare import compare_runs
    from msnas_graph.compare import Comparison

    names = list(runs)
    measured = compare_runs([runs[n][0] for n in names], rounds=args.rounds, threads=1)
    rows = []
    for name, row in zip(names, measured.runs, strict=True):
        summaries = [json.loads((r / "eval_test" / "summary.json").read_text()) for r in runs[name]]
        means = {}
        for k in ("dice", "iou", "hd95"):  # HD95 is None where a model found nothing
            values = [float(s[f"mean_{k}"]) for s in summaries if s.get(f"mean_{k}") is not None]
            means[k] = statistics.mean(values) if values else None
        rows.append(replace(row, model=name, **means))
    return Comparison(rows, measured.settings, measured.frontier_batch)


# ------------------------------------------------------------------------- the benchmark


def bench(
    name: str, data: dict[str, Any], in_ch: int, classes: int, b: Budget, args: Any
) -> dict[str, Any]:
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    ctx = get_context("spawn")
    t_start = time.perf_counter()
    unet16 = _search_unet16(out, b, in_ch, classes)
    print(f"[{name}] U-Net(16) at {b.search_size}x{b.search_size}: {unet16} (eager ms, MACs)")
    groups = [g for g in args.groups.split(",") if g]
    first = args.first_search_seed  # a second, independent search run: another first seed
    jobs = [(g, s) for g in groups for s in range(first, first + args.search_seeds)]
    for g, s in jobs:  # a folder linked in from a run under other settings is refused
        run = out / f"search_{g}_s{s}"
        cfg = search_config(g, data, b, s, unet16)
        if (run / "DONE").is_file() and (differ := reuse_mismatch(run, cfg)):
            sys.exit(
                f"frontier: {run} was searched under other settings ({'; '.join(differ)}); "
                "give the same --search-size/--arch-steps/--warmup-steps, or another --out"
            )
    with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        runs = list(pool.map(
            run_search, [g for g, _ in jobs], [data] * len(jobs), [b] * len(jobs),
            [s for _, s in jobs], [str(out / f"search_{g}_s{s}") for g, s in jobs],
            [unet16] * len(jobs),
        ))  # fmt: skip
    search_s = time.perf_counter() - t_start
    # --- models: consensus per group, score, N_l and width, counted once
    models: dict[str, tuple[str, int]] = {}  # name -> (model source, width)
    shared: dict[str, str] = {}  # the network (edges, cells, width) -> name
    used: dict[tuple[str, str, int, int], str] = {}  # (group, score, N_l, width) -> name
    notes: list[str] = []
    decisions: list[dict[str, Any]] = []
    seen: dict[tuple[str, ...], str] = {}  # search folders (resolved) -> the first group
    spaces: dict[str, SearchSpace] = {}
    budgets: dict[tuple[str, int], dict[str, Any]] = {}
    main_n = 3 if 3 in args.paths or not args.paths else args.paths[0]  # agreement, randoms
    for g in groups:
        states = [
            SearchState.load(Path(r) / "state.json")
            for (gg, _), r in zip(jobs, runs, strict=True)
            if gg == g
        ]
        spaces[g] = states[0].space
        glue = build_glue(g)  # decoded (and any budget counted) in the glue it is built with
        built = [st.with_cell_glue(glue) for st in states] if glue else states
        folders = tuple(
            os.path.realpath(r) for (gg, _), r in zip(jobs, runs, strict=True) if gg == g
        )
        if folders in seen:  # another group's searches, linked: listed once
            decisions.append({"search": f"{g} s{first}-s{first + len(folders) - 1}",
                              "decisions": f"the searches of `{seen[folders]}`"})  # fmt: skip
        for s, st in enumerate(states if folders not in seen else [], first):
            decisions.append({"search": f"{g} s{s}", "decisions": diagnose(st, paths=3).summary()})
        seen.setdefault(folders, g)
        for score in args.scores:
            for n, w in variants(args.paths, args.widths, b.train_width, args.width_paths):
                if (g, w) not in budgets:  # timed once per group and width
                    budgets[(g, w)] = _budget_args(g, built[0].space, b, w)
                fit = "+fit" in g and budgets[(g, w)]  # the width meets the budget
                agree = consensus(
                    built, paths=n, method="mean", score=score, min_scale=decode_min_scale(g),
                    **({} if fit else budgets[(g, w)]),
                )  # fmt: skip
                arch = agree.architecture  # in the build's glue (``built``)
                if fit:
                    multiple = 8 if g.endswith("+fit8") or "+fit8+" in g else 1
                    arch = _fit(arch, budgets[(g, w)]["budget"], b.train_size, w, multiple)
                    w = arch.space.channels  # trained at the fitted width
                if n == main_n and w == b.train_width:  # also for a network another shares
                    notes.append(f"{g} ({score}, N_l = {n}): {agree.summary()}")
                key = model_name(g, score, n, w, b.train_width)
                net = network_key(arch, w)
                if net in shared:
                    notes.append(f"{key} decodes the same network as {shared[net]}")
                    used[(g, score, n, w)] = shared[net]
                    continue
                shared[net] = used[(g, score, n, w)] = key
                tag = ("" if n == 3 else f"_N{n}") + ("" if w == b.train_width else f"_w{w}")
                path = out / f"arch_{g}_{score}{tag}.json"  # one file per network
                arch.save(path)
                models[key] = (str(path), w)
    random_sets: list[dict[str, Any]] = []  # per random group: its reference and randoms
    random_groups = [g for g in args.random_group.split(",") if g] or groups[:1]
    rn = main_n  # the N_l of the reference and the randoms
    for rg in random_groups if args.randoms else []:
        ref = used[(rg, args.scores[0], rn, args.random_width or b.train_width)]
        names = _random_models(
            spaces[rg],
            ref,
            models,
            args.randoms,
            args.scores[0],
            b,
            out,
            build_glue(rg),
            rn,
            decode_min_scale(rg),
        )
        random_sets.append({"group": rg, "ref": ref, "randoms": names})
        notes.append(
            f"random: {len(names)} random states of `{rg}`'s operation set decoded at N_l = {rn} "
            f"(min scale {decode_min_scale(rg)}, trained at `{ref}`'s width) "
            f"({args.scores[0]} score), MACs within {MACS_TOLERANCE:.0%} of `{ref}`'s as "
            f"searched{f', built {build_glue(rg)}' if build_glue(rg) else ''}"
        )
    for d in args.unet_depths:
        for w in args.unet_widths:
            models[unet_name(w, d, b)] = ("unet" if d == b.unet_depth else f"unet:{d}", w)
    # --- training
    data_t = {**data, "batches_per_epoch": _batches_per_epoch(data, b)}
    tasks = [(m, s, b.train_steps) for m in models for s in range(args.train_seeds)]
    long = [m for m in args.long.split(",") if m in models]  # trained 4x as long
    long_steps, long_seeds = 4 * b.train_steps, list(range(args.long_seeds))
    tasks += [(m, s, long_steps) for m in long for s in long_seeds]
    print(f"[{name}] training {len(tasks)} runs ...", flush=True)

    def run_dir(m: str, s: int, steps: int) -> str:
        tag = m.replace(", ", "_d").replace(" ", "_").replace("(", "").replace(")", "")
        return str(out / f"train_{tag}_s{s}_{steps}")

    for m, s, st in tasks:  # a finished run of another network under this name is refused
        if trained_other(Path(run_dir(m, s, st)), *models[m]):
            sys.exit(
                f"frontier: {run_dir(m, s, st)} trained another network than {models[m][0]} "
                "now holds (the searches changed); give another --out"
            )
    with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
        results = list(pool.map(
            run_train, [models[m][0] for m, _, _ in tasks], [models[m][1] for m, _, _ in tasks],
            [s for _, s, _ in tasks], [st for _, _, st in tasks], [dict(data_t) for _ in tasks],
            [b] * len(tasks), [run_dir(*t) for t in tasks],
        ))  # fmt: skip
    by_task = dict(zip(tasks, results, strict=True))
    comparison = _compared(
        {
            m: [Path(run_dir(m, sd, b.train_steps)) for sd in range(args.train_seeds)]
            for m in models
        },
        args,
    )
    per_case = {
        m: [by_task[(m, sd, b.train_steps)]["dice"] for sd in range(args.train_seeds)]
        for m in models
    }
    spread = {
        m: statistics.stdev(float(by_task[(m, sd, b.train_steps)]["summary"]["mean_dice"]) for sd in range(args.train_seeds))  # noqa: E501
        if args.train_seeds > 1 else 0.0
        for m in models
    }  # fmt: skip

    def dice_of(m: str, sd: int, st: int) -> float:
        return float(by_task[(m, sd, st)]["summary"]["mean_dice"])

    long_rows = [  # per model trained longer: its seeds' Dice there and at the base budget
        {"model": m, "steps": long_steps, "seeds": long_seeds,
         "dice": [dice_of(m, sd, long_steps) for sd in long_seeds],
         "base": [dice_of(m, sd, b.train_steps) for sd in long_seeds],
         "cases": [by_task[(m, sd, long_steps)]["dice"] for sd in long_seeds]}
        for m in long
    ]  # fmt: skip
    steps = {m: by_task[(m, 0, b.train_steps)]["steps"] for m in models}
    return {
        "name": name, "comparison": comparison, "per_case": per_case, "spread": spread,
        "steps": steps, "notes": notes, "decisions": decisions, "unet16": unet16,
        "search_size": b.search_size,
        "groups": groups, "search_s": search_s, "long": long_rows,
        "random_sets": random_sets, "total_s": time.perf_counter() - t_start,
    }  # fmt: skip


def _against_random(res: dict[str, Any], ref: str, randoms: list[str]) -> str:
    """The searched consensus ``ref`` against its MACs-matched random architectures."""
    by_name = {r.model: r for r in res["comparison"].runs}
    means = [by_name[m].dice for m in randoms]
    mean, std = statistics.mean(means), statistics.stdev(means) if len(means) > 1 else 0.0
    pooled = [case for m in randoms for case in res["per_case"][m]]
    d = bootstrap_diff(res["per_case"][ref], pooled)
    rows = [
        {"model": m, "Dice": f"{by_name[m].dice:.4f} +- {res['spread'][m]:.4f}",
         "MACs": f"{by_name[m].macs / 1e6:.1f} M",
         "ms/image b1": f"{by_name[m].cost('latency'):.3f}"}
        for m in [ref, *randoms]
    ]  # fmt: skip
    verdict = "more" if d[0] > std else "less"
    return (
        f"## {res['name']}: `{ref}` against MACs-matched random\n\n" + markdown_table(rows)
        + f"\n\n`{ref}` minus the random architectures ({len(randoms)} architectures x "
        f"training seeds), Dice: {d[0]:+.4f} (95 % bootstrap {d[1]:+.4f} .. {d[2]:+.4f}; test "
        f"cases and models resampled); the random architectures' Dice {mean:.4f} +- {std:.4f} "
        f"(std over architectures): the searched network is {verdict} than one random std above."
    )  # fmt: skip


def _long_section(res: dict[str, Any]) -> str:
    """The models trained for 4x the steps: Dice over their seeds there and at the base budget
    (the same seeds), and each against U-Net(16) trained as long, where it was."""
    by_name = {r.model: r for r in res["comparison"].runs}
    ref = next((x for x in res["long"] if x["model"] == "U-Net(16)"), None)
    u16 = by_name.get("U-Net(16)")
    rows = []
    for x in res["long"]:
        row = {
            "model": x["model"], "steps": x["steps"], "seeds": len(x["seeds"]),
            "Dice": _ms(x["dice"]),
            "Dice at the base budget (same seeds)": _ms(x["base"]),
        }  # fmt: skip
        if ref is not None:
            d = bootstrap_diff(x["cases"], ref["cases"])
            row["minus U-Net(16), as long"] = (
                "" if x is ref else f"{d[0]:+.4f} ({d[1]:+.4f} .. {d[2]:+.4f})"
            )
        if u16 is not None:
            lat = by_name[x["model"]].cost("latency") / u16.cost("latency")
            row["latency vs U-Net(16)"] = f"{lat:.2f}x"
        rows.append(row)
    return (
        f"## {res['name']}: 4x the training steps\n\n" + markdown_table(rows)
        + "\n\nDice: mean +- std over the seeds; the difference to U-Net(16) trained as long "
        "with a 95 % bootstrap interval (test cases and training seeds resampled); latency "
        "as in the first table (batch 1)."
    )  # fmt: skip


def _sections(res: dict[str, Any], plot: Path | None) -> list[str]:
    comparison = res["comparison"]
    runs = list(comparison.runs)
    table = []
    for row, run in zip(comparison.rows(), runs, strict=True):
        row = {k: v for k, v in row.items() if k != "run"}
        table.append({**row, "Dice": f"{run.dice:.4f} +- {res['spread'][run.model]:.4f}",
                      "steps": res["steps"][run.model]})  # fmt: skip
    by_name = {r.model: r for r in runs}
    u16 = by_name.get("U-Net(16)")
    lines = []
    for r in runs:
        if r.is_reference or u16 is None or r.model.startswith("random "):
            continue
        d = bootstrap_diff(res["per_case"][r.model], res["per_case"]["U-Net(16)"])
        lat = r.cost("latency") / u16.cost("latency")
        lines.append(
            f"- {r.model} minus U-Net(16), Dice: {d[0]:+.4f} (95 % bootstrap {d[1]:+.4f} .. "
            f"{d[2]:+.4f}; test cases and training seeds resampled) at {lat:.2f}x its batch-1 "
            f"latency and {r.macs / u16.macs:.2f}x its MACs"
        )
    text = [
        f"## {res['name']}: models (mean over training seeds)\n\n" + markdown_table(table)
        + f"\n\n{comparison.note()}",
        f"## {res['name']}: against U-Net(16)\n\n" + "\n".join(lines)
        + f"\n\nU-Net(16) at the search size, {res['search_size']}x{res['search_size']}, the "
        f"measure of the searches' cost tables and targets: {res['unet16']['ms']:.3f} ms "
        f"batch-1 in the eager runtime, {res['unet16']['macs']:.4g} MACs. "
        "Cost settings per search group: "
        + "; ".join(f"`{g}` {group_cost(g, res['unet16'], 16) or 'none'}" for g in res["groups"])
        + ".",
        f"## {res['name']}: searches\n\n" + markdown_table(res["decisions"]) + "\n\n"
        + "\n".join(f"- {n}" for n in res["notes"])
        + f"\n\nSearch wall time {res['search_s']:.0f} s; whole dataset {res['total_s']:.0f} s.",
    ]  # fmt: skip
    for rs in res["random_sets"]:
        text.append(_against_random(res, rs["ref"], rs["randoms"]))
    if res["long"]:
        text.append(_long_section(res))
    if plot is not None:
        text.append(f"Picture: `{plot.name}`.")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="hc18", help="hc18, phantom, or a dataset folder")
    parser.add_argument("--folds", type=Path, help="folds JSON (default: the folder's folds.json)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_frontier")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR / "frontier.md")
    parser.add_argument("--plot", type=Path, help="picture (default: next to --results)")
    parser.add_argument("--groups", default="dense,dense-lat")
    parser.add_argument("--search-seeds", type=int, default=2)
    parser.add_argument(
        "--first-search-seed", type=int, default=0, help="seeds K, K+1, ...: an independent run"
    )
    parser.add_argument("--train-seeds", type=int, default=2)
    parser.add_argument("--unet-widths", default="8,12,16,24,32")
    parser.add_argument("--unet-depths", default="4", help="U-Net depths, e.g. 4,5")
    parser.add_argument("--reading", type=Path, help="a file with the reading of the figures")
    parser.add_argument("--search-size", type=int, default=Budget.search_size)
    parser.add_argument("--train-size", type=int, default=Budget.train_size)
    parser.add_argument("--train-steps", type=int, default=Budget.train_steps)
    parser.add_argument("--train-width", type=int, default=Budget.train_width)
    parser.add_argument("--warmup-steps", type=int, default=Budget.warmup_steps)
    parser.add_argument("--arch-steps", default="100,100")
    parser.add_argument("--arch-lr", type=float, help="architecture lr (default: automatic)")
    parser.add_argument("--scores", default="paper", help="path scores to decode with")
    parser.add_argument("--paths", default="3", help="N_l values, at --train-width")
    parser.add_argument("--widths", default="", help="further widths, at --width-paths")
    parser.add_argument("--width-paths", default="3", help="N_l values trained at --widths")
    parser.add_argument("--randoms", type=int, default=0, help="MACs-matched random archs")
    parser.add_argument("--random-width", type=int, help="the reference's width: one of --widths")
    parser.add_argument(
        "--random-group", default="", help="whose operations and MACs (comma-separated)"
    )
    parser.add_argument("--long", default="", help="models trained again for 4x the steps")
    parser.add_argument("--long-seeds", type=int, default=1, help="training seeds of --long")
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--reuse", action="store_true", help="keep finished runs in --out")
    args = parser.parse_args()
    args.unet_widths = [int(w) for w in args.unet_widths.split(",")]
    args.unet_depths = [int(d) for d in args.unet_depths.split(",")]
    args.scores = [x for x in args.scores.split(",") if x]
    args.paths = [int(n) for n in args.paths.split(",") if n]
    args.widths = [int(w) for w in args.widths.split(",") if w]
    args.width_paths = tuple(int(n) for n in args.width_paths.split(",") if n)
    cell, net = (int(x) for x in args.arch_steps.split(","))
    b = Budget(
        search_size=args.search_size, warmup_steps=args.warmup_steps, arch_steps=(cell, net),
        arch_lr=args.arch_lr,
        train_size=args.train_size, train_steps=args.train_steps, train_width=args.train_width,
    )  # fmt: skip
    if not args.reuse and args.out.exists():
        import shutil

        shutil.rmtree(args.out)
    from msnas_graph.data import load_dataset

    folder = HC18 if args.data == "hc18" else Path(args.data)
    if args.data == "phantom":
        data: dict[str, Any] = {"data": "phantom", "test_fold": 0}
        name = "phantom"
    else:
        folds = args.folds or folder / "folds.json"
        data = {
            "data": str(folder),
            "test_fold": 0,
            **({"folds": str(folds)} if folds.is_file() else {}),
        }
        name = folder.name
    ds = load_dataset(data["data"])
    res = bench(name, data, ds.in_channels, ds.num_classes, b, args)
    plot = args.plot or args.results.with_suffix(".png")
    from msnas_graph.backends.torch.plots import plot_frontier

    plot_frontier(plot, res["comparison"])
    k = args.first_search_seed
    seeds_from = f" (seeds {k}-{k + args.search_seeds - 1})" if k else ""
    setup = (
        f"Budget (CPU): every model trained {b.train_steps} steps (whatever the dataset's size: "
        f"epochs of at most {b.steps_per_epoch} steps), batch {b.batch_size}, "
        f"{b.train_size}x{b.train_size}, SGD, augmentation on, {args.train_seeds} training "
        f"seeds; MS-NAS at base width {b.train_width}, U-Net depth {b.unet_depth}"
        + "".join(f" and {d} (`U-Net(width, {d})`)" for d in args.unet_depths if d != b.unet_depth)
        + ". Searches: space `quick` (4 layers x 3 scales, width 8, 2 blocks; `+deep` groups "
        "6 x 4, `+1b` 1 block, `+noskip` no identity edges, `+lean` the lean cell glue, "
        "`+lean-build` darts cells searched, lean cells trained, `+min<k>` decoded with "
        "`--min-scale k`, `+blat<F>` under `--max-latency-ms Fx` (`+bmacs<F>`: `--max-macs Fx`) "
        "at the training size, in the build's glue, "
        "`+gumbel` searched with `--path-sampling gumbel`, `+fit` the budget met by narrowing "
        "the unbudgeted network to the widest width that fits, `decode --fit-width`) at "
        f"{b.search_size}x{b.search_size}, {b.warmup_steps} warm-up + {b.arch_steps[0]} + "
        f"{b.arch_steps[1]} architecture steps (architecture lr "
        f"{b.arch_lr or 'automatic, 2 / the phase steps'}), batch {b.batch_size}, "
        f"{args.search_seeds} seeds{seeds_from} "
        f"per group ({args.groups}); consensus (mean) decoded with the "
        f"{'/'.join(args.scores)} path score at N_l = {', '.join(map(str, args.paths))} "
        f"(width {b.train_width})"
        + (
            f" and at N_l = {', '.join(map(str, args.width_paths))} at widths "
            f"{', '.join(map(str, args.widths))}"
            if args.widths
            else ""
        )
        + (f"; {args.randoms} MACs-matched random architectures" if args.randoms else "")
        + ". Latency: one thread, the "
        f"runtime `predict --runtime auto` resolves, median of {args.rounds} interleaved rounds "
        f"on a shared 2-core machine. {args.jobs} runs in parallel, one thread each."
    )
    path = write_results(
        "frontier", "The accuracy-latency frontier: MS-NAS against the U-Net family", setup,
        _sections(res, plot), args.reading.read_text() if args.reading else "See the tables.",
        path=args.results,
    )  # fmt: skip
    (Path(args.out) / name / "results.json").write_text(
        json.dumps(
            {**res, "comparison": res["comparison"].to_dict(), "budget": asdict(b)},
            indent=1,
            default=str,
        )
    )
    print(f"wrote {path} and {plot}")


if __name__ == "__main__":
    main()
