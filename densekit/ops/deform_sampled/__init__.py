"""Deformable sampled-key attention — public functional API.

DAT / DAT++ (Xia et al., CVPR 2022, arXiv:2201.00520; arXiv:2309.01430). The offset network
and the bilinear sampling of the features at the predicted positions stay in the model
(``densekit.models.backbones.dat_pp``: the official code samples the features *before* the key /
value projections); this op is the attention of every query to the ``N`` sampled keys with the
relative position bias interpolated from a table at the continuous query-to-sample displacement.
The fused backend computes that bias inside the kernel (never a ``[B, heads, H * W, N]`` tensor)
and differentiates it with respect to the table and the sampling positions. Layouts and
semantics: :mod:`densekit.ops.deform_sampled.reference`. Validation happens once here.
"""
from __future__ import annotations

from typing import Optional

import torch

from densekit.ops._backend import (check_bias, check_qkv, choose_backend, int32_offset_reason, scale_reason,
                                   triton_probe)

__all__ = ['deform_sampled_attention']


def deform_sampled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                             table: torch.Tensor, scale: Optional[float] = None,
                             backend: Optional[str] = None) -> torch.Tensor:
    """Every query of an ``H x W`` grid attends to ``N`` sampled keys, with a relative position
    bias bilinearly interpolated from ``table`` at the query-to-sample displacement.

    Args:
        q: queries ``[B, H, W, heads, head_dim]``.
        k: sampled keys ``[B, N, heads, head_dim]``.
        v: sampled values ``[B, N, heads, head_dim_v]``.
        pos: sampling positions ``[B, G, N, 2]``, ``(y, x)`` normalised to ``[-1, 1]``
            (``align_corners=True``), one set per offset group; ``heads`` must be a multiple of
            ``G`` (head ``h`` uses group ``h // (heads // G)``).
        table: relative position bias table ``[heads, Th, Tw]`` (DAT: ``Th = 2 * q_h - 1`` of
            the 224-pixel pretraining map), sampled at ``(q - pos) / 2``.
        scale: logit scale, default ``head_dim ** -0.5``.
        backend: ``'triton' | 'reference'`` or ``None`` (automatic).

    Returns:
        ``[B, H, W, heads, head_dim_v]``.
    """
    op = 'deform_sampled_attention'
    if q.dim() != 5 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f'{op}: expected q [B, H, W, heads, head_dim], k / v [B, N, heads, head_dim], got '
                         f'{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}')
    B, H, W, h, D = q.shape
    if k.shape[0] != B or k.shape[2:] != (h, D) or v.shape[:3] != k.shape[:3]:
        raise ValueError(f'{op}: q, k, v shapes do not match: {tuple(q.shape)}, {tuple(k.shape)}, '
                         f'{tuple(v.shape)}')
    check_qkv(op, q, k, v)
    N = k.shape[1]
    if pos.dim() != 4 or pos.shape[0] != B or pos.shape[2] != N or pos.shape[3] != 2 or pos.shape[1] < 1:
        raise ValueError(f'{op}: pos must be [B={B}, groups, N={N}, 2], got {tuple(pos.shape)}')
    if h % pos.shape[1]:
        raise ValueError(f'{op}: heads={h} is not a multiple of the {pos.shape[1]} offset groups')
    if table.dim() != 3 or table.shape[0] != h or min(table.shape[1:]) < 1:
        raise ValueError(f'{op}: table must be [heads={h}, Th, Tw], got {tuple(table.shape)}')
    check_bias(op, 'pos', pos, q)
    check_bias(op, 'table', table, q)
    if scale is None:
        scale = D ** -0.5

    def _triton(explicit):
        if q.numel() == 0 or N == 0:
            return 'empty input'
        return (scale_reason(scale) or triton_probe(explicit, q, k, v)
                or int32_offset_reason({'pos': pos.numel(), 'table': table.numel() * B}))

    name = choose_backend(op, {'triton': _triton, 'reference': lambda explicit: None}, backend)
    if name == 'triton':
        from densekit.ops.deform_sampled.triton import deform_sampled_triton
        return deform_sampled_triton(q, k, v, pos, table, scale)
    from densekit.ops.deform_sampled.reference import deform_sampled_reference
    return deform_sampled_reference(q, k, v, pos, table, scale)
