"""Depth losses on valid pixels: scale-invariant log (SILog) and L1.

SILog follows Eigen et al., "Depth Map Prediction from a Single Image using a Multi-Scale Deep
Network" (NeurIPS 2014), in the form used by BTS (Lee et al., arXiv:1907.10326, ``silog_loss``),
AdaBins and NeWCRFs::

    d = ln pred - ln gt                                  (valid pixels of the whole batch)
    loss = scale * sqrt(mean(d ** 2) - variance_focus * mean(d) ** 2)

with ``variance_focus = 0.85`` (lambda; 1 gives the fully scale-invariant error, 0 the plain
log-RMSE) and ``scale = 10``. The pixels of all images in the batch are pooled, as in BTS.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def valid_depth_mask(gt: torch.Tensor, min_depth: float, max_depth: float | None = None) -> torch.Tensor:
    """Pixels with ground truth in ``(min_depth, max_depth]`` (0 marks missing depth in the pngs)."""
    mask = gt > min_depth
    if max_depth is not None:
        mask &= gt <= max_depth
    return mask


def _check(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> None:
    if pred.shape != gt.shape or mask.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)}, gt {tuple(gt.shape)} and mask "
                         f"{tuple(mask.shape)} must have one shape; resize pred to the gt first")


def silog_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor,
               variance_focus: float = 0.85, scale: float = 10.0, eps: float = 1e-6) -> torch.Tensor:
    """Scale-invariant log loss over the pixels where ``mask`` is True (pooled over the batch).

    Args:
        pred: predicted depth, any shape (e.g. ``[N, 1, H, W]``), positive.
        gt: ground-truth depth, same shape.
        mask: boolean valid-pixel mask, same shape.
        variance_focus: lambda in ``mean(d^2) - lambda * mean(d)^2`` (BTS: 0.85).
        scale: output multiplier (BTS / AdaBins: 10).
        eps: floor of ``pred`` before the log, and of the radicand (its sqrt has an infinite
            gradient at 0, reached by a perfect prediction).

    Returns:
        scalar tensor; 0 (still attached to the graph) when no pixel is valid.
    """
    _check(pred, gt, mask)
    if not bool(mask.any()):
        return pred.sum() * 0.0
    d = torch.log(pred[mask].clamp_min(eps)) - torch.log(gt[mask])
    radicand = d.pow(2).mean() - variance_focus * d.mean().pow(2)
    return scale * radicand.clamp_min(eps).sqrt()


def l1_depth_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (metres) over the valid pixels of the batch."""
    _check(pred, gt, mask)
    if not bool(mask.any()):
        return pred.sum() * 0.0
    return (pred[mask] - gt[mask]).abs().mean()


class SILogLoss(nn.Module):
    """Module form of :func:`silog_loss`, weighted by ``loss_weight``.

    Args:
        variance_focus: lambda (BTS / AdaBins: 0.85).
        scale: output multiplier (BTS / AdaBins: 10).
        loss_weight: multiplier of the returned loss.
        loss_name: key under which an estimator reports this loss.
    """

    def __init__(self, variance_focus: float = 0.85, scale: float = 10.0, loss_weight: float = 1.0,
                 loss_name: str = 'loss_silog') -> None:
        super().__init__()
        if not 0.0 <= variance_focus <= 1.0:
            raise ValueError(f"SILogLoss: variance_focus={variance_focus} must be in [0, 1]")
        self.variance_focus = variance_focus
        self.scale = scale
        self.loss_weight = loss_weight
        self.loss_name = loss_name

    def forward(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * silog_loss(pred, gt, mask, self.variance_focus, self.scale)


class L1DepthLoss(nn.Module):
    """Module form of :func:`l1_depth_loss`, weighted by ``loss_weight``."""

    def __init__(self, loss_weight: float = 1.0, loss_name: str = 'loss_l1') -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self.loss_name = loss_name

    def forward(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * l1_depth_loss(pred, gt, mask)
