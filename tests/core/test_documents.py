"""On-disk formats are pinned: every document type saves to the bytes in ``golden/``.

The golden files were written by the code *before* the documents were moved onto one base
(``msnas_graph.documents``), so these tests prove the refactor kept the formats byte-identical.
The architecture and diff files were written again when decoding gained its path-score mode
(``meta["score"]``, relative scores by default): a deliberate change of their content.
"""

from __future__ import annotations

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
        "architecture": decode(a, paths=2),
        "diff": diff(a, b, paths=2),
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
