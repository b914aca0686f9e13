"""Small shared helpers: "did you mean", canonical JSON, atomic file writes.

The input checks live in :mod:`msnas_graph._inputs`, the output rule and created-output
tracking in :mod:`msnas_graph._outputs`; both are re-exported here, where the rest of the
package imports them from.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import hashlib
import json
import os
import secrets
import signal
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from msnas_graph._inputs import (
    command_inputs,
    input_kind,
    inside,
    note_input,
    open_input,
    read_text,
    regular_input,
)
from msnas_graph._outputs import (
    command_outputs,
    make_folder,
    record_created,
    refuse_losing_inputs,
    remove_created,
    safe_output,
)
from msnas_graph.errors import SettingError

__all__ = [
    "atomic_path",
    "atomic_write",
    "canonical_json",
    "command_inputs",
    "command_outputs",
    "content_hash",
    "did_you_mean",
    "env_flag",
    "input_kind",
    "inside",
    "make_folder",
    "meta_of",
    "note_input",
    "open_input",
    "read_text",
    "refuse_losing_inputs",
    "regular_input",
    "remove_created",
    "safe_output",
    "sigterm_as_interrupt",
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


def key_text(key: Any) -> str:
    """A document key or location for a one-line message: as written when it is short and
    printable, else a short ``repr`` (a key read from a file may hold a line break).

    >>> key_text("keep"), key_text(3), key_text("a\\nb")
    ('keep', '3', "'a\\\\nb'")
    """
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    if isinstance(key, str) and key and key.isprintable() and len(key) <= 40:
        return key
    return shown(key)


def shown(value: Any) -> str:
    """A short ``repr`` of a value for messages (huge integers do not get written out).

    >>> shown(10**5000), shown("x" * 50)
    ('a huge integer', "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...")
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "a huge integer"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


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


#: Spellings of a boolean environment variable (compared case-insensitively; "" means unset).
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """The boolean environment variable ``name``: ``1``/``true``/``yes``/``on`` (any case) is
    true, ``0``/``false``/``no``/``off``, empty or unset is false; anything else raises a
    one-line :class:`~msnas_graph.errors.SettingError`.

    >>> env_flag("X", {"X": "Yes"}), env_flag("X", {"X": "off"}), env_flag("X", {})
    (True, False, False)
    >>> env_flag("X", {"X": "maybe"})
    Traceback (most recent call last):
    ...
    msnas_graph.errors.SettingError: environment variable X='maybe' is not a yes/no value; set it to 1/0, true/false, yes/no or on/off, or unset it
    """  # noqa: E501
    raw = (os.environ if environ is None else environ).get(name, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingError(
        f"environment variable {name}={shown(raw)} is not a yes/no value; set it to 1/0, "
        "true/false, yes/no or on/off, or unset it"
    )


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and a rename (see :func:`atomic_path`).

    An interrupted write never leaves a half-written file where a good one was.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (with the
    permissions a new file gets under the umask), on failure it is removed.

    ``path`` must pass :func:`safe_output` (a new path or an existing regular file, not an
    input of the running command), checked before anything is written. The temporary name
    (``.NAME.XXXXXXXX.tmp``, ``NAME`` shortened where needed) fits the folder's name limit
    whatever name ``path`` has, and is chosen before the file is created, so an interrupt at
    any point (even inside the creation) leaves no temporary file behind.

    >>> import tempfile, os
    >>> target = os.path.join(tempfile.mkdtemp(), "x.txt")
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> open(target).read()
    'hello'
    """
    path = safe_output(path)
    try:
        make_folder(path.parent)
    except OSError as exc:
        raise _named(exc, path) from None
    tmp: Path | None = None
    try:
        for _ in range(100):
            tmp = _temp_name(path)  # named before it exists: the cleanup below knows it
            try:
                _create_new(tmp)
                break
            except FileExistsError:
                tmp = None  # someone else's file: try another name, never remove it
        if tmp is None:
            raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a new file gets 0600 from _create_new
        safe_output(path)  # still a regular file or absent (not swapped for a link meanwhile)
        existed = os.path.lexists(path)
        os.replace(tmp, path)
        if not existed:
            record_created(path)
    except OSError as exc:  # errors name the path asked for, not the temporary file
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise _named(exc, path) from None
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """``SIGTERM`` raises :class:`KeyboardInterrupt` inside the block (main thread only), so a
    scheduler's stop (or ``docker stop``) ends the work like ``Ctrl-C``: a run keeps its
    checkpoint, a command takes back its partial outputs, the CLI exits 130. The previous
    handler is restored on leaving."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _temp_name(path: Path) -> Path:
    """A fresh ``.NAME.XXXXXXXX.tmp`` beside ``path`` whose name fits the folder's limit.

    >>> p = _temp_name(Path("/tmp") / ("x" * 255))
    >>> len(p.name.encode()) <= 255 and p.name.startswith(".xxx") and p.name.endswith(".tmp")
    True
    """
    room = max(_name_max(path.parent) - len(".") - len(".XXXXXXXX.tmp"), 1)
    stem = os.fsencode(path.name)[:room].decode("utf-8", "ignore") or "x"
    token = secrets.token_hex(4)
    return path.parent / f".{stem}.{token}.tmp"


def _create_new(tmp: Path) -> None:
    """Create ``tmp`` (0600); ``FileExistsError`` if it exists (a link included)."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    os.close(fd)


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` as if raised on ``path`` (the temporary file beside it is an internal detail)."""
    if exc.errno is None or not exc.filename or ".tmp" not in str(exc.filename):
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def meta_of(data: dict[str, Any], source: str, error: type[Exception]) -> dict[str, Any]:
    """The ``meta`` mapping of a document (empty if absent); anything else raises ``error``."""
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise error(f"{source}: meta: expected a mapping, got {type(meta).__name__}")
    return meta
