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
