"""Small shared helpers: "did you mean", atomic file writes, canonical JSON."""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import errno
import hashlib
import json
import os
import secrets
import signal
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

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
    from .errors import SettingError

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
            _record_created(path)
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


#: Files and folders the running command created (``None``: no command scope).
_CREATED: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar(
    "msnas_created", default=None
)


@contextlib.contextmanager
def command_outputs() -> Iterator[list[Path]]:
    """A scope (one CLI command) that records every file :func:`atomic_path` created (a new
    name, not a replaced file) and every folder :func:`make_folder` created, in order, so that
    a failed command can take them back with :func:`remove_created`."""
    created: list[Path] = []
    token = _CREATED.set(created)
    try:
        yield created
    finally:
        _CREATED.reset(token)


def _record_created(path: Path) -> None:
    created = _CREATED.get()
    if created is not None:
        created.append(path)


def make_folder(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p path``, recording each folder it created in the :func:`command_outputs`
    scope.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> with command_outputs() as created:
    ...     _ = make_folder(root / "a" / "b")
    >>> [p.relative_to(root).as_posix() for p in created]
    ['a', 'a/b']
    """
    path = Path(path)
    missing = []
    for folder in (path, *path.parents):
        if os.path.lexists(folder):
            break
        missing.append(folder)
    path.mkdir(parents=True, exist_ok=True)
    for folder in reversed(missing):
        _record_created(folder)
    return path


def remove_created(created: Iterable[Path], *, files: bool = True) -> None:
    """Take back what a failed command created: its new files (unless ``files`` is false, as
    for a run folder whose checkpoint must stay resumable), then every folder it created that
    is empty now, deepest first. Errors are ignored: this runs while another error is
    reported.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> with command_outputs() as created:
    ...     _ = atomic_write(root / "new" / "x.txt", "x")
    ...     remove_created(created)
    >>> (root / "new").exists()
    False
    """
    items = list(created)
    for p in reversed(items):
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                p.rmdir()  # only when empty
            elif files:
                p.unlink()


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
