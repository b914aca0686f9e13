"""Options of ``search`` alone: the fixed network of a cell search."""

from __future__ import annotations

from typing import Any

import click


def _topology(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--topology``: the network's document (a seeds plan keeps it, not the file)."""
    if value is None:
        return None
    from msnas_graph.architecture import Architecture
    from msnas_graph.errors import MsnasError

    try:
        return Architecture.load(value).to_dict()
    except MsnasError as exc:
        raise click.BadParameter(str(exc)) from None


topology_option = click.option(
    "--topology",
    metavar="ARCH.json",
    callback=_topology,
    help="Keep this decoded network's edges and search only its cells, on it (no network "
    "phase: --arch-steps CELL,0 or --epochs CELL,0, the default); the run decodes to the "
    "network with the cells found. Its space must share this one's trellis and cells.",
)
