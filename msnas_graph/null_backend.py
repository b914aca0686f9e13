"""The ``null`` backend (``get_backend("null")``, :mod:`msnas_graph.backend`): it builds and
runs nothing and records each call, to test the dispatch without torch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .architecture import Architecture
    from .backend import (
        Options,
        PathLike,
        QuickstartOutcome,
        RunFlags,
        SearchOutcome,
        TrainOutcome,
    )
    from .budget import Cost, CostModel
    from .compare import Comparison
    from .genotype import CellGenotype
    from .spec import SearchSpace
    from .state import SearchState

__all__ = ["NullBackend"]


@dataclass
class _NullSearch:
    run_dir: Path
    state: SearchState
    architecture: Architecture | None = None


@dataclass
class _NullTrain:
    run_dir: Path
    best_dice: float | None = None
    best_epoch: int = 0


@dataclass
class _NullQuickstart:
    architecture: Architecture
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


def _space_of(options: Mapping[str, Any]) -> SearchSpace:
    from .spec import SearchSpace, load_space

    space = options.get("space", "quick")
    return space if isinstance(space, SearchSpace) else load_space(space)


class NullBackend:
    """A backend that builds and runs nothing: it records each call in :attr:`calls` as
    ``(method, target, options)`` and returns empty results, to test the dispatch."""

    name = "null"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []

    def _record(self, method: str, target: Any, options: Mapping[str, Any] | None) -> None:
        self.calls.append((method, target, dict(options or {})))

    def build_supernet(self, space: SearchSpace) -> Any:
        return ("supernet", space.name)

    def build_network(self, arch: Architecture) -> Any:
        return ("network", arch.content_hash)

    def cost(self, model: Any, input_size: int, options: Options | None = None) -> dict[str, Any]:
        self._record("cost", model, {"input_size": input_size, **(options or {})})
        shape = [1, 1, input_size, input_size]
        return {"model": {"kind": "null"}, "input_shape": shape, "params": 0, "macs": 0, "flops": 0}

    def edge_cost_model(
        self,
        cells: Mapping[str, CellGenotype],
        space: SearchSpace,
        input_size: int | None = None,
        *,
        latency: bool = False,
        device: str | None = None,
    ) -> CostModel:
        from .budget import TableCostModel

        options = {"input_size": input_size, "latency": latency, "device": device}
        self._record("edge_cost_model", space.name, options)
        return TableCostModel.simple(space)

    def unet_cost(
        self,
        space: SearchSpace,
        input_size: int | None = None,
        *,
        latency: bool = False,
        device: str | None = None,
        runtime: str | None = None,
    ) -> Cost:
        from .budget import Cost

        self._record("unet_cost", space.name, {"input_size": input_size, "latency": latency})
        size = space.input_size if input_size is None else input_size
        params = macs = 0  # as TableCostModel.simple counts: two 3x3 convolutions per level
        for level in range(4):
            c = space.channels * 2**level
            p = 9 * c * c * (4 if level < 3 else 2)  # encoder and decoder; the bottom once
            params, macs = params + p, macs + p * (size // 2**level) ** space.spatial_dims
        return Cost(params, macs, macs if latency else 0)  # 1 ns per MAC

    def built_cost(
        self,
        arch: Architecture,
        input_size: int | None = None,
        *,
        latency: bool = False,
        device: str | None = None,
        runtime: str = "auto",
    ) -> Cost:
        from .budget import Cost, TableCostModel, network_cost

        options = {"input_size": input_size, "latency": latency, "runtime": runtime}
        self._record("built_cost", arch.space.name, options)
        cost = network_cost(arch.edges, TableCostModel.simple(arch.space))
        return Cost(cost.params, cost.macs, cost.macs if latency else 0)  # 1 ns per MAC

    def search(
        self, options: Options, run_dir: PathLike, **flags: Unpack[RunFlags]
    ) -> SearchOutcome:
        from .state import SearchState

        self._record("search", run_dir, options)
        return _NullSearch(Path(run_dir), SearchState.zeros(_space_of(options)))

    def train(self, options: Options, run_dir: PathLike, **flags: Unpack[RunFlags]) -> TrainOutcome:
        self._record("train", run_dir, options)
        return _NullTrain(Path(run_dir))

    def evaluate(self, run_dirs: Sequence[PathLike], options: Options) -> dict[str, Any]:
        self._record("evaluate", list(run_dirs), options)
        return {"num_cases": 0} if len(run_dirs) == 1 else {"num_folds": len(run_dirs)}

    def predict(
        self, run_dir: PathLike, inputs: PathLike, out_dir: PathLike, options: Options
    ) -> list[Path]:
        self._record("predict", run_dir, {"inputs": inputs, "out_dir": out_dir, **options})
        return []

    def compare(self, run_dirs: Sequence[PathLike], options: Options) -> Comparison:
        from .compare import Comparison

        self._record("compare", list(run_dirs), options)
        return Comparison([], dict(options))

    def export(self, source: PathLike, path: PathLike, options: Options) -> dict[str, Any]:
        self._record("export", source, {"path": path, **options})
        return {"path": str(path), "max_abs_diff": None, "opset": 0, "exporter": "null"}

    def quickstart(
        self, out_dir: PathLike, options: Options, **flags: Unpack[RunFlags]
    ) -> QuickstartOutcome:
        from .decode import decode
        from .state import SearchState

        self._record("quickstart", out_dir, options)
        state = SearchState.zeros(_space_of(options))
        return _NullQuickstart(decode(state, int(options.get("paths", 1))))
