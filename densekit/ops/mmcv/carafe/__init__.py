"""CARAFE: content-aware reassembly of features (mmcv 2.1 ``carafe`` / ``carafe_naive``
semantics), pure PyTorch, any device, differentiable through autograd.

Wang et al., "CARAFE: Content-Aware ReAssembly of FEatures", ICCV 2019.

Layouts: ``features`` ``[N, C, h, w]``; ``masks`` ``[N, G * k * k, h * s, w * s]`` (``G`` groups
of contiguous channel blocks, ``k`` odd kernel size, ``s`` scale factor); output
``[N, C, h * s, w * s]``::

    out[n, c, y, x] = sum_{i, j} features[n, c, y // s + i - r, x // s + j - r]
                                 * masks[n, (g * k + i) * k + j, y, x]

with ``r = (k - 1) // 2``, ``g = c // (C / G)`` and taps outside the input map skipped (mmcv's
naive CUDA kernel; its fast kernel computes the same sum). mmcv has no CPU kernel.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ['carafe']


def carafe(features: Tensor, masks: Tensor, kernel_size: int, group_size: int,
           scale_factor: int) -> Tensor:
    """Reassemble ``features`` with the per-position ``masks``; see the module docstring."""
    n, c, h, w = features.shape
    k, g, s = int(kernel_size), int(group_size), int(scale_factor)
    if k < 1 or k % 2 == 0:
        raise ValueError(f'kernel_size must be odd and >= 1, got {k}')
    if c % g:
        raise ValueError(f'{c} channels are not divisible by group_size {g}')
    if tuple(masks.shape) != (n, g * k * k, h * s, w * s):
        raise ValueError(f'masks must be {(n, g * k * k, h * s, w * s)}, got '
                         f'{tuple(masks.shape)}')
    r = (k - 1) // 2
    padded = F.pad(features, (r, r, r, r))
    m = masks.reshape(n, g, 1, k * k, h * s, w * s)
    out = None
    for i in range(k):
        for j in range(k):
            tap = padded[:, :, i:i + h, j:j + w]
            tap = tap.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
            term = tap.reshape(n, g, c // g, h * s, w * s) * m[:, :, :, i * k + j]
            out = term if out is None else out + term
    return out.reshape(n, c, h * s, w * s)
