"""The ``decode`` command's budget options (``--max-macs``, ``--max-params``, ...), kept apart
so that ``decode`` itself only gains one decorator and one call."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from msnas_graph.errors import BackendError, DecodeError

if TYPE_CHECKING:
    from msnas_graph.budget import BudgetedDecode
    from msnas_graph.state import SearchState

F = TypeVar("F", bound=Callable[..., Any])


class CountType(click.ParamType):
    """A positive count such as ``0.5G``, ``500M``, ``2e9`` (decimal suffixes k, M, G, T)."""

    name = "COUNT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        from msnas_graph.budget import parse_count

        try:
            return parse_count(str(value))
        except DecodeError as exc:
            self.fail(str(exc), param, ctx)


def budget_options(f: F) -> F:
    """``--max-macs``, ``--max-params``, ``--input-size``, ``--candidates``."""
    for option in reversed(
        [
            click.option(
                "--max-macs",
                type=CountType(),
                help="Decode the best paths whose network fits this many MACs (e.g. 0.5G).",
            ),
            click.option(
                "--max-params", type=CountType(), help="... and this many parameters (e.g. 2M)."
            ),
            click.option(
                "--input-size",
                type=click.IntRange(min=1),
                help="Input side at which MACs are counted (default: the space's).",
            ),
            click.option(
                "--candidates",
                type=click.IntRange(min=1),
                default=128,
                show_default=True,
                help="Top paths the budgeted choice picks from.",
            ),
        ]
    ):
        f = option(f)
    return f


def decode_under_budget(
    state: SearchState,
    paths: int,
    inputs_per_block: int | None,
    max_macs: int | None = None,
    max_params: int | None = None,
    input_size: int | None = None,
    candidates: int = 128,
    score: str = "relative",
) -> BudgetedDecode | None:
    """The budgeted decode the options ask for, or ``None`` when no budget was given."""
    if max_macs is None and max_params is None:
        if input_size is not None:
            raise click.UsageError("--input-size applies only with --max-macs or --max-params")
        return None
    from msnas_graph.budget import Budget, budgeted_decode
    from msnas_graph.decode import decode_cells

    try:
        from msnas_graph.backends.torch.cost import edge_cost_model
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise BackendError(
            f"--max-macs/--max-params measure costs with the PyTorch backend, which is not "
            f"installed ({exc.name}); pip install 'msnas-graph[torch]'"
        ) from None
    cells = decode_cells(state, inputs_per_block)
    model = edge_cost_model(cells, state.space, input_size=input_size)
    budget = Budget(max_macs=max_macs, max_params=max_params)
    return budgeted_decode(
        state, budget, model, paths, candidates, inputs_per_block=inputs_per_block, score=score
    )
