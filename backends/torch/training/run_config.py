"""What every run config shares: the JSON round trip, the resume policy and the limits on a
schedule's size (:mod:`.config` holds the search's and the training's configs).

>>> MAX_EPOCHS, f"{MAX_STEPS:,}"
(10000, '10,000,000')
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, ClassVar

from msnas_graph._util import atomic_write, read_text, unknown_name
from msnas_graph.architecture import Architecture
from msnas_graph.errors import MsnasError, RunError
from msnas_graph.spec import SearchSpace

__all__ = ["MAX_EPOCHS", "MAX_STEPS", "RunConfig", "absolute", "check_schedule_size", "resumable"]

_RESUME = "resume_free"


def resumable(default: Any) -> Any:
    """A dataclass field with ``default`` that may change when the run is resumed."""
    return field(default=default, metadata={_RESUME: True})


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, SearchSpace | Architecture):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _norm(value: Any) -> Any:
    return json.loads(json.dumps(value))


#: What a value of each plain field type must be, as the error says it.
_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _plain(value: Any, kind: type) -> tuple[bool, Any]:
    """Whether ``value`` is of the plain type ``kind`` (a JSON number for a number: an integral
    float is an integer, an integer a float, a bool neither; a path is a string), and the value
    as that type."""
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool), value
    if kind is int and isinstance(value, float) and value.is_integer():
        return True, int(value)
    if kind is int and isinstance(value, numbers.Integral):
        return True, int(value)
    if kind is float and isinstance(value, numbers.Real):
        return True, float(value)
    if kind is str and isinstance(value, os.PathLike):  # a path for a file or folder field
        return True, os.fspath(value)
    return isinstance(value, kind), value


def _typed(value: Any, hint: Any) -> tuple[bool, Any, str]:
    """Check ``value`` against a field's annotation: (fits, the value normalised, what the
    annotation asks for). A class other than the plain types (a space, an architecture) also
    takes a mapping, a string or a path: its own checks read them."""
    options = (
        typing.get_args(hint)
        if typing.get_origin(hint) in (types.UnionType, typing.Union)
        else (hint,)
    )
    wants = []
    for kind in options:
        if kind is type(None):
            if value is None:
                return True, None, ""
            wants.append("null")
        elif typing.get_origin(kind) is tuple:
            items = typing.get_args(kind)
            wants.append(f"a list of {len(items)} {_KINDS[items[0]].split(' ', 1)[1]}s")
            if isinstance(value, list | tuple) and len(value) == len(items):
                checked = [_plain(v, k) for v, k in zip(value, items, strict=True)]
                if all(ok for ok, _ in checked):
                    return True, tuple(v for _, v in checked), ""
        elif kind in _KINDS:
            wants.append(_KINDS[kind])
            ok, normalised = _plain(value, kind)
            if ok:
                return True, normalised, ""
        else:
            wants.append(f"{'an' if kind.__name__[0] in 'AEIOU' else 'a'} {kind.__name__}")
            if isinstance(value, kind | dict | str | Path):
                return True, value, ""
    return False, value, " or ".join(wants)


class RunConfig:
    """JSON round trip and resume policy shared by the configs (dataclasses)."""

    #: ``field -> value`` meant by a stored config that lacks the field (written by an older
    #: version) where that differs from the field's default.
    LEGACY: ClassVar[dict[str, Any]] = {}
    #: Fields of which a config holds one at most: giving one replaces the others.
    ONE_OF: ClassVar[tuple[str, ...]] = ()

    def check_types(self, where: str) -> None:
        """Refuse a field whose value is not of its annotated type, in one line (a hand-edited
        ``config.json`` or an API call: ``lr="abc"``, ``augment="false"``); normalise the rest
        (an integral float to an int, a NumPy number to a Python one, a list to a tuple), so
        that the config's own checks and its JSON see plain values.

        >>> from msnas_graph.backends.torch.training.config import TrainConfig
        >>> TrainConfig(augment="false")
        Traceback (most recent call last):
        ...
        msnas_graph.errors.RunError: train config: augment='false' must be true or false
        """
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            ok, normalised, wanted = _typed(value, hints[f.name])
            if not ok:
                shown = repr(value)
                shown = shown if len(shown) <= 80 else shown[:77] + "..."
                raise RunError(f"{where}: {f.name}={shown} must be {wanted}")
            setattr(self, f.name, normalised)

    def with_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """This config's fields with ``options`` given over them (as :meth:`to_dict`)."""
        data = {**self.to_dict(), **options}
        if set(self.ONE_OF) & set(options):
            data.update({k: options.get(k) for k in self.ONE_OF})
        return data

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the space/architecture as their own JSON documents)."""
        return {
            f.name: _to_jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically."""
        return atomic_write(path, self.to_json() + "\n")

    @classmethod
    def resume_free(cls) -> frozenset[str]:
        """The fields that may differ between a run and its resumption."""
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        return frozenset(f.name for f in fields if f.metadata.get(_RESUME))

    def resume_conflicts(self, stored: dict[str, Any]) -> list[str]:
        """The fields of this config that differ from a stored one and may not change (a field
        the stored config lacks counts as its :attr:`LEGACY` value, else ``None``)."""
        free, given = self.resume_free(), self.to_dict()
        stored = {**self.LEGACY, **stored}
        return [k for k in given if k not in free and _norm(stored.get(k)) != _norm(given[k])]

    @classmethod
    def from_dict(cls, data: Any, source: str = "config", *, legacy: bool = True) -> Any:
        """Build from :meth:`to_dict` output; unknown fields are a :class:`RunError`. A field
        missing from ``data`` takes its :attr:`LEGACY` value (what a config written by an older
        version meant) unless ``legacy=False`` (fresh options: the defaults apply)."""
        if not isinstance(data, dict):
            raise RunError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        for key in data:
            if key not in names:
                raise RunError(f"{source}: {unknown_name('config field', key, names)}")
        if legacy:
            data = {**{k: v for k, v in cls.LEGACY.items() if k not in data}, **data}
        try:
            return cls(**data)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            if isinstance(exc, MsnasError):
                raise
            raise RunError(f"{source}: malformed config ({exc})") from None

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Read a ``config.json``."""
        path = Path(path)
        missing = f"{path}: no such config file"
        text = read_text(path, RunError, missing, note=False)  # a resumed run rewrites it
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RunError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        try:
            return cls.from_dict(data, str(path))
        except RunError as exc:  # a field's own check: say which file holds it
            if str(path) in str(exc):
                raise
            raise RunError(f"{path}: {exc}") from None

    @classmethod
    def for_run(cls, config: Any, run_dir: Path, resume: bool, what: str) -> Any:
        """``config``, or with ``config=None`` and ``resume`` the run's own ``config.json``."""
        if config is not None:
            return config
        if not resume:
            raise RunError(f"{what}: give a {cls.__name__} (only a resumed run reads config.json)")
        return cls.load(run_dir / "config.json")


def absolute(source: str | None) -> str | None:
    """An existing file or folder as an absolute path, so that a run folder's config still
    finds its data from another working directory; anything else (``phantom``, ``unet``) as is."""
    if source is None or str(source).startswith("phantom") or str(source).lower() == "unet":
        return source
    path = Path(source)
    return str(path.resolve()) if path.exists() else str(source)


#: The most epochs one run may take (a search's warm-up, cell and network epochs together, or
#: a training's epochs): 250x the paper's 40, 10x nnU-Net's 1000.
MAX_EPOCHS = 10_000
#: The most steps a schedule given in steps may take (warm-up and architecture steps).
MAX_STEPS = 10_000_000


def check_schedule_size(where: str, what: str, count: int, unit: str) -> None:
    """Refuse a schedule of more than :data:`MAX_EPOCHS` epochs or :data:`MAX_STEPS` steps in
    one line that says how long it would take at least (at an optimistic 1 s an epoch or
    10 ms a step), before anything runs or is written.

    >>> check_schedule_size("search config", "epochs 10**9 + 10**9", 2 * 10**9, "epoch")
    Traceback (most recent call last):
    ...
    msnas_graph.errors.RunError: search config: epochs 10**9 + 10**9 = 2,000,000,000 epochs, more than the 10,000 a run may take (at even 1 s an epoch: 63 years); give fewer
    """  # noqa: E501
    limit, seconds = (MAX_EPOCHS, 1.0) if unit == "epoch" else (MAX_STEPS, 0.01)
    if count <= limit:
        return
    duration = count * seconds
    for size, name in ((365.25 * 86400, "years"), (86400, "days"), (3600, "hours")):
        if duration >= 2 * size:
            shown = f"{duration / size:,.0f} {name}"
            break
    else:
        shown = f"{duration / 3600:.1f} hours"
    raise RunError(
        f"{where}: {what} = {count:,} {unit}s, more than the {limit:,} a run may take (at even "
        f"{seconds:g} s a{'n' if unit == 'epoch' else ''} {unit}: {shown}); give fewer"
    )
