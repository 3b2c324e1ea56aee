"""Window attention where every window also holds its own extra (carrier) tokens — public API.

FasterViT's hierarchical attention (Hatamizadeh et al., "FasterViT: Fast Vision Transformers with
Hierarchical Attention", ICLR 2024, arXiv:2306.06189): every window's ``N`` tokens and its ``P``
carrier tokens attend to each other under one softmax. Layout: q, k, v, out
``[B, nW, P + N, heads, head_dim]``, each window's extra tokens first (as FasterViT concatenates
them, so no copy is made to join them). Semantics: :mod:`densekit.ops.window_extra.reference`.
Validation happens once here, before dispatch.

Backends (``backend=`` or ``DENSEKIT_ATTN_BACKEND``, through :func:`densekit.ops._backend.choose_backend`):
``'flex'`` (``torch.nn.attention.flex_attention``, windows end to end with a block-diagonal mask;
CUDA, CPU forward only by name), ``'reference'`` (pure PyTorch, any device).
"""
from __future__ import annotations

from typing import Optional

import torch

from densekit.ops._backend import check_bias, check_qkv, choose_backend, flex_probe, scale_reason
from densekit.ops.window_extra.reference import window_extra_reference

__all__ = ['window_extra_attention']

_OP = 'window_extra_attention'


def _validate(q, k, v, num_extra, bias):
    if q.dim() != 5:
        raise ValueError(f'{_OP}: expected q of shape [B, nW, P + N, heads, head_dim], got {tuple(q.shape)}')
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f'{_OP}: q, k, v must have the same shape, got {tuple(q.shape)}, '
                         f'{tuple(k.shape)}, {tuple(v.shape)}')
    check_qkv(_OP, q, k, v)
    T, heads = q.shape[2], q.shape[3]
    if T == 0:
        raise ValueError(f'{_OP}: windows without tokens')
    if not 0 <= num_extra <= T:
        raise ValueError(f'{_OP}: num_extra must be in [0, {T}] (tokens per window), got {num_extra}')
    if bias is not None:
        N = T - num_extra
        shapes = ((heads, T, T), (heads, N, N))
        if tuple(bias.shape) not in shapes:
            raise ValueError(f'{_OP}: bias must be [heads, P + N, P + N] = {shapes[0]} or the window block '
                             f'[heads, N, N] = {shapes[1]}, got {tuple(bias.shape)}')
        check_bias(_OP, 'bias', bias, q)


def window_extra_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, num_extra: int = 0,
                           bias: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                           backend: Optional[str] = None) -> torch.Tensor:
    """Window attention where each window also holds its own extra (carrier) tokens, one softmax.

    Window ``w``'s ``T = P + N`` tokens (its ``P = num_extra`` extra tokens first, then its ``N``
    window tokens) attend to each other; no token sees another window (see
    :func:`densekit.ops.window_extra.reference.window_extra_reference`). ``P = 0`` is plain
    window attention; one window is full attention.

    Args:
        q: queries ``[B, nW, P + N, heads, head_dim]``.
        k: keys, same shape as ``q``.
        v: values, same shape as ``q``.
        num_extra: extra tokens ``P`` at the start of every window.
        bias: logit bias shared by every window: ``[heads, P + N, P + N]`` over all pairs, or
            ``[heads, N, N]`` over the window tokens only (pairs with an extra token get none;
            FasterViT's zero-padded position bias, never padded here on the flex path).
        scale: logit scale, default ``head_dim ** -0.5``.
        backend: ``'flex' | 'reference'`` or ``None`` (automatic).

    Returns:
        ``[B, nW, P + N, heads, head_dim]``.
    """
    _validate(q, k, v, num_extra, bias)
    if scale is None:
        scale = q.shape[-1] ** -0.5

    def _flex(explicit):
        return scale_reason(scale) or flex_probe(explicit, q, k, v, bias)

    name = choose_backend(_OP, {'flex': _flex, 'reference': lambda explicit: None}, backend)
    if name == 'flex':
        from densekit.ops.window_extra.flex import window_extra_flex
        return window_extra_flex(q, k, v, bias, float(scale))
    return window_extra_reference(q, k, v, num_extra, bias, float(scale))
