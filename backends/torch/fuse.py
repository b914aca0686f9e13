"""Inference-time rewrites of a trained network: BatchNorm folded into the convolution before
it, and the channels-last memory layout.

In eval mode a BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) *
gamma + beta``; after a convolution it folds into that convolution's weight and bias
(:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`), so the network runs one pass over memory
fewer per folded pair and exports to ONNX without BatchNorm nodes. Which pairs fold:

* adjacent ``(Conv, BatchNorm)`` children of an :class:`~torch.nn.Sequential` (the separable
  convolutions of the operations, the U-Net's double convolutions);
* the attribute pairs a module class declares in ``fuse_pairs`` (e.g. ``(("conv", "bn"),)``
  on :class:`~msnas_graph.backends.torch.nn.blocks.Stem`, ``Preprocess``, ``Projection`` and
  ``ConcatFusion``, whose forward applies ``bn`` right after ``conv``). A user module opts in
  the same way.

The folded BatchNorm is replaced by :class:`~torch.nn.Identity`. The model handed in is never
modified: :func:`fuse_for_inference` works on a copy.

>>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()).eval()
>>> fused = fuse_for_inference(net)
>>> [type(m).__name__ for m in fused]
['Conv2d', 'Identity', 'ReLU']
>>> x = torch.randn(2, 1, 8, 8)
>>> bool(torch.allclose(fused(x), net(x), atol=1e-6))
True
"""

from __future__ import annotations

import copy
import itertools
from typing import cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batch_norms", "fuse_for_inference", "split_concat_convs"]


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        isinstance(conv, _ConvNd)
        and not conv.transposed
        and isinstance(bn, _BatchNorm)
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
    )


def _fold(conv: nn.Module, bn: nn.Module) -> nn.Module:
    return fuse_conv_bn_eval(cast(_ConvNd, conv), cast(_BatchNorm, bn))


def fold_batch_norms(module: nn.Module) -> int:
    """Fold every foldable ``(conv, BatchNorm)`` pair of ``module`` in place; the number folded.

    ``module`` must be in eval mode (folding uses the running statistics, which is what eval
    mode computes); a module in training mode raises :class:`ValueError`, since the fold would
    change what it computes.

    >>> seq = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)).eval()
    >>> fold_batch_norms(seq), type(seq[1]).__name__
    (1, 'Identity')
    """
    if any(m.training for m in module.modules()):
        raise ValueError(
            "fold_batch_norms: the module is in training mode; call .eval() first (folding "
            "uses the BatchNorm running statistics)"
        )
    folded = 0
    for parent in list(module.modules()):
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            for a, b in itertools.pairwise(names):
                conv, bn = parent._modules[a], parent._modules[b]
                if conv is not None and bn is not None and _foldable(conv, bn):
                    parent._modules[a] = _fold(conv, bn)
                    parent._modules[b] = nn.Identity()
                    folded += 1
        for conv_name, bn_name in getattr(type(parent), "fuse_pairs", ()):
            pair = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
            conv2, bn2 = pair
            if conv2 is not None and bn2 is not None and _foldable(conv2, bn2):
                setattr(parent, conv_name, _fold(conv2, bn2))
                setattr(parent, bn_name, nn.Identity())
                folded += 1
    return folded


def split_concat_convs(module: nn.Module) -> int:
    """Replace, in place, each convolution that reads a concatenation (the attribute a module
    class names in ``concat_conv``, over ``module.parts`` equal inputs: ``Projection``,
    ``ConcatFusion``) by a :class:`~msnas_graph.backends.torch.nn.blocks.SplitConv`, the sum of
    one convolution per input; the number replaced. Same outputs up to float rounding, without
    the concatenated copy.

    >>> from msnas_graph.backends.torch.nn.blocks import ConcatFusion
    >>> fusion = ConcatFusion(2, 4).eval()
    >>> split_concat_convs(fusion), type(fusion.conv).__name__
    (1, 'SplitConv')
    """
    from msnas_graph.backends.torch.nn.blocks import SplitConv

    replaced = 0
    for parent in list(module.modules()):
        name = getattr(type(parent), "concat_conv", None)
        parts = getattr(parent, "parts", 1)
        conv = getattr(parent, name, None) if name else None
        if (
            name
            and isinstance(conv, _ConvNd)
            and not conv.transposed
            and conv.groups == 1
            and parts > 1
            and conv.in_channels % parts == 0
        ):
            setattr(parent, name, SplitConv.from_conv(conv, parts))
            replaced += 1
    return replaced


def fuse_for_inference(
    model: nn.Module,
    *,
    channels_last: bool = False,
    split_concat: bool = False,
) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorm folded into the convolutions before it
    (:func:`fold_batch_norms`) and, with ``channels_last``, parameters in the channels-last
    layout (4-D inputs should then be ``x.contiguous(memory_format=torch.channels_last)``;
    other layouts still work, converted on the fly) and, with ``split_concat``, the
    convolutions that read a concatenation split into a sum (:func:`split_concat_convs`).
    Outputs equal ``model.eval()``'s up to float rounding
    (about 1e-6 relative).

    >>> from msnas_graph.backends.torch.nn.unet import UNet
    >>> unet = UNet(1, 2, base_channels=4, depth=2).eval()
    >>> x = torch.randn(1, 1, 16, 16)
    >>> bool(torch.allclose(fuse_for_inference(unet)(x), unet(x), atol=1e-5))
    True
    """
    fused = copy.deepcopy(model).eval()
    fold_batch_norms(fused)
    if split_concat:
        split_concat_convs(fused)
    for p in fused.parameters():
        p.requires_grad_(False)
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return fused
