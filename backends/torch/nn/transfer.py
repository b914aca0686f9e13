"""Copy a trained supernet's weights into the final network built from its decoding.

>>> from msnas_graph.spec import SearchSpace
>>> from msnas_graph.state import SearchState
>>> from msnas_graph.decode import decode
>>> from msnas_graph.backends.torch.nn.network import build_network
>>> from msnas_graph.backends.torch.nn.supernet import build_supernet
>>> space = SearchSpace.preset("tiny", partial_k=1)
>>> arch = decode(SearchState.random(space, seed=0), paths=1)
>>> transfer_weights(build_supernet(space), build_network(arch))  # nothing left uncopied
[]
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from msnas_graph.backends.torch.nn.cells import DiscreteCell
from msnas_graph.backends.torch.nn.network import FinalNetwork
from msnas_graph.backends.torch.nn.supernet import Supernet
from msnas_graph.errors import BackendError

__all__ = ["transfer_weights"]

logger = logging.getLogger(__name__)


def _copy_module(
    src: nn.Module, dst: nn.Module, where: str, strict: bool, stats: dict[str, int]
) -> bool:
    """Load ``src``'s tensors into ``dst`` (same structure). A BatchNorm that is affine in
    ``dst`` but not in ``src`` gets scale 1 and shift 0 (the identity it computed). Counts the
    tensors copied from ``src`` or skipped in ``stats``."""
    src_sd, dst_sd = src.state_dict(), dst.state_dict()
    new: dict[str, Any] = {}
    problem = ""
    for k, v in dst_sd.items():
        if k in src_sd:
            if src_sd[k].shape != v.shape:
                problem = f"{k} has shape {tuple(src_sd[k].shape)} there, {tuple(v.shape)} here"
                break
            new[k] = src_sd[k]
            continue
        owner, _, leaf = k.rpartition(".")
        if leaf in ("weight", "bias") and isinstance(dst.get_submodule(owner), _BatchNorm):
            new[k] = torch.ones_like(v) if leaf == "weight" else torch.zeros_like(v)
            continue
        problem = f"{k} has no counterpart in the supernet"
        break
    if problem:
        if strict:
            raise BackendError(
                f"transfer_weights: {where}: {problem}; with partial_k > 1 the supernet's "
                f"operations see 1/k of the channels, so pass strict=False to copy the rest"
            )
        logger.info("transfer_weights: skipped %s (%s)", where, problem)
        stats["skipped"] = stats.get("skipped", 0) + len(dst_sd)
        return False
    dst.load_state_dict(new)
    stats["copied"] = stats.get("copied", 0) + sum(k in src_sd for k in new)
    return True


def transfer_weights(
    supernet: Supernet,
    network: FinalNetwork,
    strict: bool = True,
    stats: dict[str, int] | None = None,
) -> list[str]:
    """Copy a supernet's trained weights into the final network built from its decoding.

    Copied: the stem; the head's ``1x1`` convs of the network's output nodes and the shared
    bias; and for every kept non-skip edge, its cell's preprocess and projection and, for each
    kept block input ``(source j, op)``, the weights (and BatchNorm statistics) of operation
    ``op`` of the supernet's mixed op ``mixed[b][j]`` of the same edge. Operations built with
    ``affine=False`` in the supernet give scale 1 / shift 0 to the network's affine BatchNorms.
    With ``partial_k=1`` this makes the network, in eval mode, compute what the supernet
    computes under :meth:`ArchWeights.from_architecture` (the parity test).

    With ``partial_k > 1`` the supernet's operations have ``C / k`` channels and cannot be
    copied: ``strict=True`` raises :class:`BackendError`, ``strict=False`` leaves them at their
    initialisation. Returns the names of the network's modules left uncopied (the
    ``concat`` fusion modules, which have no counterpart, and any skipped operation). A
    ``stats`` dict receives the tensor counts ``copied`` (from the supernet) and ``skipped``
    (left at their initialisation).
    """
    stats = {} if stats is None else stats
    stats.setdefault("copied", 0)
    stats.setdefault("skipped", 0)
    arch = network.arch
    if arch.space != supernet.space:
        raise BackendError(
            f"transfer_weights: the network's space '{arch.space.name}' differs from the "
            f"supernet's space '{supernet.space.name}'; decode the supernet's own state"
        )
    if arch.space.cell_glue != "darts":
        raise BackendError(
            f"transfer_weights: the network's '{arch.space.cell_glue}' cell glue leaves out the "
            f"supernet's preprocess and projection; build the network with the darts glue"
        )
    skipped: list[str] = []
    _copy_module(supernet.stem, network.stem, "stem", True, stats)
    with torch.no_grad():
        network.head.bias.copy_(supernet.head.bias)
    stats["copied"] += 1
    for key, conv in network.head.convs.items():
        _copy_module(supernet.head.convs[key], conv, f"head.convs.{key}", True, stats)
    ops = supernet.space.ops
    for key, cell in network.cells.items():
        assert isinstance(cell, DiscreteCell)
        sc = supernet.cells[key]
        _copy_module(sc.preprocess, cell.preprocess, f"cells.{key}.preprocess", True, stats)
        _copy_module(sc.projection, cell.projection, f"cells.{key}.projection", True, stats)
        for b, inputs in enumerate(cell.genotype.blocks):
            for i, inp in enumerate(inputs):
                src_op = sc.mixed[b][inp.source].ops[ops.index(inp.op)]
                name = f"cells.{key}.blocks.{b}.ops.{i}"
                if not _copy_module(src_op, cell.blocks[b].ops[i], name, strict, stats):
                    skipped.append(name)
    skipped.extend(f"fusions.{k}" for k in network.fusions)
    stats["skipped"] += sum(len(m.state_dict()) for m in network.fusions.values())
    return skipped
