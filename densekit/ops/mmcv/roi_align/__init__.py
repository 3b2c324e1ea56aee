"""RoIAlign (mmcv 2.1 semantics) for CPU and CUDA tensors, forward and backward.

``avg`` pooling uses torchvision's compiled RoIAlign when available: its kernel implements the
same Caffe2 rule (``aligned`` half-pixel shift, adaptive grid, -1 / size bounds, clamping;
checked against mmcv's kernel by ``tests/ops/test_mmcv_roi_align.py``). torchvision has no
``max`` mode, which always runs the pure-PyTorch reference.

An ``aligned`` RoI with an adaptive grid (``sampling_ratio <= 0``) and ``x2 < x1`` or ``y2 < y1``
has no samples, so mmcv's CUDA kernel gives 0 and no gradient; torchvision's CPU kernel sizes a
buffer with the product of the two (then negative) grid sides and fails. Such RoIs are handed to
torchvision as zero-size RoIs, which give the same 0 on every device.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from densekit.ops.mmcv.roi_align import reference

__all__ = ['roi_align', 'roi_align_forward', 'roi_align_backward', 'reference']


def _torchvision_ops():
    try:
        from torchvision.extension import _has_ops
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    return torch.ops.torchvision if _has_ops() else None


def _without_inverted(rois: Tensor, spatial_scale: float, sampling_ratio: int,
                      aligned: bool) -> Tensor:
    """``rois`` with every RoI whose adaptive grid is empty or inverted made zero-size."""
    if sampling_ratio > 0 or not aligned or rois.numel() == 0:
        return rois  # fixed grids always sample; unaligned sizes are clamped to >= 1
    start = rois[:, 1:3] * spatial_scale - 0.5
    end = rois[:, 3:5] * spatial_scale - 0.5
    inverted = (end < start).any(1)
    if not bool(inverted.any()):
        return rois
    safe = rois.clone()
    safe[inverted, 3:5] = safe[inverted, 1:3]
    return safe


def roi_align_forward(input: Tensor, rois: Tensor, pooled_h: int, pooled_w: int,
                      spatial_scale: float = 1.0, sampling_ratio: int = 0,
                      pool_mode: str = 'avg', aligned: bool = True):
    """``(output, argmax_y, argmax_x)``; see :func:`reference.roi_align_forward`."""
    tv = _torchvision_ops()
    if pool_mode == 'avg' and tv is not None and rois.dtype == input.dtype:
        rois = _without_inverted(rois, spatial_scale, sampling_ratio, aligned)
        out = tv.roi_align(input, rois, float(spatial_scale), int(pooled_h), int(pooled_w),
                           int(sampling_ratio), bool(aligned))
        return out, input.new_zeros(0), input.new_zeros(0)
    return reference.roi_align_forward(input, rois, pooled_h, pooled_w, spatial_scale,
                                       sampling_ratio, pool_mode, aligned)


def roi_align_backward(grad_output: Tensor, rois: Tensor, argmax_y: Tensor, argmax_x: Tensor,
                       input_shape, spatial_scale: float = 1.0, sampling_ratio: int = 0,
                       pool_mode: str = 'avg', aligned: bool = True) -> Tensor:
    """Input gradient ``[B, C, H, W]``; see :func:`reference.roi_align_backward`."""
    tv = _torchvision_ops()
    if pool_mode == 'avg' and tv is not None and rois.dtype == grad_output.dtype:
        b, c, h, w = (int(v) for v in input_shape)
        rois = _without_inverted(rois, spatial_scale, sampling_ratio, aligned)
        return tv._roi_align_backward(grad_output, rois, float(spatial_scale),
                                      grad_output.shape[2], grad_output.shape[3], b, c, h, w,
                                      int(sampling_ratio), bool(aligned))
    return reference.roi_align_backward(grad_output, rois, argmax_y, argmax_x, input_shape,
                                        spatial_scale, sampling_ratio, pool_mode, aligned)


class _RoIAlign(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input, rois, pooled_h, pooled_w, spatial_scale, sampling_ratio,
                pool_mode, aligned):
        out, arg_y, arg_x = roi_align_forward(input, rois, pooled_h, pooled_w, spatial_scale,
                                              sampling_ratio, pool_mode, aligned)
        ctx.save_for_backward(rois, arg_y, arg_x)
        ctx.args = (input.shape, spatial_scale, sampling_ratio, pool_mode, aligned)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        rois, arg_y, arg_x = ctx.saved_tensors
        grad = roi_align_backward(grad_output.contiguous(), rois, arg_y, arg_x, *ctx.args)
        return grad, None, None, None, None, None, None, None


def roi_align(input: Tensor, rois: Tensor, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = 0, pool_mode: str = 'avg', aligned: bool = True) -> Tensor:
    """Differentiable RoIAlign.

    Args:
        input: ``[B, C, H, W]`` feature map.
        rois: ``[R, 5]`` rows ``(batch_idx, x1, y1, x2, y2)`` in input-image coordinates.
        output_size: ``PH`` or ``(PH, PW)``.
        spatial_scale: feature-map size / image size (e.g. 1/4 for a stride-4 map).
        sampling_ratio: samples per bin side; 0 picks ``ceil(roi_size / output_size)``.
        pool_mode: ``'avg'`` or ``'max'`` over a bin's samples.
        aligned: shift pixel corners by -0.5 (Detectron2's corrected RoIAlign).

    Returns:
        ``[R, C, PH, PW]``.
    """
    if pool_mode not in ('avg', 'max'):
        raise ValueError(f"pool_mode must be 'avg' or 'max', got {pool_mode!r}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f'rois must be [R, 5] (batch_idx, x1, y1, x2, y2), got '
                         f'{tuple(rois.shape)}')
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    return _RoIAlign.apply(input, rois, int(ph), int(pw), float(spatial_scale),
                           int(sampling_ratio), pool_mode, bool(aligned))
