"""Deformable RoI pooling (mmcv 2.1 ``deform_roi_pool`` semantics), pure PyTorch, any device.

Dai et al., "Deformable Convolutional Networks", ICCV 2017 (deformable RoI pooling, here on
RoIAlign's bilinear samples as in mmcv / Zhu et al., DCNv2, CVPR 2019).

Layouts: ``input`` ``[B, C, H, W]``; ``rois`` ``[R, 5]`` rows ``(batch_idx, x1, y1, x2, y2)``;
``offset`` ``[R, 2, PH, PW]`` (channel 0: x, channel 1: y, in units of ``gamma`` x RoI size) or
empty; output ``[R, C, PH, PW]``.

Rules followed (mmcv's CUDA kernel; mmcv has no CPU kernel):

* RoI corners are scaled and shifted by -0.5 (always the ``aligned`` convention, no size clamp);
  bin ``(ph, pw)`` starts at ``(y1', x1') + (ph, pw) * bin + gamma * (roi_h, roi_w) * offset``;
* it averages a ``grid_h x grid_w`` grid of RoIAlign bilinear samples (``sampling_ratio`` or
  ``ceil(roi_size / pooled)``; a sample outside ``[-1, size]`` is 0, others are clamped), divided
  by ``max(grid_h * grid_w, 1)``;
* the offset gradient is the kernel's: the in-map corners' differences weighted by the distance
  of the *unclamped* sample coordinate to the (clamped) corner rows / columns, times
  ``gamma * roi_size``; samples outside ``[-1, size]`` contribute nothing.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ['deform_roi_pool', 'deform_roi_pool_forward', 'deform_roi_pool_backward']


def _samples(rois, offset, pooled_h, pooled_w, spatial_scale, sampling_ratio, gamma):
    """Sample coordinates ``y, x`` ``[R, PH, PW, G]``, a mask of used samples, per-RoI sizes and
    the count, where ``G = gh_max * gw_max`` flattens the sampling grid."""
    dtype, dev = rois.dtype, rois.device
    start_w = rois[:, 1] * spatial_scale - 0.5
    start_h = rois[:, 2] * spatial_scale - 0.5
    roi_w = (rois[:, 3] * spatial_scale - 0.5) - start_w
    roi_h = (rois[:, 4] * spatial_scale - 0.5) - start_h
    bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, sampling_ratio, dtype=torch.long)
        grid_w = torch.full_like(roi_w, sampling_ratio, dtype=torch.long)
    else:
        grid_h = torch.ceil(roi_h / pooled_h).long()
        grid_w = torch.ceil(roi_w / pooled_w).long()
    gh = max(int(grid_h.max()), 1) if len(rois) else 1
    gw = max(int(grid_w.max()), 1) if len(rois) else 1
    ph = torch.arange(pooled_h, device=dev, dtype=dtype)
    pw = torch.arange(pooled_w, device=dev, dtype=dtype)
    sh = start_h[:, None, None].expand(-1, pooled_h, pooled_w)
    sw = start_w[:, None, None].expand(-1, pooled_h, pooled_w)
    if offset is not None and offset.numel():
        sw = sw + gamma * roi_w[:, None, None] * offset[:, 0]
        sh = sh + gamma * roi_h[:, None, None] * offset[:, 1]
    iy = torch.arange(gh, device=dev, dtype=dtype) + 0.5
    ix = torch.arange(gw, device=dev, dtype=dtype) + 0.5
    gh_f = grid_h.clamp_min(1).to(dtype)[:, None, None, None]
    gw_f = grid_w.clamp_min(1).to(dtype)[:, None, None, None]
    # The kernel's evaluation order: (start + p * bin) + ((i + .5) * bin) / grid.
    y = (sh + ph[None, :, None] * bin_h[:, None, None])[..., None] \
        + (iy[None, None, None, :] * bin_h[:, None, None, None]) / gh_f  # [R, PH, PW, gh]
    x = (sw + pw[None, None, :] * bin_w[:, None, None])[..., None] \
        + (ix[None, None, None, :] * bin_w[:, None, None, None]) / gw_f  # [R, PH, PW, gw]
    used_y = torch.arange(gh, device=dev)[None, :] < grid_h[:, None]  # [R, gh]
    used_x = torch.arange(gw, device=dev)[None, :] < grid_w[:, None]
    y = y[..., :, None].expand(-1, -1, -1, gh, gw)
    x = x[..., None, :].expand(-1, -1, -1, gh, gw)
    used = (used_y[:, None, None, :, None] & used_x[:, None, None, None, :])
    count = (grid_h * grid_w).clamp_min(1).to(dtype)
    return y, x, used.expand_as(y), roi_h, roi_w, count


def _bilinear(y, x, height, width):
    """mmcv's ``bilinear_interpolate`` rule: corner indices, weights, and the in-range mask."""
    inside = (y >= -1.0) & (y <= height) & (x >= -1.0) & (x <= width)
    yc, xc = y.clamp_min(0), x.clamp_min(0)
    y_low, x_low = yc.floor().long(), xc.floor().long()
    edge_y, edge_x = y_low >= height - 1, x_low >= width - 1
    y_low = torch.where(edge_y, torch.full_like(y_low, height - 1), y_low)
    x_low = torch.where(edge_x, torch.full_like(x_low, width - 1), x_low)
    y_high = torch.where(edge_y, y_low, y_low + 1)
    x_high = torch.where(edge_x, x_low, x_low + 1)
    yc = torch.where(edge_y, y_low.to(y.dtype), yc)
    xc = torch.where(edge_x, x_low.to(x.dtype), xc)
    ly, lx = yc - y_low.to(y.dtype), xc - x_low.to(x.dtype)
    hy, hx = 1 - ly, 1 - lx
    return (y_low, y_high, x_low, x_high), (hy * hx, hy * lx, ly * hx, ly * lx), inside


def _corner_values(input, batch, y_low, y_high, x_low, x_high):
    """``[R, C, ...]`` values at the four corners of every sample."""
    b, c, h, w = input.shape
    feat = input.reshape(b, c, h * w)
    shape = y_low.shape
    out = []
    for yy, xx in ((y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high)):
        idx = (yy * w + xx).reshape(shape[0], -1)  # [R, S]
        v = torch.gather(feat[batch], 2, idx[:, None, :].expand(-1, c, -1))
        out.append(v.reshape(shape[0], c, *shape[1:]))
    return out


def deform_roi_pool_forward(input: Tensor, rois: Tensor, offset: Tensor | None, pooled_h: int,
                            pooled_w: int, spatial_scale: float = 1.0, sampling_ratio: int = 0,
                            gamma: float = 0.1) -> Tensor:
    """Output ``[R, C, PH, PW]``."""
    r, c = rois.shape[0], input.shape[1]
    if r == 0:
        return input.new_zeros(0, c, pooled_h, pooled_w)
    rois = rois.to(input.dtype)
    h, w = input.shape[-2:]
    y, x, used, _, _, count = _samples(rois, offset, pooled_h, pooled_w, spatial_scale,
                                       sampling_ratio, gamma)
    corners, weights, inside = _bilinear(y, x, h, w)
    values = _corner_values(input, rois[:, 0].long(), *corners)
    keep = (used & inside)[:, None]
    val = sum(wt[:, None] * v for wt, v in zip(weights, values))
    val = torch.where(keep, val, torch.zeros((), dtype=val.dtype, device=val.device))
    return val.sum(dim=(-2, -1)) / count[:, None, None, None]


def deform_roi_pool_backward(grad_output: Tensor, input: Tensor, rois: Tensor,
                             offset: Tensor | None, spatial_scale: float = 1.0,
                             sampling_ratio: int = 0, gamma: float = 0.1):
    """``(grad_input, grad_offset)``; ``grad_offset`` is None without an offset."""
    r, c, pooled_h, pooled_w = grad_output.shape
    has_offset = offset is not None and offset.numel() > 0
    grad_offset = torch.zeros_like(offset) if has_offset else None
    if r == 0:
        return torch.zeros_like(input), grad_offset
    dtype = input.dtype
    rois = rois.to(dtype)
    b, _, h, w = input.shape
    y, x, used, roi_h, roi_w, count = _samples(rois, offset, pooled_h, pooled_w, spatial_scale,
                                               sampling_ratio, gamma)
    (y_low, y_high, x_low, x_high), weights, inside = _bilinear(y, x, h, w)
    keep = (used & inside).to(dtype)  # [R, PH, PW, gh, gw]
    g = (grad_output / count[:, None, None, None])[..., None, None] * keep[:, None]
    batch = rois[:, 0].long()
    grad_cl = input.new_zeros(b * h * w, c)
    base = batch[:, None, None, None, None] * (h * w)
    for (yy, xx), wt in zip(((y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high)),
                            weights):
        src = (g * wt[:, None]).permute(0, 2, 3, 4, 5, 1).reshape(-1, c)
        grad_cl.index_add_(0, (base + yy * w + xx).reshape(-1), src)
    grad_input = grad_cl.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()
    if has_offset:
        v00, v10, v01, v11 = _corner_values(input, batch, y_low, y_high, x_low, x_high)
        yf, xf = y[:, None], x[:, None]
        yl, yh = y_low.to(dtype)[:, None], y_high.to(dtype)[:, None]
        xl, xh = x_low.to(dtype)[:, None], x_high.to(dtype)[:, None]
        dx = v11 * (yf - yl) + v10 * (yh - yf) + v01 * (yl - yf) + v00 * (yf - yh)
        dy = v11 * (xf - xl) + v01 * (xh - xf) + v10 * (xl - xf) + v00 * (xf - xh)
        ogx = (g * dx).sum(dim=(1, 4, 5)) * gamma * roi_w[:, None, None]
        ogy = (g * dy).sum(dim=(1, 4, 5)) * gamma * roi_h[:, None, None]
        grad_offset = torch.stack([ogx, ogy], 1).to(offset.dtype)
    return grad_input, grad_offset


class _DeformRoIPool(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input, rois, offset, pooled_h, pooled_w, spatial_scale, sampling_ratio,
                gamma):
        ctx.save_for_backward(input, rois, offset)
        ctx.args = (spatial_scale, sampling_ratio, gamma)
        return deform_roi_pool_forward(input, rois, offset, pooled_h, pooled_w, spatial_scale,
                                       sampling_ratio, gamma)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, rois, offset = ctx.saved_tensors
        gi, go = deform_roi_pool_backward(grad_output.contiguous(), input, rois, offset,
                                          *ctx.args)
        return gi, None, go, None, None, None, None, None


def deform_roi_pool(input: Tensor, rois: Tensor, offset: Tensor | None, output_size,
                    spatial_scale: float = 1.0, sampling_ratio: int = 0,
                    gamma: float = 0.1) -> Tensor:
    """Differentiable deformable RoI pooling (see the module docstring)."""
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f'rois must be [R, 5] (batch_idx, x1, y1, x2, y2), got '
                         f'{tuple(rois.shape)}')
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    if offset is not None and offset.numel() and tuple(offset.shape) != (len(rois), 2, ph, pw):
        raise ValueError(f'offset must be {(len(rois), 2, ph, pw)}, got {tuple(offset.shape)}')
    return _DeformRoIPool.apply(input, rois, offset, int(ph), int(pw), float(spatial_scale),
                                int(sampling_ratio), float(gamma))
