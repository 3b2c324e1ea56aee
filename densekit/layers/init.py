"""Random weight initialisation of the backbone families (checkpoints load over it).

Two schemes, one per kind of network:

* :func:`init_trunc_normal_` -- the ViT / Swin / ConvNeXt scheme (truncated normal, std 0.02);
* :func:`init_conv_bn_` -- the ResNet scheme (He-normal convolutions, unit BatchNorms, the last
  BatchNorm of every residual branch at zero).

Both walk ``module.modules()`` once; the weights drawn depend only on the order of the modules.
"""
from __future__ import annotations

from typing import Iterable

import torch.nn as nn

__all__ = ['init_trunc_normal_', 'init_conv_bn_']


def init_trunc_normal_(module: nn.Module, *, std: float = 0.02, conv: bool = False) -> None:
    """Truncated-normal weights (``std``; cut at the absolute values +-2, as timm and the official
    code) for every ``nn.Linear`` (and ``nn.Conv2d`` when ``conv``), zero biases, unit LayerNorms.
    Other modules keep PyTorch's default init."""
    types = (nn.Linear, nn.Conv2d) if conv else (nn.Linear,)
    for m in module.modules():
        if isinstance(m, types):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_conv_bn_(module: nn.Module, *, skip: Iterable[str] = (),
                  zero_last_bn: Iterable[nn.BatchNorm2d] = ()) -> None:
    """He-normal (fan-out) convolutions with zero biases, unit BatchNorms; then every BatchNorm in
    ``zero_last_bn`` gets a zero weight, so that residual blocks start as identities.

    Args:
        module: the network.
        skip: suffixes of convolution names that keep their own init (e.g. attention projections).
        zero_last_bn: the last BatchNorm of each residual branch.
    """
    skip = tuple(skip)
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d) and not (skip and name.endswith(skip)):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for bn in zero_last_bn:
        nn.init.zeros_(bn.weight)
