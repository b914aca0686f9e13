"""Options shared by several commands, defined once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def space_option(default: str = "quick") -> Callable[[F], F]:
    """``--space``: a preset name (paper, quick, tiny) or a YAML/JSON spec file."""
    return click.option(
        "--space",
        "space_source",
        default=default,
        show_default=True,
        metavar="PRESET|FILE",
        help="Search space: a preset (paper, quick, tiny) or a YAML/JSON spec file.",
    )


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

device_option = click.option(
    "--device",
    default="auto",
    show_default=True,
    help="cpu, cuda, cuda:N, or auto (cuda when available).",
)

amp_option = click.option(
    "--amp",
    type=click.Choice(["none", "bf16", "fp16"]),
    default="none",
    show_default=True,
    help="Mixed precision (autocast).",
)

data_option = click.option(
    "--data",
    default="phantom",
    show_default=True,
    metavar="SOURCE",
    help="'phantom' (built-in synthetic data), 'phantom:N', or a dataset folder "
    "(image/mask folders, NIfTI, or the MSD/nnU-Net layout).",
)

folds_option = click.option(
    "--folds",
    type=click.Path(exists=True, dir_okay=False),
    help="Folds file (e.g. ../shared/data/hc18/folds.json); default: group k-fold.",
)

test_fold_option = click.option(
    "--test-fold", type=int, default=0, show_default=True, help="Fold held out for testing."
)

overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace a finished run in the output folder."
)

resume_option = click.option(
    "--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint."
)

progress_option = click.option(
    "--progress/--no-progress", default=True, show_default=True, help="Show progress bars."
)

seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")


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

arch_lr_option = click.option(
    "--arch-lr",
    metavar="FLOAT|auto",
    default="auto",
    show_default=True,
    callback=_arch_lr,
    help="Architecture learning rate (Adam) of both phases; auto: 2 / the phase's "
    "architecture steps, clipped to [3e-4, 3e-2].",
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

unet_base_option = click.option(
    "--unet-base", type=click.IntRange(min=1), default=56, show_default=True,
    help="U-Net base width.",
)  # fmt: skip

unet_depth_option = click.option(
    "--unet-depth", type=click.IntRange(min=2), default=5, show_default=True,
    help="U-Net levels.",
)  # fmt: skip
