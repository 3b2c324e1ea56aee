"""Stochastic depth (drop path): the one implementation and the one schedule of every family.

Huang, Sun, Liu, Sedra, Weinberger, "Deep Networks with Stochastic Depth", ECCV 2016
(arXiv:1603.09382).
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ['drop_path', 'DropPath', 'drop_path_schedule']


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero each sample's residual branch with probability ``p`` and scale survivors by ``1 / (1 - p)``.

    One Bernoulli draw per sample (shape ``[B, 1, ..., 1]``), so the layout of the other dims
    (NCHW or channels-last) does not matter. The draw is the one of ``timm``'s ``drop_path`` and of
    torchvision's ``stochastic_depth(mode='row')``: under the same seed all three drop the same
    samples. Identity in eval mode or for ``p == 0``.
    """
    if p == 0.0 or not training:
        return x
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop_path: p={p} must be in [0, 1]")
    keep = 1.0 - p
    mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
    mask.bernoulli_(keep)
    if keep > 0.0:
        mask.div_(keep)
    return x * mask


class DropPath(nn.Module):
    """:func:`drop_path` as a module (no parameters, no buffers: state dicts are unaffected)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"DropPath: p={p} must be in [0, 1]")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_path_schedule(rate: float, num_blocks: int) -> list[float]:
    """Drop-path probabilities rising linearly from 0 (first block) to ``rate`` (last block)."""
    # Plain Python (not torch.linspace) so that models can be built on the meta device.
    if num_blocks <= 1:
        return [0.0] * num_blocks
    return [rate * i / (num_blocks - 1) for i in range(num_blocks)]
