"""Every field of the run configs is checked against its annotation: a wrong type is one
``RunError`` line (not a traceback, not a silently accepted string), and a config that loads
holds plain Python values its JSON can carry."""

import json
from pathlib import Path

import numpy as np
import pytest

from msnas_graph.backends.torch.training.config import SearchConfig, TrainConfig
from msnas_graph.errors import RunError


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"lr": "abc"}, "lr='abc' must be a number$"),
        ({"weight_decay": "abc"}, "weight_decay='abc' must be a number$"),
        ({"augment": "false"}, "augment='false' must be true or false$"),
        ({"augment": 0}, "augment=0 must be true or false$"),
        ({"seed": 1.5}, "seed=1.5 must be an integer$"),
        ({"batch_size": True}, "batch_size=True must be an integer$"),
        ({"epochs": 5}, "epochs=5 must be a list of 2 integers or null$"),
        ({"epochs": [1, "a"]}, r"epochs=\[1, 'a'\] must be a list of 2 integers or null$"),
        ({"arch_betas": [0.5]}, r"arch_betas=\[0.5\] must be a list of 2 numbers$"),
        ({"max_steps_per_epoch": "3"}, "max_steps_per_epoch='3' must be an integer or null$"),
        ({"device": 3}, "device=3 must be a string$"),
        ({"space": 5}, "space=5 must be a SearchSpace or a string$"),
        ({"weight_decay": -1e-4}, r"weight_decay=-0.0001 must be a number >= 0$"),
        ({"momentum": float("nan")}, "momentum=nan must be a number >= 0$"),
        ({"grad_clip": 0.0}, r"grad_clip=0.0 must be a number > 0 \(or null: off\)$"),
    ],
)
def test_a_search_config_field_of_the_wrong_type_is_one_line(kw, message):
    with pytest.raises(RunError, match=message) as info:
        SearchConfig(**{"space": "tiny", **kw})
    assert str(info.value).startswith("search config: ") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"lr": "abc"}, "lr='abc' must be a number or null$"),
        ({"model": 3}, "model=3 must be a string or an Architecture$"),
        ({"epochs": "10"}, "epochs='10' must be an integer$"),
        ({"compile": "yes"}, "compile='yes' must be true or false$"),
        ({"data": ["x"] * 10**5}, r"data=\['x', 'x', .{50,}\.\.\. must be a string$"),
        ({"lr_min": float("inf")}, "lr_min=inf must be a number >= 0$"),
    ],
)
def test_a_train_config_field_of_the_wrong_type_is_one_line(kw, message):
    with pytest.raises(RunError, match=message) as info:
        TrainConfig(**kw)
    assert str(info.value).startswith("train config: ") and "\n" not in str(info.value)


def test_numbers_are_normalised_to_what_json_carries():
    """NumPy numbers (a user's sweep), integral floats and lists become plain values."""
    cfg = SearchConfig(
        space="tiny", seed=np.int64(3), epochs=[1.0, 2], lr=np.float32(0.5), arch_betas=[0, 1]
    )
    assert (cfg.seed, cfg.epochs, cfg.arch_betas) == (3, (1, 2), (0.0, 1.0))
    assert type(cfg.seed) is int and type(cfg.lr) is float
    assert json.loads(cfg.to_json())["seed"] == 3  # a NumPy integer would not serialise
    train = TrainConfig(epochs=np.int32(4), seed=2.0, grad_clip=None, data=Path("phantom:8"))
    assert (train.epochs, train.seed, train.grad_clip, train.data) == (4, 2, None, "phantom:8")
    assert SearchConfig.from_dict(cfg.to_dict()) == cfg


def test_a_hand_edited_config_json_names_the_file_and_the_field(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TrainConfig().to_dict(), "weight_decay": "1e-4"}))
    with pytest.raises(RunError) as info:
        TrainConfig.load(path)
    assert str(info.value) == (f"{path}: train config: weight_decay='1e-4' must be a number")
