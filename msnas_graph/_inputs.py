"""Input checks: what a path names, regular files only, and the files a command has read.

Every command reads its input files through :func:`regular_input`, :func:`open_input` or
:func:`read_text` (a FIFO, device or folder is refused by name, never opened), and records them
with :func:`note_input` inside a :func:`command_inputs` scope, so that
:func:`msnas_graph._outputs.safe_output` refuses to write over them. The bottom layer of the
shared helpers: it imports no other ``msnas_graph`` module but :mod:`msnas_graph.errors`.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "command_inputs",
    "file_kind",
    "input_kind",
    "inside",
    "note_input",
    "noted_inputs",
    "open_input",
    "read_text",
    "regular_input",
]

#: Files read by the running command (``None``: no command scope, nothing recorded).
_INPUTS: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar(
    "msnas_inputs", default=None
)


@contextlib.contextmanager
def command_inputs() -> Iterator[list[Path]]:
    """A scope (one CLI command) in which every file read through :func:`note_input` is
    protected: :func:`~msnas_graph._outputs.safe_output` refuses to write over it.

    >>> import tempfile, os
    >>> src = os.path.join(tempfile.mkdtemp(), "in.json")
    >>> _ = open(src, "w").write("{}")
    >>> from msnas_graph._outputs import safe_output
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


def noted_inputs() -> list[Path]:
    """The files the running command has read so far (empty outside :func:`command_inputs`)."""
    return list(_INPUTS.get() or ())


def file_kind(mode: int) -> str:
    """The kind of a file that is not a regular one, from its ``st_mode``, for messages.

    >>> file_kind(stat.S_IFIFO), file_kind(stat.S_IFDIR)
    ('FIFO', 'folder')
    """
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
    return file_kind(st.st_mode)


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
        raise error(f"{path}: not a regular file (a {file_kind(st.st_mode)}); give a regular file")
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
