"""Neighborhood attention (NAT / DiNAT) — public functional API.

Neighborhood Attention (Hassani et al., CVPR 2023, arXiv:2204.07143); Dilated Neighborhood
Attention (Hassani & Shi, arXiv:2209.15001). Semantics follow NATTEN <= 0.17 exactly (the last
NATTEN with relative position bias); see :mod:`densekit.ops.neighborhood.reference` for the
precise definition.

Layouts: q, k, v, out ``[B, L, heads, head_dim]`` (1-D) or ``[B, H, W, heads, head_dim]`` (2-D);
rpb ``[heads, 2k-1]`` (1-D) or ``[heads, 2kh-1, 2kw-1]`` (2-D).

Backends (``backend=`` or ``DENSEKIT_ATTN_BACKEND``): ``'triton'`` (fused forward/backward),
``'flex'`` (``torch.nn.attention.flex_attention`` with a cached BlockMask), ``'reference'`` (pure
PyTorch). Validation happens once here, before dispatch.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Union

import torch

from densekit.layers.window import to_ntuple
from densekit.ops._backend import (check_bias, check_qkv, choose_backend, flex_probe, int32_offset_reason,
                                   needs_grad, scale_reason, triton_probe)

IntOrTuple = Union[int, Sequence[int]]

__all__ = ['na1d', 'na2d', 'neighborhood_attention']


def _validate(q, k, v, kernel, dilation, rpb, n: int, op: str):
    if q.dim() != n + 3:
        raise ValueError(f'{op}: expected q of shape [B, {"L" if n == 1 else "H, W"}, heads, head_dim] '
                         f'({n + 3} dims), got {tuple(q.shape)}')
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f'{op}: q, k, v must have the same shape, got {tuple(q.shape)}, '
                         f'{tuple(k.shape)}, {tuple(v.shape)}')
    check_qkv(op, q, k, v)
    kernel = to_ntuple(kernel, n, 'kernel_size')
    dilation = to_ntuple(dilation, n, 'dilation')
    spatial = tuple(q.shape[1:1 + n])
    for a, (L, kk, d) in enumerate(zip(spatial, kernel, dilation)):
        if kk < 1 or kk % 2 == 0:
            raise ValueError(f'{op}: kernel_size must be odd and >= 1, got {kk} on axis {a}')
        if d < 1:
            raise ValueError(f'{op}: dilation must be >= 1, got {d} on axis {a}')
        if L < kk * d:
            raise ValueError(f'{op}: input size {L} on axis {a} is smaller than the dilated window '
                             f'kernel_size * dilation = {kk} * {d} = {kk * d}; pad the input or '
                             'reduce kernel_size / dilation')
    if rpb is not None:
        want = (q.shape[-2],) + tuple(2 * kk - 1 for kk in kernel)
        if tuple(rpb.shape) != want:
            raise ValueError(f'{op}: rpb must have shape {want} = [heads, *(2k-1)], got {tuple(rpb.shape)}')
        check_bias(op, 'rpb', rpb, q)
    return kernel, dilation


def _scratch_sizes(q, kernel, rpb) -> dict:
    """Elements of the scratch buffers the Triton kernels index (``int32_offset_reason``; q, k, v
    are checked by ``triton_probe``). Outputs, gradients and the log-sum-exp are no larger than q;
    the fp32 dS buffer of the rpb gradient is ``[B, tokens, heads, prod(kernel)]``; the bias tiles
    stay under ``BIAS_TILE_MAX_BYTES``."""
    sizes = {}
    if rpb is not None and needs_grad(rpb):
        sizes['the dS buffer of the rpb gradient'] = math.prod(q.shape[:-1]) * math.prod(kernel)
    return sizes


def neighborhood_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: IntOrTuple,
                           dilation: IntOrTuple = 1, rpb: Optional[torch.Tensor] = None,
                           scale: Optional[float] = None, backend: Optional[str] = None,
                           n_dims: Optional[int] = None, triton_config: Optional[Mapping] = None) -> torch.Tensor:
    """N-d neighborhood attention (N = 1 or 2); :func:`na1d` / :func:`na2d` are the public entries."""
    n = n_dims if n_dims is not None else q.dim() - 3
    op = f'na{n}d'
    if n not in (1, 2):
        raise ValueError(f'neighborhood attention supports 1 or 2 spatial dims, got {n}')
    kernel, dilation = _validate(q, k, v, kernel_size, dilation, rpb, n, op)
    if scale is None:
        scale = q.shape[-1] ** -0.5

    def _triton(explicit):
        return (scale_reason(scale) or triton_probe(explicit, q, k, v)
                or int32_offset_reason(_scratch_sizes(q, kernel, rpb)))

    def _flex(explicit):
        return scale_reason(scale) or flex_probe(explicit, q, k, v, rpb)

    name = choose_backend(op, {'triton': _triton, 'flex': _flex, 'reference': lambda explicit: None}, backend)
    if name == 'triton':
        from densekit.ops.neighborhood.triton import na_triton
        return na_triton(q, k, v, kernel, dilation, rpb, scale, triton_config)
    if name == 'flex':
        from densekit.ops.neighborhood.flex import na_flex
        return na_flex(q, k, v, kernel, dilation, rpb, scale)
    from densekit.ops.neighborhood.reference import na_reference
    return na_reference(q, k, v, kernel, dilation, rpb, scale)


def na1d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int, dilation: int = 1,
         rpb: Optional[torch.Tensor] = None, scale: Optional[float] = None,
         backend: Optional[str] = None, triton_config: Optional[Mapping] = None) -> torch.Tensor:
    """1-D neighborhood attention.

    Args:
        q: queries ``[B, L, heads, head_dim]``.
        k: keys, same shape as ``q``.
        v: values, same shape as ``q``.
        kernel_size: odd window size ``k``; every query attends to exactly ``k`` keys.
        dilation: dilation ``d``; requires ``L >= k * d``.
        rpb: optional relative position bias ``[heads, 2k-1]`` indexed by key-minus-query offset
            (in window units) plus ``k-1``.
        scale: logit scale, default ``head_dim ** -0.5``.
        backend: ``'triton' | 'flex' | 'reference'`` or ``None`` (automatic).
        triton_config: launch configuration of the Triton kernels (keys:
            ``densekit.ops.neighborhood.triton.CONFIG_KEYS``); ``None`` keeps their defaults. The
            other backends ignore it.

    Returns:
        ``[B, L, heads, head_dim]``.
    """
    return neighborhood_attention(q, k, v, kernel_size, dilation, rpb, scale, backend, n_dims=1,
                                  triton_config=triton_config)


def na2d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: IntOrTuple,
         dilation: IntOrTuple = 1, rpb: Optional[torch.Tensor] = None, scale: Optional[float] = None,
         backend: Optional[str] = None, triton_config: Optional[Mapping] = None) -> torch.Tensor:
    """2-D neighborhood attention (NAT / DiNAT, NATTEN <= 0.17 semantics).

    Args:
        q: queries ``[B, H, W, heads, head_dim]``.
        k: keys, same shape as ``q``.
        v: values, same shape as ``q``.
        kernel_size: odd window size, int or ``(kh, kw)``; each query attends to ``kh * kw`` keys.
        dilation: int or ``(dh, dw)``; requires ``H >= kh * dh`` and ``W >= kw * dw``.
        rpb: optional relative position bias ``[heads, 2kh-1, 2kw-1]``.
        scale: logit scale, default ``head_dim ** -0.5``.
        backend: ``'triton' | 'flex' | 'reference'`` or ``None`` (automatic).
        triton_config: launch configuration of the Triton kernels (keys:
            ``densekit.ops.neighborhood.triton.CONFIG_KEYS``); ``None`` keeps their defaults. The
            other backends ignore it.

    Returns:
        ``[B, H, W, heads, head_dim]``.
    """
    return neighborhood_attention(q, k, v, kernel_size, dilation, rpb, scale, backend, n_dims=2,
                                  triton_config=triton_config)
