"""Commands that need the PyTorch backend: search, train, evaluate, predict, cost, export and
quickstart. Each is a thin wrapper over one function of ``msnas_graph.backends.torch``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import click

from msnas_graph.errors import BackendError

from .options import (
    amp_option,
    arch_lr_option,
    arch_steps_option,
    channels_option,
    data_option,
    device_option,
    folds_option,
    init_from_option,
    json_option,
    overwrite_option,
    paths_option,
    progress_option,
    resume_option,
    seed_option,
    space_option,
    test_fold_option,
    unet_base_option,
    unet_depth_option,
    warmup_option,
    warmup_steps_option,
)

max_steps_option = click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    help="Cap steps per epoch (smoke runs).",
)
batch_option = click.option(
    "--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Batch size."
)
input_size_option = click.option(
    "--input-size",
    type=click.IntRange(min=8),
    help="Side length images are resized to (default: the space's input_size).",
)


def _backend() -> Any:
    try:
        import msnas_graph.backends.torch as backend
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise BackendError(
            f"the PyTorch backend is not installed ({exc.name}); pip install 'msnas-graph[torch]'"
        ) from None
    return backend


#: Options that may change when a run is resumed (the rest is fixed by its config.json).
_RESUME_FREE = {"device": "device", "amp": "amp", "grad_checkpoint": "checkpoint"}
_NOT_CONFIG = {"run_dir", "resume", "overwrite", "progress"}


def _resume_config(config_cls: Any, run_dir: str) -> Any:
    """The stored config of a run being resumed, with the options the user gave again that may
    change (device, amp, checkpoint); any other option given is a usage error, not ignored."""
    ctx = click.get_current_context()
    given = {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    } - _NOT_CONFIG
    fixed = sorted(given - set(_RESUME_FREE))
    if fixed:
        opts = ", ".join("--" + name.replace("_", "-") for name in fixed)
        raise click.UsageError(
            f"{opts} cannot change when resuming: {run_dir}/config.json fixes it; drop the "
            f"option, or start a new run (--overwrite)"
        )
    config = config_cls.load(Path(run_dir) / "config.json")
    changes = {_RESUME_FREE[name]: ctx.params[name] for name in given}
    return dataclasses.replace(config, **changes) if changes else config


def _epochs(text: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in text.split(","))
    except ValueError:
        raise click.BadParameter("expected CELL,NETWORK epochs, e.g. 20,20") from None
    return a, b


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@space_option("quick")
@data_option
@click.option(
    "--epochs",
    metavar="CELL,NETWORK",
    help="Epochs of the two phases (weights+cells, then weights+network). "
    "Default: 20,20 for the paper space, 2,2 otherwise.",
)
@warmup_option
@arch_lr_option
@arch_steps_option
@warmup_steps_option
@batch_option
@input_size_option
@paths_option
@folds_option
@test_fold_option
@device_option
@amp_option
@click.option(
    "--checkpoint",
    "grad_checkpoint",
    is_flag=True,
    help="Gradient checkpointing: several times less memory, about 2x the step time.",
)
@seed_option
@max_steps_option
@resume_option
@overwrite_option
@progress_option
def search(
    run_dir: str,
    space_source: str,
    data: str,
    epochs: str | None,
    warmup: int | None,
    arch_lr: float | None,
    arch_steps: tuple[int, int] | None,
    warmup_steps: int | None,
    batch_size: int,
    input_size: int | None,
    paths: int,
    folds: str | None,
    test_fold: int,
    device: str,
    amp: str,
    grad_checkpoint: bool,
    seed: int,
    max_steps: int | None,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> None:
    """Search an architecture (the paper's two-phase schedule) into RUN_DIR.

    \b
    Examples:
      msnas-graph search runs/s --space quick --data phantom
      msnas-graph search runs/hc18 --data ../shared/data/hc18 --folds ../shared/data/hc18/folds.json
      msnas-graph search runs/s --resume            # continue after Ctrl-C
    """
    backend = _backend()
    if epochs and arch_steps:
        raise click.UsageError("give --epochs or --arch-steps (a schedule in steps), not both")
    if resume and (Path(run_dir) / "config.json").is_file():
        config = _resume_config(backend.SearchConfig, run_dir)
    else:
        config = backend.SearchConfig(
            space=space_source,
            data=data,
            input_size=input_size,
            epochs=_epochs(epochs) if epochs else None,
            warmup=warmup,
            arch_lr=arch_lr,
            arch_steps=arch_steps,
            warmup_steps=warmup_steps,
            batch_size=batch_size,
            paths=paths,
            folds=folds,
            test_fold=test_fold,
            device=device,
            amp=amp,
            checkpoint=grad_checkpoint,
            seed=seed,
            max_steps_per_epoch=max_steps,
        )
    result = backend.search(config, run_dir, resume=resume, overwrite=overwrite, progress=progress)
    click.echo(f"search finished: {result.run_dir}")
    click.echo(f"  final state:  {result.run_dir / 'state.json'}")
    if result.architecture is not None:
        click.echo(f"  architecture: {result.run_dir / 'architecture.json'} ({paths} paths)")
        click.echo(str(result.architecture))
    from msnas_graph.paths import count_paths

    n_paths = min(5, count_paths(result.state.graph))
    click.echo(
        f"next: msnas-graph decode {run_dir} --paths {n_paths} --render arch.svg -o arch.json"
    )
    if result.diagnostics is not None:
        click.echo(f"decisions: {result.diagnostics.summary()}")
        if (warning := result.diagnostics.warning()) is not None:
            click.echo(f"msnas-graph: warning: {warning}", err=True)


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--model",
    default="unet",
    show_default=True,
    metavar="ARCH|RUN|unet",
    help="An architecture JSON, a search run folder, or 'unet' (the baseline).",
)
@data_option
@click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True)
@batch_option
@input_size_option
@click.option("--lr", type=float, help="Initial learning rate (default 0.025 SGD, 1e-3 Adam).")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True)
@click.option("--fusion", type=click.Choice(["concat", "sum"]), help="Override the fusion.")
@click.option("--unet-base", type=click.IntRange(min=1), default=56, show_default=True)
@click.option("--unet-depth", type=click.IntRange(min=2), default=5, show_default=True)
@channels_option
@init_from_option
@click.option("--compile", "compile_", is_flag=True, help="Use torch.compile.")
@folds_option
@test_fold_option
@device_option
@amp_option
@seed_option
@max_steps_option
@resume_option
@overwrite_option
@progress_option
def train(
    run_dir: str,
    model: str,
    data: str,
    epochs: int,
    batch_size: int,
    input_size: int | None,
    lr: float | None,
    optimizer: str,
    fusion: str | None,
    unet_base: int,
    unet_depth: int,
    channels: int | None,
    init_from: str | None,
    compile_: bool,
    folds: str | None,
    test_fold: int,
    device: str,
    amp: str,
    seed: int,
    max_steps: int | None,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> None:
    """Train a decoded architecture (or the U-Net baseline) from scratch into RUN_DIR.

    \b
    Examples:
      msnas-graph train runs/t --model arch.json --data phantom --epochs 20
      msnas-graph train runs/unet --model unet --unet-base 16 --data ../shared/data/hc18
      msnas-graph train runs/wide --model runs/search --channels 64 --input-size 256
      msnas-graph train runs/ft --model runs/search --init-from runs/search
    """
    backend = _backend()
    if resume and (Path(run_dir) / "config.json").is_file():
        config = _resume_config(backend.TrainConfig, run_dir)
    else:
        config = backend.TrainConfig(
            model=model,
            fusion=fusion,
            unet_base_channels=unet_base,
            unet_depth=unet_depth,
            channels=channels,
            init_from=init_from,
            data=data,
            input_size=input_size,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=optimizer,
            lr=lr,
            compile=compile_,
            folds=folds,
            test_fold=test_fold,
            device=device,
            amp=amp,
            seed=seed,
            max_steps_per_epoch=max_steps,
        )
    result = backend.train(config, run_dir, resume=resume, overwrite=overwrite, progress=progress)
    dice = "n/a" if result.best_dice is None else f"{result.best_dice:.4f}"
    click.echo(f"training finished: {result.run_dir}")
    click.echo(f"  best validation Dice {dice} at epoch {result.best_epoch}")
    click.echo(f"next: msnas-graph evaluate {run_dir}")


@click.command()
@click.argument("run_dirs", metavar="RUN...", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--data", help="Dataset source (default: the run's own).")
@click.option(
    "--split",
    type=click.Choice(["test", "val", "train", "all"]),
    default="test",
    show_default=True,
)
@folds_option
@click.option("--test-fold", type=int, help="Fold to test (default: the run's).")
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Output folder (default: RUN/eval_SPLIT); with several runs, also where the k-fold "
    "summary goes.",
)
@device_option
@json_option
def evaluate(
    run_dirs: tuple[str, ...],
    data: str | None,
    split: str,
    folds: str | None,
    test_fold: int | None,
    out_dir: str | None,
    device: str,
    as_json: bool,
) -> None:
    """Dice, IoU and HD95 of trained models on a split (default: each run's held-out fold).

    Several runs (one per fold of a k-fold cross-validation) are each evaluated on their own
    test fold, and the fold means are combined as mean +- std.

    \b
    Examples:
      msnas-graph evaluate runs/t              # writes runs/t/eval_test/{per_case.csv,summary.json}
      msnas-graph evaluate runs/f0 runs/f1 runs/f2 runs/f3 runs/f4 -o runs/cv
    """
    result = _backend().evaluate_folds(
        list(run_dirs),
        data,
        split=split,
        folds=folds,
        test_fold=test_fold,
        device=device,
        out_dir=out_dir,
    )
    text = _format_summary(result) if len(run_dirs) == 1 else _format_folds(result)
    click.echo(json.dumps(result, indent=2) if as_json else text)


def _format_folds(result: dict[str, Any]) -> str:
    lines = [f"{result['num_folds']} folds, {result['num_cases']} test cases"]
    for key in ("dice", "iou", "hd95"):
        stat = result.get(f"mean_{key}") or {}
        mean, std = stat.get("mean"), stat.get("std")
        val = "n/a" if mean is None else f"{mean:.4f} +- {std or 0:.4f}"
        lines.append(f"mean {key} over folds: {val}")
    return "\n".join(lines)


def _format_summary(summary: dict[str, Any]) -> str:
    def fmt(mean: Any, std: Any) -> str:
        if not isinstance(mean, int | float):
            return "n/a"
        return f"{mean:.4f}" + (f" +- {std:.4f}" if isinstance(std, int | float) else "")

    lines = [f"test cases: {summary.get('num_cases', '?')}"]
    for key in ("dice", "iou", "hd95"):
        unit = " (mm where the pixel size is known)" if key == "hd95" else ""
        mean, std = summary.get(f"mean_{key}"), summary.get(f"mean_{key}_std")
        lines.append(f"mean {key}: {fmt(mean, std)}{unit}")
    for name, vals in (summary.get("per_class") or {}).items():
        parts = [f"{k} {fmt(vals.get(k), vals.get(k + '_std'))}" for k in ("dice", "iou", "hd95")]
        lines.append(f"  {name}: " + ", ".join(parts))
    return "\n".join(lines)


@click.command()
@click.argument("run_dir", type=click.Path(exists=True))
@click.argument("inputs", metavar="INPUTS")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), required=True)
@click.option("--overlay", is_flag=True, help="Also write overlay PNGs.")
@device_option
def predict(run_dir: str, inputs: str, out_dir: str, overlay: bool, device: str) -> None:
    """Segment new images or volumes with a trained model (masks in the input's format).

    \b
    Example:
      msnas-graph predict runs/t scans/ -o masks/ --overlay
    """
    written = _backend().predict(run_dir, inputs, out_dir, overlay=overlay, device=device)
    click.echo(f"wrote {len(written)} mask(s) to {out_dir}")


@click.command()
@click.argument("source", metavar="[ARCH|RUN]", required=False)
@click.option("--model", type=click.Choice(["unet"]), help="Cost of the U-Net baseline instead.")
@click.option("--input-size", type=click.IntRange(min=8), default=256, show_default=True)
@click.option("--no-memory", is_flag=True, help="Skip the activation-memory measurement.")
@unet_base_option
@unet_depth_option
@click.option("--latency", is_flag=True, help="Also measure inference speed, batch 1 and 8.")
@device_option
@json_option
def cost(
    source: str | None,
    model: str | None,
    input_size: int,
    no_memory: bool,
    unet_base: int,
    unet_depth: int,
    latency: bool,
    device: str,
    as_json: bool,
) -> None:
    """Parameters, MACs, FLOPs and training-step activation memory of a network.

    MACs are multiply-accumulates (what the paper's "FLOPs" column reports); FLOPs = 2 x MACs
    as counted by torch.utils.flop_counter. Activation memory is the bytes a training step
    saves for backward at batch 1. --latency measures inference on --device (BatchNorm
    folded, eval mode): median ms per image and images/s at batch 1 and 8.

    \b
    Examples:
      msnas-graph cost arch.json --input-size 256
      msnas-graph cost --model unet --unet-base 32 --unet-depth 4 --json
    """
    if (source is None) == (model is None):
        raise click.UsageError("give an architecture/run folder, or --model unet (not both)")
    ctx = click.get_current_context()
    unet_given = any(
        ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE
        for k in ("unet_base", "unet_depth")
    )
    if unet_given and model is None:
        raise click.UsageError("--unet-base/--unet-depth go with --model unet")
    from msnas_graph.backends.torch.cost import model_cost
    from msnas_graph.backends.torch.models import resolve_source
    from msnas_graph.backends.torch.training.runtime import resolve_device

    what = source or resolve_source("unet", unet_base_channels=unet_base, unet_depth=unet_depth)
    report = model_cost(
        what,
        input_size=input_size,
        activation=not no_memory,
        latency=latency,
        device=resolve_device(device) if latency else "cpu",
    )
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
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
            f"latency batch {r['batch']} ({r['device']}): {r['ms_per_image']:.2f} ms/image, "
            f"{r['images_per_s']:.1f} images/s"
        )
    click.echo("\n".join(lines))


@click.command(name="export")
@click.argument("source", metavar="ARCH|RUN|CHECKPOINT")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), required=True)
@click.option("--input-size", type=click.IntRange(min=8), default=256, show_default=True)
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime comparison.")
@click.option(
    "--exporter",
    type=click.Choice(["dynamo", "torchscript"]),
    default="dynamo",
    show_default=True,
)
@json_option
def export_cmd(
    source: str, onnx_path: str, input_size: int, no_verify: bool, exporter: str, as_json: bool
) -> None:
    """Export a network to ONNX (dynamic batch and size), checked with onnxruntime.

    \b
    Examples:
      msnas-graph export runs/t --onnx model.onnx            # a trained run
      msnas-graph export arch.json --onnx arch.onnx --input-size 128
    """
    from msnas_graph.backends.torch.export import export_model

    report = export_model(
        source, onnx_path, input_size=input_size, verify=not no_verify, exporter=exporter
    )
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    click.echo(f"wrote {report.path} (opset {report.opset}, {report.exporter} exporter)")
    if report.max_abs_diff is not None:
        click.echo(f"onnxruntime vs PyTorch: max abs difference {report.max_abs_diff:.2e}")


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False), default="runs/quickstart")
@click.option("--data", default="phantom:96", show_default=True, help="Dataset source.")
@space_option("quick")
@click.option("--search-epochs", default="4,4", show_default=True, metavar="CELL,NETWORK")
@click.option("--train-epochs", type=click.IntRange(min=1), default=40, show_default=True)
@paths_option
@input_size_option
@folds_option
@click.option("--test-fold", type=int, default=0, show_default=True)
@device_option
@seed_option
@max_steps_option
@overwrite_option
@progress_option
def quickstart(
    out_dir: str,
    data: str,
    space_source: str,
    search_epochs: str,
    train_epochs: int,
    paths: int,
    input_size: int | None,
    folds: str | None,
    test_fold: int,
    device: str,
    seed: int,
    max_steps: int | None,
    overwrite: bool,
    progress: bool,
) -> None:
    """Search -> decode (rendered) -> train -> evaluate, end to end, into OUT_DIR.

    Runs on the built-in phantom data by default (no download; a few minutes on a CPU).

    \b
    Examples:
      msnas-graph quickstart runs/quickstart
      msnas-graph quickstart runs/hc18 --data ../shared/data/hc18 \\
          --folds ../shared/data/hc18/folds.json
    """
    from msnas_graph.backends.torch.pipeline import quickstart as run_quickstart

    res = run_quickstart(
        out_dir,
        data=data,
        space=space_source,
        search_epochs=_epochs(search_epochs),
        train_epochs=train_epochs,
        paths=paths,
        input_size=input_size,
        folds=folds,
        test_fold=test_fold,
        device=device,
        seed=seed,
        overwrite=overwrite,
        progress=progress,
        max_steps_per_epoch=max_steps,
    )
    click.echo(str(res.architecture))
    click.echo(_format_summary(res.summary))
    secs = ", ".join(f"{k} {v:.0f}s" for k, v in res.seconds.items())
    click.echo(f"done in {secs}. Results:")
    for what, where in res.files.items():
        click.echo(f"  {what:12s} {where}")


COMMANDS = [search, train, evaluate, predict, cost, export_cmd, quickstart]
