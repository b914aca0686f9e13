"""No library file over 500 lines and no function over 80 (issue 17), read with ``ast``.

The library is ``msnas_graph/``, ``backends/`` and ``cli/``; a function's length is
``end_lineno - lineno + 1`` (from its ``def`` line to its last line; nested functions and
methods count on their own). Run this file as a script to list what is over the limits::

    python3 tests/core/test_code_size.py
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIBRARY = ("msnas_graph", "backends", "cli")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80


def _library_files(root: Path) -> list[Path]:
    return sorted(p for d in LIBRARY for p in (root / d).rglob("*.py"))


def long_files(root: Path = REPO, limit: int = MAX_FILE_LINES) -> dict[str, int]:
    """``{relative path: lines}`` of the library files over ``limit`` lines."""
    sizes = {
        p.relative_to(root).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
        for p in _library_files(root)
    }
    return {path: n for path, n in sizes.items() if n > limit}


def long_functions(root: Path = REPO, limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """``{"path::name": lines}`` of the library functions (methods, nested ones) over
    ``limit`` lines."""
    found: dict[str, int] = {}
    for path in _library_files(root):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > limit:
                    found[f"{path.relative_to(root).as_posix()}::{node.name}"] = lines
    return found


def test_the_measure_sees_long_files_and_functions(tmp_path: Path) -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(80))
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "big.py").write_text(
        f"def short():\n    pass\n\n\nclass A:\n    def long(self):\n{body}\n"
    )
    assert long_functions(tmp_path) == {"cli/big.py::long": 81}
    assert long_files(tmp_path, limit=85) == {"cli/big.py": 86}
    assert long_files(tmp_path) == {}


def test_no_library_file_over_500_lines() -> None:
    found = long_files()
    assert found == {}, f"files over {MAX_FILE_LINES} lines (split them along a seam): {found}"


def test_no_library_function_over_80_lines() -> None:
    found = long_functions()
    assert found == {}, f"functions over {MAX_FUNCTION_LINES} lines (split them): {found}"


if __name__ == "__main__":
    for what, found in (("files", long_files()), ("functions", long_functions())):
        print(f"{what} over the limit:")
        for name, lines in sorted(found.items(), key=lambda kv: -kv[1]):
            print(f"  {lines:4d}  {name}")
