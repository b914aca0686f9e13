from __future__ import annotations

from msnas_graph.counting import count_cells, count_space
from msnas_graph.spec import SearchSpace


def test_paper_counts_are_golden() -> None:
    c = count_space(SearchSpace.preset("paper"))
    assert c.cells_per_type == {"contract": 750, "keep": 750, "expand": 750}
    assert c.cells == 421_875_000  # the paper's 4.22e8
    assert c.paths == 58_785
    assert c.architectures == 58_785 * 421_875_000


def test_cells_per_type_formula() -> None:
    # two inputs per block (DARTS): C(1,1)*5 * C(2,2)*25 * C(3,2)*25
    assert count_cells(SearchSpace.preset("paper", inputs_per_block=2)) == 5 * 25 * 75
    # 'none' never counts
    assert count_cells(SearchSpace.preset("tiny")) == 3 * (2 * 3)


def test_counts_are_exact_python_ints_on_huge_spaces() -> None:
    c = count_space(SearchSpace(layers=200, scales=8, channels=4, partial_k=1, input_size=256))
    assert isinstance(c.paths, int) and c.paths > 2**64
    assert "architectures" in str(c)
