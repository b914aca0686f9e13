"""Decoded cells: which inputs and operations each block keeps.

>>> g = CellGenotype("keep", ((BlockInput(0, "sep_conv_3x3", 0.4),),
...                          (BlockInput(1, "skip_connect", 0.3),)))
>>> print(g)
keep: b1 = sep_conv_3x3(in); b2 = skip_connect(b1)
>>> CellGenotype.from_dict(g.to_dict()) == g
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ArchitectureError
from .layout import source_name

__all__ = ["BlockInput", "CellGenotype"]


@dataclass(frozen=True)
class BlockInput:
    """One kept input of a block: ``op`` applied to ``source`` (0 = cell input, ``j`` = block
    ``j``'s output), with the decoding weight ``softmax(p)_j * softmax(alpha_j)_op``."""

    source: int
    op: str
    weight: float = 0.0

    @property
    def source_name(self) -> str:
        """``"in"`` or ``"b{j}"``."""
        return source_name(self.source)


@dataclass(frozen=True)
class CellGenotype:
    """A discrete cell: ``blocks[b]`` lists the kept inputs of block ``b + 1``; the output is the
    concatenation of all blocks (then a 1x1 projection back to the node width)."""

    cell_type: str
    blocks: tuple[tuple[BlockInput, ...], ...]

    def __str__(self) -> str:
        parts = []
        for b, inputs in enumerate(self.blocks, start=1):
            terms = " + ".join(f"{i.op}({i.source_name})" for i in inputs)
            parts.append(f"b{b} = {terms}")
        return f"{self.cell_type}: " + "; ".join(parts)

    def ops(self) -> set[str]:
        """Operation names used."""
        return {i.op for block in self.blocks for i in block}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "cell_type": self.cell_type,
            "blocks": [
                [{"source": i.source, "op": i.op, "weight": i.weight} for i in block]
                for block in self.blocks
            ],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "cell") -> CellGenotype:
        """Parse :meth:`to_dict` output; :class:`ArchitectureError` names the bad field."""
        try:
            blocks = tuple(
                tuple(
                    BlockInput(int(i["source"]), str(i["op"]), float(i.get("weight", 0.0)))
                    for i in block
                )
                for block in data["blocks"]
            )
            return cls(str(data["cell_type"]), blocks)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchitectureError(f"{where}: malformed cell genotype ({exc!r})") from None
