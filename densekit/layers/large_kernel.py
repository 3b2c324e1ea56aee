"""``LargeKernelConv2d``: the depthwise "same" convolution of the large-kernel ConvNets as a module.

An ``nn.Conv2d`` (same parameters, state-dict keys and initialisation, ``isinstance`` checks
included) fixed to ``groups = channels``, stride 1 and padding ``dilation * (k - 1) / 2``, whose
forward calls :func:`densekit.ops.large_kernel.large_kernel_conv2d`. The automatic backend is
``F.conv2d`` (cuDNN on CUDA), so outputs equal ``nn.Conv2d``'s; ``backend='triton'`` (or
``DENSEKIT_ATTN_BACKEND=triton``) selects the Triton kernels. The op is imported when the module
runs, not when ``densekit.layers`` is imported: the ops import the layers' windowing helpers.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn


class LargeKernelConv2d(nn.Conv2d):
    """Depthwise ``k x k`` convolution (``k`` odd) with "same" zero padding.

    Args:
        channels: input = output channels (one group each).
        kernel_size: odd kernel size.
        dilation: spacing of the kernel taps.
        bias: whether to add a learnable bias.
        backend: :func:`~densekit.ops.large_kernel.large_kernel_conv2d` backend (``None``:
            automatic, the reference); a plain attribute, so it can be set after construction.
    """

    def __init__(self, channels: int, kernel_size: int, *, dilation: int = 1, bias: bool = True,
                 backend: Optional[str] = None) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f'LargeKernelConv2d: kernel_size={kernel_size} must be odd ("same" padding)')
        super().__init__(channels, channels, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                         dilation=dilation, groups=channels, bias=bias)
        self.backend = backend

    @classmethod
    def like(cls, conv: 'LargeKernelConv2d', bias: bool = True) -> 'LargeKernelConv2d':
        """A convolution of ``conv``'s geometry, backend, device and dtype (for re-parameterised
        kernels that replace it)."""
        return cls(conv.in_channels, conv.kernel_size[0], dilation=conv.dilation[0], bias=bias,
                   backend=conv.backend).to(conv.weight.device, conv.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        from densekit.ops.large_kernel import large_kernel_conv2d
        return large_kernel_conv2d(x, self.weight, self.bias, self.dilation[0], backend=self.backend)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f', backend={self.backend!r}' if self.backend is not None else '')
