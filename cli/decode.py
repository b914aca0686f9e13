"""The ``decode`` command (its budget options: :mod:`.budget_options`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from .budget_options import (
    budget_and_model,
    budget_options,
    decode_under_budget,
    fit_to_budget,
    split_fit,
)
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
)

if TYPE_CHECKING:
    from msnas_graph.diagnostics import Diagnostics
    from msnas_graph.state import SearchState


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


def _refuse_paths_of_a_fixed_network(
    states: list[SearchState], min_scale: int, budget: dict[str, Any], fit: Any
) -> None:
    """States searched on a fixed network (``search --topology``) decode to its paths: an
    option that chooses paths is refused rather than ignored."""
    from msnas_graph.topology import TOPOLOGY

    if not any(TOPOLOGY in s.meta for s in states):
        return
    ctx = click.get_current_context()
    given = ctx.get_parameter_source("paths") is click.core.ParameterSource.COMMANDLINE
    limits = {k for k, v in budget.items() if v is not None} - {"candidates", "latency_device"}
    if given or min_scale or limits or fit:
        raise click.UsageError(
            "the state was searched on a fixed network (search --topology), whose paths it "
            "keeps: drop --paths, --min-scale, --max-* and --fit-width"
        )


def _note_one_source(method: str) -> None:
    """A note on stderr where ``--consensus`` was given with a single source."""
    ctx = click.get_current_context()
    if ctx.get_parameter_source("method") is click.core.ParameterSource.COMMANDLINE:
        click.echo(
            f"msnas-graph: note: --consensus {method} needs several sources (seeds); "
            f"decoded the one given",
            err=True,
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
    from msnas_graph.topology import with_cell_glue

    how = {"paths": paths, "inputs_per_block": inputs_per_block, "score": score, "method": method,
           "channels": channels, "min_scale": min_scale}  # fmt: skip
    sources = _expand_seeds(sources)
    fit, budget = split_fit(budget)  # with --fit-width the width meets the budget, not paths
    _refuse_mixes(len(sources) > 1 and method != "mean", min_scale, budget)
    states = load_states(sources)
    _refuse_paths_of_a_fixed_network(states, min_scale, budget, fit)
    if cell_glue is not None:  # a fixed network's too
        states = [with_cell_glue(s, cell_glue) for s in states]
    for target in (output, render_path):  # refuse a bad output (an input too) before writing
        if target:
            safe_output(target)
    diags = [diagnose(s, paths, score=score, inputs_per_block=inputs_per_block) for s in states]
    if len(states) == 1:
        _note_one_source(method)
        arch, draw, payload, text, notes = _one(states[0], diags[0], how, budget)
    else:
        arch, draw, payload, text, notes = _consensus(states, diags, sources, how, budget)
    if fit:
        arch, text, payload = fit_to_budget(arch, channels, fit, text, payload)
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
