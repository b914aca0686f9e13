"""Fuzzing the document loaders (issue 9): whatever the text or the JSON value, the space,
state, architecture and ``load_any`` loaders return a document or raise the project's own
one-line error; nothing else escapes (no ValueError, RecursionError, OverflowError, ...)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msnas_graph.architecture import Architecture
from msnas_graph.decode import decode
from msnas_graph.errors import MsnasError
from msnas_graph.io import load_any
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

TINY = SearchSpace.preset("tiny")
STATE = SearchState.random(TINY, seed=0).to_dict()
ARCH = decode(SearchState.random(TINY, seed=0), 2).to_dict()
ARCH.pop("content_hash")

#: Each document kind with its loader.
EVERY_DOCUMENT = pytest.mark.parametrize(
    ("doc", "loader"),
    [
        (STATE, SearchState.from_dict),
        (ARCH, Architecture.from_dict),
        (TINY.to_dict(), SearchSpace.from_dict),
    ],
    ids=["state", "architecture", "space"],
)

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([10**4200, -1, 0, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    if not path:
        return value
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def _only_project_errors(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except MsnasError as exc:
        assert "\n" not in str(exc)


@EVERY_DOCUMENT
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_mutated_document_loads_or_fails_in_one_project_line(
    doc: dict[str, Any], loader: Any, data: st.DataObject
) -> None:
    path = data.draw(st.sampled_from(_paths(doc)))
    value = data.draw(values)
    mutated = _mutate(doc, path, value)
    _only_project_errors(loader, mutated, "f.json")


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200) | st.sampled_from(["[" * 5000, "{" * 3000, "9" * 5000]))
def test_any_text_loads_or_fails_in_one_project_line(text: str) -> None:
    _only_project_errors(SearchState.from_json, text, "s.json")
    _only_project_errors(Architecture.from_json, text, "a.json")
    _only_project_errors(SearchSpace.from_yaml, text, "s.yaml")
    _only_project_errors(SearchSpace.from_json, text, "s.json")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=200), suffix=st.sampled_from([".json", ".yaml", ".txt"]))
def test_any_file_given_to_load_any_fails_in_one_project_line(
    tmp_path: Path, raw: bytes, suffix: str
) -> None:
    path = tmp_path / f"f{suffix}"
    path.write_bytes(raw)
    _only_project_errors(load_any, path)


def test_a_loaded_state_never_holds_non_finite_logits() -> None:
    bad = _mutate(STATE, ("alpha_logits", "contract", 0, 0, 0), math.nan)
    with pytest.raises(MsnasError, match="finite"):
        SearchState.from_dict(bad, "s.json")


@EVERY_DOCUMENT
@pytest.mark.parametrize("key", ["a\nb", "\n", "x" * 300, "\r\u2028"])
def test_a_key_with_a_line_break_is_shown_on_one_line(doc: Any, loader: Any, key: str) -> None:
    """Every place of every document gets a mapping whose key holds a line break (hypothesis
    found ``{'\\n': None}`` in the state's logits): the message stays one line."""
    for path in _paths(doc):
        _only_project_errors(loader, _mutate(doc, path, {key: None}), "f.json")
        _only_project_errors(loader, _mutate(doc, path, {key: 1.0}), "f.json")
        _only_project_errors(loader, _mutate(doc, path, [{key: [1.0]}]), "f.json")
