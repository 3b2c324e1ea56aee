"""RoIAlign in pure PyTorch with mmcv 2.1's exact semantics (forward and explicit backward).

RoIAlign: He et al., "Mask R-CNN", ICCV 2017; ``aligned=True`` is the half-pixel correction of
Detectron2 (Wu et al., 2019).

Layouts: ``input`` ``[B, C, H, W]``; ``rois`` ``[R, 5]`` rows ``(batch_idx, x1, y1, x2, y2)`` in
image coordinates; output ``[R, C, PH, PW]``.

Semantics followed (mmcv's CPU kernel, itself Caffe2's):

* RoI corners are scaled by ``spatial_scale`` and shifted by ``-0.5`` when ``aligned``; when
  not aligned, RoI width / height are clamped to at least 1.
* Each bin averages (``avg``) or maxes (``max``) a ``grid_h x grid_w`` grid of bilinear samples at
  bin-relative positions ``(i + 0.5) / grid``; ``grid = sampling_ratio`` if ``> 0`` else
  ``ceil(roi_size / pooled_size)`` per RoI.
* A sample with ``y < -1``, ``y > H``, ``x < -1`` or ``x > W`` is 0; otherwise coordinates are
  clamped to ``[0, size - 1]`` before interpolation.
* An adaptive grid (``sampling_ratio <= 0``) of an ``aligned`` RoI with ``x2 <= x1`` or
  ``y2 <= y1`` has no samples: ``avg`` gives 0 with no gradient (mmcv's and torchvision's CUDA
  kernels; mmcv's CPU kernel asserts on negative sizes instead).
* ``max`` starts from -10000 with a strict ``>`` (first sample wins ties); ``argmax_y`` /
  ``argmax_x`` hold the winning sample's coordinates, or -1 when no sample beat -10000.
"""
from __future__ import annotations

import torch
from torch import Tensor

# Upper bound on gathered elements per RoI chunk (per bilinear corner), to bound memory.
_CHUNK_ELEMS = 1 << 24


def _roi_geometry(rois: Tensor, pooled_h: int, pooled_w: int, spatial_scale: float,
                  sampling_ratio: int, aligned: bool):
    """Per-RoI start, bin size and sampling-grid size along y and x (rois' dtype)."""
    offset = 0.5 if aligned else 0.0
    start_w = rois[:, 1] * spatial_scale - offset
    start_h = rois[:, 2] * spatial_scale - offset
    end_w = rois[:, 3] * spatial_scale - offset
    end_h = rois[:, 4] * spatial_scale - offset
    roi_w = end_w - start_w
    roi_h = end_h - start_h
    if not aligned:  # mmcv keeps this clamp for backward compatibility of unaligned models
        roi_w = roi_w.clamp_min(1.0)
        roi_h = roi_h.clamp_min(1.0)
    bin_h = roi_h / pooled_h
    bin_w = roi_w / pooled_w
    if sampling_ratio > 0:
        grid_h = torch.full_like(roi_h, sampling_ratio, dtype=torch.long)
        grid_w = torch.full_like(roi_w, sampling_ratio, dtype=torch.long)
    else:
        grid_h = torch.ceil(roi_h / pooled_h).long()
        grid_w = torch.ceil(roi_w / pooled_w).long()
    return start_h, start_w, bin_h, bin_w, grid_h, grid_w


def _sample_coords(start: Tensor, bin_size: Tensor, grid: Tensor, pooled: int, gmax: int):
    """Sample positions ``[R, pooled, gmax]`` and a mask of the ones inside each RoI's grid."""
    p = torch.arange(pooled, device=start.device, dtype=start.dtype)
    i = torch.arange(gmax, device=start.device, dtype=start.dtype) + 0.5
    g = grid.clamp_min(1).to(start.dtype)
    # Same evaluation order as the kernel: (start + p * bin) + ((i + .5) * bin) / grid.
    coord = ((start[:, None, None] + p[None, :, None] * bin_size[:, None, None])
             + (i[None, None, :] * bin_size[:, None, None]) / g[:, None, None])
    used = torch.arange(gmax, device=start.device)[None, None, :] < grid[:, None, None]
    return coord, used.expand_as(coord)


def _axis_interp(coord: Tensor, size: int):
    """1-D part of the kernel's bilinear rule: ``(low, high, w_low, w_high, inside)``."""
    inside = (coord >= -1.0) & (coord <= size)
    c = coord.clamp_min(0.0)
    low = c.floor().long()  # c >= 0, so floor is the kernel's int truncation
    edge = low >= size - 1
    low = torch.where(edge, torch.full_like(low, size - 1), low)
    high = torch.where(edge, low, low + 1)
    c = torch.where(edge, low.to(c.dtype), c)
    w_high = c - low.to(c.dtype)
    w_low = 1.0 - w_high
    return low, high, w_low, w_high, inside


def _chunks(num_rois: int, per_roi: int):
    step = max(1, _CHUNK_ELEMS // max(per_roi, 1))
    for s in range(0, num_rois, step):
        yield s, min(s + step, num_rois)


def _corner_terms(ys: Tensor, xs: Tensor, inside: Tensor, height: int, width: int):
    """Flat spatial indices and weights of the 4 bilinear corners, broadcast over samples.

    ``ys`` / ``xs`` broadcast against each other; weights are zero for samples outside the
    map (``inside`` False). Order of corners: (low,low), (low,high), (high,low), (high,high).
    """
    yl, yh, hy, ly, in_y = _axis_interp(ys, height)
    xl, xh, hx, lx, in_x = _axis_interp(xs, width)
    keep = inside & in_y & in_x
    zero = torch.zeros((), dtype=ys.dtype, device=ys.device)
    weights = [torch.where(keep, w, zero) for w in (hy * hx, hy * lx, ly * hx, ly * lx)]
    index = [yl * width + xl, yl * width + xh, yh * width + xl, yh * width + xh]
    return index, weights


def roi_align_forward(input: Tensor, rois: Tensor, pooled_h: int, pooled_w: int,
                      spatial_scale: float = 1.0, sampling_ratio: int = 0,
                      pool_mode: str = 'avg', aligned: bool = True):
    """RoIAlign forward.

    Returns:
        ``(output, argmax_y, argmax_x)``; output ``[R, C, PH, PW]``; the argmax tensors have the
        output's shape in ``max`` mode and are empty in ``avg`` mode.
    """
    if pool_mode not in ('avg', 'max'):
        raise ValueError(f"pool_mode must be 'avg' or 'max', got {pool_mode!r}")
    num_b, ch, height, width = input.shape
    num_r = rois.shape[0]
    out = input.new_zeros((num_r, ch, pooled_h, pooled_w))
    is_max = pool_mode == 'max'
    arg_y = input.new_full(out.shape, -1.0) if is_max else input.new_zeros(0)
    arg_x = input.new_full(out.shape, -1.0) if is_max else input.new_zeros(0)
    if num_r == 0:
        return out, arg_y, arg_x
    rois = rois.to(input.dtype)
    geo = _roi_geometry(rois, pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned)
    start_h, start_w, bin_h, bin_w, grid_h, grid_w = geo
    # [B*H*W, C]: one gather per corner fetches all channels of a sample.
    feat = input.permute(0, 2, 3, 1).reshape(num_b * height * width, ch)
    gh_all, gw_all = int(grid_h.max()), int(grid_w.max())
    for s, e in _chunks(num_r, pooled_h * pooled_w * max(gh_all, 1) * max(gw_all, 1) * ch):
        gh, gw = int(grid_h[s:e].max()), int(grid_w[s:e].max())
        if gh <= 0 or gw <= 0:
            continue  # empty grids: avg output 0, max output -10000 (set below)
        ys, used_y = _sample_coords(start_h[s:e], bin_h[s:e], grid_h[s:e], pooled_h, gh)
        xs, used_x = _sample_coords(start_w[s:e], bin_w[s:e], grid_w[s:e], pooled_w, gw)
        # Broadcast to [r, PH, PW, gh, gw].
        ys5, xs5 = ys[:, :, None, :, None], xs[:, None, :, None, :]
        used = used_y[:, :, None, :, None] & used_x[:, None, :, None, :]
        index, weights = _corner_terms(ys5, xs5, torch.ones_like(used), height, width)
        base = rois[s:e, 0].long()[:, None, None, None, None] * (height * width)
        val = None
        for idx, w in zip(index, weights):
            term = w[..., None] * feat[base + idx]  # [r, PH, PW, gh, gw, C]
            val = term if val is None else val + term
        if not is_max:
            val = torch.where(used[..., None], val, torch.zeros((), dtype=val.dtype,
                                                                 device=val.device))
            count = (grid_h[s:e] * grid_w[s:e]).clamp_min(1).to(val.dtype)
            avg = val.sum(dim=(3, 4)) / count[:, None, None, None]
            out[s:e] = avg.permute(0, 3, 1, 2)
            continue
        r = e - s
        val = torch.where(used[..., None], val, torch.full((), float('-inf'), dtype=val.dtype,
                                                               device=val.device))
        flat = val.reshape(r, pooled_h, pooled_w, gh * gw, ch)
        best, best_i = flat.max(dim=3)  # first maximum on ties, like the kernel's strict '>'
        beat = best > -10000.0
        iy, ix = best_i // gw, best_i % gw
        y_best = torch.gather(ys[:, :, None, :].expand(r, pooled_h, pooled_w, gh), 3, iy)
        x_best = torch.gather(xs[:, None, :, :].expand(r, pooled_h, pooled_w, gw), 3, ix)
        neg = torch.full((), -1.0, dtype=val.dtype, device=val.device)
        out[s:e] = torch.where(beat, best, torch.full_like(best, -10000.0)).permute(0, 3, 1, 2)
        arg_y[s:e] = torch.where(beat, y_best, neg).permute(0, 3, 1, 2)
        arg_x[s:e] = torch.where(beat, x_best, neg).permute(0, 3, 1, 2)
    if is_max:
        # RoIs whose grid is empty never enter the loop above; the kernel leaves -10000 there.
        empty = (grid_h <= 0) | (grid_w <= 0)
        if bool(empty.any()):
            out[empty] = -10000.0
    return out, arg_y, arg_x


def roi_align_backward(grad_output: Tensor, rois: Tensor, argmax_y: Tensor, argmax_x: Tensor,
                       input_shape, spatial_scale: float = 1.0, sampling_ratio: int = 0,
                       pool_mode: str = 'avg', aligned: bool = True) -> Tensor:
    """Gradient of :func:`roi_align_forward` w.r.t. its input (``[B, C, H, W]``).

    The forward input is not needed: avg weights depend only on the RoIs, and ``max`` mode
    re-interpolates at the stored ``argmax_y`` / ``argmax_x`` coordinates, as mmcv does.
    """
    if pool_mode not in ('avg', 'max'):
        raise ValueError(f"pool_mode must be 'avg' or 'max', got {pool_mode!r}")
    num_b, ch, height, width = (int(v) for v in input_shape)
    num_r, _, pooled_h, pooled_w = grad_output.shape
    dtype = grad_output.dtype
    grad_in = grad_output.new_zeros(num_b * height * width * ch if pool_mode == 'avg'
                                    else num_b * ch * height * width)
    if num_r == 0:
        return grad_in.reshape(num_b, ch, height, width)
    rois = rois.to(dtype)
    if pool_mode == 'max':
        ys, xs = argmax_y.to(dtype), argmax_x.to(dtype)
        index, weights = _corner_terms(ys, xs, ys != -1.0, height, width)
        plane = (rois[:, 0].long()[:, None] * ch
                 + torch.arange(ch, device=rois.device)[None, :]) * (height * width)
        plane = plane[:, :, None, None]
        for idx, w in zip(index, weights):
            grad_in.index_add_(0, (plane + idx).reshape(-1), (grad_output * w).reshape(-1))
        return grad_in.reshape(num_b, ch, height, width)
    geo = _roi_geometry(rois, pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned)
    start_h, start_w, bin_h, bin_w, grid_h, grid_w = geo
    grad_cl = grad_in.reshape(num_b * height * width, ch)
    g_all = grad_output.permute(0, 2, 3, 1)  # [R, PH, PW, C]
    gh_all, gw_all = int(grid_h.max()), int(grid_w.max())
    for s, e in _chunks(num_r, pooled_h * pooled_w * max(gh_all, 1) * max(gw_all, 1) * ch):
        gh, gw = int(grid_h[s:e].max()), int(grid_w[s:e].max())
        if gh <= 0 or gw <= 0:
            continue
        ys, used_y = _sample_coords(start_h[s:e], bin_h[s:e], grid_h[s:e], pooled_h, gh)
        xs, used_x = _sample_coords(start_w[s:e], bin_w[s:e], grid_w[s:e], pooled_w, gw)
        used = used_y[:, :, None, :, None] & used_x[:, None, :, None, :]
        index, weights = _corner_terms(ys[:, :, None, :, None], xs[:, None, :, None, :], used,
                                       height, width)
        # RoIs with an empty grid have all weights 0; clamping avoids 0/0 for them.
        count = (grid_h[s:e] * grid_w[s:e]).clamp_min(1).to(dtype)[:, None, None, None, None,
                                                                    None]
        base = rois[s:e, 0].long()[:, None, None, None, None] * (height * width)
        g = g_all[s:e, :, :, None, None, :]
        for idx, w in zip(index, weights):
            src = (g * w[..., None]) / count
            grad_cl.index_add_(0, (base + idx).reshape(-1), src.reshape(-1, ch))
    return grad_cl.reshape(num_b, height, width, ch).permute(0, 3, 1, 2).contiguous()
