"""What a decoded network costs, before anything is built: :class:`Cost`, :class:`Budget`,
the :class:`CostModel` protocol, :class:`TableCostModel` and :func:`network_cost`
(re-exported by :mod:`msnas_graph.budget`, which decodes under a budget).

The cost is additive over the network's parts:

* every kept edge costs its cell (a function of the edge kind, the destination scale, hence the
  channels and resolution, and the decoded cell genotype of that kind) plus its resampling
  (``skip`` costs nothing);
* every node where ``n >= 2`` kept edges meet costs a fusion (``concat`` then ``1x1 conv + BN +
  ReLU``, or ``sum``) that depends on the scale and ``n``;
* every output node the head reads costs its ``1x1`` head convolution;
* the stem and the head's bias are a constant ``base_cost``.

A :class:`CostModel` answers these four questions; :func:`network_cost` adds them up over a set
of edges. The core never measures anything: :class:`TableCostModel` holds numbers, and the
torch backend's ``edge_cost_model`` fills one by counting each distinct cell once (its total
equals the whole-network count of ``msnas-graph cost``).

>>> Cost(1, 2) + Cost(3, 4)
Cost(params=4, macs=6, latency_ns=0)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import DecodeError
from .graph import Edge, NodeId
from .kinds import EDGE_KINDS
from .spec import SearchSpace

__all__ = [
    "COST_METRICS",
    "Budget",
    "Cost",
    "CostModel",
    "TableCostModel",
    "format_count",
    "network_cost",
    "parse_count",
]

#: What a network's cost is measured in when a search or a decode weighs it: counted
#: multiply-accumulates, or measured batch-1 latency.
COST_METRICS: tuple[str, ...] = ("macs", "latency")

_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_COUNT_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?\s*([kmgt]?)\s*$", re.IGNORECASE)


def parse_count(text: str) -> int:
    """A positive count written with an optional decimal suffix ``k``, ``M``, ``G``, ``T``
    (case-insensitive, powers of 1000) or an exponent.

    >>> parse_count("0.5G"), parse_count("500M"), parse_count("2e9"), parse_count("2m")
    (500000000, 500000000, 2000000000, 2000000)
    >>> parse_count("lots")
    Traceback (most recent call last):
    ...
    msnas_graph.errors.DecodeError: 'lots' is not a count (write e.g. 500M, 0.5G, 2e9 or 2000000)
    """
    m = _COUNT_RE.match(text)
    if not m:
        raise DecodeError(f"'{text}' is not a count (write e.g. 500M, 0.5G, 2e9 or 2000000)")
    value = float(f"{m.group(1)}e{m.group(2) or 0}") * _SUFFIX[m.group(3).lower()]
    if not math.isfinite(value) or value < 1:
        raise DecodeError(f"'{text}' is not a positive count of at least 1")
    return round(value)


def format_count(n: float) -> str:
    """``n`` with a decimal suffix and 4 significant digits.

    >>> format_count(21_330_000_000), format_count(1234), format_count(12)
    ('21.33G', '1.234k', '12')
    """
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.4g}{suffix}"
    return f"{n:.4g}"


@dataclass(frozen=True, order=True)
class Cost:
    """Parameters, multiply-accumulates and (where measured) latency of a network or a part of
    one. ``latency_ns`` is an integer number of nanoseconds, so sums are exact; ``0`` means not
    measured (a latency model fills it in, ``msnas-graph decode --max-latency-ms``).

    >>> str(Cost(2_000_000, 500_000_000, 1_250_000))
    '500M MACs, 2M params, 1.25 ms'
    >>> Cost(1, 2).to_dict()
    {'params': 1, 'macs': 2}
    """

    params: int = 0
    macs: int = 0
    latency_ns: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.params + other.params, self.macs + other.macs, self.latency_ns + other.latency_ns
        )

    @property
    def latency_ms(self) -> float:
        """The latency in milliseconds (``0.0``: not measured)."""
        return self.latency_ns / 1e6

    def __str__(self) -> str:
        text = f"{format_count(self.macs)} MACs, {format_count(self.params)} params"
        return text + (f", {self.latency_ms:.4g} ms" if self.latency_ns else "")

    def to_dict(self) -> dict[str, Any]:
        """``{"params": .., "macs": ..}``, with ``"latency_ms"`` where measured."""
        out: dict[str, Any] = {"params": self.params, "macs": self.macs}
        if self.latency_ns:
            out["latency_ms"] = self.latency_ms
        return out


@dataclass(frozen=True)
class Budget:
    """Upper bounds on a network's cost (``None``: unbounded). A latency bound needs a cost
    model that measured latency.

    >>> Budget(max_macs=500_000_000).allows(Cost(params=10**9, macs=400_000_000))
    True
    >>> str(Budget(max_macs=5 * 10**8, max_params=2 * 10**6))
    'max 500M MACs, max 2M params'
    >>> Budget(max_latency_ms=1.5).allows(Cost(latency_ns=2_000_000))
    False
    """

    max_macs: int | None = None
    max_params: int | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_macs", "max_params", "max_latency_ms"):
            v = getattr(self, name)
            if v is not None and (v < 0 or (isinstance(v, float) and not math.isfinite(v))):
                raise DecodeError(f"budget {name} must be a non-negative number, got {v}")

    @property
    def max_latency_ns(self) -> int | None:
        """The latency bound in whole nanoseconds (``None``: unbounded)."""
        return None if self.max_latency_ms is None else int(self.max_latency_ms * 1e6)

    def allows(self, cost: Cost) -> bool:
        """Whether ``cost`` fits."""
        lat = self.max_latency_ns
        return (
            (self.max_macs is None or cost.macs <= self.max_macs)
            and (self.max_params is None or cost.params <= self.max_params)
            and (lat is None or cost.latency_ns <= lat)
        )

    def __str__(self) -> str:
        parts = []
        if self.max_macs is not None:
            parts.append(f"max {format_count(self.max_macs)} MACs")
        if self.max_params is not None:
            parts.append(f"max {format_count(self.max_params)} params")
        if self.max_latency_ms is not None:
            parts.append(f"max {self.max_latency_ms:.4g} ms")
        return ", ".join(parts) or "unbounded"

    def to_dict(self) -> dict[str, Any]:
        """``{"max_macs": .., "max_params": ..}``, with ``"max_latency_ms"`` where bounded."""
        out: dict[str, Any] = {"max_macs": self.max_macs, "max_params": self.max_params}
        if self.max_latency_ms is not None:
            out["max_latency_ms"] = self.max_latency_ms
        return out


class CostModel(Protocol):
    """What a network's parts cost (see the module doc); all costs must be non-negative."""

    @property
    def base_cost(self) -> Cost:
        """Stem and head bias: paid once by every network."""
        ...

    def edge_cost(self, edge: Edge) -> Cost:
        """The cell of ``edge`` with its resampling (zero for ``skip``)."""
        ...

    def fusion_cost(self, node: NodeId, n_inputs: int) -> Cost:
        """Merging ``n_inputs >= 2`` kept edges at ``node``."""
        ...

    def output_cost(self, node: NodeId) -> Cost:
        """The head's part reading output node ``node``."""
        ...


@dataclass(frozen=True)
class TableCostModel:
    """A :class:`CostModel` read from tables keyed by scale.

    ``edges[(kind, dst_scale)]``, ``fusions[(scale, n_inputs)]`` (missing: zero, as with ``sum``
    fusion), ``outputs[scale]``. A missing edge or output entry raises :class:`DecodeError`.
    """

    base: Cost
    edges: Mapping[tuple[str, int], Cost]
    fusions: Mapping[tuple[int, int], Cost] = field(default_factory=dict)
    outputs: Mapping[int, Cost] = field(default_factory=dict)

    @property
    def base_cost(self) -> Cost:
        return self.base

    def edge_cost(self, edge: Edge) -> Cost:
        try:
            return self.edges[(edge.kind, edge.dst.scale)]
        except KeyError:
            raise DecodeError(
                f"the cost model has no cost for {edge.kind} edges into scale {edge.dst.scale}; "
                f"build it from all the cell types of the space (decode_cells)"
            ) from None

    def fusion_cost(self, node: NodeId, n_inputs: int) -> Cost:
        return self.fusions.get((node.scale, n_inputs), Cost())

    def output_cost(self, node: NodeId) -> Cost:
        try:
            return self.outputs[node.scale]
        except KeyError:
            raise DecodeError(
                f"the cost model has no head cost for output scale {node.scale}"
            ) from None

    @classmethod
    def simple(cls, space: SearchSpace, input_size: int | None = None) -> TableCostModel:
        """A rough analytic model (no backend needed): a cell costs ``9 * c**2`` parameters
        per block and that many MACs per output pixel, a fusion of ``n`` edges ``n * c**2``,
        the head ``c * num_classes``. For tests, examples and planning; the torch backend's
        ``edge_cost_model`` measures the real network."""
        size = space.input_size if input_size is None else input_size
        edges: dict[tuple[str, int], Cost] = {}
        fusions: dict[tuple[int, int], Cost] = {}
        outputs: dict[int, Cost] = {}
        for s in range(space.scales):
            c, pixels = space.scale_channels(s), (size // 2**s) ** space.spatial_dims
            for name, kind in EDGE_KINDS.items():  # preprocess, projection, resampling
                p = 9 * c * c * space.blocks + (2 if kind.scale_step == 0 else 3) * c * c
                edges[(name, s)] = Cost(p, p * pixels) if kind.carries_cell else Cost()
            for n in range(2, 5):
                fusions[(s, n)] = Cost(n * c * c, n * c * c * pixels)
            outputs[s] = Cost(c * space.num_classes, c * space.num_classes * pixels)
        c0 = space.scale_channels(0)
        stem = 9 * space.in_channels * c0
        base = Cost(stem + space.num_classes, stem * size**space.spatial_dims)
        return cls(base, edges, fusions, outputs)


def network_cost(edges: Iterable[Edge], cost_model: CostModel) -> Cost:
    """Total cost of the network made of ``edges`` (a decoded architecture's, or a union of
    paths): base, every edge, a fusion wherever several edges meet, and a head part for every
    output node (the nodes no kept edge leaves).

    >>> from msnas_graph.spec import SearchSpace
    >>> from msnas_graph.state import SearchState
    >>> from msnas_graph.decode import decode
    >>> arch = decode(SearchState.random(SearchSpace.preset("tiny"), seed=0), paths=2)
    >>> network_cost(arch.edges, TableCostModel.simple(arch.space)).macs > 0
    True
    """
    edges = set(edges)
    total = cost_model.base_cost
    fan_in: dict[NodeId, int] = {}
    for e in edges:
        total = total + cost_model.edge_cost(e)
        fan_in[e.dst] = fan_in.get(e.dst, 0) + 1
    sources = {e.src for e in edges}
    for node, n in sorted(fan_in.items()):
        if n > 1:
            total = total + cost_model.fusion_cost(node, n)
        if node not in sources:
            total = total + cost_model.output_cost(node)
    return total
