"""One versioned JSON document base for every file this package writes.

A search space, a search state, an architecture and an architecture diff are all *documents*:
plain data that saves to JSON with a ``schema_version``, a canonical key order (the order
``to_dict`` builds, the same for equal objects), an atomic write, and one-line errors for a
missing, binary, malformed or wrong-version file. :class:`Document` holds that machinery once;
each document class says what it is (:attr:`~Document.FORMAT`, a few words for messages) and
how it maps to a dict.

>>> from msnas_graph.state import SearchState
>>> from msnas_graph.spec import SearchSpace
>>> state = SearchState.zeros(SearchSpace.preset("tiny"))
>>> state.to_dict()["format"], state.to_dict()["schema_version"]
('msnas-graph/search-state', 1)
>>> SearchState.from_json("[1, 2]", "s.json")
Traceback (most recent call last):
...
msnas_graph.errors.StateError: s.json: not a search state (format 'list', expected 'msnas-graph/search-state'); create one with `msnas-graph sample` or `msnas-graph search`
"""  # noqa: E501

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ._util import atomic_write, content_hash, read_text, shown
from .errors import MsnasError

__all__ = ["SCHEMA_VERSION", "Document", "check_finite", "check_int", "parse_json", "shown"]

#: Version of every JSON/YAML document this package writes (spec, state, architecture, diff).
SCHEMA_VERSION = 1

D = TypeVar("D", bound="Document")


def parse_json(text: str, source: str, error: type[MsnasError]) -> Any:
    """``json.loads(text)``; invalid JSON raises ``error`` in one line naming ``source``.

    >>> from msnas_graph.errors import StateError
    >>> parse_json('{"a": 1}', "x.json", StateError)
    {'a': 1}
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise error(f"{source}: nested too deeply to be a document") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits
        raise error(f"{source}: not a usable JSON document ({str(exc)[:80]})") from None


def check_finite(value: Any, where: str, error: type[MsnasError]) -> float:
    """``value`` as a float when it is a finite real number (not a bool); else one line.

    >>> from msnas_graph.errors import StateError
    >>> check_finite(float("nan"), "s.json: weight", StateError)
    Traceback (most recent call last):
    ...
    msnas_graph.errors.StateError: s.json: weight: expected a finite number, got nan
    """
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    try:
        number = float(value) if ok else math.nan
    except OverflowError:
        number = math.inf
    if not (ok and math.isfinite(number)):
        raise error(f"{where}: expected a finite number, got {shown(value)}")
    return number


def check_int(value: Any, where: str, error: type[MsnasError]) -> int:
    """``value`` when it is an ``int`` (not a bool, a float or a string); else one line.

    >>> from msnas_graph.errors import ArchitectureError
    >>> check_int(0.9, "a.json: cells.keep.blocks[0][0].source", ArchitectureError)
    Traceback (most recent call last):
    ...
    msnas_graph.errors.ArchitectureError: a.json: cells.keep.blocks[0][0].source: expected a whole number, got 0.9
    """  # noqa: E501
    if type(value) is not int or value.bit_length() > 62:
        raise error(f"{where}: expected a whole number, got {shown(value)}")
    return value


class Document:
    """Base of the documents: JSON text, atomic save and load, versioned headers, hashes.

    A subclass sets the class attributes and implements :meth:`to_dict` (and
    :meth:`from_dict` to be loadable), plus :meth:`_hashed` when its content hash covers less
    than the whole dict.
    """

    #: The ``format`` field of the file (``""``: the document has no format field).
    FORMAT: ClassVar[str] = ""
    #: What the document is, for messages: ``"a search state"``.
    WHAT: ClassVar[str] = "a document"
    #: File noun for "no such ... file" messages: ``"state"``.
    FILE_NOUN: ClassVar[str] = "document"
    #: How to make one, for messages: ``"create one with `msnas-graph sample`"``.
    CREATE_HINT: ClassVar[str] = ""
    #: What to do with a file of another schema version.
    UPGRADE_HINT: ClassVar[str] = "re-create it with this version of msnas-graph"
    #: The error class of the document's problems.
    ERROR: ClassVar[type[MsnasError]] = MsnasError

    # --------------------------------------------------------------------------- writing

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in canonical order, starting with :meth:`header`."""
        raise NotImplementedError

    @classmethod
    def header(cls) -> dict[str, Any]:
        """``{"format": ..., "schema_version": ...}``: the first fields of every document."""
        return {"format": cls.FORMAT, "schema_version": SCHEMA_VERSION}

    def to_json(self, indent: int | None = 1) -> str:
        """Versioned JSON text (floats round-trip exactly; ``indent=None``: one line)."""
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` atomically (an interrupted write leaves the old file)."""
        return atomic_write(path, self.to_json())

    def _hashed(self) -> Any:
        """What :attr:`content_hash` covers (default: the whole dict)."""
        return self.to_dict()

    @property
    def content_hash(self) -> str:
        """Short SHA-256 of the canonical JSON of :meth:`_hashed`."""
        return content_hash(self._hashed())

    # --------------------------------------------------------------------------- reading

    @classmethod
    def from_dict(cls: type[D], data: Any, source: str) -> D:
        """Build from :meth:`to_dict` output; one-line :attr:`ERROR` on any problem."""
        raise NotImplementedError

    @classmethod
    def check_header(cls, data: Any, source: str) -> dict[str, Any]:
        """``data`` itself when it is a mapping with this :attr:`FORMAT` and the supported
        ``schema_version``; else a one-line :attr:`ERROR` saying what was found and what to do."""
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            found = shown(data.get("format")) if isinstance(data, dict) else type(data).__name__
            if isinstance(data, dict) and isinstance(data.get("format"), str):
                found = repr(data["format"][:60])
            elif not isinstance(data, dict):
                found = repr(found)
            raise cls.ERROR(
                f"{source}: not {cls.WHAT} (format {found}, expected '{cls.FORMAT}'); "
                f"{cls.CREATE_HINT}"
            )
        if data.get("schema_version") != SCHEMA_VERSION:
            raise cls.ERROR(
                f"{source}: schema_version {shown(data.get('schema_version'))} is not supported "
                f"(expected {SCHEMA_VERSION}); {cls.UPGRADE_HINT}"
            )
        return data

    @classmethod
    def from_json(cls: type[D], text: str, source: str | None = None) -> D:
        """Parse JSON text (``source`` names it in errors)."""
        source = cls.FILE_NOUN if source is None else source
        return cls.from_dict(parse_json(text, source, cls.ERROR), source)

    @classmethod
    def from_text(cls: type[D], text: str, path: Path) -> D:
        """Parse the text of the file ``path`` (JSON; a subclass may read other formats)."""
        return cls.from_json(text, str(path))

    @classmethod
    def missing_file(cls, path: Path) -> MsnasError:
        """The error for a ``path`` that is not a file."""
        return cls.ERROR(f"{path}: no such {cls.FILE_NOUN} file")

    @classmethod
    def load(cls: type[D], path: str | Path) -> D:
        """Read a document file; a missing, binary or malformed file raises one line."""
        path = Path(path)
        text = read_text(path, cls.ERROR, missing=str(cls.missing_file(path)))
        return cls.from_text(text, path)
