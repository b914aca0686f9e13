"""Small shared helpers: "did you mean", atomic file writes, canonical JSON."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_write",
    "canonical_json",
    "content_hash",
    "did_you_mean",
    "meta_of",
    "read_text",
    "unknown_name",
]


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest known name, or ``""``.

    >>> did_you_mean("sep_conv_3x4", ["sep_conv_3x3", "avg_pool_3x3"])
    " (did you mean 'sep_conv_3x3'?)"
    >>> did_you_mean("zzz", ["sep_conv_3x3"])
    ''
    """
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_name(what: str, name: str, known: Iterable[str]) -> str:
    """One-line message for an unknown name, listing the known ones and the closest match.

    >>> unknown_name("operation", "sep_conv_7", ["sep_conv_3", "avg_pool"])
    "unknown operation 'sep_conv_7' (known: avg_pool, sep_conv_3) (did you mean 'sep_conv_3'?)"
    """
    known = sorted(known)
    return f"unknown {what} '{name}' (known: {', '.join(known)}){did_you_mean(name, known)}"


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and fixed separators: equal objects give equal text.

    >>> canonical_json({"b": 1, "a": [1.5, 2]})
    '{"a":[1.5,2],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def content_hash(obj: Any) -> str:
    """Short SHA-256 of the canonical JSON of ``obj`` (16 hex digits).

    >>> content_hash({"a": 1}) == content_hash({"a": 1})
    True
    """
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and a rename.

    An interrupted write never leaves a half-written file where a good one was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (with the
    permissions a new file gets under the umask), on failure it is removed.

    >>> import tempfile, os
    >>> target = os.path.join(tempfile.mkdtemp(), "x.txt")
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> open(target).read()
    'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_text(path: Path, error: type[Exception]) -> str:
    """A file's UTF-8 text; a binary or otherwise undecodable file raises ``error`` in one line."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (expected JSON or YAML)") from None


def meta_of(data: dict[str, Any], source: str, error: type[Exception]) -> dict[str, Any]:
    """The ``meta`` mapping of a document (empty if absent); anything else raises ``error``."""
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise error(f"{source}: meta: expected a mapping, got {type(meta).__name__}")
    return meta
