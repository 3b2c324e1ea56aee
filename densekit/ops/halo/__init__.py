"""HaloNet blocked local attention — public functional API.

HaloNet (Vaswani et al., CVPR 2021, arXiv:2103.12731). Layouts and the two padding modes
(``'zeros'``: timm ``HaloAttn`` numerics; ``'mask'``: out-of-map keys excluded) are defined in
:mod:`densekit.ops.halo.reference`. Validation happens once here, before dispatch.
"""
from __future__ import annotations

import math
import operator
from typing import Mapping, Optional

import torch

from densekit.ops._backend import (check_bias, check_qkv, choose_backend, flex_probe, int32_offset_reason,
                                   scale_reason, triton_probe)

__all__ = ['halo_attention']

_PADDING = ('zeros', 'mask')


def _int(value, name: str) -> int:
    try:  # numpy ints and 0-d integer tensors pass; a float would reach the kernels' grid maths
        return operator.index(value)
    except TypeError:
        raise TypeError(f'halo_attention: {name} must be an int, got {value!r}') from None


def _scratch_sizes(q, rel_h, rel_w, win: int) -> dict:
    """Elements of the scratch buffers the Triton kernels index (``int32_offset_reason``; q, k, v
    are checked by ``triton_probe``). Outputs, gradients and the log-sum-exp are no larger than
    q / v; the fp32 relative-logit tables (and their gradients) are ``[B, H/s, W/s, heads, 2*win-1]``,
    larger than q when ``2*win-1`` exceeds head_dim."""
    sizes = {}
    for name, t in (('rel_h', rel_h), ('rel_w', rel_w)):
        if t is not None:
            sizes[f'the {name} logit table'] = math.prod(q.shape[:-1]) * (2 * win - 1)
    return sizes


def halo_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, halo_size: int,
                   rel_h: Optional[torch.Tensor] = None, rel_w: Optional[torch.Tensor] = None,
                   scale: Optional[float] = None, scale_pos_embed: bool = False, padding: str = 'zeros',
                   query_stride: int = 1, backend: Optional[str] = None,
                   triton_config: Optional[Mapping] = None) -> torch.Tensor:
    """Blocked-halo attention: ``b x b`` query blocks attend to their ``(b+2*halo)^2`` neighbourhood.

    Args:
        q: queries ``[B, H, W, heads, head_dim]``, or ``[B, H/s, W/s, heads, head_dim]`` with
            ``query_stride=s``.
        k: keys ``[B, H, W, heads, head_dim]``; ``H``, ``W`` multiples of ``block_size``.
        v: values ``[B, H, W, heads, head_dim_v]``; the value head dim may differ from the
            query / key one (timm ``HaloAttn``'s ``dim_head_v`` vs ``dim_head_qk``).
        block_size: query block size ``b``.
        halo_size: halo ``h >= 0`` around each block.
        rel_h: optional ``[2*(b+2h)-1, head_dim]`` relative embedding along height (timm
            ``PosEmbedRel.height_rel``); the logit gets ``q . rel_h[ky - qy + h + win - 1]``.
        rel_w: same along width.
        scale: logit scale, default ``head_dim ** -0.5``.
        scale_pos_embed: scale the relative logits too (timm ``scale_pos_embed=True``).
        padding: ``'zeros'`` (timm numerics: zero keys/values outside the map take part in the
            softmax) or ``'mask'`` (they are excluded).
        query_stride: ``s`` dividing ``block_size``: the queries are a stride-``s`` map (timm
            ``HaloAttn(stride=s)``, whose q projection is strided), ``block_size/s`` per block side,
            each attending to its block's full-resolution window; the relative position is the
            key's in the window minus the query's in the subsampled block (timm's indexing).
        backend: ``'triton' | 'flex' | 'reference'`` or ``None`` (automatic).
        triton_config: launch configuration of the Triton kernels (keys:
            ``densekit.ops.halo.triton.CONFIG_KEYS``); ``None`` keeps their defaults. The other
            backends ignore it.

    Returns:
        ``[B, H, W, heads, head_dim_v]`` (``[B, H/s, W/s, heads, head_dim_v]`` with ``query_stride=s``).
    """
    if k.dim() != 5:
        raise ValueError(f'halo_attention: expected k [B, H, W, heads, head_dim], got {tuple(k.shape)}')
    if v.dim() != 5 or v.shape[:-1] != k.shape[:-1]:
        raise ValueError(f'halo_attention: v {tuple(v.shape)} must match k {tuple(k.shape)} in all but its '
                         f'head dim')
    check_qkv('halo_attention', q, k, v)
    block_size = _int(block_size, 'block_size')
    halo_size = _int(halo_size, 'halo_size')
    query_stride = _int(query_stride, 'query_stride')
    if block_size < 1 or halo_size < 0:
        raise ValueError(f'halo_attention: need block_size >= 1 and halo_size >= 0, got {block_size}, {halo_size}')
    if query_stride < 1 or block_size % query_stride:
        raise ValueError(f'halo_attention: query_stride {query_stride} must divide block_size {block_size}')
    B, H, W, nh, D = k.shape
    if H % block_size or W % block_size:
        raise ValueError(f'halo_attention: spatial size {(H, W)} is not a multiple of block_size {block_size}')
    s = query_stride
    if tuple(q.shape) != (B, H // s, W // s, nh, D):
        expect = 'same shape as k' if s == 1 else f'k subsampled by query_stride {s}: {(B, H // s, W // s, nh, D)}'
        raise ValueError(f'halo_attention: q has shape {tuple(q.shape)}, expected {expect} '
                         f'(k: {tuple(k.shape)})')
    if padding not in _PADDING:
        raise ValueError(f'halo_attention: padding must be one of {_PADDING}, got {padding!r}')
    win = block_size + 2 * halo_size
    for name, t in (('rel_h', rel_h), ('rel_w', rel_w)):
        if t is not None and tuple(t.shape) != (2 * win - 1, q.shape[-1]):
            raise ValueError(f'halo_attention: {name} must have shape {(2 * win - 1, q.shape[-1])}, '
                             f'got {tuple(t.shape)}')
        check_bias('halo_attention', name, t, q)
    if scale is None:
        scale = q.shape[-1] ** -0.5

    def _triton(explicit):
        return (scale_reason(scale) or triton_probe(explicit, q, k, v)
                or int32_offset_reason(_scratch_sizes(q, rel_h, rel_w, win)))

    def _flex(explicit):
        return scale_reason(scale) or flex_probe(explicit, q, k, v, rel_h, rel_w)

    name = choose_backend('halo_attention',
                          {'triton': _triton, 'flex': _flex, 'reference': lambda explicit: None}, backend)
    args = (q, k, v, block_size, halo_size, rel_h, rel_w, scale, scale_pos_embed, padding, query_stride)
    if name == 'triton':
        from densekit.ops.halo.triton import halo_triton
        return halo_triton(*args, config=triton_config)
    if name == 'flex':
        from densekit.ops.halo.flex import halo_flex
        return halo_flex(*args)
    from densekit.ops.halo.reference import halo_reference
    return halo_reference(*args)
