"""The README's Python blocks that are not doctests (the plug-in snippet) run as written: a
newcomer pastes them into a file, so a missing import would fail here (issue 17)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from msnas_graph.backends.torch import build_op, registered_ops, unregister_op

README = Path(__file__).parents[2] / "README.md"


def _plain_python_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    return [b for b in blocks if ">>>" not in b]


def test_the_readme_has_a_plugin_snippet() -> None:
    assert any("register_op" in b for b in _plain_python_blocks())


@pytest.mark.parametrize("block", _plain_python_blocks(), ids=lambda b: b.split("\n")[0][:40])
def test_a_readme_python_block_runs_alone_and_its_operation_builds(block: str) -> None:
    before = set(registered_ops())
    try:
        exec(compile(block, str(README), "exec"), {"__name__": "readme_snippet"})
        for name in set(registered_ops()) - before:  # as a supernet builds it (affine=False)
            x = torch.randn(1, 4, 8, 8)
            assert build_op(name, 4, affine=False)(x).shape == x.shape
    finally:
        for name in set(registered_ops()) - before:
            unregister_op(name)
