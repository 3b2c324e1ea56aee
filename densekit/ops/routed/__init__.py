"""Routed (bi-level routing) attention — public functional API.

BiFormer (Zhu et al., CVPR 2023, arXiv:2303.08810). The routing step (region affinity from
mean-pooled q / k, top-k) and the local-context enhancement stay in the model
(``densekit.models.backbones.biformer``); this op is the token-to-token attention of each region
to the tokens of its routed regions. Layouts and semantics: :mod:`densekit.ops.routed.reference`.
Validation happens once here, before dispatch.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from densekit.layers.window import to_2tuple
from densekit.ops._backend import check_qkv, choose_backend, flex_probe, scale_reason, triton_probe

__all__ = ['routed_attention']


def routed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor,
                     regions: Union[int, Sequence[int]], scale: Optional[float] = None,
                     backend: Optional[str] = None) -> torch.Tensor:
    """Each query region attends to the tokens of the regions its row of ``index`` lists.

    Args:
        q: queries ``[B, H, W, heads, head_dim]``; ``H`` and ``W`` must be multiples of the
            region grid (BiFormer's ``auto_pad`` pads the attention input before the qkv
            projection).
        k: keys, same shape as ``q``.
        v: values ``[B, H, W, heads, head_dim_v]``.
        index: ``[B, R, topk]`` integer region indices in ``[0, R)``, ``R = rh * rw`` regions
            numbered row-major; the entries of a row must be distinct (``torch.topk`` indices).
        regions: the region grid, ``n_win`` (int, ``n_win x n_win`` regions) or ``(rh, rw)``.
        scale: logit scale, default ``head_dim ** -0.5`` (BiFormer uses ``qk_dim ** -0.5`` of the
            whole, multi-head q / k width).
        backend: ``'triton' | 'flex' | 'reference'`` or ``None`` (automatic).

    Returns:
        ``[B, H, W, heads, head_dim_v]``.
    """
    op = 'routed_attention'
    if q.dim() != 5 or v.dim() != 5:
        raise ValueError(f'{op}: expected q, v [B, H, W, heads, head_dim], got {tuple(q.shape)}, '
                         f'{tuple(v.shape)}')
    if k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f'{op}: q, k, v shapes do not match: {tuple(q.shape)}, {tuple(k.shape)}, '
                         f'{tuple(v.shape)}')
    check_qkv(op, q, k, v)
    regions = to_2tuple(regions, 'regions')
    if min(regions) < 1:
        raise ValueError(f'{op}: regions must be >= 1, got {regions}')
    B, H, W = q.shape[:3]
    if H % regions[0] or W % regions[1]:
        raise ValueError(f'{op}: spatial size {(H, W)} is not a multiple of the region grid {regions}; '
                         'pad the qkv input first')
    R = regions[0] * regions[1]
    if index.dim() != 3 or index.shape[0] != B or index.shape[1] != R or index.shape[2] < 1:
        raise ValueError(f'{op}: index must be [B={B}, R={R}, topk>=1], got {tuple(index.shape)}')
    if index.dtype not in (torch.int64, torch.int32):
        raise ValueError(f'{op}: index must be int64 or int32, got {index.dtype}')
    if index.device != q.device:
        raise ValueError(f'{op}: index is on {index.device}, q on {q.device}')
    if index.shape[2] > R:
        raise ValueError(f'{op}: topk {index.shape[2]} exceeds the {R} regions')
    index = index.long()
    if scale is None:
        scale = q.shape[-1] ** -0.5

    def _triton(explicit):
        if q.numel() == 0:
            return 'empty input'
        return scale_reason(scale) or triton_probe(explicit, q, k, v)

    def _flex(explicit):
        return scale_reason(scale) or flex_probe(explicit, q, k, v)

    name = choose_backend(op, {'triton': _triton, 'flex': _flex, 'reference': lambda explicit: None}, backend)
    if name == 'triton':
        from densekit.ops.routed.triton import routed_triton
        return routed_triton(q, k, v, index, regions, scale)
    if name == 'flex':
        from densekit.ops.routed.flex import routed_flex
        return routed_flex(q, k, v, index, regions, scale)
    from densekit.ops.routed.reference import routed_reference
    return routed_reference(q, k, v, index, regions, scale)
