"""Load any msnas-graph document by looking at what it is.

A path may hold a search space (YAML/JSON spec, or a preset name), a search state, an
architecture, or be a run folder (its ``state.json`` / ``architecture.json``).

>>> load_any("tiny").name
'tiny'

A ``format`` field that is not one of the known names (not even a string) is one line:

>>> import json, os, tempfile
>>> odd = os.path.join(tempfile.mkdtemp(), "odd.json")
>>> _ = open(odd, "w").write(json.dumps({"format": ["x"]}))
>>> load_any(odd)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
msnas_graph.errors.MsnasError: ...odd.json: unknown document format ['x'] (expected a space, ...
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from ._util import read_text, regular_input, shown
from .architecture import Architecture
from .errors import DecodeError, MsnasError, StateError
from .spec import PRESETS, SearchSpace, load_space
from .state import SearchState

__all__ = ["load_any", "load_state", "load_states"]

Document = SearchSpace | SearchState | Architecture
#: The loadable documents that carry a ``format`` field, by format.
_BY_FORMAT: dict[str, type[SearchState] | type[Architecture]] = {
    SearchState.FORMAT: SearchState,
    Architecture.FORMAT: Architecture,
}


def _resolve(path: Path, names: tuple[str, ...], what: str) -> Path:
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise MsnasError(f"{path}: folder holds no {' or '.join(names)} ({what} expected)")
    return regular_input(path, MsnasError, missing=f"{path}: no such file or folder")


def load_any(source: str | Path) -> Document:
    """A preset name, or a file/run folder holding a space, a state or an architecture."""
    if str(source) in PRESETS:
        return SearchSpace.preset(str(source))
    path = _resolve(Path(source), ("architecture.json", "state.json"), "a document")
    text = read_text(path, MsnasError)
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError):
        raise MsnasError(f"{path}: neither valid JSON nor YAML") from None
    except (RecursionError, ValueError):  # too deep, or an integer of thousands of digits
        raise MsnasError(f"{path}: not a usable document (too deep or huge numbers)") from None
    fmt = data.get("format") if isinstance(data, dict) else None
    if isinstance(fmt, str) and fmt in _BY_FORMAT:
        return _BY_FORMAT[fmt].from_dict(data, str(path))
    if fmt is None:
        return load_space(path)
    known = " or ".join(f"'{f}'" for f in _BY_FORMAT)
    raise MsnasError(
        f"{path}: unknown document format {shown(fmt)} (expected a space, {known}); "
        "give a file msnas-graph wrote"
    )


def load_state(source: str | Path) -> SearchState:
    """A state file, or a run folder's ``state.json``; a search space given instead is named as
    such, with what to do with it.

    >>> load_state("tiny")
    Traceback (most recent call last):
    ...
    msnas_graph.errors.MsnasError: tiny: no such file or folder
    """
    path = _resolve(Path(source), ("state.json",), "a search state")
    try:
        return SearchState.load(path)
    except StateError as exc:
        try:
            load_space(path)
        except MsnasError:
            raise exc from None
    raise StateError(
        f"{path}: a search space, not a search state: search it (msnas-graph search RUN "
        f"--space {path}) and decode the run, or decode a random state of it (msnas-graph "
        f"sample --space {path} -o state.json)"
    )


def load_states(sources: Sequence[str | Path]) -> list[SearchState]:
    """The states of several sources (:func:`load_state`), each file once: a source that
    names a file already given (another spelling of its path, a symbolic or hard link, a run
    folder and its own ``state.json``) raises :class:`~msnas_graph.errors.DecodeError`.

    >>> import os, tempfile
    >>> run = tempfile.mkdtemp()
    >>> _ = SearchState.zeros(load_space("tiny")).save(os.path.join(run, "state.json"))
    >>> load_states([run, os.path.join(run, "state.json")])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    msnas_graph.errors.DecodeError: .../state.json: the same file as ... give each run once
    """
    seen: dict[tuple[int, int], tuple[str | Path, Path]] = {}
    for source in sources:
        path = _resolve(Path(source), ("state.json",), "a search state")
        st = os.stat(path)
        if (key := (st.st_dev, st.st_ino)) in seen:
            first, first_path = seen[key]
            raise DecodeError(
                f"{source}: the same file as {first} ({first_path}); a consensus counts each "
                f"search once: give each run once"
            )
        seen[key] = (source, path)
    return [load_state(s) for s in sources]
