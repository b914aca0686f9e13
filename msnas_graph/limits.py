"""Memory limits: the rules of every memory estimate in msnas-graph, and the check that
refuses, before allocating, work that cannot fit the memory available.

The rules, each stated once here: the bytes of an element (:data:`FLOAT32`, :data:`LABEL`),
of a decoded case (:func:`case_bytes`, :data:`CASE_OBJECTS`), of a file dataset's bookkeeping
(:data:`ITEM_OBJECTS`), of preparing an image for a network (:data:`NORMALISE`), of a
network (:func:`network_bytes`: weights, x :data:`TRAINING_COPIES` when training, plus the
activations a backend counts), and what counts as available (:func:`available_memory`):
``MemAvailable`` from ``/proc/meminfo`` (``psutil`` where installed; on systems with neither
the check is skipped), or less where a resource limit of this process (``ulimit -v``/``-d``)
or the free memory of the accelerator the work runs on leaves less. :func:`check_fits` ends
too much in one :class:`~msnas_graph.errors.ResourceError` line that names the request, both
figures and the override:

* ``MSNAS_NO_MEMORY_CHECK=1`` (or ``true``/``yes``/``on``; the CLI's global
  ``--no-memory-check``) turns the check off, ``0``/``false``/``no``/``off`` leaves it on, and
  any other value is refused in one line;
* ``MSNAS_MEMORY_LIMIT=BYTES`` (suffixes K, M, G, T) caps what counts as available, e.g. to
  keep a share of a machine for other work.

>>> check_fits(1024, "a tiny request")  # fits: returns the estimate
1024
>>> import os
>>> os.environ["MSNAS_MEMORY_LIMIT"] = "1M"
>>> check_fits(case_bytes(10**8, 1) + 10**6, "phantom:100000")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
msnas_graph.errors.ResourceError: phantom:100000 needs about 1.1 GiB of memory but 1.0 MiB ...
>>> check_fits(2**19, "a step", device=("cuda:0", 2**18))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
msnas_graph.errors.ResourceError: a step on cuda:0 needs about 512.0 KiB of memory but 256.0 ...
>>> del os.environ["MSNAS_MEMORY_LIMIT"]
"""

from __future__ import annotations

import os
import re

from msnas_graph._util import env_flag
from msnas_graph.errors import ResourceError

__all__ = [
    "BOOL_ENVS",
    "CASE_OBJECTS",
    "FLOAT32",
    "ITEM_OBJECTS",
    "LABEL",
    "LIMIT_ENV",
    "NORMALISE",
    "NO_CHECK_ENV",
    "TRAINING_COPIES",
    "available_memory",
    "case_bytes",
    "check_fits",
    "checks_enabled",
    "format_bytes",
    "network_bytes",
]

NO_CHECK_ENV = "MSNAS_NO_MEMORY_CHECK"
LIMIT_ENV = "MSNAS_MEMORY_LIMIT"
#: Every boolean environment variable msnas-graph reads (the CLI checks them all at start).
BOOL_ENVS = (NO_CHECK_ENV,)
OVERRIDE = f"--no-memory-check (env {NO_CHECK_ENV}=1)"

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}

FLOAT32 = 4  #: bytes of an image element or a weight (``float32``)
LABEL = 8  #: bytes of a mask element (``int64``)
CASE_OBJECTS = 2048  #: a decoded case's Python objects (meta dict, source) where kept
ITEM_OBJECTS = 1024  #: bookkeeping of one image or slice of a file dataset (ids, keys, names)
#: Preparing an image for a network (:func:`~msnas_graph.data.transforms.normalize_intensity`)
#: holds, besides its normalised channels, a ``float64`` copy of one channel and
#: ``np.percentile``'s copy of it: 16 bytes a pixel (measured: 24 bytes a pixel in all for a
#: grey 6000x6000 TIFF through ``predict``).
NORMALISE = 16
TRAINING_COPIES = 4  #: weights, gradients, two optimiser slots (momentum / Adam moments)


def case_bytes(pixels: int, channels: int, *, mask: bool = True) -> int:
    """Bytes of a decoded case of ``pixels`` pixels a channel: ``float32`` image channels and
    an ``int64`` mask.

    >>> case_bytes(32 * 32, 1), case_bytes(32 * 32, 3, mask=False)
    (12288, 12288)
    """
    return pixels * (FLOAT32 * channels + (LABEL if mask else 0))


def network_bytes(params: int, activation_bytes: int, *, training: bool) -> int:
    """Bytes of a network of ``params`` parameters holding ``activation_bytes`` (counted by a
    backend): its weights, with gradients and two optimiser slots when ``training``.

    >>> network_bytes(1000, 500, training=False), network_bytes(1000, 500, training=True)
    (4500, 16500)
    """
    return params * FLOAT32 * (TRAINING_COPIES if training else 1) + activation_bytes


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units.

    >>> format_bytes(3 * 2**30), format_bytes(512), format_bytes(2.5 * 2**50)
    ('3.0 GiB', '512 B', '2560.0 TiB')
    """
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _parse_limit(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text.upper())
    if m is None:
        raise ResourceError(
            f"{LIMIT_ENV}={text!r}: not a size; use bytes or a number with K, M, G or T (e.g. 8G)"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _system_available() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rlimit_left() -> int | None:
    """What this process's address-space and data limits (``ulimit -v``, ``ulimit -d``) leave
    it to allocate, or ``None`` where neither is set (or the platform cannot tell)."""
    try:
        import resource

        with open("/proc/self/status", encoding="ascii") as f:
            status = {k: v.split() for k, _, v in (line.partition(":") for line in f)}
        left = []
        for limit, field in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
            soft = resource.getrlimit(limit)[0]
            if soft != resource.RLIM_INFINITY and field in status:
                left.append(max(0, soft - int(status[field][0]) * 1024))
        return min(left) if left else None
    except (ImportError, OSError, ValueError, IndexError):
        return None


def available_memory() -> int | None:
    """Bytes of memory available now (capped by ``MSNAS_MEMORY_LIMIT`` and by what this
    process's ``ulimit -v``/``-d`` leaves), or ``None`` if unknown.

    >>> os.environ["MSNAS_MEMORY_LIMIT"] = "2G"
    >>> available_memory() <= 2 * 2**30
    True
    >>> del os.environ["MSNAS_MEMORY_LIMIT"]
    """
    found = _system_available()
    if (left := _rlimit_left()) is not None:
        found = left if found is None else min(found, left)
    limit = os.environ.get(LIMIT_ENV, "").strip()
    if limit:
        cap = _parse_limit(limit)
        found = cap if found is None else min(found, cap)
    return found


def checks_enabled() -> bool:
    """False when ``MSNAS_NO_MEMORY_CHECK`` is true (``1``, ``true``, ``yes``, ``on``).

    >>> os.environ[NO_CHECK_ENV] = "false"
    >>> checks_enabled()
    True
    >>> del os.environ[NO_CHECK_ENV]
    """
    return not env_flag(NO_CHECK_ENV)


def check_fits(
    estimate_bytes: float,
    what: str,
    available: int | None = None,
    *,
    device: tuple[str, int] | None = None,
) -> int:
    """Return ``estimate_bytes`` if it fits ``available`` (default: :func:`available_memory`),
    else raise :class:`ResourceError` naming ``what`` and the override. ``device``: the name
    and free bytes of an accelerator the work runs on; the smaller of its free memory and the
    host's counts (data and checkpoints pass through the host), and the message names the
    device where its memory is the smaller."""
    estimate = int(min(estimate_bytes, 2**100))
    if not checks_enabled():
        return estimate
    free = available_memory() if available is None else available
    if device is not None and (free is None or device[1] <= free):
        free, what = device[1], f"{what} on {device[0]}"
    if free is not None and estimate > free:
        raise ResourceError(
            f"{what} needs about {format_bytes(estimate)} of memory but {format_bytes(free)} "
            f"is available; ask for less, or pass {OVERRIDE} to try anyway"
        )
    return estimate
