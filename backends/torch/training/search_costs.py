"""A search's cost term as the search loop holds it: built on first use from the config (the
table measured once, or brought back by a checkpoint so that a resumed search weighs the same
numbers), the target resolved (absolute, or a multiple of the table's U-Net), and the expected
cost per epoch for ``metrics.csv`` and the log. The term itself is
:class:`~msnas_graph.backends.torch.search_cost.CostTerm`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from msnas_graph.backends.torch.nn.arch_weights import ArchWeights
from msnas_graph.backends.torch.search_cost import (
    UNET_DEPTH,
    CostTerm,
    SearchCostTable,
    measure_search_costs,
)
from msnas_graph.backends.torch.training.config import SearchConfig
from msnas_graph.errors import RunError
from msnas_graph.graph import Supergraph
from msnas_graph.spec import SearchSpace

__all__ = ["SearchCost"]

logger = logging.getLogger(__name__)


class SearchCost:
    """The cost term of one search (``term()`` is ``None`` without ``config.cost``)."""

    def __init__(
        self, config: SearchConfig, space: SearchSpace, graph: Supergraph, device: Any
    ) -> None:
        self.config, self.space, self.graph, self.device = config, space, graph, device
        self.table: SearchCostTable | None = None  #: measured once, kept in checkpoints
        self._term: CostTerm | None = None

    def checkpoint(self) -> dict[str, Any]:
        """What a checkpoint keeps: the table, once measured."""
        return {} if self.table is None else {"cost_table": self.table.to_dict()}

    def restore(self, ckpt: Mapping[str, Any]) -> None:
        """Weigh the numbers the run started with (a checkpoint's table)."""
        if "cost_table" in ckpt:
            self.table, self._term = SearchCostTable.from_dict(ckpt["cost_table"]), None

    def term(self) -> CostTerm | None:
        """The term of the architecture loss; its table is measured on first use unless a
        checkpoint brought one."""
        config = self.config
        if config.cost is None:
            return None
        if self._term is None:
            space = self.space.replace(channels=self.width)
            self.table = self.table or measure_search_costs(
                space, config.input_size, config.cost, device=self.device
            )
            weight = 1.0 if config.cost_weight is None else config.cost_weight
            net = config.topology  # its edges, as the supernet fixes them (fix_topology)
            beta = None if net is None else ArchWeights.from_architecture(net).beta
            self._term = CostTerm(
                self.table, self.graph, config.paths, weight, self._target(), beta=beta
            )
        return self._term

    @property
    def width(self) -> int:
        """The base width the cost is measured at."""
        return self.config.cost_channels or self.space.channels

    def _target(self) -> float | None:
        """``cost_target``, or ``cost_target_unet`` times the table's U-Net (logged)."""
        factor, table = self.config.cost_target_unet, self.table
        if factor is None or table is None:
            return self.config.cost_target
        if table.unet is None:  # a checkpoint's table from before the U-Net was measured
            raise RunError("this run's cost table has no U-Net figure; give an absolute target")
        logger.info(
            "cost target: %gx U-Net(%d, %d)'s %.4g %s = %.4g %s", factor, self.width, UNET_DEPTH,
            table.unet, table.unit, factor * table.unet, table.unit,
        )  # fmt: skip
        return factor * table.unet

    def metrics(self, weights: ArchWeights) -> dict[str, float]:
        """The expected cost under ``weights`` (``expected_macs`` or ``expected_latency_ms``)
        and, where the table has a U-Net, as a multiple of it (``expected_vs_unet``)."""
        term = self.term()
        if term is None:
            return {}
        with torch.no_grad():
            expected = term(weights)[1]
        row = {_column(term): expected}
        if term.table.unet:
            row["expected_vs_unet"] = expected / term.table.unet
        return row

    def log(self, row: Mapping[str, Any]) -> None:
        """One log line of an epoch's expected cost."""
        term = self.term()
        if term is None:
            return
        expected, vs_unet = row[_column(term)], row.get("expected_vs_unet")
        logger.info(
            "search epoch %d: expected %s %.4g %s (%.3gx the untrained supernet's%s)",
            row["epoch"], term.table.metric, expected, term.table.unit, expected / term.reference,
            "" if vs_unet is None else f", {vs_unet:.3g}x the U-Net's",
        )  # fmt: skip


def _column(term: CostTerm) -> str:
    """The metrics column of the expected cost: ``expected_macs`` or ``expected_latency_ms``."""
    return "expected_macs" if term.table.metric == "macs" else "expected_latency_ms"
