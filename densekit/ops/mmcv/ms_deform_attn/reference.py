"""Multi-scale deformable attention in pure PyTorch (``grid_sample``), any device.

Deformable DETR: Zhu et al., "Deformable DETR: Deformable Transformers for End-to-End Object
Detection", ICLR 2021.

Layouts (mmcv's):

* ``value`` ``[B, S, heads, D]`` with ``S = sum(H_l * W_l)``, levels concatenated;
* ``spatial_shapes`` ``[L, 2]`` int64 rows ``(H_l, W_l)``; ``level_start_index`` ``[L]``;
* ``sampling_locations`` ``[B, Q, heads, L, P, 2]`` normalised ``(x, y)`` in ``[0, 1]``;
* ``attention_weights`` ``[B, Q, heads, L, P]``;
* output ``[B, Q, heads * D]``.

A location maps to the pixel coordinate ``x * W - 0.5`` (half-pixel centres) and samples are
bilinear with zeros outside the map, which is exactly ``grid_sample(align_corners=False,
padding_mode='zeros')`` -- the same rule as mmcv's CUDA kernel.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def ms_deform_attn(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                   sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Differentiable (autograd) multi-scale deformable attention; see module docstring."""
    bs, _, heads, dim = value.shape
    _, nq, _, levels, points, _ = sampling_locations.shape
    shapes = spatial_shapes.tolist()
    starts = level_start_index.tolist()
    grids = 2 * sampling_locations - 1
    out = None
    for lvl, ((h, w), start) in enumerate(zip(shapes, starts)):
        v = value[:, start:start + h * w]  # [B, HW, heads, D]
        v = v.permute(0, 2, 3, 1).reshape(bs * heads, dim, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(bs * heads, nq, points, 2)
        sampled = F.grid_sample(v, g, mode='bilinear', padding_mode='zeros',
                                align_corners=False)  # [B*heads, D, Q, P]
        a = attention_weights[:, :, :, lvl].transpose(1, 2).reshape(bs * heads, 1, nq, points)
        term = (sampled * a).sum(-1)  # [B*heads, D, Q]
        out = term if out is None else out + term
    if out is None:
        raise ValueError('ms_deform_attn needs at least one level, got spatial_shapes '
                         f'{tuple(spatial_shapes.shape)}')
    return out.reshape(bs, heads * dim, nq).transpose(1, 2).contiguous()
