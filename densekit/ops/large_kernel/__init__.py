"""Large-kernel depthwise convolution — public functional API.

The depthwise "same" convolution of RepLKNet (Ding et al., CVPR 2022, 31x31 kernels), UniRepLKNet
(Ding et al., CVPR 2024, 13x13 kernels with dilated branches) and VAN (Guo et al., 2022, the 7x7
dilation-3 kernel of large-kernel attention). Semantics: :mod:`densekit.ops.large_kernel.reference`.

Backends (``backend=`` or ``DENSEKIT_ATTN_BACKEND``, resolved by
:func:`densekit.ops._backend.choose_backend`): ``'reference'`` is ``F.conv2d`` with
``groups = channels`` (cuDNN on CUDA); ``'triton'`` runs the tiled kernels of ``triton.py``
(CUDA, or CPU under ``TRITON_INTERPRET=1``). The Triton backend is opt-in: the automatic choice is
the reference on every device, because the Triton kernels must be chosen only where they beat
cuDNN and no GPU measurement says so yet (``benchmarks/large_kernel.py`` produces the numbers that
would decide it). Validation happens once here, before dispatch.
"""
from __future__ import annotations

import numbers
from typing import Mapping, Optional

import torch

from densekit.ops._backend import choose_backend, triton_device_reason

__all__ = ['large_kernel_conv2d']

_OP = 'large_kernel_conv2d'


def _check(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dilation) -> int:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f'{_OP}: x must be a [B, C, H, W] tensor, got '
                         f'{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}')
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ValueError(f'{_OP}: weight must be a [C, 1, k, k] tensor, got '
                         f'{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}')
    C = x.shape[1]
    k = weight.shape[-1]
    if weight.shape[0] != C or weight.shape[1] != 1 or weight.shape[2] != k:
        raise ValueError(f'{_OP}: weight must be [C={C}, 1, k, k] (depthwise, square kernel), got '
                         f'{tuple(weight.shape)}')
    if k % 2 == 0 or k < 1:
        raise ValueError(f'{_OP}: kernel size must be odd (the "same" padding is symmetric), got {k}')
    if not x.is_floating_point():
        raise ValueError(f'{_OP}: x must be floating point, got {x.dtype}')
    if weight.dtype != x.dtype or weight.device != x.device:
        raise ValueError(f'{_OP}: weight ({weight.dtype}, {weight.device}) must match x ({x.dtype}, {x.device})')
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.shape != (C,):
            raise ValueError(f'{_OP}: bias must be [C={C}] or None, got '
                             f'{tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__}')
        if bias.dtype != x.dtype or bias.device != x.device:
            raise ValueError(f'{_OP}: bias ({bias.dtype}, {bias.device}) must match x ({x.dtype}, {x.device})')
    if isinstance(dilation, torch.Tensor) and dilation.dim() == 0 and not dilation.is_floating_point():
        dilation = int(dilation)
    if isinstance(dilation, bool) or not isinstance(dilation, numbers.Integral):
        raise TypeError(f'{_OP}: dilation must be an integer, got {dilation!r}')
    if dilation < 1:
        raise ValueError(f'{_OP}: dilation must be >= 1, got {dilation}')
    return int(dilation)


def _autocast(x, weight, bias):
    """Inside an autocast region, the casts ``F.conv2d`` gets there (a convolution runs in the
    region's low-precision dtype; float64 and non-float tensors are left alone), so that a bf16
    activation meets the fp32 parameters of a module as it would in ``nn.Conv2d``."""
    if not isinstance(x, torch.Tensor) or not torch.is_autocast_enabled(x.device.type):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(x.device.type)
    cast = lambda t: (t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point()  # noqa: E731
                      and t.dtype != torch.float64 else t)
    return cast(x), cast(weight), cast(bias)


def large_kernel_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                        dilation: int = 1, backend: Optional[str] = None,
                        triton_config: Optional[Mapping] = None) -> torch.Tensor:
    """Depthwise convolution with stride 1 and "same" zero padding ``dilation * (k - 1) / 2``.

    Args:
        x: input ``[B, C, H, W]`` (float32 / float16 / bfloat16; float64 on the reference backend).
        weight: ``[C, 1, k, k]``, ``k`` odd (``nn.Conv2d(C, C, k, groups=C).weight``).
        bias: ``[C]`` or ``None``.
        dilation: spacing of the kernel taps (UniRepLKNet's dilated branches, VAN's 7x7 dilation 3).
        backend: ``'triton' | 'reference'`` or ``None`` (automatic: the reference, see the module
            docstring).
        triton_config: launch configuration of the Triton kernels
            (:data:`densekit.ops.large_kernel.triton.CONFIG_KEYS`); other backends ignore it.

    Returns:
        ``[B, C, H, W]``; inside an autocast region in its dtype, as ``F.conv2d``.
    """
    x, weight, bias = _autocast(x, weight, bias)
    dilation = _check(x, weight, bias, dilation)
    k = weight.shape[-1]

    def _triton(explicit: bool) -> Optional[str]:
        if not explicit:
            return ('the Triton kernels are opt-in until a GPU benchmark shows them faster than cuDNN '
                    '(benchmarks/large_kernel.py); they run only when requested by name')
        reason = triton_device_reason(explicit, x)
        if reason is not None:
            return reason
        if x.numel() == 0:
            return 'empty input'
        from densekit.ops.large_kernel.triton import limits_reason
        return limits_reason(tuple(x.shape), k, dilation, triton_config)

    name = choose_backend(_OP, {'triton': _triton, 'reference': lambda explicit: None}, backend)
    if name == 'triton':
        from densekit.ops.large_kernel.triton import large_kernel_triton
        return large_kernel_triton(x, weight, bias, dilation, triton_config)
    from densekit.ops.large_kernel.reference import large_kernel_reference
    return large_kernel_reference(x, weight, bias, dilation)
