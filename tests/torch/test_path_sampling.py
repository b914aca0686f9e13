"""``search --path-sampling gumbel``: the network phase runs one sampled input per node."""

from __future__ import annotations

import json

import pytest
import torch

from msnas_graph.backends.torch import build_supernet
from msnas_graph.backends.torch.training import SearchConfig, search
from msnas_graph.errors import RunError
from msnas_graph.spec import SearchSpace
from msnas_graph.state import SearchState

TINY = SearchSpace.preset("tiny")


def config(**kw: object) -> SearchConfig:
    base: dict[str, object] = dict(
        space=TINY, data="phantom:8", batch_size=1, max_steps_per_epoch=2, device="cpu",
        warmup_steps=1, arch_steps=(2, 3), arch_lr=0.05,
    )  # fmt: skip
    base.update(kw)
    return SearchConfig(**base)  # type: ignore[arg-type]


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_supernet(TINY)
    state = SearchState.random(TINY, seed=3, scale=2.0)
    net.load_state(state)
    return net


def test_a_sampled_forward_is_the_forward_under_one_hot_beta() -> None:
    net, x = _net(), torch.randn(2, 1, 32, 32)
    net.sample_beta = 1.0
    net.train()
    torch.manual_seed(7)
    sampled = net(x)
    torch.manual_seed(7)
    weights = net.sampled_weights(1.0)
    beta = [v.detach() for v in weights.beta.values()]
    assert all(float(v.sum()) == 1.0 and float(v.max()) == 1.0 for v in beta)
    assert torch.equal(sampled, net(x, weights=weights))
    # the straight-through estimator: the logits of every node get a gradient
    sampled.sum().backward()
    grads = [p.grad for p in net.network_parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_evaluation_and_the_default_weigh_every_input() -> None:
    net, x = _net(), torch.randn(2, 1, 32, 32)
    net.eval()
    with torch.no_grad():
        plain = net(x)
        net.sample_beta = 1.0  # ignored outside training mode
        assert torch.equal(net(x), plain)
        assert torch.equal(net(x, weights=net.arch_weights()), plain)


def test_the_cell_phase_is_the_papers_and_the_network_phase_samples(tmp_path) -> None:
    plain = search(config(), tmp_path / "softmax", progress=False)
    gumbel = search(config(path_sampling="gumbel"), tmp_path / "gumbel", progress=False)
    assert config().path_sampling == "softmax"
    states = [
        [SearchState.load(p) for p in sorted((tmp_path / run / "states").glob("*.json"))]
        for run in ("softmax", "gumbel")
    ]
    # [w c] [c n] [n n]: identical until the first network step, different after it
    assert states[0][0] == states[1][0]
    assert plain.state != gumbel.state and states[0][-1] != states[1][-1]
    saved = json.loads((tmp_path / "gumbel" / "config.json").read_text())
    assert saved["path_sampling"] == "gumbel"


def test_a_gumbel_search_resumes_to_the_same_state(tmp_path) -> None:
    cfg = config(path_sampling="gumbel")
    whole = search(cfg, tmp_path / "whole", progress=False)

    def stop(row: dict) -> None:
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    run = tmp_path / "parts"
    with pytest.raises(KeyboardInterrupt):
        search(cfg, run, progress=False, on_epoch_end=stop)
    resumed = search(None, run, resume=True, progress=False)
    assert resumed.state.content_hash == whole.state.content_hash


def test_bad_and_legacy_values() -> None:
    with pytest.raises(RunError, match="path sampling") as info:
        config(path_sampling="gumbell")
    assert "\n" not in str(info.value) and "gumbel" in str(info.value)
    data = config().to_dict()
    del data["path_sampling"]  # a config.json written before the field: the paper's sum
    assert SearchConfig.from_dict(data).path_sampling == "softmax"


def test_a_sampled_phase_is_validated_on_the_path_of_the_strongest_inputs(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    search_module = importlib.import_module("msnas_graph.backends.torch.training.search")
    real, seen = search_module.validate, []

    def validate(model, *args, **kwargs):
        fixed = model.fixed_weights
        seen.append(None if fixed is None else [v.tolist() for v in fixed.beta.values()])
        if fixed is not None:  # one-hot at the strongest input of every node
            want = model.argmax_weights()
            assert all(torch.equal(fixed.beta[n], want.beta[n]) for n in want.beta)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(search_module, "validate", validate)
    search(config(path_sampling="gumbel"), tmp_path / "gumbel", progress=False)
    # [w c] [c n] [n n]: the epochs that end in the network phase validate one path
    assert [s is None for s in seen] == [True, False, False]
    assert all({x for v in beta for x in v} <= {0.0, 1.0} for beta in seen[1:])
    seen.clear()
    search(config(), tmp_path / "softmax", progress=False)
    assert seen == [None, None, None]  # the paper's sum is validated as it is trained
