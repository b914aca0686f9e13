"""Small shared helpers: "did you mean", atomic file writes, canonical JSON."""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import errno
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "atomic_path",
    "atomic_write",
    "canonical_json",
    "command_inputs",
    "content_hash",
    "did_you_mean",
    "input_kind",
    "inside",
    "meta_of",
    "note_input",
    "open_input",
    "read_text",
    "regular_input",
    "safe_output",
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
    input of the running command), checked before anything is written.

    >>> import tempfile, os
    >>> target = os.path.join(tempfile.mkdtemp(), "x.txt")
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> open(target).read()
    'hello'
    """
    path = safe_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _named(exc, path) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files
        safe_output(path)  # still a regular file or absent (not swapped for a link meanwhile)
        os.replace(tmp, path)
    except OSError as exc:  # errors name the path asked for, not the temporary file
        tmp.unlink(missing_ok=True)
        raise _named(exc, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` as if raised on ``path`` (the temporary file beside it is an internal detail)."""
    if exc.errno is None or not exc.filename or ".tmp" not in str(exc.filename):
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


# ------------------------------------------------------------------------- the output rule

#: Files read by the running command (``None``: no command scope, nothing recorded).
_INPUTS: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar(
    "msnas_inputs", default=None
)


@contextlib.contextmanager
def command_inputs() -> Iterator[list[Path]]:
    """A scope (one CLI command) in which every file read through :func:`note_input` is
    protected: :func:`safe_output` refuses to write over it.

    >>> import tempfile, os
    >>> src = os.path.join(tempfile.mkdtemp(), "in.json")
    >>> _ = open(src, "w").write("{}")
    >>> with command_inputs():
    ...     note_input(src)
    ...     safe_output(src)
    Traceback (most recent call last):
    ...
    msnas_graph.errors.OutputError: ...in.json: is an input of this command; write the output to another path
    """  # noqa: E501
    token = _INPUTS.set([])
    try:
        yield _INPUTS.get() or []
    finally:
        _INPUTS.reset(token)


def note_input(path: str | os.PathLike[str]) -> None:
    """Record ``path`` as read by the running command (nothing outside :func:`command_inputs`)."""
    noted = _INPUTS.get()
    if noted is not None:
        noted.append(Path(path))


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(os.path.realpath(a)) == os.path.abspath(os.path.realpath(b))


def safe_output(
    path: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = ()
) -> Path:
    """``path`` as a :class:`~pathlib.Path` if a command may write it, else one-line
    :class:`~msnas_graph.errors.OutputError`.

    The rule for every output (``-o`` of ``sample``, ``decode``, ``render``, ``diff``,
    ``export``, ``predict``, and the files of a run folder): the path is new or an existing
    *regular* file (replaced atomically); a symbolic link, folder, FIFO, device or socket is
    refused, and so is any of ``inputs`` or a file the running command has read
    (:func:`command_inputs`), compared as the same file on disk.

    >>> safe_output("/dev/null")
    Traceback (most recent call last):
    ...
    msnas_graph.errors.OutputError: /dev/null: not a regular file (a character device); write the output to a new path or a regular file
    """  # noqa: E501
    from .errors import OutputError

    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise OutputError(f"{path}: a parent of it is not a folder; choose another path") from None
    except OSError as exc:
        raise OutputError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = _file_kind(st.st_mode)
        raise OutputError(
            f"{path}: not a regular file (a {kind}); write the output to a new path or a "
            f"regular file"
        )
    if st is None and path.parent.exists() and not path.parent.is_dir():
        raise OutputError(f"{path}: a parent of it is not a folder; choose another path")
    for src in (*inputs, *(_INPUTS.get() or ())):
        if _same(path, Path(src)):
            raise OutputError(
                f"{path}: is an input of this command; write the output to another path"
            )
    return path


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return kind
    return "special file"


def inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (symbolic links resolved).

    >>> inside("/a/b/c", "/a/b"), inside("/a/b", "/a/b/c"), inside("/a/bc", "/a/b")
    (True, False, False)
    """
    p = Path(os.path.realpath(os.path.abspath(path)))
    f = Path(os.path.realpath(os.path.abspath(folder)))
    return p == f or f in p.parents


def input_kind(path: str | os.PathLike[str]) -> str:
    """What ``path`` names, symbolic links followed, without opening it: ``"file"`` (a regular
    file), ``"folder"``, ``"missing"``, ``"broken link"`` (dangling or looping),
    ``"unreadable"`` (no permission to look), or the kind of a special file (``"FIFO"``,
    ``"character device"``, ``"socket"``...).

    >>> input_kind("/dev/null"), input_kind("/"), input_kind("/no/such/file")
    ('character device', 'folder', 'missing')
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "broken link" if os.path.islink(path) else "missing"
    except NotADirectoryError:
        return "missing"
    except OSError as exc:
        return "broken link" if exc.errno == errno.ELOOP else "unreadable"
    if stat.S_ISREG(st.st_mode):
        return "file"
    return _file_kind(st.st_mode)


def regular_input(
    path: str | os.PathLike[str], error: type[Exception], missing: str | None = None
) -> Path:
    """``path`` if it names a regular file (symbolic links followed), else one-line ``error``.

    The rule for every input file of every command (documents, folds files, ``dataset.json``,
    images, checkpoints): a FIFO, device, socket or folder is refused by name and never
    opened (opening a FIFO blocks until another process writes to it; a device may never
    end). ``missing`` is the message for a path that does not exist.

    >>> regular_input("/dev/null", ValueError)
    Traceback (most recent call last):
    ...
    ValueError: /dev/null: not a regular file (a character device); give a regular file
    """
    path = Path(path)
    kind = input_kind(path)
    if kind == "file":
        return path
    if kind == "unreadable":
        try:
            os.stat(path)
        except OSError as exc:
            raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    if kind == "missing":
        raise error(missing or f"{path}: no such file")
    if kind == "broken link":
        raise error(f"{path}: a broken or looping symbolic link; give the file itself")
    raise error(f"{path}: not a regular file (a {kind}); give a regular file")


def open_input(
    path: str | os.PathLike[str], error: type[Exception], missing: str | None = None
) -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file (:func:`regular_input`).

    The file is opened without blocking and checked again once open, so a file swapped for a
    FIFO after the check cannot hang the command either.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as tmp, open_input(tmp.name, ValueError) as fh:
    ...     fh.read()
    b''
    """
    path = regular_input(path, error, missing)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise error(f"{path}: not a regular file (a {_file_kind(st.st_mode)}); give a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_text(
    path: Path, error: type[Exception], missing: str | None = None, *, note: bool = True
) -> str:
    """A regular file's UTF-8 text (a leading byte-order mark is dropped); a special file
    (:func:`regular_input`), a binary or otherwise undecodable file raises ``error`` in one
    line. With ``note``, the file is recorded as an input of the running command
    (:func:`note_input`), which it then may not overwrite."""
    if note:
        note_input(path)
    with open_input(path, error, missing) as fh:
        data = fh.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (expected JSON or YAML)") from None


def meta_of(data: dict[str, Any], source: str, error: type[Exception]) -> dict[str, Any]:
    """The ``meta`` mapping of a document (empty if absent); anything else raises ``error``."""
    meta = data.get("meta") or {}
    if not isinstance(meta, dict):
        raise error(f"{source}: meta: expected a mapping, got {type(meta).__name__}")
    return meta
