"""On-disk formats are pinned: every document type saves to the bytes in ``golden/``.

The golden files were written by the code *before* the documents were moved onto one base
(``msnas_graph.documents``), so these tests prove the refactor kept the formats byte-identical.
The architecture and diff files were written again when decoding gained its path-score mode
(``meta["score"]``, relative scores by default), and again when the architecture's content hash
stopped covering the float weights and scores (``architecture_legacy_hash.json`` keeps the file
as written before, with its old hash): deliberate changes of their content.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from msnas_graph.architecture import Architecture
from msnas_graph.decode import decode
from msnas_graph.diff import diff
from msnas_graph.spec import SearchSpace, load_space
from msnas_graph.state import SearchState

GOLDEN = Path(__file__).parent / "golden"


def _documents() -> dict[str, object]:
    space = SearchSpace.preset("tiny")
    a = SearchState.random(space, seed=0)
    a.meta["epoch"] = 3
    b = SearchState.random(space, seed=1)
    return {
        "space": space,
        "state": a,
        "architecture": decode(a, paths=2, score="relative"),  # the files' score when pinned
        "diff": diff(decode(a, paths=2, score="relative"), decode(b, paths=2, score="relative")),
    }


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("space", ".json"),
        ("space", ".yaml"),
        ("state", ".json"),
        ("architecture", ".json"),
        ("diff", ".json"),
    ],
)
def test_saved_bytes_equal_golden(tmp_path: Path, name: str, suffix: str) -> None:
    doc = _documents()[name]
    path = tmp_path / f"{name}{suffix}"
    if hasattr(doc, "save"):
        doc.save(path)
    else:
        path.write_text(doc.to_json())  # type: ignore[attr-defined]
    assert path.read_bytes() == (GOLDEN / f"{name}{suffix}").read_bytes()


@pytest.mark.parametrize(
    ("name", "load"),
    [
        ("space.json", load_space),
        ("space.yaml", load_space),
        ("state.json", SearchState.load),
        ("architecture.json", Architecture.load),
    ],
)
def test_load_then_save_is_identity(tmp_path: Path, name: str, load: object) -> None:
    doc = load(GOLDEN / name)  # type: ignore[operator]
    out = doc.save(tmp_path / name)
    assert out.read_bytes() == (GOLDEN / name).read_bytes()


@pytest.mark.parametrize("cls", [SearchState, Architecture, SearchSpace])
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe\x00\x01", "not a text file (expected JSON or YAML)"),
        (b'{"format": ', "not valid JSON (Expecting value at line 1)"),
        (None, "no such"),
    ],
)
def test_bad_files_fail_in_one_line(
    tmp_path: Path, cls: type, content: bytes | None, message: str
) -> None:
    path = tmp_path / "doc.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(cls.ERROR) as info:
        cls.load(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


@pytest.mark.parametrize(
    ("cls", "hint"),
    [(SearchState, "re-create it"), (Architecture, "decode it again")],
)
def test_wrong_version_and_format_name_the_fix(cls: type, hint: str) -> None:
    data = {"format": cls.FORMAT, "schema_version": 9}
    with pytest.raises(cls.ERROR, match=rf"^x: schema_version 9 is not supported .*{hint}"):
        cls.from_dict(data, "x")
    with pytest.raises(cls.ERROR, match=rf"^x: not {cls.WHAT} \(format 'other'.*create one with"):
        cls.from_dict({"format": "other"}, "x")


def _nudged(x: float, ulps: int) -> float:
    for _ in range(abs(ulps)):
        x = math.nextafter(x, math.inf if ulps > 0 else -math.inf)
    return x


@pytest.mark.parametrize("ulps", [1, -1, 3])
def test_architecture_hash_ignores_the_last_bits_of_weights_and_scores(ulps: int) -> None:
    # numpy's SIMD code paths (AVX-512 or not) change the last bits of softmax products: the
    # same decode must keep its hash on every machine
    arch = _documents()["architecture"]
    data = arch.to_dict()
    for cell in data["cells"].values():
        for block in cell["blocks"]:
            for inp in block:
                inp["weight"] = _nudged(inp["weight"], ulps)
    for p in data["paths"]:
        p["path_score"] = _nudged(p["path_score"], ulps)
    nudged = Architecture.from_dict(data, "nudged")  # the stored hash still matches
    assert nudged != arch and nudged.content_hash == arch.content_hash


def test_architecture_hash_changes_with_the_structure() -> None:
    arch = _documents()["architecture"]
    data = arch.to_dict()
    data.pop("content_hash")
    cell = next(c for c in data["cells"].values() if c["blocks"][0][0]["op"] != "avg_pool_3x3")
    cell["blocks"][0][0]["op"] = "avg_pool_3x3"
    assert Architecture.from_dict(data, "x").content_hash != arch.content_hash
    data = arch.to_dict()
    data.pop("content_hash")
    data["paths"] = data["paths"][:1]
    assert Architecture.from_dict(data, "x").content_hash != arch.content_hash


def test_files_with_the_old_hash_still_load(tmp_path: Path) -> None:
    legacy = GOLDEN / "architecture_legacy_hash.json"
    arch = Architecture.load(legacy)
    assert arch == Architecture.load(GOLDEN / "architecture.json")
    assert json.loads(legacy.read_text())["content_hash"] != arch.content_hash
    # saved again, it carries the new hash: the current golden bytes
    out = arch.save(tmp_path / "a.json")
    assert out.read_bytes() == (GOLDEN / "architecture.json").read_bytes()
    # an edit is still caught against the old hash
    data = json.loads(legacy.read_text())
    data["paths"][0]["path_score"] += 0.5
    with pytest.raises(Architecture.ERROR, match="does not match the content"):
        Architecture.from_dict(data, "edited.json")


def test_json_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Issue 18 item 12: a UTF-8 BOM (as some Windows editors write) is not an error."""
    from msnas_graph.data.splits import load_folds
    from msnas_graph.io import load_any, load_state

    state = SearchState.random(SearchSpace.preset("tiny"), seed=1)
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + state.to_json().encode())
    assert load_state(path).content_hash == state.content_hash
    assert SearchState.load(path).content_hash == state.content_hash
    assert isinstance(load_any(path), SearchState)
    folds = tmp_path / "folds.json"
    folds.write_bytes(b"\xef\xbb\xbf" + b'{"folds": {"a.png": 0}}')
    assert load_folds(folds) == {"a.png": 0}
    space = tmp_path / "space.yaml"
    space.write_bytes(b"\xef\xbb\xbf" + b"layers: 2\nscales: 2\nchannels: 4\npartial_k: 2\n")
    assert load_space(space).layers == 2


def test_a_space_given_as_a_state_is_named(tmp_path: Path) -> None:
    """Issue 18 item 12: ``decode space.yaml`` says it is a space and what to do with it."""
    from msnas_graph.errors import StateError
    from msnas_graph.io import load_state

    text = "layers: 2\nscales: 2\nchannels: 4\npartial_k: 2\n"
    (tmp_path / "s.yaml").write_text(text)
    (tmp_path / "s.json").write_text(json.dumps(load_space(tmp_path / "s.yaml").to_dict()))
    for name in ("s.yaml", "s.json"):
        with pytest.raises(StateError, match="a search space, not a search state.*sample --space"):
            load_state(tmp_path / name)
    (tmp_path / "bad.json").write_text('{"format": "x"}')
    with pytest.raises(StateError, match="not a search state"):
        load_state(tmp_path / "bad.json")
