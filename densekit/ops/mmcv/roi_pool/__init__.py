"""RoIPool (mmcv 2.1 semantics), pure PyTorch, CPU and CUDA, forward and backward.

torchvision's ``roi_pool`` is *not* used: it rounds RoI corners to integers, whereas mmcv keeps
them fractional and extends ``x2`` / ``y2`` by one pixel.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from densekit.ops.mmcv.roi_pool import reference
from densekit.ops.mmcv.roi_pool.reference import roi_pool_backward, roi_pool_forward

__all__ = ['roi_pool', 'roi_pool_forward', 'roi_pool_backward', 'reference']


class _RoIPool(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input, rois, pooled_h, pooled_w, spatial_scale):
        out, argmax, _ = roi_pool_forward(input, rois, pooled_h, pooled_w, spatial_scale)
        ctx.save_for_backward(rois, argmax)
        ctx.input_shape = input.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        rois, argmax = ctx.saved_tensors
        return roi_pool_backward(grad_output, rois, argmax, ctx.input_shape), None, None, None, None


def roi_pool(input: Tensor, rois: Tensor, output_size, spatial_scale: float = 1.0) -> Tensor:
    """Differentiable RoIPool: ``[B, C, H, W]`` and ``[R, 5]`` RoIs -> ``[R, C, PH, PW]``."""
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f'rois must be [R, 5] (batch_idx, x1, y1, x2, y2), got '
                         f'{tuple(rois.shape)}')
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    return _RoIPool.apply(input, rois, int(ph), int(pw), float(spatial_scale))
