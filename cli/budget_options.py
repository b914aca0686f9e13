"""``decode``'s budget: the options (``--max-macs``, ``--max-params``, ``--max-latency-ms``,
``--fit-width`` ...), their limits resolved (``0.8x``: against the U-Net's cost), and the
decode or the width they ask for."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import click

from msnas_graph.errors import DecodeError

from .backend_commands import backend
from .options import bundle, count_option, unet_multiple

if TYPE_CHECKING:
    from msnas_graph.architecture import Architecture
    from msnas_graph.budget import Budget, BudgetedDecode, CostModel
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
        "that fits, --channels or narrower. --max-latency-ms then times the whole network "
        "(and the U-Net of 0.5x) in the runtime predict uses (auto), fastest pass.",
    ),
    count_option(
        "--width-multiple",
        "With --fit-width: a base width that is a multiple of this (8 or 16: the channel "
        "counts ONNX Runtime runs fastest per MAC on AVX-512 CPUs, "
        "benchmarks/results/channel_alignment.md).",
        default=1,
        show_default=True,
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
    runtime: str | None = None,
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
            wide,
            input_size,
            latency="max_latency_ms" in relative,
            device=latency_device,
            runtime=runtime,
        )
        figures = {
            "max_macs": unet.macs,
            "max_params": unet.params,
            "max_latency_ms": unet.latency_ms,
        }

    timed_in = f" (whole, {runtime} runtime)" if runtime and timed else ""

    def absolute(key: str) -> float | None:
        value = given[key]
        if not isinstance(value, tuple):
            return value
        limit = value[1] * figures[key]
        flag, unit = _LIMITS[key]
        click.echo(
            f"msnas-graph: note: {flag} {value[1]:g}x U-Net({wide.channels}, 4)'s "
            f"{figures[key]:.4g} {unit}{timed_in} = {limit:.4g} {unit}",
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


def split_fit(budget: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``--fit-width``'s budget options (with ``width_multiple``), or ``None`` without it; and
    the options the paths are decoded under (with ``--fit-width``: no budget)."""
    fit, multiple = budget.pop("fit_width"), budget.pop("width_multiple")
    if multiple != 1 and not fit:
        raise click.UsageError("--width-multiple applies only with --fit-width")
    limits = ("max_macs", "max_params", "max_latency_ms")
    if not fit:
        return None, budget
    if all(budget[k] is None for k in limits):
        raise click.UsageError(
            "--fit-width needs a budget: give --max-macs, --max-params or --max-latency-ms"
        )
    return {**budget, "width_multiple": multiple}, {
        **budget,
        **dict.fromkeys((*limits, "input_size")),
    }


def fit_to_budget(
    arch: Architecture, channels: int | None, fit: dict[str, Any], text: str, payload: Any
) -> tuple[Architecture, str, Any]:
    """``--fit-width``: ``arch`` at the widest base width whose built network fits the budget
    (counted as a budgeted decode counts it; a latency timed whole, and the U-Net of a relative
    budget alike, in the runtime ``predict`` uses), ``text`` with a line that says so, and
    ``payload`` (``decode --json``'s) with the fitted architecture."""
    from msnas_graph.budget import fit_width

    keys = ("max_macs", "max_params", "max_latency_ms", "input_size", "latency_device")
    found = budget_and_model(arch.space, channels=channels, runtime="auto",
                             **{k: fit[k] for k in keys})  # fmt: skip
    assert found is not None  # split_fit refused --fit-width without a budget
    wanted, size, device = found[0], fit["input_size"], fit["latency_device"]

    def cost_at(width: int) -> Any:  # counted, and timed whole as predict runs it
        timed = wanted.max_latency_ms is not None
        return backend().built_cost(
            arch.widen(width), size, latency=timed, device=device, runtime="auto"
        )

    start = channels or arch.space.channels
    width, cost = fit_width(wanted, cost_at, start, fit["width_multiple"])
    fitted = arch.widen(width)
    meta = {**fitted.meta, "fit_width": width, "budget": wanted.to_dict(), "cost": cost.to_dict()}
    fitted = type(arch)(fitted.space, fitted.edges, fitted.cells, fitted.paths, meta=meta)
    how = " (timed whole, auto runtime)" if wanted.max_latency_ms is not None else ""
    if width == start:
        text += f"\nfits the budget ({wanted}) at base width {width} as it is: {cost}{how}"
    else:
        text += f"\nfitted to the budget ({wanted}): base width {width}, {cost}{how}"
    nested = "architecture" in payload  # a consensus nests it
    payload = {**payload, **({"architecture": fitted.to_dict()} if nested else fitted.to_dict())}
    return fitted, text, payload
