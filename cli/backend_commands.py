"""Commands served by the backend (``--backend``, default ``torch``): search, train,
evaluate, predict, cost, export and quickstart. Each is one call of the
:class:`~msnas_graph.backend.Backend` protocol, reached only through
:func:`~msnas_graph.backend.get_backend`; the options travel as a plain mapping whose names
are the backend's (see :mod:`msnas_graph.cli.options`)."""

from __future__ import annotations

import json
from typing import Any

import click

from msnas_graph.backend import Backend, ResumeConflictError, get_backend

from . import formatting
from .options import (
    EpochPair,
    arch_lr_option,
    arch_steps_option,
    arch_weight_decay_option,
    channels_option,
    cost_options,
    data_option,
    device_option,
    folds_option,
    inference_runtime_option,
    init_from_option,
    input_size_option,
    json_option,
    max_steps_option,
    out_dir_option,
    overwrite_option,
    path_sampling_option,
    paths_option,
    progress_option,
    resolve_cost_target,
    run_options,
    seed_option,
    skip_flag,
    space_option,
    target_macs_value,
    test_fold_option,
    warmup_option,
    warmup_steps_option,
)
from .search_options import topology_option


def backend() -> Backend:
    """The backend the global ``--backend`` option names."""
    obj = click.get_current_context().find_root().obj or {}
    return get_backend(obj.get("backend", "torch"))


def _settings(options: dict[str, Any], resume: bool) -> dict[str, Any]:
    """The options to hand to the backend: those with a value; when resuming, only those
    given on the command line (the run's stored configuration holds the rest)."""
    ctx = click.get_current_context()
    given = {
        n for n in options if ctx.get_parameter_source(n) is click.core.ParameterSource.COMMANDLINE
    }
    return {k: v for k, v in options.items() if v is not None and (k in given or not resume)}


def _run(stage: str, run_dir: str, options: dict[str, Any], **policy: Any) -> Any:
    """``backend().search`` or ``.train``; options a resumed run cannot change are a usage
    error spelled as the command's own options."""
    method = getattr(backend(), stage)
    return _conflicts_as_usage(
        lambda: method(_settings(options, policy["resume"]), run_dir, **policy), run_dir
    )


def _conflicts_as_usage(call: Any, run_dir: str) -> Any:
    try:
        return call()
    except ResumeConflictError as exc:
        params = {p.name: p.opts[0] for p in click.get_current_context().command.params}
        target = "--target-macs/--target-latency"
        params.update(dict.fromkeys(("cost_target", "cost_target_unet"), target))
        opts = ", ".join(dict.fromkeys(params.get(f, f) for f in exc.fields))
        raise click.UsageError(
            f"{opts} cannot change when resuming: {exc.run_dir}/config.json fixes it; drop "
            f"the option, or start a new run (--overwrite)"
        ) from None


epochs_option = click.option(
    "--epochs",
    type=EpochPair(),
    metavar="CELL,NETWORK",
    help="Epochs of the two phases (weights+cells, then weights+network). "
    "Default: 20,20 for the paper space, 2,2 otherwise.",
)
memory_option = click.option(
    "--memory",
    type=click.Choice(["fast", "low"]),
    help="The supernet's memory mode: fast (default; stores the activations) or low "
    "(recomputes every cell in the backward pass: about 1/10 of the memory, 1.7x the time).",
)
#: Deprecated (one release): ``--memory low``.
checkpoint_option = click.option("--checkpoint", is_flag=True, hidden=True)


def _deprecated_checkpoint(options: dict[str, Any]) -> None:
    """``--checkpoint`` (before ``--memory``): a warning, then ``--memory low``."""
    if not options.pop("checkpoint", False):
        return
    click.echo("msnas-graph: warning: --checkpoint is deprecated; use --memory low", err=True)
    if options.get("memory") not in (None, "low"):
        raise click.UsageError("give --memory or the deprecated --checkpoint, not both")
    options["memory"] = "low"
    click.get_current_context().set_parameter_source(
        "memory", click.core.ParameterSource.COMMANDLINE
    )


#: ``search``: RUN_DIR, the space and schedule, then the shared run options.
search_options = run_options(
    space_option("quick"),
    epochs_option,
    warmup_option,
    arch_steps_option,
    warmup_steps_option,
    arch_lr_option,
    arch_weight_decay_option,
    paths_option,
    memory_option,
    checkpoint_option,
    cost_options,
    path_sampling_option,
    topology_option,
)

#: ``train``: RUN_DIR, the model and its optimisation, then the shared run options.
train_options = run_options(
    click.option(
        "--model",
        default="unet",
        show_default=True,
        metavar="ARCH|RUN|unet",
        help="An architecture JSON, a search run folder, or 'unet' (the baseline).",
    ),
    click.option("--epochs", type=click.IntRange(min=1), default=50, show_default=True),
    click.option("--lr", type=float, help="Initial learning rate (default 0.025 SGD, 1e-3 Adam)."),
    click.option(
        "--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True
    ),
    click.option("--fusion", type=click.Choice(["concat", "sum"]), help="Override the fusion."),
    click.option(
        "--cell-glue",
        type=click.Choice(["darts", "lean"]),
        help="Override how cells are wrapped: darts (1x1 preprocess and projection, the "
        "paper) or lean (none where dense convolutions can do without: faster).",
    ),
    click.option(
        "--unet-base",
        "unet_base_channels",
        type=click.IntRange(min=1),
        default=56,
        show_default=True,
    ),
    click.option("--unet-depth", type=click.IntRange(min=2), default=5, show_default=True),
    click.option("--compile", is_flag=True, help="Use torch.compile."),
    channels_option,
    init_from_option,
)


@click.command()
@search_options
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    help="Search this many seeds (--seed, --seed + 1, ...) into RUN_DIR/seed_S/ and write "
    "their consensus (RUN_DIR/consensus.json, RUN_DIR/architecture.json).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="With --seeds: seeds searched at once, each in its own process with one CPU thread "
    "(or --threads).",
)
def search(
    run_dir: str,
    resume: bool,
    overwrite: bool,
    progress: bool,
    seeds: int | None,
    jobs: int,
    **options: Any,
) -> None:
    """Search an architecture (the paper's two-phase schedule) into RUN_DIR.

    \b
    Examples:
      msnas-graph search runs/s --space quick --data phantom
      msnas-graph search runs/hc18 --data ../shared/data/hc18 --folds ../shared/data/hc18/folds.json
      msnas-graph search runs/s --arch-steps 100,100 --warmup-steps 60 --max-steps 20
      msnas-graph search runs/s --resume            # continue after Ctrl-C
      msnas-graph search runs/fast --cost latency --target-latency 5
      msnas-graph search runs/f --target-macs 0.8x --cost-channels 16  # 0.8x U-Net(16)
      msnas-graph search runs/s3 --seeds 3 --jobs 2  # then: msnas-graph decode runs/s3
      msnas-graph search runs/c --topology deep.json --arch-steps 300,0  # its cells only
    """
    resolve_cost_target(options)
    _deprecated_checkpoint(options)
    if options.get("epochs") and options.get("arch_steps"):
        raise click.UsageError("give --epochs or --arch-steps (a schedule in steps), not both")
    from msnas_graph.seeds import is_seeds_run

    if seeds is not None or is_seeds_run(run_dir):
        _search_seeds(run_dir, options, seeds, jobs, resume, overwrite, progress)
        return
    if jobs != 1:
        raise click.UsageError("--jobs goes with --seeds (seeds searched at once)")
    result = _run("search", run_dir, options, resume=resume, overwrite=overwrite, progress=progress)
    click.echo(formatting.search_text(result, run_dir, options["paths"]))
    diagnostics = getattr(result, "diagnostics", None)
    if diagnostics is not None:
        click.echo(f"decisions: {diagnostics.summary()}")
        if (warning := diagnostics.warning()) is not None:
            click.echo(f"msnas-graph: warning: {warning}", err=True)
    formatting.warn_context(result.architecture)


def _search_seeds(
    run_dir: str,
    options: dict[str, Any],
    seeds: int | None,
    jobs: int,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> None:
    """``search --seeds``: :func:`msnas_graph.seeds.search_seeds`, each seed's end echoed."""
    from msnas_graph.seeds import search_seeds

    obj = click.get_current_context().find_root().obj or {}

    def echo(seed_dir: Any, status: str) -> None:
        click.echo(f"{seed_dir}: {'kept (finished before)' if status == 'kept' else 'done'}")

    result = _conflicts_as_usage(
        lambda: search_seeds(
            _settings(options, resume), run_dir, seeds, jobs, backend=obj.get("backend", "torch"),
            plugins=obj.get("plugins", []), threads=obj.get("threads"), resume=resume,
            overwrite=overwrite, progress=progress, on_seed_end=echo,
        ),
        run_dir,
    )  # fmt: skip
    click.echo(formatting.seeds_text(result))
    formatting.warn_context(result.architecture)


@click.command()
@train_options
def train(run_dir: str, resume: bool, overwrite: bool, progress: bool, **options: Any) -> None:
    """Train a decoded architecture (or the U-Net baseline) from scratch into RUN_DIR.

    \b
    Examples:
      msnas-graph train runs/t --model arch.json --data phantom --epochs 20
      msnas-graph train runs/unet --model unet --unet-base 16 --data ../shared/data/hc18
      msnas-graph train runs/wide --model runs/search --channels 64 --input-size 256
      msnas-graph train runs/ft --model runs/search --init-from runs/search
    """
    result = _run("train", run_dir, options, resume=resume, overwrite=overwrite, progress=progress)
    click.echo(formatting.train_text(result, run_dir))


@click.command()
@click.argument("run_dirs", metavar="RUN...", nargs=-1, required=True, type=click.Path(exists=True))
@data_option(None, help="Dataset source (default: the run's own).")
@click.option(
    "--split", type=click.Choice(["test", "val", "train", "all"]), default="test", show_default=True
)
@folds_option
@test_fold_option(None, help="Fold to test (default: the run's).")
@out_dir_option(
    help="Output folder (default: RUN/eval_SPLIT); with several runs, also where the k-fold "
    "summary goes."
)
@device_option
@inference_runtime_option("eager")
@json_option
def evaluate(run_dirs: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Dice, IoU and HD95 of trained models on a split (default: each run's held-out fold).

    Several runs (one per fold of a k-fold cross-validation) are each evaluated on their own
    test fold, and the fold means are combined as mean +- std.

    \b
    Examples:
      msnas-graph evaluate runs/t              # writes runs/t/eval_test/{per_case.csv,summary.json}
      msnas-graph evaluate runs/f0 runs/f1 runs/f2 runs/f3 runs/f4 -o runs/cv
    """
    result = backend().evaluate(list(run_dirs), _settings(options, resume=False))
    text = formatting.summary_text if len(run_dirs) == 1 else formatting.folds_text
    click.echo(json.dumps(result, indent=2) if as_json else text(result))


@click.command()
@click.argument("run_dirs", metavar="RUN...", nargs=-1, required=True)
@click.option(
    "-o", "--output", "table", type=click.Path(dir_okay=False), help="Write the table (markdown)."
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    help="Write the frontier picture: Dice against latency and against MACs (.png, .svg, .pdf).",
)
@inference_runtime_option("auto")
@click.option(
    "--input-size",
    type=click.IntRange(min=8),
    help="Side to count MACs and time latency at (default: each run's own input size, as "
    "predict runs it).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="CPU threads while timing (restored afterwards).",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Interleaved timing rounds over the models (3 passes per model and batch each).",
)
@device_option
@json_option
def compare(run_dirs: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Trained runs side by side: Dice, IoU, HD95, params, MACs, measured latency.

    Each RUN is a training run evaluated on its test fold (`msnas-graph evaluate RUN`);
    all must hold out the same cases of the same data. Latency is timed in the runtime
    predict uses (--runtime auto), batch 1 and 8, in interleaved rounds. The U-Net runs
    make the frontier: every other run is "on the frontier" or "dominated by U-Net(base,
    depth)", a U-Net no slower and at least as accurate (latency at batch 1; the MACs
    column likewise).

    \b
    Examples:
      msnas-graph compare runs/unet8 runs/unet16 runs/msnas -o table.md --plot frontier.png
      msnas-graph compare runs/* --json > comparison.json
    """
    result = backend().compare(list(run_dirs), _settings(options, resume=False))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(result.markdown().rstrip("\n"))
    for what in ("table", "plot"):
        if options.get(what):
            click.echo(f"wrote {options[what]}")


@click.command()
@click.argument("run_dir", type=click.Path(exists=True))
@click.argument("inputs", metavar="INPUTS")
@out_dir_option(required=True)
@click.option("--overlay", is_flag=True, help="Also write overlay PNGs.")
@device_option
@inference_runtime_option("auto")
def predict(run_dir: str, inputs: str, out_dir: str, **options: Any) -> None:
    """Segment new images or volumes with a trained model (masks in the input's format).

    \b
    Examples:
      msnas-graph predict runs/t scans/ -o masks/ --overlay
      msnas-graph predict runs/t scans/ -o masks/ --runtime jit
    """
    written = backend().predict(run_dir, inputs, out_dir, options)
    click.echo(f"wrote {len(written)} mask(s) to {out_dir}")


@click.command()
@click.argument("source", metavar="[ARCH|RUN]", required=False)
@click.option("--model", type=click.Choice(["unet"]), help="Cost of the U-Net baseline instead.")
@click.option("--input-size", type=click.IntRange(min=8), default=256, show_default=True)
@skip_flag("--no-memory", "activation", help="Skip the activation-memory measurement.")
@click.option(
    "--unet-base",
    "unet_base_channels",
    type=click.IntRange(min=1),
    help="With --model unet: its base width (default 56).",
)
@click.option(
    "--unet-depth", type=click.IntRange(min=2), help="With --model unet: its levels (default 5)."
)
@click.option("--latency", is_flag=True, help="Also measure inference speed, batch 1 and 8.")
@device_option
@inference_runtime_option("auto")
@json_option
def cost(
    source: str | None, model: str | None, input_size: int, as_json: bool, **options: Any
) -> None:
    """Parameters, MACs, FLOPs and training-step activation memory of a network.

    MACs are multiply-accumulates (what the paper's "FLOPs" column reports); FLOPs = 2 x MACs
    as counted by torch.utils.flop_counter. Activation memory is the bytes a training step
    saves for backward at batch 1. --latency measures inference on --device by --runtime
    (BatchNorm folded, eval mode): median ms per image and images/s at batch 1 and 8.

    \b
    Examples:
      msnas-graph cost arch.json --input-size 256 --latency
      msnas-graph cost arch.json --latency --runtime eager
      msnas-graph cost --model unet --unet-base 32 --unet-depth 4 --json
    """
    if (source is None) == (model is None):
        raise click.UsageError("give an architecture/run folder, or --model unet (not both)")
    unet = ("unet_base_channels", "unet_depth")
    if model is None and any(options.get(k) is not None for k in unet):
        raise click.UsageError("--unet-base/--unet-depth go with --model unet")
    if not options.get("latency"):  # the runtime is only what --latency measures
        given = click.get_current_context().get_parameter_source("runtime")
        if given is click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError("--runtime goes with --latency (the runtime to time)")
        options.pop("runtime", None)
    report = backend().cost(source or model, input_size, _settings(options, resume=False))
    click.echo(json.dumps(report, indent=2) if as_json else formatting.cost_text(report))


@click.command(name="export")
@click.argument("source", metavar="ARCH|RUN|CHECKPOINT")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), required=True)
@click.option("--input-size", type=click.IntRange(min=8), default=256, show_default=True)
@skip_flag("--no-verify", "verify", help="Skip the onnxruntime comparison.")
@click.option(
    "--exporter", type=click.Choice(["dynamo", "torchscript"]), default="dynamo", show_default=True
)
@json_option
def export_cmd(source: str, onnx_path: str, as_json: bool, **options: Any) -> None:
    """Export a network to ONNX (dynamic batch and size), checked with onnxruntime.

    \b
    Examples:
      msnas-graph export runs/t --onnx model.onnx            # a trained run
      msnas-graph export arch.json --onnx arch.onnx --input-size 128
    """
    report = backend().export(source, onnx_path, _settings(options, resume=False))
    text = json.dumps(report, indent=2, default=str) if as_json else formatting.export_text(report)
    click.echo(text)


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False), default="runs/quickstart")
@data_option("phantom:96", help="Dataset source.")
@space_option("quick")
@click.option("--search-epochs", type=EpochPair(), default="4,4", show_default=True)
@click.option("--train-epochs", type=click.IntRange(min=1), default=40, show_default=True)
@paths_option
@input_size_option
@folds_option
@test_fold_option(0, help=None)
@device_option
@seed_option
@max_steps_option
@click.option(
    "--target-macs",
    metavar="COUNT|Fx|off",
    default="0.8x",
    show_default=True,
    callback=target_macs_value,
    help="The search penalises MACs above this count, or this multiple of the U-Net's of the "
    "same width; off: accuracy alone (the paper's search).",
)
@overwrite_option
@progress_option
def quickstart(out_dir: str, overwrite: bool, progress: bool, **options: Any) -> None:
    """Search -> decode (rendered) -> train -> evaluate, end to end, into OUT_DIR.

    Runs on the built-in phantom data by default (no download; a few minutes on a CPU).
    The search aims below 0.8x the MACs of a U-Net of the same width (--target-macs).

    \b
    Examples:
      msnas-graph quickstart runs/quickstart
      msnas-graph quickstart runs/hc18 --data ../shared/data/hc18 \\
          --folds ../shared/data/hc18/folds.json
      msnas-graph quickstart runs/paper --target-macs off   # accuracy alone
    """
    target = options.pop("target_macs")
    settings = _settings(options, resume=False)
    settings["target_macs_unet"] = target[1] if isinstance(target, tuple) else None  # or off
    if isinstance(target, int):
        settings["target_macs"] = target
    result = backend().quickstart(out_dir, settings, overwrite=overwrite, progress=progress)
    click.echo(formatting.quickstart_text(result))


COMMANDS = [search, train, evaluate, compare, predict, cost, export_cmd, quickstart]
