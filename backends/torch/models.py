"""Models by name and by source: the registry, ``model.json`` descriptions, source resolution.

A *model description* (a training run's ``model.json``) is a JSON mapping with ``format``
``"msnas-graph/model"`` and a ``kind`` naming an entry of :data:`MODELS`; :func:`create_model`
builds the module it describes (weights not loaded). Registered:

- ``msnas`` (``kind: "architecture"``): the final network of a decoded architecture
  (``architecture``, ``fusion``);
- ``unet`` (``kind: "unet"``): the U-Net baseline (``unet: {base_channels, depth}``).

A *model source* is what the commands accept wherever a model is wanted (train, cost, export,
inference): ``"unet"``; an architecture JSON file; a search run folder (its
``architecture.json``); a training run folder (``model.json`` with ``best.pt``, else
``last.pt``); or a ``.pt`` file of a training run. :func:`resolve_source` is the one place that
tells them apart; its :class:`ModelSource` knows the input shape of the model (2D or 3D).

>>> import tempfile, os
>>> from msnas_graph.decode import decode
>>> from msnas_graph.spec import SearchSpace
>>> from msnas_graph.state import SearchState
>>> space = SearchSpace.preset("tiny", spatial_dims=3, input_size=16)
>>> path = decode(SearchState.random(space, seed=0), paths=1).save(
...     os.path.join(tempfile.mkdtemp(), "arch.json"))
>>> source = resolve_source(path)
>>> source.kind, source.input_shape(16)
('architecture', (1, 1, 16, 16, 16))
>>> sorted(MODELS)
['msnas', 'unet']
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from msnas_graph._util import input_kind, note_input, read_text, regular_input, unknown_name
from msnas_graph.architecture import FORMAT as ARCH_FORMAT
from msnas_graph.architecture import Architecture
from msnas_graph.backends.torch.nn.network import build_network
from msnas_graph.backends.torch.nn.supernet import Supernet
from msnas_graph.backends.torch.nn.transfer import transfer_weights
from msnas_graph.backends.torch.nn.unet import UNet
from msnas_graph.backends.torch.training.run_dir import load_checkpoint
from msnas_graph.documents import parse_json
from msnas_graph.errors import DataError, MsnasError, RunError
from msnas_graph.spec import SCHEMA_VERSION
from msnas_graph.state import SearchState

__all__ = [
    "MODELS",
    "MODEL_FORMAT",
    "ModelEntry",
    "ModelSource",
    "check_finite_weights",
    "create_model",
    "init_from_search",
    "locate_run",
    "model_spec",
    "note_source",
    "register_model",
    "resolve_source",
]

logger = logging.getLogger(__name__)

MODEL_FORMAT = "msnas-graph/model"


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its registry ``name``, the ``kind`` its descriptions carry, a
    builder from a description, and the number of spatial dimensions it takes."""

    name: str
    kind: str
    build: Callable[[Mapping[str, Any]], nn.Module]
    spatial_dims: Callable[[Mapping[str, Any]], int]


def _build_msnas(spec: Mapping[str, Any]) -> nn.Module:
    arch = Architecture.from_dict(spec["architecture"], "model.json: architecture")
    return build_network(arch, fusion=spec.get("fusion"))


def _build_unet(spec: Mapping[str, Any]) -> nn.Module:
    unet = spec["unet"]
    return UNet(
        spec["in_channels"],
        spec["num_classes"],
        base_channels=unet["base_channels"],
        depth=unet["depth"],
        spatial_dims=int(unet.get("spatial_dims", 2)),
    )


#: The model registry, by name.
MODELS: dict[str, ModelEntry] = {
    "msnas": ModelEntry(
        "msnas",
        "architecture",
        _build_msnas,
        lambda spec: int(spec["architecture"]["space"].get("spatial_dims", 2)),
    ),
    "unet": ModelEntry(
        "unet", "unet", _build_unet, lambda spec: int(spec["unet"].get("spatial_dims", 2))
    ),
}


def register_model(entry: ModelEntry) -> None:
    """Add (or replace) a model in :data:`MODELS`."""
    MODELS[entry.name] = entry


def _entry(spec: Mapping[str, Any]) -> ModelEntry:
    if not isinstance(spec, Mapping):
        raise RunError(f"not a model description (a {type(spec).__name__}, expected a mapping)")
    if spec.get("format") != MODEL_FORMAT:
        raise RunError(
            f"not a model description (format {spec.get('format')!r}, expected '{MODEL_FORMAT}')"
        )
    kinds = {e.kind: e for e in MODELS.values()}
    if spec["kind"] not in kinds:
        raise RunError(unknown_name("model kind", str(spec["kind"]), sorted(kinds)))
    return kinds[spec["kind"]]


def create_model(spec: Mapping[str, Any]) -> nn.Module:
    """Build the model a description (``model.json``) describes; weights not loaded."""
    return _entry(spec).build(spec)


# ------------------------------------------------------------------------------ sources


@dataclass
class ModelSource:
    """A resolved model source: its description, and the weights of a trained run."""

    spec: dict[str, Any]
    origin: str  #: ``unet``, ``architecture``, ``search run`` or ``training run``
    weights: Path | None = None
    run_dir: Path | None = None

    @property
    def kind(self) -> str:
        return str(self.spec["kind"])

    @property
    def spatial_dims(self) -> int:
        return _entry(self.spec).spatial_dims(self.spec)

    @property
    def architecture(self) -> Architecture | None:
        """The architecture of an MS-NAS model (``None`` for the U-Net)."""
        if self.kind != "architecture":
            return None
        return Architecture.from_dict(self.spec["architecture"], "model: architecture")

    def input_shape(self, input_size: int, batch: int = 1) -> tuple[int, ...]:
        """``(batch, in_channels, *spatial)`` with every spatial side ``input_size``."""
        spatial = (input_size,) * self.spatial_dims
        return (batch, int(self.spec.get("in_channels", 1)), *spatial)

    def check_size(self, input_size: int) -> None:
        """:class:`RunError` unless an architecture's deepest scale divides ``input_size``."""
        arch = self.architecture
        if arch is not None:
            factor = 2 ** max(n.scale for n in arch.nodes)
            if input_size % factor:
                raise RunError(
                    f"input size {input_size} is not divisible by {factor} (the architecture's "
                    f"deepest scale); use a multiple of {factor}"
                )

    def info(self) -> dict[str, Any]:
        """A short description for reports (kind, and what identifies the model)."""
        if self.weights is not None:
            keep = ("kind", "in_channels", "num_classes")
            return {"kind": self.kind, "weights": str(self.weights)} | {
                k: self.spec[k] for k in keep if k in self.spec
            }
        if self.kind == "unet":
            unet = self.spec["unet"]
            return {
                "kind": "unet",
                "base_channels": unet["base_channels"],
                "depth": unet["depth"],
                "in_channels": self.spec["in_channels"],
            }
        arch = self.architecture
        assert arch is not None
        info = {"kind": self.kind, "content_hash": arch.content_hash}
        return info | {"in_channels": self.spec["in_channels"]}

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        """The model on ``device``; a trained run's weights loaded and in eval mode. Its memory
        is not checked here: the callers check it, with their input's activations
        (:func:`~msnas_graph.backends.torch.limits.check_model`)."""
        where = self.where
        try:
            model = create_model(self.spec)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, MsnasError):
                raise
            raise RunError(f"{where}: malformed model description ({exc!r})") from None
        except RunError as exc:
            raise RunError(f"{where}: {exc}") from None
        if self.weights is not None:
            _load_weights(model, self.weights, where)
            model.eval()
        return model.to(device)

    @property
    def where(self) -> str:
        """Where the description comes from, for messages."""
        return str(self.run_dir / "model.json") if self.run_dir is not None else "model"


def note_source(source: ModelSource) -> None:
    """Record a resolved model source's files as inputs of the running command
    (:func:`~msnas_graph._util.safe_output` then refuses to write over them)."""
    for f in (
        source.weights,
        source.run_dir / "model.json" if source.run_dir is not None else None,
        source.run_dir / "config.json" if source.run_dir is not None else None,
    ):
        if f is not None:
            note_input(f)


def check_finite_weights(model: nn.Module, weights: Any) -> None:
    """One-line :class:`RunError` if any parameter or buffer of ``model`` is NaN or infinite
    (a run that diverged); its results would be meaningless."""
    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise RunError(
                f"{weights}: weight {name} holds NaN or infinite values (the run diverged?); "
                f"use another checkpoint or re-train with a lower learning rate"
            )


def _load_weights(model: nn.Module, weights: Path, where: Any) -> None:
    state = load_checkpoint(weights)
    if "model" in state and isinstance(state["model"], dict):  # a full checkpoint.pt
        state = state["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise RunError(
            f"{weights}: the weights do not fit the model of {where} ({str(exc).splitlines()[0]})"
        ) from None


def locate_run(run_or_ckpt: str | Path) -> tuple[Path, Path]:
    """(run folder, weights file) of a training run folder or one of its ``.pt`` files."""
    path = Path(run_or_ckpt)
    if input_kind(path) == "folder":
        run_dir = path
        weights = path / "best.pt"
        if not os.path.lexists(weights):  # a best.pt that is not a file is refused below
            weights = path / "last.pt"
    else:
        regular_input(path, RunError, missing=f"{path}: no such run folder or checkpoint")
        run_dir, weights = path.parent, path
    if os.path.lexists(run_dir / "model.json"):  # a FIFO there is named, not taken as absent
        regular_input(run_dir / "model.json", RunError)
    if not (run_dir / "model.json").is_file():
        hint = (
            "; this is a search run: train its architecture first (train --model RUN)"
            if (run_dir / "state.json").is_file() or (run_dir / "states").is_dir()
            else ""
        )
        raise RunError(f"{run_dir}: no model.json, so this is not a training run folder{hint}")
    missing = f"{run_dir}: no best.pt or last.pt; the training has not finished an epoch"
    regular_input(weights, RunError, missing)
    return run_dir, weights


def _trained(path: Path) -> ModelSource:
    run_dir, weights = locate_run(path)
    spec = parse_json(
        read_text(run_dir / "model.json", RunError), str(run_dir / "model.json"), RunError
    )
    return ModelSource(spec, "training run", weights, run_dir)


def _architecture_spec(arch: Architecture, fusion: str | None = None) -> dict[str, Any]:
    space = arch.space
    return {
        "format": MODEL_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "kind": "architecture",
        "architecture": arch.to_dict(),
        "fusion": fusion or space.fusion,
        "in_channels": space.in_channels,
        "num_classes": space.num_classes,
        "input_size": space.input_size,
    }


def _unet_spec(in_channels: int, num_classes: int, base_channels: int, depth: int) -> dict:
    return {
        "format": MODEL_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "kind": "unet",
        "unet": {"base_channels": base_channels, "depth": depth},
        "in_channels": in_channels,
        "num_classes": num_classes,
    }


def resolve_source(
    source: str | Path | Architecture | ModelSource,
    *,
    in_channels: int = 1,
    num_classes: int = 2,
    unet_base_channels: int = 56,
    unet_depth: int = 5,
) -> ModelSource:
    """The :class:`ModelSource` a source names (see the module doc); the other arguments
    shape the U-Net of ``"unet"``; a :class:`ModelSource` is returned as is. Raises
    :class:`RunError` naming what was expected."""
    if isinstance(source, ModelSource):
        return source
    if isinstance(source, Architecture):
        return ModelSource(_architecture_spec(source), "architecture")
    if str(source).lower() == "unet":
        spec = _unet_spec(in_channels, num_classes, unet_base_channels, unet_depth)
        return ModelSource(spec, "unet")
    path = Path(source)
    if (path.is_dir() and (path / "model.json").is_file()) or path.suffix == ".pt":
        return _trained(path)
    origin = "architecture"
    if path.is_dir():
        if not (path / "architecture.json").is_file():
            raise RunError(
                f"{path}: neither a training run (model.json) nor a search run "
                f"(architecture.json); give an architecture file, a run folder or 'unet'"
            )
        path, origin = path / "architecture.json", "search run"
    missing = (
        f"{path}: no such architecture file, run folder or checkpoint; give an architecture "
        f"JSON, a search or training run folder, a .pt file of a training run, or 'unet'"
    )
    regular_input(path, RunError, missing)
    try:
        fmt = json.loads(read_text(path, RunError)).get("format")
    except (RunError, ValueError, AttributeError, RecursionError):  # not JSON, binary, too deep
        fmt = None
    if fmt != ARCH_FORMAT:
        raise RunError(
            f"{path}: not an architecture (decode one with `msnas-graph decode STATE -o "
            f"ARCH.json`), a run folder, or 'unet'"
        )
    return ModelSource(_architecture_spec(Architecture.load(path)), origin)


def model_spec(config: Any, ds: Any) -> dict[str, Any]:
    """The ``model.json`` of a training run: ``config.model`` (a
    :class:`~msnas_graph.backends.torch.training.TrainConfig`) resolved and fitted to the data
    ``ds`` (its channels, classes and label names) at the run's input size."""
    if isinstance(config.model, str) and config.model.lower() == "unet":
        spec = _unet_spec(
            ds.in_channels, ds.num_classes, config.unet_base_channels, config.unet_depth
        )
        size = config.input_size or 256
        factor = 2 ** (config.unet_depth - 1)
        if size < factor:
            raise RunError(
                f"train config: input_size={size} is too small for a U-Net of depth "
                f"{config.unet_depth}: use at least {factor} (or a smaller --unet-depth)"
            )
        if size % factor:
            logger.warning(
                "input_size %d is not a multiple of %d: the U-Net will pad/resize internally",
                size, factor,
            )  # fmt: skip
    else:
        arch = resolve_source(config.model).architecture
        if arch is None:
            raise RunError(f"model '{config.model}' is a U-Net run; train it with --model unet")
        if getattr(config, "channels", None) is not None:
            arch = arch.widen(config.channels)
        if getattr(config, "cell_glue", None) is not None:
            arch = arch.with_cell_glue(config.cell_glue)
        space = arch.space
        if space.num_classes != ds.num_classes or space.in_channels != ds.in_channels:
            raise DataError(
                f"the architecture expects {space.in_channels} input channel(s) and "
                f"{space.num_classes} classes, the data '{config.data}' has "
                f"{ds.in_channels} and {ds.num_classes}; search on this data or decode a "
                f"matching architecture"
            )
        size = config.input_size or space.input_size
        factor = 2 ** max(n.scale for n in arch.nodes)
        if size % factor:
            raise RunError(
                f"train config: input_size={size} must be a multiple of {factor} (the "
                f"architecture's deepest scale)"
            )
        spec = _architecture_spec(arch, config.fusion)
        del spec["input_size"]
    spec.update(input_size=size, label_names=list(ds.label_names), channels_last=False)
    return spec


def init_from_search(network: nn.Module, run_dir: str | Path) -> dict[str, int]:
    """Start ``network`` (the final network of an architecture of a search's space) from that
    search run's supernet weights (``supernet.pt``) where shapes allow: the paper's transfer
    protocol (:func:`~msnas_graph.backends.torch.nn.transfer.transfer_weights`,
    ``strict=False``: with ``partial_k > 1`` the operations' weights do not fit and keep their
    initialisation). Returns the tensor counts ``copied`` and ``skipped`` (also logged).

    Raises :class:`RunError` when the folder holds no finished search (no ``supernet.pt``) or
    the network's space differs from the search's (another base width, or another space).
    """
    run = Path(run_dir)
    weights, state_path = run / "supernet.pt", run / "state.json"
    if not weights.is_file() or not state_path.is_file():
        raise RunError(
            f"init_from {run}: no supernet.pt and state.json, so not a finished search run; "
            f"give the folder of a finished search (or drop --init-from)"
        )
    space = SearchState.load(state_path).space
    arch = getattr(network, "arch", None)
    if not isinstance(arch, Architecture):
        raise RunError(f"init_from {run}: only an MS-NAS network starts from a supernet")
    if arch.space.channels != space.channels:
        raise RunError(
            f"init_from {run}: the search ran at base width {space.channels}, the network is "
            f"{arch.space.channels} wide, so its weights do not fit; train at the search width "
            f"(drop --channels) or drop --init-from"
        )
    if arch.space.cell_glue != "darts":
        raise RunError(
            f"init_from {run}: the supernet's cells have a preprocess and a projection that "
            f"the '{arch.space.cell_glue}' cell glue leaves out; train with --cell-glue darts "
            f"or drop --init-from"
        )
    if arch.space != space:
        raise RunError(
            f"init_from {run}: the architecture's space '{arch.space.name}' differs from the "
            f"search's; train an architecture decoded from that search"
        )
    supernet = Supernet(space)
    try:
        supernet.load_state_dict(load_checkpoint(weights))
    except RuntimeError as exc:
        raise RunError(
            f"{weights}: does not fit the search's space ({str(exc).splitlines()[0]})"
        ) from None
    stats: dict[str, int] = {}
    transfer_weights(supernet, network, strict=False, stats=stats)
    logger.info(
        "init_from %s: copied %d tensors from the supernet, %d left at their initialisation",
        run, stats["copied"], stats["skipped"],
    )  # fmt: skip
    return stats
