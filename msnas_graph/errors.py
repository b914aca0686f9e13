"""The exception hierarchy: every error a user can cause is an :class:`MsnasError`.

Messages are one line that says what is wrong, where, and how to fix it. Only the CLI turns
them into exit codes; library code raises.
"""

from __future__ import annotations

__all__ = [
    "ArchitectureError",
    "BackendError",
    "DataError",
    "DecodeError",
    "MsnasError",
    "OutputError",
    "RenderError",
    "ResourceError",
    "RunError",
    "SettingError",
    "SpecError",
    "StateError",
]


#: What ``str.splitlines`` breaks a line at.
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


class MsnasError(Exception):
    """Root of every error msnas-graph raises on bad input or a failed run.

    The message is one line whatever it quotes: a line break inside (a key or name read from a
    file, say) is shown escaped.

    >>> str(MsnasError("'a\\nb' is not an edge id"))
    "'a\\\\nb' is not an edge id"
    """

    def __str__(self) -> str:
        text = super().__str__()
        if not any(ch in _LINE_BREAKS for ch in text):
            return text
        return "".join(repr(ch)[1:-1] if ch in _LINE_BREAKS else ch for ch in text)


class SpecError(MsnasError, ValueError):
    """A search-space specification is malformed or impossible."""


class StateError(MsnasError, ValueError):
    """A search state (architecture parameters) is malformed or does not match its space."""


class DecodeError(MsnasError, ValueError):
    """Decoding cannot be done as asked (e.g. more paths than the space has)."""


class ArchitectureError(MsnasError, ValueError):
    """A decoded architecture is malformed or inconsistent with its space."""


class OutputError(MsnasError, ValueError):
    """An output path may not be written (not a regular file, or an input of the command)."""


class RenderError(MsnasError, RuntimeError):
    """Rendering failed (e.g. graphviz's ``dot`` program is missing)."""


class BackendError(MsnasError, RuntimeError):
    """A backend is unknown, not installed, or cannot build what it was given."""


class DataError(MsnasError, ValueError):
    """A dataset is missing, empty, corrupt or inconsistent."""


class SettingError(MsnasError, ValueError):
    """An environment variable (or another setting outside the command line) cannot be read."""


class RunError(MsnasError, RuntimeError):
    """A search or training run cannot start or continue (e.g. NaN loss, finished run)."""


class ResourceError(MsnasError, RuntimeError):
    """A request needs more memory than is available (checked before allocating)."""
