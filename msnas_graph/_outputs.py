"""The output rule and created-output tracking.

:func:`safe_output` says whether a command may write a path (new, or an existing regular file
that is not one of its inputs); :func:`command_outputs` records what a command created
(:func:`make_folder`'s folders and :func:`msnas_graph._util.atomic_path`'s new files, through
:func:`record_created`) so that a failed command takes it back with :func:`remove_created`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from msnas_graph._inputs import file_kind, inside, noted_inputs
from msnas_graph.errors import OutputError

__all__ = [
    "command_outputs",
    "make_folder",
    "record_created",
    "refuse_losing_inputs",
    "remove_created",
    "safe_output",
]

#: Files and folders the running command created (``None``: no command scope).
_CREATED: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar(
    "msnas_created", default=None
)


@contextlib.contextmanager
def command_outputs() -> Iterator[list[Path]]:
    """A scope (one CLI command) that records every file
    :func:`~msnas_graph._util.atomic_path` created (a new name, not a replaced file) and every
    folder :func:`make_folder` created, in order, so that a failed command can take them back
    with :func:`remove_created`."""
    created: list[Path] = []
    token = _CREATED.set(created)
    try:
        yield created
    finally:
        _CREATED.reset(token)


def record_created(path: Path) -> None:
    """Record ``path`` as created by the running command (nothing outside
    :func:`command_outputs`)."""
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
        record_created(folder)
    return path


def remove_created(created: Iterable[Path], *, files: bool = True) -> None:
    """Take back what a failed command created: its new files (unless ``files`` is false, as
    for a run folder whose checkpoint must stay resumable), then every folder it created that
    is empty now, deepest first. Errors are ignored: this runs while another error is
    reported.

    >>> import tempfile
    >>> from msnas_graph._util import atomic_write
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
        kind = file_kind(st.st_mode)
        raise OutputError(
            f"{path}: not a regular file (a {kind}); write the output to a new path or a "
            f"regular file"
        )
    if st is None and path.parent.exists() and not path.parent.is_dir():
        raise OutputError(f"{path}: a parent of it is not a folder; choose another path")
    for src in (*inputs, *noted_inputs()):
        if _same(path, Path(src)):
            raise OutputError(
                f"{path}: is an input of this command; write the output to another path"
            )
    return path


def refuse_losing_inputs(paths: Iterable[str | os.PathLike[str]], action: str) -> None:
    """One-line :class:`~msnas_graph.errors.OutputError` if a file the running command has read
    is one of ``paths`` or lies in one of them (folders), which ``action`` (e.g. "--overwrite
    deletes") would replace or remove: checked before a run folder is cleared or written, so
    that nothing is lost on the way to the refusal.

    >>> import tempfile, os
    >>> from msnas_graph._inputs import command_inputs, note_input
    >>> run = tempfile.mkdtemp()
    >>> src = os.path.join(run, "architecture.json")
    >>> with command_inputs():
    ...     note_input(src)
    ...     refuse_losing_inputs([src], "--overwrite deletes")
    Traceback (most recent call last):
    ...
    msnas_graph.errors.OutputError: ...architecture.json: an input of this command, which --overwrite deletes; copy it elsewhere first or choose another folder
    """  # noqa: E501
    for src in noted_inputs():
        for p in map(Path, paths):
            if _same(p, src) or (p.is_dir() and inside(src, p)):
                raise OutputError(
                    f"{src}: an input of this command, which {action}; copy it elsewhere first "
                    f"or choose another folder"
                )
