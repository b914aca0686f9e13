"""Architecture parameters of a search, as plain arrays tied to their space.

A :class:`SearchState` holds, as logits (before softmax), ``alpha_logits[cell_type][b]``,
``p_logits[cell_type][b]`` and ``beta_logits[node]``, with the shapes and meaning that
:class:`~msnas_graph.layout.ParameterLayout` gives (block ``b`` 0-based reads sources ``0..b``;
one ``beta`` logit per incoming edge kind of each searchable node, in canonical kind order).

>>> from msnas_graph.spec import SearchSpace
>>> state = SearchState.random(SearchSpace.preset("tiny"), seed=0)
>>> SearchState.from_json(state.to_json()) == state
True
>>> round(float(state.edge_weights().sum()), 6)  # one softmax per searchable node
5.0
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ._util import key_text
from ._util import meta_of as _meta
from .documents import Document, check_finite
from .errors import SpecError, StateError
from .graph import NodeId, Supergraph
from .layout import ParameterLayout, source_name
from .spec import CellType, SearchSpace

__all__ = ["SearchState", "softmax"]

FORMAT = "msnas-graph/search-state"


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64.

    >>> softmax(np.zeros(4)).tolist()
    [0.25, 0.25, 0.25, 0.25]
    """
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


class SearchState(Document):
    """The architecture parameters (``alpha``, ``p``, ``beta``) of one point of a search."""

    FORMAT: ClassVar[str] = FORMAT
    WHAT: ClassVar[str] = "a search state"
    FILE_NOUN: ClassVar[str] = "state"
    CREATE_HINT: ClassVar[str] = "create one with `msnas-graph sample` or `msnas-graph search`"
    ERROR: ClassVar[type[StateError]] = StateError

    def __init__(
        self,
        space: SearchSpace,
        alpha_logits: dict[CellType, list[np.ndarray]],
        p_logits: dict[CellType, list[np.ndarray]],
        beta_logits: dict[NodeId, np.ndarray],
        meta: dict[str, Any] | None = None,
        graph: Supergraph | None = None,
    ) -> None:
        self.space = space
        self.graph = graph if graph is not None and graph.space == space else Supergraph(space)
        self.layout = ParameterLayout(space, self.graph)
        self.alpha_logits = {
            c: [np.array(a, dtype=np.float64) for a in blocks] for c, blocks in alpha_logits.items()
        }
        self.p_logits = {
            c: [np.array(a, dtype=np.float64) for a in blocks] for c, blocks in p_logits.items()
        }
        self.beta_logits = {n: np.array(v, dtype=np.float64) for n, v in beta_logits.items()}
        self.meta: dict[str, Any] = dict(meta or {})
        self.validate()

    # ------------------------------------------------------------------------ factories

    @classmethod
    def zeros(cls, space: SearchSpace, graph: Supergraph | None = None) -> SearchState:
        """All logits zero: uniform weights everywhere (a search's starting point)."""
        return cls._filled(space, lambda shape: np.zeros(shape), graph)

    @classmethod
    def random(
        cls, space: SearchSpace, seed: int = 0, scale: float = 1.0, graph: Supergraph | None = None
    ) -> SearchState:
        """Logits drawn from ``N(0, scale**2)`` with ``seed``: a random-architecture baseline.

        >>> from msnas_graph.spec import SearchSpace
        >>> s = SearchSpace.preset("tiny")
        >>> SearchState.random(s, seed=1) == SearchState.random(s, seed=1)
        True
        """
        if type(seed) is not int or seed < 0:
            raise StateError(f"seed {seed!r}: give a whole number >= 0")
        if not (isinstance(scale, int | float) and math.isfinite(scale) and scale >= 0):
            raise StateError(f"scale {scale!r}: give a finite number >= 0 (the logits' std)")
        rng = np.random.default_rng(seed)
        state = cls._filled(space, lambda shape: rng.normal(0.0, scale, size=shape), graph)
        state.meta["random_seed"] = seed
        return state

    @classmethod
    def _filled(cls, space: SearchSpace, fill: Any, graph: Supergraph | None) -> SearchState:
        graph = graph if graph is not None else Supergraph(space)
        alpha, p, beta = ParameterLayout(space, graph).filled(fill)
        return cls(space, alpha, p, beta, graph=graph)

    def with_cell_glue(self, glue: str) -> SearchState:
        """The same weights over a space whose final network wraps its cells in ``glue``
        (:attr:`~msnas_graph.spec.SearchSpace.cell_glue`): what it decodes to is built with
        that glue, and a budgeted decode counts that glue's cost.

        >>> from msnas_graph.spec import SearchSpace
        >>> state = SearchState.random(SearchSpace.preset("tiny"), seed=0)
        >>> lean = state.with_cell_glue("lean")
        >>> lean.space.cell_glue, lean.edge_weights().tolist() == state.edge_weights().tolist()
        ('lean', True)
        """
        if glue == self.space.cell_glue:
            return self
        return SearchState(
            self.space.replace(cell_glue=glue), self.alpha_logits, self.p_logits,
            self.beta_logits, meta=self.meta,
        )  # fmt: skip

    # ------------------------------------------------------------------------- weights

    def edge_weights(self) -> np.ndarray:
        """``softmax(beta)`` of every supergraph edge, aligned with ``graph.edges``."""
        out = np.zeros(len(self.graph.edges), dtype=np.float64)
        for node in self.graph.searchable_nodes:
            w = softmax(self.beta_logits[node])
            for e, wi in zip(self.graph.in_edges(node), w, strict=True):
                out[self.graph.edge_index(e)] = wi
        return out

    def op_weights(self, cell_type: CellType, block: int) -> np.ndarray:
        """``softmax(p)_j * softmax(alpha_j)_o`` for 0-based ``block``: shape ``(b+1, n_ops)``."""
        p = softmax(self.p_logits[cell_type][block])
        a = softmax(self.alpha_logits[cell_type][block], axis=-1)
        return p[:, None] * a

    # ------------------------------------------------------------------------ checking

    def validate(self) -> None:
        """Check every array's presence and shape against the space; raise :class:`StateError`."""
        space, layout = self.space, self.layout
        n_ops = layout.n_ops
        for name, params in (("alpha_logits", self.alpha_logits), ("p_logits", self.p_logits)):
            if set(params) != set(space.cell_types):
                raise StateError(
                    f"{name}: has cell types {sorted(params)}, the space has "
                    f"{list(space.cell_types)}; the state does not belong to this space"
                )
            for c, blocks in params.items():
                if len(blocks) != layout.blocks:
                    raise StateError(
                        f"{name}.{c}: {len(blocks)} blocks, the space has {layout.blocks}"
                    )
                for b, arr in enumerate(blocks):
                    want = layout.alpha_shape(b) if name == "alpha_logits" else layout.p_shape(b)
                    if arr.shape != want:
                        raise StateError(
                            f"{name}.{c}[{b}]: shape {arr.shape}, expected {want} "
                            f"({want[0]} inputs x {n_ops} ops); the state does not match the space"
                        )
                    if not np.all(np.isfinite(arr)):
                        raise StateError(f"{name}.{c}[{b}]: contains NaN or infinity")
        want_nodes = set(layout.beta_nodes)
        if set(self.beta_logits) != want_nodes:
            extra = sorted(set(self.beta_logits) - want_nodes)
            missing = sorted(want_nodes - set(self.beta_logits))
            raise StateError(
                "beta_logits: nodes do not match the space"
                + (f"; not in the space: {', '.join(map(str, extra[:5]))}" if extra else "")
                + (f"; missing: {', '.join(map(str, missing[:5]))}" if missing else "")
            )
        for n, v in self.beta_logits.items():
            if v.shape != layout.beta_shape(n):
                raise StateError(
                    f"beta_logits.{n}: shape {v.shape}, expected {layout.beta_shape(n)}"
                )
            if not np.all(np.isfinite(v)):
                raise StateError(f"beta_logits.{n}: contains NaN or infinity")

    # ----------------------------------------------------------------------------- I/O

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (canonical order, versioned)."""
        return {
            **self.header(),
            "space": self.space.to_dict(),
            "alpha_logits": {
                c: [a.tolist() for a in self.alpha_logits[c]] for c in self.space.cell_types
            },
            "p_logits": {c: [a.tolist() for a in self.p_logits[c]] for c in self.space.cell_types},
            "beta_logits": {
                str(n): dict(
                    zip(self.layout.beta_kinds(n), self.beta_logits[n].tolist(), strict=True)
                )
                for n in self.layout.beta_nodes
            },
            "meta": self.meta,
        }

    def _hashed(self) -> dict[str, Any]:
        """The content hash covers the space and the logits, not ``meta``."""
        d = self.to_dict()
        d.pop("meta")
        return d

    @classmethod
    def from_dict(cls, data: Any, source: str = "state") -> SearchState:
        """Build from :meth:`to_dict` output; one-line :class:`StateError` on any problem."""
        data = cls.check_header(data, source)
        missing = [k for k in ("space", "alpha_logits", "p_logits", "beta_logits") if k not in data]
        if missing:
            raise StateError(f"{source}: missing field(s) {', '.join(missing)}")
        try:
            space = SearchSpace.from_dict(data["space"], f"{source}: space")
        except SpecError as exc:
            raise StateError(str(exc)) from None
        graph = Supergraph(space)
        layout = ParameterLayout(space, graph)
        for name in ("alpha_logits", "p_logits", "beta_logits"):
            _check_numbers(data[name], f"{source}: {name}", depth=4)
        try:
            alpha = {c: [np.asarray(a, float) for a in v] for c, v in data["alpha_logits"].items()}
            p = {c: [np.asarray(a, float) for a in v] for c, v in data["p_logits"].items()}
            beta: dict[NodeId, np.ndarray] = {}
            for key, kinds in data["beta_logits"].items():
                node = NodeId.parse(key)
                if node not in layout.beta_nodes:
                    raise StateError(
                        f"{source}: beta_logits.{key_text(key)}: node not in the space"
                    )
                want = layout.beta_kinds(node)
                if set(kinds) != set(want):
                    raise StateError(
                        f"{source}: beta_logits.{key_text(key)}: kinds {sorted(kinds)}, "
                        f"expected {list(want)}"
                    )
                beta[node] = np.array([kinds[k] for k in want], dtype=np.float64)
        except (TypeError, ValueError, AttributeError, OverflowError, RecursionError) as exc:
            if isinstance(exc, StateError):
                raise
            raise StateError(f"{source}: malformed arrays ({str(exc)[:120]})") from None
        try:
            return cls(space, alpha, p, beta, meta=_meta(data, source, StateError), graph=graph)
        except StateError as exc:
            raise StateError(f"{source}: {exc}") from None

    # ------------------------------------------------------------------------- dunder

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SearchState):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        w = self.edge_weights()
        strongest = sorted(
            zip(self.graph.edges, w, strict=True), key=lambda t: (-t[1], t[0].sort_key)
        )[:5]
        lines = [f"SearchState of '{self.space.name}' ({self.content_hash})"]
        for c in self.space.cell_types:
            for b in range(self.space.blocks):
                ow = self.op_weights(c, b)
                j, o = np.unravel_index(int(np.argmax(ow)), ow.shape)
                lines.append(
                    f"  {c} block {b + 1}: strongest {self.space.ops[o]} from "
                    f"{source_name(int(j))} ({ow[j, o]:.3f})"
                )
        lines.append(
            "  strongest network edges: " + ", ".join(f"{e} {x:.3f}" for e, x in strongest)
        )
        return "\n".join(lines)


def _check_numbers(obj: Any, where: str, depth: int) -> None:
    """Every leaf of the mappings and lists ``obj`` (at most ``depth`` levels deep) is a finite
    number: NaN, infinities, bools, strings and too-deep nesting raise one line."""
    if isinstance(obj, dict | list):
        if depth == 0:
            raise StateError(f"{where}: nested deeper than a state's logits")
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for key, value in items:
            sub = f"{where}.{key_text(key)}" if isinstance(obj, dict) else f"{where}[{key}]"
            _check_numbers(value, sub, depth - 1)
    else:
        check_finite(obj, where, StateError)
