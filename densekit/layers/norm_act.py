"""Convolution / normalisation / activation blocks for NCHW maps.

Parameter names are timm's (``conv``, ``bn``; ``BatchNormAct2d`` keeps ``nn.BatchNorm2d``'s own), so
timm checkpoints of networks built from these blocks load through an identity mapping.
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ['ACTIVATIONS', 'create_act', 'BatchNormAct2d', 'ConvBnAct']

ACTIVATIONS = {'relu': nn.ReLU, 'silu': nn.SiLU, 'gelu': nn.GELU}


def create_act(name: str, inplace: bool = True) -> nn.Module:
    """Activation module by name (``'relu'``, ``'silu'`` or ``'gelu'``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    if name == 'gelu':
        return nn.GELU()
    return ACTIVATIONS[name](inplace=inplace)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by an activation (``nn.BatchNorm2d``'s parameter and buffer names).

    Args:
        channels: normalised channels.
        act: activation name (see :func:`create_act`).
        apply_act: ``False`` leaves out the activation (the last norm of a residual branch).
    """

    def __init__(self, channels: int, act: str = 'relu', apply_act: bool = True) -> None:
        super().__init__(channels)
        self.act = create_act(act) if apply_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class ConvBnAct(nn.Module):
    """``k x k`` convolution (no bias, 'same' padding for odd ``k``) -> BatchNorm -> activation.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        kernel_size: square kernel size.
        stride: convolution stride.
        groups: convolution groups.
        act: activation name (see :func:`create_act`).
        apply_act: ``False`` leaves out the activation.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, *, stride: int = 1,
                 groups: int = 1, act: str = 'relu', apply_act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding=kernel_size // 2,
                              groups=groups, bias=False)
        self.bn = BatchNormAct2d(out_chs, act, apply_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))
