"""Plain-text tables shared by the commands and the benchmark scripts.

>>> print(markdown_table([{"model": "U-Net(16, 4)", "Dice": "0.951"}, {"model": "MS-NAS(3)"}]))
| model | Dice |
|---|---|
| U-Net(16, 4) | 0.951 |
| MS-NAS(3) |  |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["markdown_table"]


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table of ``rows`` (columns: the union of the rows' keys, in order)."""
    cols = list(columns) if columns is not None else list(dict.fromkeys(c for r in rows for c in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
