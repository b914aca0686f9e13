"""The search-space specification: a small, validated, versioned pydantic model.

A :class:`SearchSpace` says everything needed to build the supergraph (layers x scales trellis),
the cell spaces and, with a backend, the supernet. It round-trips through JSON and YAML, and
rejects typos (``extra="forbid"``) and impossible combinations with one-line messages.

>>> space = SearchSpace.preset("paper")
>>> space.layers, space.scales, space.blocks, space.partial_k
(10, 5, 3, 4)
>>> SearchSpace.from_json(space.to_json()) == space
True
>>> SearchSpace.preset("quick").replace(layers=3).layers
3
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from ._util import atomic_write, key_text, unknown_name
from .documents import SCHEMA_VERSION, Document, shown
from .errors import SpecError
from .kinds import CELL_TYPES, KIND_NAMES, CellType, KindName, cell_types_of
from .kinds import EDGE_KINDS as KIND_TABLE
from .operations import DEFAULT_OPERATIONS, DENSE_OPERATIONS, NONE_OP, check_operation

__all__ = [
    "CELL_GLUES",
    "CELL_TYPES",
    "EDGE_KINDS",
    "PRESETS",
    "SCHEMA_VERSION",
    "CellType",
    "KindName",
    "SearchSpace",
    "format_validation_error",
    "load_space",
    "parse_overrides",
]

#: Canonical order of network edge kind names (what each kind is: :mod:`msnas_graph.kinds`).
EDGE_KINDS: tuple[KindName, ...] = KIND_NAMES
#: How the final network wraps a decoded cell (:attr:`SearchSpace.cell_glue`).
CellGlue = Literal["darts", "lean"]
CELL_GLUES: tuple[str, ...] = get_args(CellGlue)

#: A whole number given as one: ``true``, ``"3"`` and ``3.0`` are refused.
Int = Annotated[int, Strict()]


class SearchSpace(Document, BaseModel):
    """An MS-NAS search space.

    Attributes:
        layers: number of layers ``L`` after the stem (node layers ``0..L``).
        scales: number of scales ``S``; scale ``i`` is downsampled by ``2**i``.
        channels: base width ``C``; a node at scale ``i`` has ``C * 2**i`` channels.
        blocks: blocks per cell ``N``.
        ops: candidate operations, by registered name (``none`` allowed, never decoded).
        inputs_per_block: inputs each block keeps when decoding (paper: 1, DARTS: 2).
        partial_k: partial-channel factor ``k`` (``1`` = full-channel DARTS mixed op).
        edge_kinds: network edge kinds in the space (``contract``, ``keep``, ``expand``, ``skip``).
        output_scales: scales the segmentation head reads at the last layer.
        in_channels: image channels.
        num_classes: segmentation classes, background included.
        spatial_dims: 2 (3 reserved for volumetric spaces).
        input_size: default input side length; must be divisible by ``2**(scales-1)``.
        fusion: how the final network merges edges that meet at a node: ``concat`` (then
            1x1 conv + BN + ReLU) or ``sum``.
        cell_glue: how the final network wraps a decoded cell's blocks. ``darts`` (the paper,
            DARTS): a ``ReLU -> 1x1 conv -> BN`` preprocess after the resampling, and a
            ``1x1 conv -> BN`` projection of the concatenation of every block. ``lean``: a
            dense convolution (``conv_3x3``, ``conv_3x3_dil2``) reading the cell's input reads
            it itself and changes the width, and so does any operation where the widths agree
            (the preprocess is built only for the other readers); the ``expand`` preprocess
            runs before the upsampling (at the coarse scale); and the output
            is the one block no other block reads (the projection stays where several are
            unread). The supernet always searches with the ``darts`` glue. Written to a file
            only when ``lean``, so files without it keep their hashes. Every preset uses
            ``darts``: on HC18 a darts-searched network built ``lean`` (``train --cell-glue
            lean``) ran faster at the same Dice, while a cost-aware search counting the lean
            cells chose shallower ones and lost Dice (``benchmarks/results/frontier_lean.md``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    WHAT: ClassVar[str] = "a search space"
    FILE_NOUN: ClassVar[str] = "space"
    ERROR: ClassVar[type[SpecError]] = SpecError

    schema_version: Int = SCHEMA_VERSION
    name: str = "custom"
    layers: Int = Field(ge=1, le=1000)
    scales: Int = Field(ge=1, le=16)
    channels: Int = Field(ge=1, le=4096)
    blocks: Int = Field(default=3, ge=1, le=16)
    ops: tuple[str, ...] = (*DEFAULT_OPERATIONS, NONE_OP)
    inputs_per_block: Int = Field(default=1, ge=1, le=16)
    partial_k: Int = Field(default=4, ge=1, le=4096)
    edge_kinds: tuple[KindName, ...] = EDGE_KINDS
    output_scales: tuple[Int, ...] = (0,)
    in_channels: Int = Field(default=1, ge=1, le=1024)
    num_classes: Int = Field(default=2, ge=2, le=1024)
    spatial_dims: Literal[2, 3] = 2
    input_size: Int = Field(default=256, ge=1, le=65536)
    fusion: Literal["concat", "sum"] = "concat"
    cell_glue: CellGlue = "darts"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SpecError(format_validation_error(exc, "space")) from None

    @field_validator("schema_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {shown(v)} is not supported (this msnas-graph reads version "
                f"{SCHEMA_VERSION}); re-create the file with this version"
            )
        return v

    @field_validator("ops")
    @classmethod
    def _ops(cls, ops: tuple[str, ...]) -> tuple[str, ...]:
        if not ops:
            raise ValueError("needs at least one operation")
        for i, op in enumerate(ops):
            try:
                check_operation(op, where=f"ops[{i}]")
            except SpecError as exc:
                raise ValueError(str(exc).split(": ", 1)[1]) from None
        if len(set(ops)) != len(ops):
            dup = sorted({o for o in ops if ops.count(o) > 1})
            raise ValueError(f"operation(s) listed twice: {', '.join(dup)}")
        if all(op == NONE_OP for op in ops):
            raise ValueError("needs at least one operation besides 'none'")
        return ops

    @field_validator("edge_kinds")
    @classmethod
    def _kinds(cls, kinds: tuple[KindName, ...]) -> tuple[KindName, ...]:
        if not kinds:
            raise ValueError("needs at least one edge kind")
        if len(set(kinds)) != len(kinds):
            raise ValueError("an edge kind is listed twice")
        if not any(KIND_TABLE[k].carries_cell for k in kinds):
            raise ValueError(
                "needs at least one of contract, keep, expand (skip alone has no cell)"
            )
        return tuple(k for k in EDGE_KINDS if k in kinds)

    @model_validator(mode="after")
    def _consistent(self) -> SearchSpace:
        if not self.output_scales:
            raise ValueError("output_scales: needs at least one output scale")
        for o in self.output_scales:
            if not 0 <= o < self.scales:
                raise ValueError(
                    f"output_scales: scale {o} does not exist (scales are 0..{self.scales - 1})"
                )
            if o > self.layers:
                raise ValueError(
                    f"output_scales: scale {o} cannot be reached in {self.layers} layers "
                    f"(each layer moves at most one scale); add layers or lower the scale"
                )
            if o > 0 and not any(KIND_TABLE[k].scale_step > 0 for k in self.edge_kinds):
                raise ValueError(
                    f"output_scales: scale {o} cannot be reached without 'contract' edges"
                )
        if len(set(self.output_scales)) != len(self.output_scales):
            raise ValueError("output_scales: a scale is listed twice")
        if self.channels % self.partial_k:
            raise ValueError(
                f"partial_k={self.partial_k} does not divide channels={self.channels}; "
                f"choose channels that are a multiple of partial_k"
            )
        factor = 2 ** (self.scales - 1)
        if self.input_size % factor:
            raise ValueError(
                f"input_size={self.input_size} is not divisible by 2**(scales-1)={factor}: "
                f"use an input size that is a multiple of {factor}, or fewer scales"
            )
        if self.inputs_per_block > self.blocks:
            raise ValueError(
                f"inputs_per_block={self.inputs_per_block} exceeds the inputs the last block "
                f"has ({self.blocks}); use at most {self.blocks}"
            )
        return self

    def replace(self, **changes: Any) -> SearchSpace:
        """A copy with ``changes`` applied and validated again (unlike ``model_copy``).

        >>> SearchSpace.preset("paper").replace(channels=48).channels
        48
        """
        return type(self).from_dict({**self.to_dict(), **changes}, "space")

    def widen(self, channels: int) -> SearchSpace:
        """The space of a final network built at base width ``channels``. Any width will
        do: a final network has no partial channels, so where ``partial_k`` (a search-only
        field) does not divide ``channels`` it becomes their greatest common divisor.

        >>> quick = SearchSpace.preset("quick")
        >>> quick.widen(14).partial_k, quick.widen(16).partial_k
        (2, 4)
        """
        return self.replace(channels=channels, partial_k=math.gcd(self.partial_k, channels))

    # ----------------------------------------------------------------------------- derived

    @property
    def decodable_ops(self) -> tuple[str, ...]:
        """The operations decoding may choose (all but ``none``)."""
        return tuple(op for op in self.ops if op != NONE_OP)

    @property
    def cell_types(self) -> tuple[CellType, ...]:
        """Cell types present in this space, in canonical order."""
        used = cell_types_of(self.edge_kinds)
        return tuple(c for c in CELL_TYPES if c in used)

    def scale_channels(self, scale: int) -> int:
        """Channels of a node at ``scale``: ``channels * 2**scale``.

        >>> SearchSpace.preset("paper").scale_channels(2)
        128
        """
        return self.channels * 2**scale

    # --------------------------------------------------------------------------------- I/O

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples as lists); ``cell_glue`` only when not ``darts``, so
        spaces, states and architectures written before it existed keep their content hashes.

        >>> "cell_glue" in SearchSpace.preset("quick").to_dict()
        False
        >>> SearchSpace.preset("quick", cell_glue="lean").to_dict()["cell_glue"]
        'lean'
        """
        data: dict[str, Any] = json.loads(self.model_dump_json())
        if data["cell_glue"] == "darts":
            del data["cell_glue"]
        return data

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text with a schema version (the space's own field, not a header)."""
        return super().to_json(indent)

    def to_yaml(self) -> str:
        """YAML text with a schema version."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> Path:
        """Write as YAML (``.yaml``/``.yml``) or JSON (anything else), atomically."""
        path = Path(path)
        text = self.to_yaml() if path.suffix in (".yaml", ".yml") else self.to_json()
        return atomic_write(path, text)

    @classmethod
    def from_dict(cls, data: Any, source: str = "space") -> SearchSpace:
        """Validate a dict; errors become one-line :class:`SpecError` naming the field."""
        if not isinstance(data, dict):
            raise SpecError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
        if not all(isinstance(k, str) for k in data):
            bad = next(shown(k) for k in data if not isinstance(k, str))
            raise SpecError(f"{source}: field names must be text, got {bad}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SpecError(format_validation_error(exc, source)) from None
        except (RecursionError, ValueError, OverflowError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"{source}: unusable value ({str(exc)[:80]})") from None

    @classmethod
    def from_yaml(cls, text: str, source: str = "space") -> SearchSpace:
        """Parse YAML text."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise SpecError(f"{source}: not valid YAML{where}") from None
        except RecursionError:
            raise SpecError(f"{source}: nested too deeply to be a search space") from None
        except ValueError as exc:  # e.g. an integer of thousands of digits
            raise SpecError(f"{source}: not a usable YAML document ({str(exc)[:80]})") from None
        return cls.from_dict(data, source)

    @classmethod
    def from_text(cls, text: str, path: Path) -> SearchSpace:
        """Parse a spec file's text: YAML for ``.yaml``/``.yml``, JSON otherwise."""
        if path.suffix in (".yaml", ".yml"):
            return cls.from_yaml(text, str(path))
        return cls.from_json(text, str(path))

    @classmethod
    def missing_file(cls, path: Path) -> SpecError:
        """The error for a spec path that is not a file (it lists the presets)."""
        return SpecError(
            f"{path}: no such spec file (give a path to a .yaml/.json spec, or a preset: "
            f"{', '.join(PRESETS)})"
        )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SearchSpace:
        """A named preset (``paper``, ``quick``, ``tiny``), optionally with fields overridden.

        >>> SearchSpace.preset("quick", num_classes=4).num_classes
        4
        """
        if name not in PRESETS:
            raise SpecError(unknown_name("preset", name, PRESETS))
        return cls.from_dict({**PRESETS[name], "name": name, **overrides}, f"preset {name}")


def load_space(
    source: str | Path | SearchSpace, overrides: Mapping[str, Any] | None = None
) -> SearchSpace:
    """A preset name or a path to a YAML/JSON spec file (a space is returned as it is), with
    ``overrides`` (field -> value, e.g. from :func:`parse_overrides`) applied and validated.

    >>> load_space("paper").name
    'paper'
    >>> load_space("quick", {"ops": ["conv_3x3", "skip_connect", "none"]}).ops
    ('conv_3x3', 'skip_connect', 'none')
    """
    if isinstance(source, SearchSpace):
        space = source
    elif str(source) in PRESETS:
        space = SearchSpace.preset(str(source))
    else:
        space = SearchSpace.load(source)
    return space.replace(**overrides) if overrides else space


#: Fields ``parse_overrides`` refuses: what a space file records about itself.
_FIXED_FIELDS = frozenset({"schema_version"})


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` strings (the command line's ``--set``) as a dict of space fields.

    ``VALUE`` is read as YAML (``16``, ``sum``, ``[0, 1]``); for a field that holds a list,
    a plain comma-separated value is a list too. Unknown fields and a missing ``=`` are one
    :class:`SpecError` line; the values are checked when the space is built.

    >>> parse_overrides(["ops=conv_3x3,skip_connect,none", "channels=16", "output_scales=0"])
    {'ops': ['conv_3x3', 'skip_connect', 'none'], 'channels': 16, 'output_scales': [0]}
    >>> parse_overrides(["chanels=16"])
    Traceback (most recent call last):
    ...
    msnas_graph.errors.SpecError: --set chanels=16: unknown space field 'chanels' (did you mean 'channels'?)
    """  # noqa: E501
    out: dict[str, Any] = {}
    fields = SearchSpace.model_fields
    for item in items:
        name, sep, text = str(item).partition("=")
        name = name.strip()
        if not sep or not name:
            raise SpecError(f"--set {item}: expected FIELD=VALUE, e.g. --set channels=16")
        if name not in fields or name in _FIXED_FIELDS:
            raise SpecError(f"--set {item}: unknown space field '{name}'{_close_field(name)}")
        try:
            value = yaml.safe_load(text) if text.strip() else text
        except (yaml.YAMLError, ValueError, RecursionError):
            value = text
        listed = get_origin(fields[name].annotation) is tuple
        if listed and not isinstance(value, list):
            value = [yaml.safe_load(v) if v.strip() else v for v in str(text).split(",")]
        out[name] = value
    return out


def format_validation_error(exc: ValidationError, source: str) -> str:
    """Flatten a pydantic error to one line: ``source: field.path: message; ...``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(key_text(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, SpecError):  # raised by __init__ inside model_validate
            msg = str(inner).removeprefix("space: ")
        if err["type"] == "extra_forbidden":
            known = ", ".join(SearchSpace.model_fields)
            msg = f"unknown field{_close_field(str(err['loc'][-1]))} (known: {known})"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"{source}: " + "; ".join(parts)


def _close_field(name: str) -> str:
    from ._util import did_you_mean

    return did_you_mean(name, SearchSpace.model_fields)


#: Named presets. ``paper`` is the paper's setting; ``quick`` fits a CPU and searches dense
#: convolutions (:data:`~msnas_graph.operations.DENSE_OPERATIONS`: on HC18 they reached the U-Net
#: family's accuracy-latency frontier where the paper's separable set ran 2-3x slower, and with
#: no parameter-free operation a cost-aware search keeps real layers); ``tiny`` is for tests.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "layers": 10,
        "scales": 5,
        "channels": 32,
        "blocks": 3,
        "ops": [*DEFAULT_OPERATIONS, NONE_OP],
        "partial_k": 4,
        "input_size": 256,
    },
    "quick": {
        "layers": 4,
        "scales": 3,
        "channels": 8,
        "blocks": 2,
        "ops": [*DENSE_OPERATIONS, NONE_OP],
        "partial_k": 4,
        "input_size": 64,
    },
    "tiny": {
        "layers": 3,
        "scales": 2,
        "channels": 4,
        "blocks": 2,
        "ops": ["sep_conv_3x3", "avg_pool_3x3", "skip_connect", "none"],
        "partial_k": 2,
        "input_size": 32,
    },
}
