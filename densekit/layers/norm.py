"""Normalisation layers for NCHW maps."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['LayerNorm2d']


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (parameters ``weight`` / ``bias`` of shape ``[C]``).

    Runs ``F.layer_norm`` on a channels-last view rather than computing mean and variance by hand
    (as ConvNeXt's official code does): the same result up to rounding, through the fused kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
