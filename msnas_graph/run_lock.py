"""A run folder's lock, and ``SIGTERM`` as ``Ctrl-C``: what every run (a search, a training,
several seeds of a search) holds while it writes its folder. No torch here: the core's
multi-seed search (:mod:`msnas_graph.seeds`) and the torch backend's runs share it."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from ._util import make_folder, sigterm_as_interrupt
from .errors import RunError

__all__ = ["LOCK", "RunLock", "sigterm_as_interrupt"]

LOCK = ".lock"


class RunLock:
    """An exclusive lock on a run folder for the run's life: ``fcntl.flock`` on
    ``run_dir/.lock``, which holds the owner's pid.

    The kernel drops the lock when its process ends, however it ends (``kill -9`` included),
    so a ``.lock`` file left by a dead process is harmless: the next run takes it over. A
    second live process is refused with one line naming the holder's pid. A folder that
    :meth:`acquire` created is removed again by ``release(failed=True)`` when the run left
    nothing in it.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> lock = RunLock(d).acquire()
    >>> RunLock(d).acquire()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    msnas_graph.errors.RunError: ...run is in use by another msnas-graph process (pid ...); ...
    >>> lock.release(failed=True); d.exists()
    False
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.created = False
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunError(f"{self.run_dir}: not a folder; choose a folder for the run")
        self.created = not self.run_dir.exists()
        make_folder(self.run_dir)  # recorded: a failed command takes it back
        fd = _open_lock(self.run_dir / LOCK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunError(
                f"{self.run_dir} is in use by another msnas-graph process (pid {holder}); wait "
                f"for it to finish or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self, failed: bool = False) -> None:
        """Drop the lock; after a failed start, remove the folder if this run created it and
        left nothing but the lock file in it."""
        if self._fd is None:
            return
        try:
            if failed and self.created and _only_lock(self.run_dir):
                (self.run_dir / LOCK).unlink(missing_ok=True)
                self.run_dir.rmdir()
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None


def _open_lock(path: Path) -> int:
    """The run's lock file opened for reading and writing (created if absent); a symbolic
    link, FIFO or other special file there is refused in one line, never followed or waited
    on."""
    fix = f"remove it (rm {path}) and run again"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunError(f"{path}: the run's lock file is a symbolic link; {fix}") from None
        raise RunError(f"{path}: cannot open the run's lock file ({exc.strerror}); {fix}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
        raise RunError(f"{path}: the run's lock file is {kind}; {fix}")
    os.set_blocking(fd, True)
    return fd


def _only_lock(run_dir: Path) -> bool:
    return {p.name for p in run_dir.iterdir()} <= {LOCK}
