"""Channel attention gates for NCHW maps: squeeze-and-excitation and ECA."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from densekit.layers.helpers import make_divisible

__all__ = ['SqueezeExcite', 'EfficientChannelAttention', 'create_channel_attn']


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation gate (Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018).

    Global average pool -> 1x1 conv to ``make_divisible(channels * rd_ratio)`` -> ReLU -> 1x1 conv ->
    sigmoid, multiplied onto the input. Parameter names (``fc1``, ``fc2``) are timm's ``SEModule``.
    """

    def __init__(self, channels: int, rd_ratio: float = 1 / 16) -> None:
        super().__init__()
        rd = make_divisible(channels * rd_ratio, 8, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * s.sigmoid()


class EfficientChannelAttention(nn.Module):
    """ECA gate (Wang et al., "ECA-Net", CVPR 2020): a 1-D convolution across the pooled channels
    whose odd kernel size grows with ``log2(channels)`` (at least 3). Parameter name ``conv`` is
    timm's ``EcaModule``."""

    def __init__(self, channels: int, gamma: int = 2, beta: int = 1) -> None:
        super().__init__()
        t = int(abs(math.log(channels, 2) + beta) / gamma)
        k = max(t if t % 2 else t + 1, 3)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv(x.mean((2, 3)).unsqueeze(1)).sigmoid()
        return x * s.view(x.shape[0], -1, 1, 1)


def create_channel_attn(kind: str, channels: int, se_rd_ratio: float = 1 / 16) -> nn.Module:
    """``''`` (none: ``nn.Identity``), ``'se'`` or ``'eca'``."""
    if kind == '':
        return nn.Identity()
    if kind == 'se':
        return SqueezeExcite(channels, se_rd_ratio)
    if kind == 'eca':
        return EfficientChannelAttention(channels)
    raise ValueError(f"channel attention must be '', 'se' or 'eca', got {kind!r}")
