"""The ``decode`` command and its budget options (``--max-macs``, ``--max-params``, ...)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import click

from msnas_graph.errors import DecodeError

from .backend_commands import backend
from .formatting import warn_context
from .options import (
    bundle,
    channels_option,
    count_option,
    dot_limit_options,
    json_option,
    paths_option,
    render_limits,
    render_option,
    unet_multiple,
)

if TYPE_CHECKING:
    from msnas_graph.architecture import Architecture
    from msnas_graph.budget import Budget, BudgetedDecode, CostModel
    from msnas_graph.diagnostics import Diagnostics
    from msnas_graph.genotype import CellGenotype
    from msnas_graph.spec import SearchSpace
    from msnas_graph.state import SearchState


#: A budget relative to the U-Net's cost: ``("unet", 0.8)`` for ``0.8x``.
Relative = tuple[str, float]


def _relative_or_none(
    type_: click.ParamType, value: Any, param: click.Parameter | None, ctx: click.Context | None
) -> Relative | None:
    """``0.8x`` as ``("unet", 0.8)``; anything else as None (a bad multiple fails here)."""
    if not isinstance(value, str):
        return None
    try:
        factor = unet_multiple(value)
    except click.BadParameter as exc:
        type_.fail(exc.message, param, ctx)
    return None if factor is None else ("unet", factor)


class CountType(click.ParamType):
    """A positive count such as ``0.5G``, ``500M``, ``2e9`` (decimal suffixes k, M, G, T), or
    a multiple of the U-Net's (``0.8x``)."""

    name = "COUNT|Fx"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | Relative:
        if isinstance(value, int | tuple):
            return value
        if (relative := _relative_or_none(self, value, param, ctx)) is not None:
            return relative
        from msnas_graph.budget import parse_count

        try:
            return parse_count(str(value))
        except DecodeError as exc:
            self.fail(f"{exc}; or a multiple of the U-Net's, e.g. 0.8x", param, ctx)


class PositiveMs(click.ParamType):
    """A latency in milliseconds: a finite number above zero; or a multiple of the U-Net's
    (``0.6x``)."""

    name = "MS|Fx"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float | Relative:
        if isinstance(value, tuple):
            return value
        if (relative := _relative_or_none(self, value, param, ctx)) is not None:
            return relative
        try:
            ms = float(value)
        except (TypeError, ValueError):
            self.fail(f"'{value}' is not a number of milliseconds (or a multiple such as 0.6x)",
                      param, ctx)  # fmt: skip
        if not (0 < ms < float("inf")):
            self.fail(f"{value} is not a positive, finite number of milliseconds", param, ctx)
        return ms


#: ``--max-macs``, ``--max-params``, ``--max-latency-ms``, ``--latency-device``,
#: ``--input-size``, ``--candidates``.
budget_options = bundle(
    click.option(
        "--max-macs",
        type=CountType(),
        help="Decode the best paths whose network fits this many MACs (e.g. 0.5G), or this "
        "multiple of the U-Net's (0.8x: 0.8 times U-Net(--channels, depth 4)'s MACs at the "
        "input size), counted at --channels where given.",
    ),
    click.option(
        "--max-params", type=CountType(), help="... and this many parameters (2M, or 0.5x)."
    ),
    click.option(
        "--max-latency-ms",
        type=PositiveMs(),
        help="... and this batch-1 latency of the eager runtime (ms, or 0.6x the U-Net's timed "
        "alike), from each part timed alone on --latency-device (a sum of parts: an estimate).",
    ),
    click.option(
        "--latency-device",
        default="cpu",
        show_default=True,
        help="Where --max-latency-ms is measured: cpu, cuda or cuda:N.",
    ),
    count_option("--input-size", "Input side at which MACs are counted (default: the space's)."),
    count_option(
        "--candidates",
        "Top paths the budgeted choice picks from.",
        default=128,
        show_default=True,
    ),
    click.option(
        "--fit-width",
        is_flag=True,
        help="Meet the budget by narrowing, not by dropping paths: decode the paths as without "
        "a budget (--paths, --min-scale), then write the network at the widest base width "
        "that fits, --channels or narrower.",
    ),
)

#: How a state becomes an architecture: ``--paths``, ``--inputs-per-block``, ``--score``,
#: ``--consensus``.
decode_options = bundle(
    paths_option,
    count_option("--inputs-per-block", "Inputs kept per block (default: space)."),
    click.option(
        "--score",
        type=click.Choice(["paper", "relative"]),
        default="paper",
        show_default=True,
        help="Path score: the paper's plain sum of weights (prefers the trellis rim before "
        "any learning; the better networks in benchmarks/results/frontier.md), or each edge "
        "weight relative to uniform at its node (no topology prior).",
    ),
    click.option(
        "--consensus",
        "method",
        type=click.Choice(["mean", "majority"]),
        default="mean",
        show_default=True,
        help="With several sources: average their normalised weights, or vote per decision.",
    ),
    click.option(
        "--min-scale",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        metavar="K",
        help="Keep the best paths of which at least one reaches scale K (1/2**K of the input's "
        "side), so that the network sees context: a tight cost target's top paths may all "
        "stay at full resolution (the mean consensus; under a budget, the best set that fits "
        "and holds such a path).",
    ),
    click.option(
        "--cell-glue",
        type=click.Choice(["darts", "lean"]),
        help="Build the decoded cells with this glue (default: the searched space's): lean "
        "leaves out the 1x1 preprocess and projection where dense convolutions can do "
        "without (faster). A budget then counts the network so built, and the architecture "
        "file carries the glue to `train`.",
    ),
)


def budget_and_model(
    space: SearchSpace,
    max_macs: int | Relative | None = None,
    max_params: int | Relative | None = None,
    max_latency_ms: float | Relative | None = None,
    latency_device: str = "cpu",
    input_size: int | None = None,
    channels: int | None = None,
) -> tuple[Budget, Callable[[Mapping[str, CellGenotype]], CostModel]] | None:
    """The budget the options ask for and how to cost cells under it, or ``None`` when no
    budget was given. Costs are counted (or timed) at base width ``channels`` where given: the
    width the network will be trained at, not the narrower one it was searched at. A limit
    relative to the U-Net (``("unet", F)``) becomes ``F`` times U-Net(width, 4)'s cost,
    measured alike (a note on stderr says what it resolved to)."""
    if max_macs is None and max_params is None and max_latency_ms is None:
        if input_size is not None:
            raise click.UsageError(
                "--input-size applies only with --max-macs, --max-params or --max-latency-ms"
            )
        return None
    from msnas_graph.budget import Budget

    timed = max_latency_ms is not None
    wide = space if channels is None else space.widen(channels)
    given = {"max_macs": max_macs, "max_params": max_params, "max_latency_ms": max_latency_ms}
    relative = [k for k, v in given.items() if isinstance(v, tuple)]
    figures: dict[str, float] = {}
    if relative:
        unet = backend().unet_cost(
            wide, input_size, latency="max_latency_ms" in relative, device=latency_device
        )
        figures = {
            "max_macs": unet.macs,
            "max_params": unet.params,
            "max_latency_ms": unet.latency_ms,
        }

    def absolute(key: str) -> float | None:
        value = given[key]
        if not isinstance(value, tuple):
            return value
        limit = value[1] * figures[key]
        flag, unit = _LIMITS[key]
        click.echo(
            f"msnas-graph: note: {flag} {value[1]:g}x U-Net({wide.channels}, 4)'s "
            f"{figures[key]:.4g} {unit} = {limit:.4g} {unit}",
            err=True,
        )
        return limit

    macs, params = absolute("max_macs"), absolute("max_params")
    limits = Budget(
        max_macs=None if macs is None else round(macs),
        max_params=None if params is None else round(params),
        max_latency_ms=absolute("max_latency_ms"),
    )

    def model(cells: Mapping[str, CellGenotype]) -> CostModel:
        return backend().edge_cost_model(
            cells, wide, input_size=input_size, latency=timed, device=latency_device
        )

    return limits, model


#: Each budget limit's flag and unit.
_LIMITS = {"max_macs": ("--max-macs", "MACs"), "max_params": ("--max-params", "params"),
           "max_latency_ms": ("--max-latency-ms", "ms")}  # fmt: skip


def decode_under_budget(
    state: SearchState,
    paths: int,
    inputs_per_block: int | None,
    score: str = "paper",
    channels: int | None = None,
    candidates: int = 128,
    min_scale: int = 0,
    **budget: Any,
) -> BudgetedDecode | None:
    """The budgeted decode the options ask for (:func:`budget_and_model`), or ``None``."""
    from msnas_graph.budget import budgeted_decode
    from msnas_graph.decode import decode_cells

    found = budget_and_model(state.space, channels=channels, **budget)
    if found is None:
        return None
    limits, model = found
    cells = decode_cells(state, inputs_per_block)
    return budgeted_decode(
        state, limits, model(cells), paths, candidates, inputs_per_block=inputs_per_block,
        score=score, min_scale=min_scale,
    )  # fmt: skip


def _one(
    state: SearchState, diag: Diagnostics, how: dict[str, Any], budget: dict[str, Any]
) -> tuple[Any, Callable[..., Any], dict[str, Any], str, list[str]]:
    """Decode one state: (architecture, its renderer, JSON, text, notes)."""
    from msnas_graph.decode import decode
    from msnas_graph.render import render

    paths, inputs, score = how["paths"], how["inputs_per_block"], how["score"]
    chosen = decode_under_budget(
        state, paths, inputs, score=score, channels=how["channels"], min_scale=how["min_scale"],
        **budget,
    )  # fmt: skip
    arch = chosen.architecture if chosen else decode(state, paths, inputs, score, how["min_scale"])
    text = str(arch) + (f"\n{chosen.summary()}" if chosen else "")
    payload = {**arch.to_dict(), "diagnostics": diag.to_dict()}
    notes = [f"decisions: {diag.summary()}"]
    return arch, lambda path, **limits: render(arch, path, **limits), payload, text, notes


def _consensus(
    states: list[SearchState],
    diags: list[Diagnostics],
    sources: tuple[str, ...],
    how: dict[str, Any],
    budget: dict[str, Any],
) -> tuple[Any, Callable[..., Any], dict[str, Any], str, list[str]]:
    """Decode the consensus of several states: as :func:`_one`."""
    from msnas_graph.consensus import consensus
    from msnas_graph.render import save_rendering

    budget = dict(budget)
    candidates = budget.pop("candidates", 128)
    found = budget_and_model(states[0].space, channels=how["channels"], **budget)
    limits, model = found if found is not None else (None, None)
    result = consensus(
        states, how["paths"], how["method"], how["score"], how["inputs_per_block"],
        names=sources, budget=limits, cost_model=model, candidates=candidates,
        min_scale=how["min_scale"],
    )  # fmt: skip
    payload = {
        **result.to_dict(),
        "diagnostics": {s: d.to_dict() for s, d in zip(sources, diags, strict=True)},
    }
    notes = [f"decisions of {s}: {d.summary()}" for s, d in zip(sources, diags, strict=True)]

    def draw(path: str, **limits: Any) -> Any:
        return save_rendering(result.to_graphviz(), path, **limits)

    return result.architecture, draw, payload, str(result), notes


def _fit(arch: Architecture, channels: int | None, budget: dict[str, Any]) -> tuple[Any, str]:
    """``--fit-width``: ``arch`` at the widest base width whose network fits the budget (counted
    or timed as a budgeted decode counts it), and a line that says so."""
    from msnas_graph.budget import fit_width, network_cost

    limits = {k: budget[k] for k in ("max_macs", "max_params", "max_latency_ms", "input_size")}
    found = budget_and_model(arch.space, channels=channels, **limits)
    if found is None:
        raise click.UsageError(
            "--fit-width needs a budget: give --max-macs, --max-params or --max-latency-ms"
        )
    wanted, _ = found
    size, device = budget["input_size"], budget["latency_device"]

    def cost_at(width: int) -> Any:
        model = backend().edge_cost_model(
            arch.cells, arch.space.widen(width), input_size=size, device=device,
            latency=wanted.max_latency_ms is not None,
        )  # fmt: skip
        return network_cost(arch.edges, model)

    start = channels or arch.space.channels
    width, cost = fit_width(wanted, cost_at, start)
    fitted = arch.widen(width)
    meta = {**fitted.meta, "fit_width": width, "budget": wanted.to_dict(), "cost": cost.to_dict()}
    fitted = type(arch)(fitted.space, fitted.edges, fitted.cells, fitted.paths, meta=meta)
    if width == start:
        return fitted, f"fits the budget ({wanted}) at base width {width} as it is: {cost}"
    return fitted, f"fitted to the budget ({wanted}): base width {width}, {cost}"


def _refuse_mixes(vote: bool, min_scale: int, budget: dict[str, Any]) -> None:
    """Refuse what ``decode`` cannot combine: a budget or ``--min-scale`` with a vote
    (``--consensus majority`` over several sources)."""
    limits = {k for k, v in budget.items() if v is not None} - {"candidates", "latency_device"}
    if min_scale and vote:
        raise click.UsageError(
            "--min-scale decodes the top paths or the mean consensus, not a vote: drop "
            "--consensus majority"
        )
    if vote and limits:
        raise click.UsageError(
            "--max-macs/--max-params/--max-latency-ms decode the mean consensus, not a vote: "
            "drop --consensus majority"
        )


def _expand_seeds(sources: tuple[str, ...]) -> tuple[str, ...]:
    """Each seeds run folder (``search --seeds``) stands for its seed folders."""
    from msnas_graph.seeds import seed_dirs

    return tuple(d for s in sources for d in ([str(x) for x in seed_dirs(s)] or [s]))


@click.command()
@click.argument("sources", metavar="SOURCE...", nargs=-1, required=True)
@decode_options
@render_option
@dot_limit_options
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write the architecture JSON here."
)
@json_option
@channels_option
@budget_options
def decode(
    sources: tuple[str, ...],
    render_path: str | None,
    output: str | None,
    as_json: bool,
    channels: int | None,
    paths: int,
    inputs_per_block: int | None,
    score: str,
    method: str,
    min_scale: int,
    cell_glue: str | None,
    dot_timeout: float,
    max_dot_elements: int,
    **budget: Any,
) -> None:
    """Decode a search state (file or run folder) into an architecture, and say how decided
    each of its decisions is.

    Cells first (strongest input and operation per block), then the top N_l
    input->output paths; their union is the architecture. A warning goes to stderr when
    the result is within noise of the untrained prior. With several sources (seeds of
    one search space), or a folder of `search --seeds`, decode their consensus and print how
    much they agree.

    \b
    Examples:
      msnas-graph decode runs/search --paths 5 --render arch.svg -o arch.json
      msnas-graph decode state.json --paths 3 --json
      msnas-graph decode state.json --paths 3 --max-macs 0.5G --max-params 2M
      msnas-graph decode state.json --paths 3 --max-latency-ms 20
      msnas-graph decode runs/s1 runs/s2 runs/s3 --consensus majority --render agree.svg
      msnas-graph decode runs/seeds --max-macs 95M --channels 16   # a consensus within a budget
      msnas-graph decode runs/search --channels 64 -o wide.json   # to train it wide
      msnas-graph decode runs/seeds --paths 2 --min-scale 2   # a path down to 1/4 of the side
      msnas-graph decode runs/deep --paths 4 --min-scale 3 --max-latency-ms 0.8x
      msnas-graph decode runs/deep --cell-glue lean --max-macs 0.7x --input-size 128
      msnas-graph decode runs/deep --min-scale 3 --max-macs 0.5x --channels 16 --fit-width
    """
    from msnas_graph._util import safe_output
    from msnas_graph.diagnostics import diagnose
    from msnas_graph.io import load_states

    how = {"paths": paths, "inputs_per_block": inputs_per_block, "score": score, "method": method,
           "channels": channels, "min_scale": min_scale}  # fmt: skip
    sources = _expand_seeds(sources)
    fit, given = budget.pop("fit_width"), budget
    if fit:  # the paths are decoded as without a budget; the width meets it
        budget = {**budget, "max_macs": None, "max_params": None, "max_latency_ms": None}
        budget["input_size"] = None
    _refuse_mixes(len(sources) > 1 and method != "mean", min_scale, budget)
    states = load_states(sources)
    if cell_glue is not None:
        states = [s.with_cell_glue(cell_glue) for s in states]
    for target in (output, render_path):  # refuse a bad output (an input too) before writing
        if target:
            safe_output(target)
    diags = [diagnose(s, paths, score=score, inputs_per_block=inputs_per_block) for s in states]
    if len(states) == 1:
        ctx = click.get_current_context()
        if ctx.get_parameter_source("method") is click.core.ParameterSource.COMMANDLINE:
            click.echo(
                f"msnas-graph: note: --consensus {method} needs several sources (seeds); "
                f"decoded the one given",
                err=True,
            )
        arch, draw, payload, text, notes = _one(states[0], diags[0], how, budget)
    else:
        arch, draw, payload, text, notes = _consensus(states, diags, sources, how, budget)
    if fit:
        arch, line = _fit(arch, channels, given)
        text = f"{text}\n{line}"
        nested = "architecture" in payload  # a consensus nests it
        payload = {**payload, **({"architecture": arch.to_dict()} if nested else arch.to_dict())}
        channels = None  # ``arch`` is at the fitted width
    if render_path:
        draw(render_path, **render_limits(dot_timeout, max_dot_elements))
    if output:
        (arch.widen(channels) if channels else arch).save(output)
    click.echo(json.dumps(payload, indent=2) if as_json else text)
    if not as_json:
        for what, where in (("architecture", output), ("picture", render_path)):
            if where:
                click.echo(f"wrote {what} {where}")
        click.echo("\n".join(notes))
    for src, d in zip(sources, diags, strict=True):
        if (warning := d.warning()) is not None:
            where = f"{src}: " if len(sources) > 1 else ""
            click.echo(f"msnas-graph: warning: {where}{warning}", err=True)
    warn_context(arch)
