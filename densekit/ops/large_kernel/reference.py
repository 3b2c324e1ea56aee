"""Reference depthwise convolution: ``F.conv2d`` with ``groups = channels`` (cuDNN on CUDA).

The specification of :func:`densekit.ops.large_kernel.large_kernel_conv2d`: for an input
``x [B, C, H, W]`` and a weight ``[C, 1, k, k]`` (``k`` odd), stride 1 and the "same" zero padding
``p = dilation * (k - 1) / 2``,

    out[b, c, y, x] = bias[c] + sum_{i, j < k} weight[c, 0, i, j] * x[b, c, y + i * dilation - p, x + j * dilation - p]

with ``x`` zero outside the map, so the output has the input's size. This is the convolution of
RepLKNet's 31x31 kernels, UniRepLKNet's 13x13 kernels and their dilated branches, and VAN's
7x7 dilation-3 kernel, written as those models write it (``nn.Conv2d(C, C, k, padding=p,
dilation=d, groups=C)``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def large_kernel_reference(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                           dilation: int) -> torch.Tensor:
    """Depthwise "same" convolution of validated inputs (layouts in the module docstring)."""
    k = weight.shape[-1]
    return F.conv2d(x, weight, bias, stride=1, padding=dilation * (k - 1) // 2, dilation=dilation,
                    groups=x.shape[1])
