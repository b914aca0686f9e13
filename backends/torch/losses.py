"""Segmentation losses (soft Dice + cross-entropy) and a batch Dice score for validation.

Both are computed in float32 whatever the autocast dtype of the logits. Pixels labelled
``ignore_index`` (``-100``, unlabelled cases) count in neither term.

>>> logits = torch.zeros(2, 3, 4, 4)
>>> target = torch.zeros(2, 4, 4, dtype=torch.long)
>>> round(float(DiceCELoss(3)(logits, target)), 4)  # CE log(3) + Dice loss 1 (all false positives)
2.0986
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DiceCELoss", "dice_scores", "soft_dice_loss"]

IGNORE_INDEX = -100


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    include_background: bool = False,
    smooth: float = 1e-5,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """``1 - mean_c dice_c`` of the softmax probabilities, pooled over the batch ("batch Dice").

    Classes with no target pixel in the batch and no predicted mass score about 1 (thanks to
    ``smooth``), so they neither reward nor punish. ``include_background=False`` averages over
    the foreground classes only (as the reported metric does).
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    valid = target != ignore_index
    onehot = F.one_hot(target.clamp(min=0), num_classes).movedim(-1, 1).float()
    mask = valid.unsqueeze(1).float()
    probs = probs * mask
    onehot = onehot * mask
    dims = [0, *range(2, logits.dim())]
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2.0 * inter + smooth) / (denom + smooth)
    if not include_background and num_classes > 1:
        dice = dice[1:]
    return 1.0 - dice.mean()


class DiceCELoss(nn.Module):
    """``ce_weight * CE + dice_weight * soft Dice loss`` (the search and training loss)."""

    def __init__(
        self,
        num_classes: int,
        *,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        include_background: bool = False,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.include_background = include_background
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        loss = logits.new_zeros(())
        if self.ce_weight:
            # mean over labelled pixels; 0 (not NaN) when a batch has none
            ce = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="sum")
            valid = (target != self.ignore_index).sum().clamp(min=1)
            loss = loss + self.ce_weight * ce / valid
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(
                logits,
                target,
                include_background=self.include_background,
                ignore_index=self.ignore_index,
            )
        return loss


@torch.no_grad()
def dice_scores(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-image mean foreground Dice of hard label maps ``(B, H, W)``: shape ``(B,)``.

    Same convention as :func:`msnas_graph.metrics.dice_iou`: a class absent from both the
    prediction and the target scores 1, present on one side only 0. Ignored pixels
    (``-100``) are left out.

    >>> t = torch.tensor([[[0, 1], [1, 1]]])
    >>> dice_scores(t, t, 3).tolist()
    [1.0]
    >>> dice_scores(torch.tensor([[[0, 1], [0, 0]]]), t, 2).tolist()
    [0.5]
    """
    valid = target != IGNORE_INDEX
    b = pred.shape[0]
    p = F.one_hot(pred.clamp(0, num_classes - 1), num_classes) * valid.unsqueeze(-1)
    t = F.one_hot(target.clamp(min=0), num_classes) * valid.unsqueeze(-1)
    p = p.reshape(b, -1, num_classes).float()
    t = t.reshape(b, -1, num_classes).float()
    inter = (p * t).sum(1)
    total = p.sum(1) + t.sum(1)
    dice = torch.where(total > 0, 2.0 * inter / total.clamp(min=1.0), torch.ones_like(total))
    return dice[:, 1:].mean(1)
