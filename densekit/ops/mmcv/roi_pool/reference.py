"""RoIPool (max pooling over quantised RoI bins) in pure PyTorch with mmcv 2.1's semantics.

RoIPool: Girshick, "Fast R-CNN", ICCV 2015.

Layouts: ``input`` ``[B, C, H, W]``; ``rois`` ``[R, 5]`` rows ``(batch_idx, x1, y1, x2, y2)``;
output ``[R, C, PH, PW]``; ``argmax`` (int32, same shape) is the flat ``h * W + w`` index of the
winning pixel, -1 for an empty bin.

Semantics followed (mmcv's kernel; mmcv has no CPU kernel for this op, only CUDA / MLU / NPU):

* The RoI spans ``[x1 * s, (x2 + 1) * s)`` (legacy inclusive pixel convention, no rounding).
* Bin ``(ph, pw)`` covers rows ``floor(ph * bin_h + y1) .. ceil((ph + 1) * bin_h + y1)``
  (exclusive end), clipped to the map; an empty bin gives 0 and argmax -1.
* The max uses a strict ``>`` from ``-FLT_MAX`` in row-major order: the first maximum wins.
* RoIs with non-positive width or height are skipped (``valid`` is False for them); mmcv leaves
  its pre-allocated outputs untouched for those.
"""
from __future__ import annotations

import torch
from torch import Tensor

_CHUNK_ELEMS = 1 << 24


def _bin_edges(start: Tensor, size: Tensor, pooled: int, limit: int):
    """Clipped integer ``[lo, hi)`` of each bin: ``[R, pooled]`` each."""
    bin_size = size / pooled
    p = torch.arange(pooled, device=start.device, dtype=start.dtype)
    lo = torch.floor(p[None] * bin_size[:, None] + start[:, None]).long().clamp(0, limit)
    hi = torch.ceil((p[None] + 1) * bin_size[:, None] + start[:, None]).long().clamp(0, limit)
    return lo, hi


def roi_pool_forward(input: Tensor, rois: Tensor, pooled_h: int, pooled_w: int,
                     spatial_scale: float = 1.0):
    """Returns ``(output, argmax, valid)``; ``valid`` ``[R]`` marks RoIs the kernel processes."""
    num_b, ch, height, width = input.shape
    num_r = rois.shape[0]
    out = input.new_zeros((num_r, ch, pooled_h, pooled_w))
    argmax = torch.full(out.shape, -1, dtype=torch.int32, device=input.device)
    if num_r == 0:
        return out, argmax, torch.zeros(0, dtype=torch.bool, device=input.device)
    rois = rois.to(input.dtype)
    x1 = rois[:, 1] * spatial_scale
    y1 = rois[:, 2] * spatial_scale
    x2 = (rois[:, 3] + 1) * spatial_scale
    y2 = (rois[:, 4] + 1) * spatial_scale
    roi_w, roi_h = x2 - x1, y2 - y1
    valid = (roi_w > 0) & (roi_h > 0)
    ylo, yhi = _bin_edges(y1, roi_h, pooled_h, height)
    xlo, xhi = _bin_edges(x1, roi_w, pooled_w, width)
    hs = torch.arange(height, device=input.device)
    ws = torch.arange(width, device=input.device)
    row_in = (hs[None, None] >= ylo[..., None]) & (hs[None, None] < yhi[..., None])  # R,PH,H
    col_in = (ws[None, None] >= xlo[..., None]) & (ws[None, None] < xhi[..., None])  # R,PW,W
    neg_inf = torch.tensor(float('-inf'), dtype=input.dtype, device=input.device)
    step = max(1, _CHUNK_ELEMS // max(ch * height * width * pooled_w, 1))
    for s in range(0, num_r, step):
        e = min(s + step, num_r)
        feat = input[rois[s:e, 0].long()]  # [r, C, H, W]
        # Max over the columns of each pw-bin, then over the rows of each ph-bin; taking the
        # first maximum at both stages gives the kernel's row-major first maximum.
        cols = torch.where(col_in[s:e, None, None], feat[:, :, :, None, :], neg_inf)
        row_max, row_arg = cols.max(dim=4)  # [r, C, H, PW]
        rows = torch.where(row_in[s:e, None, :, :, None], row_max[:, :, None], neg_inf)
        best, best_h = rows.max(dim=3)  # [r, C, PH, PW]
        best_w = torch.gather(row_arg, 2, best_h)
        empty = (yhi[s:e] <= ylo[s:e])[:, :, None] | (xhi[s:e] <= xlo[s:e])[:, None, :]
        empty = empty[:, None]  # [r, 1, PH, PW]
        out[s:e] = torch.where(empty, torch.zeros((), dtype=input.dtype, device=input.device),
                               best)
        argmax[s:e] = torch.where(empty, -1, best_h * width + best_w).to(torch.int32)
    out[~valid] = 0
    argmax[~valid] = -1
    return out, argmax, valid


def roi_pool_backward(grad_output: Tensor, rois: Tensor, argmax: Tensor, input_shape) -> Tensor:
    """Scatters ``grad_output`` to the argmax pixels (entries with argmax -1 get nothing)."""
    num_b, ch, height, width = (int(v) for v in input_shape)
    grad_in = grad_output.new_zeros(num_b * ch * height * width)
    if grad_output.numel() == 0:
        return grad_in.reshape(num_b, ch, height, width)
    plane = (rois[:, 0].long()[:, None] * ch
             + torch.arange(ch, device=grad_output.device)[None]) * (height * width)
    idx = plane[:, :, None, None] + argmax.long()
    hit = argmax >= 0
    grad_in.index_add_(0, idx[hit], grad_output[hit])
    return grad_in.reshape(num_b, ch, height, width)
