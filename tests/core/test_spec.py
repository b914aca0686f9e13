from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msnas_graph.errors import SpecError
from msnas_graph.spec import PRESETS, SearchSpace, load_space


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_json_and_yaml(name: str) -> None:
    space = SearchSpace.preset(name)
    assert SearchSpace.from_json(space.to_json()) == space
    assert SearchSpace.from_yaml(space.to_yaml()) == space


def test_paper_preset_matches_the_paper() -> None:
    s = SearchSpace.preset("paper")
    assert (s.layers, s.scales, s.blocks, s.partial_k, s.input_size) == (10, 5, 3, 4, 256)
    assert s.decodable_ops == (
        "sep_conv_3x3",
        "sep_conv_5x5",
        "dil_conv_3x3",
        "avg_pool_3x3",
        "skip_connect",
    )
    assert "none" in s.ops


@given(
    layers=st.integers(1, 12),
    scales=st.integers(1, 5),
    k=st.sampled_from([1, 2, 4]),
    blocks=st.integers(1, 4),
)
def test_round_trip_is_identity(layers: int, scales: int, k: int, blocks: int) -> None:
    space = SearchSpace(
        layers=layers, scales=scales, channels=8 * k, blocks=blocks, partial_k=k, input_size=64
    )
    assert SearchSpace.from_json(space.to_json()) == space
    assert SearchSpace.from_yaml(space.to_yaml()) == space


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"ops": ["sep_conv_3x3", "sep_conv_7x7"]}, "ops: unknown operation 'sep_conv_7x7'"),
        ({"partial_k": 3}, "partial_k=3 does not divide channels=32"),
        ({"scales": 10}, "not divisible by 2**(scales-1)=512"),
        ({"output_scales": [7]}, "scale 7 does not exist"),
        ({"layerz": 3}, "layerz: unknown field (did you mean 'layers'?)"),
        ({"schema_version": 9}, "schema_version 9 is not supported"),
        ({"ops": ["none"]}, "at least one operation besides 'none'"),
        ({"inputs_per_block": 5}, "inputs_per_block=5 exceeds"),
        ({"edge_kinds": ["skip"]}, "skip alone has no cell"),
    ],
)
def test_bad_specs_give_one_line_errors(override: dict, message: str) -> None:
    with pytest.raises(SpecError) as info:
        SearchSpace.preset("paper", **override)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_output_scale_unreachable_in_few_layers() -> None:
    with pytest.raises(SpecError, match="cannot be reached in 1 layers"):
        SearchSpace(layers=1, scales=3, channels=8, output_scales=(2,), input_size=64)


def test_unknown_preset_suggests() -> None:
    with pytest.raises(SpecError, match="did you mean 'paper'"):
        SearchSpace.preset("papr")


def test_load_space_from_files(tmp_path) -> None:
    space = SearchSpace.preset("quick", num_classes=3)
    y = space.save(tmp_path / "s.yaml")
    j = space.save(tmp_path / "s.json")
    assert load_space(y) == space == load_space(j)
    assert json.loads(j.read_text())["schema_version"] == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("layers: [1,\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_space(bad)
    with pytest.raises(SpecError, match="no such spec file"):
        load_space(tmp_path / "missing.yaml")
