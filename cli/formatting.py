"""The text the backend-served commands print for their results (the results themselves, and
any aggregation such as the k-fold combination, come from the backend's API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from msnas_graph.backend import QuickstartOutcome, SearchOutcome, TrainOutcome
from msnas_graph.topology import TOPOLOGY


def search_text(result: SearchOutcome, run_dir: str, paths: int) -> str:
    """What ``search`` prints: where the state and architecture went, and what to run next."""
    from msnas_graph.paths import count_paths

    lines = [
        f"search finished: {result.run_dir}",
        f"  final state:  {result.run_dir / 'state.json'}",
    ]
    fixed = result.architecture is not None and TOPOLOGY in result.architecture.meta
    if result.architecture is not None:
        what = "its cells on the fixed network" if fixed else f"{paths} paths"
        lines.append(f"  architecture: {result.run_dir / 'architecture.json'} ({what})")
        lines.append(str(result.architecture))
    lines += _expected_cost(result)
    n_paths = min(5, count_paths(result.state.graph))
    if not (Path(result.run_dir) / "state.json").is_file():  # a backend that writes nothing
        lines.append(f"(no state was written to {run_dir}, so there is nothing to decode)")
        return "\n".join(lines)
    paths_option = "" if fixed else f" --paths {n_paths}"
    lines.append(f"next: msnas-graph decode {run_dir}{paths_option} --render arch.svg -o arch.json")
    return "\n".join(lines)


def _expected_cost(result: SearchOutcome) -> list[str]:
    """A cost-aware search's expected cost at its end, and against the U-Net's."""
    last = (getattr(result, "history", None) or [{}])[-1]
    for column, unit in (("expected_macs", "MACs"), ("expected_latency_ms", "ms at batch 1")):
        if last.get(column) is not None:
            vs = last.get("expected_vs_unet")
            return [
                f"  expected cost at the end: {float(last[column]):.4g} {unit}"
                + ("" if vs is None else f" ({float(vs):.2f}x the U-Net's at the cost width)")
            ]
    return []


def warn_context(arch: Any) -> None:
    """Warn on stderr when a decoded architecture never leaves its finest output scale
    (:meth:`~msnas_graph.architecture.Architecture.context_warning`)."""
    if arch is not None and (warning := arch.context_warning()) is not None:
        click.echo(f"msnas-graph: warning: {warning}", err=True)


def seeds_text(result: Any) -> str:
    """What ``search --seeds`` prints: the seed folders, the consensus and its agreement."""
    run = result.run_dir
    lines = [
        f"{len(result.seed_dirs)} seed searches finished: "
        + ", ".join(str(d) for d in result.seed_dirs),
        f"  consensus and agreement: {run / 'consensus.json'}",
        f"  consensus architecture:  {run / 'architecture.json'}",
        str(result.consensus),
        f"next: msnas-graph decode {run} --render agreement.svg   # or train --model {run}",
    ]
    return "\n".join(lines)


def train_text(result: TrainOutcome, run_dir: str) -> str:
    """What ``train`` prints: the best validation Dice, and what to run next."""
    dice = "n/a" if result.best_dice is None else f"{result.best_dice:.4f}"
    written = (Path(result.run_dir) / "model.json").is_file()  # not by a backend like null
    return "\n".join(
        [
            f"training finished: {result.run_dir}",
            f"  best validation Dice {dice} at epoch {result.best_epoch}",
            f"next: msnas-graph evaluate {run_dir}"
            if written
            else f"(no trained model was written to {run_dir}, so there is nothing to evaluate)",
        ]
    )


def folds_text(result: dict[str, Any]) -> str:
    """A k-fold combination (``num_folds``, ``mean_dice`` as mean and std, ...)."""
    lines = [f"{result.get('num_folds', '?')} folds, {result.get('num_cases', '?')} test cases"]
    for key in ("dice", "iou", "hd95"):
        stat = result.get(f"mean_{key}") or {}
        mean, std = stat.get("mean"), stat.get("std")
        val = "n/a" if mean is None else f"{mean:.4f} +- {std or 0:.4f}"
        lines.append(f"mean {key} over folds: {val}")
    return "\n".join(lines)


def _mean_std(mean: Any, std: Any) -> str:
    if not isinstance(mean, int | float):
        return "n/a"
    return f"{mean:.4f}" + (f" +- {std:.4f}" if isinstance(std, int | float) else "")


def summary_text(summary: dict[str, Any]) -> str:
    """One run's evaluation summary: mean Dice/IoU/HD95 and the per-class figures."""
    lines = [f"test cases: {summary.get('num_cases', '?')}"]
    for key in ("dice", "iou", "hd95"):
        unit = " (mm where the pixel size is known)" if key == "hd95" else ""
        mean, std = summary.get(f"mean_{key}"), summary.get(f"mean_{key}_std")
        lines.append(f"mean {key}: {_mean_std(mean, std)}{unit}")
    for name, vals in (summary.get("per_class") or {}).items():
        parts = [
            f"{k} {_mean_std(vals.get(k), vals.get(k + '_std'))}" for k in ("dice", "iou", "hd95")
        ]
        lines.append(f"  {name}: " + ", ".join(parts))
    return "\n".join(lines)


def cost_text(report: dict[str, Any]) -> str:
    """Parameters, MACs, FLOPs (and activation memory) of a cost report."""
    lines = [
        f"model: {report['model'].get('kind')}  input {tuple(report['input_shape'])}",
        f"params: {report['params']:,} ({report['params'] / 1e6:.2f} M)",
        f"MACs:   {report['macs']:,} ({report['macs'] / 1e9:.2f} G)",
        f"FLOPs:  {report['flops']:,} ({report['flops'] / 1e9:.2f} G)",
    ]
    if "activation_bytes" in report:
        lines.append(
            f"activation memory (training step): {report['activation_bytes'] / 2**20:.1f} MiB"
        )
    for r in report.get("latency", []):
        lines.append(
            f"latency batch {r['batch']} ({r['device']}, {r.get('runtime', 'eager')}): "
            f"{r['ms_per_image']:.2f} ms/image, "
            f"{r['images_per_s']:.1f} images/s"
        )
    return "\n".join(lines)


def export_text(report: dict[str, Any]) -> str:
    """Where the export went and how closely the runtime reproduces the model."""
    lines = [f"wrote {report['path']} (opset {report['opset']}, {report['exporter']} exporter)"]
    if report.get("max_abs_diff") is not None:
        lines.append(f"onnxruntime vs PyTorch: max abs difference {report['max_abs_diff']:.2e}")
    return "\n".join(lines)


def quickstart_text(result: QuickstartOutcome) -> str:
    """The architecture, its evaluation, the time per stage and where the files went."""
    secs = ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
    lines = [str(result.architecture)]
    decisions = getattr(result, "decisions", None)
    if decisions:
        lines.append(f"decisions: {decisions}")
    lines += [summary_text(result.summary), f"done in {secs}. Results:"]
    lines += [f"  {what:12s} {where}" for what, where in result.files.items()]
    return "\n".join(lines)
