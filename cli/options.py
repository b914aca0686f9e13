"""Options shared by several commands, defined once, and grouped into a few named bundles.

An option's destination name is the backend's option name (for the torch backend, the field
of its ``SearchConfig``/``TrainConfig``, e.g. ``--max-steps`` -> ``max_steps_per_epoch``), so
that a new option reaches the backend through :func:`run_options` with no more plumbing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]


def bundle(*decorators: Decorator[Any]) -> Decorator[Any]:
    """One decorator applying ``decorators`` so that ``--help`` lists them in this order."""

    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


class EpochPair(click.ParamType):
    """``CELL,NETWORK`` epochs, e.g. ``20,20``, as a pair of integers."""

    name = "CELL,NETWORK"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            a, b = (int(x) for x in str(value).split(","))
        except ValueError:
            self.fail("expected CELL,NETWORK epochs, e.g. 20,20", param, ctx)
        return a, b


def space_option(default: str = "quick") -> Decorator[Any]:
    """``--space``: a preset name (paper, quick, tiny) or a YAML/JSON spec file, and
    ``--set FIELD=VALUE`` (repeatable) changing any of its fields. With ``--set`` the command
    receives the built :class:`~msnas_graph.spec.SearchSpace` as ``space`` (and it counts as
    given on the command line, so a resumed run refuses the change)."""

    def apply(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, space_set: tuple[str, ...] = (), **kwargs: Any) -> Any:
            if space_set:
                from msnas_graph.spec import load_space, parse_overrides

                kwargs["space"] = load_space(kwargs["space"], parse_overrides(space_set))
                ctx = click.get_current_context()
                ctx.set_parameter_source("space", click.core.ParameterSource.COMMANDLINE)
            return f(*args, **kwargs)

        wrapper = click.option(
            "--set",
            "space_set",
            multiple=True,
            metavar="FIELD=VALUE",
            help="Change a field of the space (repeatable), e.g. --set "
            "ops=conv_3x3,conv_3x3_dil2,skip_connect,none --set channels=16.",
        )(wrapper)
        return cast(
            F,
            click.option(
                "--space",
                default=default,
                show_default=True,
                metavar="PRESET|FILE",
                help="Search space: a preset (paper, quick, tiny) or a YAML/JSON spec file.",
            )(wrapper),
        )

    return apply


def data_option(default: str | None = "phantom", help: str | None = None) -> Decorator[Any]:
    """``--data``: the dataset source."""
    return click.option(
        "--data",
        default=default,
        show_default=default is not None,
        metavar="SOURCE",
        help=help
        or "'phantom' (built-in synthetic data), 'phantom:N', or a dataset folder "
        "(image/mask folders, NIfTI, or the MSD/nnU-Net layout).",
    )


def test_fold_option(
    default: int | None = 0, help: str | None = "Fold held out for testing."
) -> Decorator[Any]:
    """``--test-fold``."""
    return click.option(
        "--test-fold", type=int, default=default, show_default=default is not None, help=help
    )


def out_dir_option(required: bool = False, help: str | None = None) -> Decorator[Any]:
    """``-o/--out``: an output folder."""
    return click.option(
        "-o", "--out", "out_dir", type=click.Path(file_okay=False), required=required, help=help
    )


def skip_flag(flag: str, dest: str, help: str) -> Decorator[Any]:
    """A ``--no-THING`` flag that sets the backend option ``dest`` (on by default) to False."""
    return click.option(flag, dest, is_flag=True, flag_value=False, default=True, help=help)


def count_option(flag: str, help: str | None = None, **kwargs: Any) -> Decorator[Any]:
    """An option taking a positive integer (``kwargs``: ``default``, ``show_default``...)."""
    return click.option(flag, type=click.IntRange(min=1), help=help, **kwargs)


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text."
)

paths_option = click.option(
    "--paths",
    "-n",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Number of top input->output paths to keep (the paper's N_l, 3..5).",
)

render_option = click.option(
    "--render",
    "render_path",
    type=click.Path(dir_okay=False),
    help="Also render a picture (.svg, .png, .pdf or .dot).",
)


def _dot_timeout(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0 < value < float("inf"):  # also refuses nan
        raise click.BadParameter(f"must be a positive number of seconds, got {value:g}")
    return value


#: How far graphviz's ``dot`` may go for a ``.svg``/``.png``/``.pdf`` picture: ``--dot-timeout``
#: and ``--max-dot-elements`` (the ``timeout`` and ``max_elements`` of
#: :func:`msnas_graph.render.render`, with its defaults ``DOT_TIMEOUT_S`` and
#: ``DOT_MAX_ELEMENTS``; a test keeps them equal).
dot_limit_options = bundle(
    click.option(
        "--dot-timeout",
        type=float,
        default=120.0,
        show_default=True,
        metavar="SECONDS",
        callback=_dot_timeout,
        help="Stop graphviz's dot after this many seconds (.svg, .png, .pdf pictures).",
    ),
    click.option(
        "--max-dot-elements",
        type=click.IntRange(min=1),
        default=20_000,
        show_default=True,
        metavar="N",
        help="Refuse a picture with more node and edge statements than this before dot runs "
        "(.dot files have no limit).",
    ),
)


def render_limits(dot_timeout: float, max_dot_elements: int) -> dict[str, Any]:
    """The keyword arguments of :func:`msnas_graph.render.render` the dot options ask for."""
    return {"timeout": dot_timeout, "max_elements": max_dot_elements}


device_option = click.option(
    "--device",
    default="auto",
    show_default=True,
    help="cpu, cuda, cuda:N, or auto (cuda when available).",
)

folds_option = click.option(
    "--folds",
    type=click.Path(exists=True, dir_okay=False),
    help="Folds file (e.g. ../shared/data/hc18/folds.json); default: group k-fold.",
)


def inference_runtime_option(default: str) -> Decorator[Any]:
    """``--runtime``: how a trained network runs for inference (the backend checks the name;
    the torch backend's runtimes module documents them)."""
    return click.option(
        "--runtime",
        default=default,
        show_default=True,
        metavar="NAME",
        help="Inference runtime: auto (onnxruntime where installed and equal to eager on the "
        "first batch, else jit, else eager), eager (BatchNorm folded), jit (TorchScript, "
        "frozen), compile (torch.compile), onnxruntime.",
    )


seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")

input_size_option = click.option(
    "--input-size",
    type=click.IntRange(min=8),
    help="Side length images are resized to (default: the space's input_size).",
)

max_steps_option = click.option(
    "--max-steps",
    "max_steps_per_epoch",
    type=click.IntRange(min=1),
    help="Cap steps per epoch (smoke runs).",
)

overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace a finished run in the output folder."
)

progress_option = click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show progress bars."
)

#: The data a run reads: ``--data``, ``--batch-size``, ``--input-size``.
data_options = bundle(
    data_option(),
    click.option(
        "--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Batch size."
    ),
    input_size_option,
)

#: How the cases are split: ``--folds``, ``--test-fold``.
split_options = bundle(folds_option, test_fold_option())

#: Where and how a run computes: ``--device``, ``--amp``, ``--seed``, ``--max-steps``.
runtime_options = bundle(
    device_option,
    click.option(
        "--amp",
        type=click.Choice(["none", "bf16", "fp16"]),
        default="none",
        show_default=True,
        help="Mixed precision (autocast).",
    ),
    seed_option,
    max_steps_option,
)

#: The run folder's policy: ``--resume``, ``--overwrite``, ``--progress``.
run_folder_options = bundle(
    click.option(
        "--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint."
    ),
    overwrite_option,
    progress_option,
)


def run_options(*specific: Decorator[Any]) -> Decorator[Any]:
    """The options of a search or training run: RUN_DIR, the command's own options, then
    the shared data, split, runtime and run-folder bundles."""
    return bundle(
        click.argument("run_dir", type=click.Path(file_okay=False)),
        *specific,
        data_options,
        split_options,
        runtime_options,
        run_folder_options,
    )


def _arch_lr(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None or value.strip().lower() == "auto":
        return None
    try:
        lr = float(value)
    except ValueError:
        raise click.BadParameter(f"expected a number or 'auto', got {value!r}") from None
    if not 0 < lr < float("inf"):
        raise click.BadParameter(f"must be a positive number, got {value}")
    return lr


def _step_pair(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        a, b = (int(x) for x in value.split(","))
    except ValueError:
        msg = f"expected CELL,NETWORK steps (e.g. 300,300), not {value!r}"
        raise click.BadParameter(msg) from None
    if min(a, b) < 0 or a + b < 1:
        raise click.BadParameter(f"steps must be >= 0 with a total >= 1, got {value}")
    return a, b


warmup_option = click.option(
    "--warmup",
    type=click.IntRange(min=0),
    help="Weights-only epochs before the cell phase (added to --epochs). "
    "Default: half the cell epochs.",
)

warmup_steps_option = click.option(
    "--warmup-steps",
    type=click.IntRange(min=0),
    help="With --arch-steps: weights-only steps first. Default: half the cell steps.",
)

arch_steps_option = click.option(
    "--arch-steps",
    metavar="CELL,NETWORK",
    callback=_step_pair,
    help="Give the schedule in steps instead of epochs: architecture steps of the cell and "
    "network phases (after --warmup-steps); epochs are cut at --max-steps (or the data).",
)

path_sampling_option = click.option(
    "--path-sampling",
    type=click.Choice(["softmax", "gumbel"]),
    help="The network phase: softmax (default; the paper: each node sums its inputs weighted "
    "by softmax(beta)) or gumbel (each training step runs one sampled input per node, so the "
    "loss tells paths apart; GDAS, FBNet): for accuracy-only searches of deep spaces; with a "
    "cost target the cost won on HC18 (README).",
)
arch_lr_option = click.option(
    "--arch-lr",
    metavar="FLOAT|auto",
    callback=_arch_lr,
    help="Architecture learning rate (Adam) of both phases. Default (auto): 2 / the phase's "
    "architecture steps, clipped to [3e-4, 3e-2].",
)


def _non_negative(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not 0 <= value < float("inf"):  # also refuses nan
        raise click.BadParameter(f"must be a finite number >= 0, got {value:g}")
    return value


arch_weight_decay_option = click.option(
    "--arch-weight-decay",
    type=float,
    callback=_non_negative,
    help="L2 weight decay of the architecture parameters (Adam). Default 1e-3 (DARTS's); 0 is "
    "MONAI DiNTS's.",
)

channels_option = click.option(
    "--channels",
    type=click.IntRange(min=1),
    help="Base width to build the architecture at (search narrow, train wide); "
    "default: the searched width.",
)

init_from_option = click.option(
    "--init-from",
    metavar="SEARCH_RUN",
    type=click.Path(exists=True, file_okay=False),
    help="Start from this search run's supernet weights where shapes allow (same width).",
)


def unet_multiple(value: str) -> float | None:
    """``0.8x`` as 0.8 (a multiple of the U-Net's cost); anything else as None."""
    if not value.strip().lower().endswith("x"):
        return None
    try:
        factor = float(value.strip()[:-1])
    except ValueError:
        raise click.BadParameter(
            f"'{value}' is not a multiple of the U-Net's cost; give e.g. 0.8x"
        ) from None
    if not 0 < factor < float("inf"):
        raise click.BadParameter(f"the multiple must be a positive number, got {value}")
    return factor


def target_macs_value(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> int | tuple[str, float] | None:
    """``--target-macs``: a count (``95M``), ``("unet", F)`` for ``Fx``, or None (``off``)."""
    from msnas_graph.budget import parse_count
    from msnas_graph.errors import DecodeError

    if value is None or value.strip().lower() == "off":
        return None
    if (factor := unet_multiple(value)) is not None:
        return ("unet", factor)
    try:
        return parse_count(value)
    except DecodeError as exc:
        raise click.BadParameter(f"{exc}; or a multiple of the U-Net's MACs, e.g. 0.8x") from None


def _target_ms(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> float | tuple[str, float] | None:
    if value is None:
        return None
    if (factor := unet_multiple(value)) is not None:
        return ("unet", factor)
    try:
        ms = float(value)
    except ValueError:
        ms = float("nan")
    if not 0 < ms < float("inf"):
        raise click.BadParameter(
            f"must be a positive number of milliseconds, or a multiple of the U-Net's latency "
            f"(e.g. 0.5x), got {value}"
        )
    return ms


#: ``search``'s cost term (``search_cost``): what to weigh, how much, or a target.
cost_options = bundle(
    click.option(
        "--cost",
        type=click.Choice(["macs", "latency"]),
        help="Add the network's expected cost to the architecture loss: MACs, or batch-1 "
        "latency measured part by part in the eager runtime (off: accuracy alone, the paper).",
    ),
    click.option(
        "--cost-weight",
        type=float,
        callback=_non_negative,
        metavar="W",
        help="Weight of the cost term (default 1; the cost is divided by the untrained "
        "supernet's, so W is unitless; 0 only reports the expected cost).",
    ),
    click.option(
        "--cost-channels",
        type=click.IntRange(1, 4096),
        metavar="WIDTH",
        help="Measure the cost at this base width: the one you will train at (default: the "
        "space's channels).",
    ),
    click.option(
        "--target-macs",
        metavar="COUNT|Fx",
        callback=target_macs_value,
        help="Penalise the expected MACs only above this count (e.g. 200M) or this multiple of "
        "the U-Net's (0.8x: 0.8 times U-Net(--cost-channels, depth 4)'s MACs at the input "
        "size); implies --cost macs.",
    ),
    click.option(
        "--target-latency",
        metavar="MS|Fx",
        callback=_target_ms,
        help="Penalise the expected batch-1 latency only above MS milliseconds, or this "
        "multiple of the U-Net's (0.5x), timed like the cost table; implies --cost latency.",
    ),
)


def resolve_cost_target(options: dict[str, Any]) -> None:
    """Fold ``--target-macs`` / ``--target-latency`` into the backend's ``cost`` and
    ``cost_target`` (in place); contradictions are a usage error."""
    macs, ms = options.pop("target_macs", None), options.pop("target_latency", None)
    if macs is not None and ms is not None:
        raise click.UsageError("give --target-macs or --target-latency, not both")
    if macs is None and ms is None:
        return
    metric, target = ("macs", macs) if macs is not None else ("latency", ms)
    if options.get("cost") not in (None, metric):
        flag = "--target-macs" if metric == "macs" else "--target-latency"
        raise click.UsageError(f"{flag} weighs {metric}, but --cost {options['cost']} was given")
    name = "cost_target"
    if isinstance(target, tuple):  # ("unet", factor): relative to the U-Net's cost
        name, target = "cost_target_unet", target[1]
    options["cost"], options[name] = metric, target
    ctx = click.get_current_context()  # given on the command line: a resume refuses a change
    for key in ("cost", name):
        ctx.set_parameter_source(key, click.core.ParameterSource.COMMANDLINE)
