"""Window attention where every window also holds its own extra (carrier) tokens — public API.

FasterViT's hierarchical attention (Hatamizadeh et al., "FasterViT: Fast Vision Transformers with
Hierarchical Attention", ICLR 2024, arXiv:2306.06189): every window's ``N`` tokens and its ``P``
carrier tokens attend to each other under one softmax. Layout: q, k, v, out
``[B, nW, P + N, heads, head_dim]``, each window's extra tokens first (as FasterViT concatenates
them, so no copy is made to join them). Semantics: :mod:`densekit.ops.window_extra.reference`.
Validation happens once here, before dispatch.

Backends (``backend=`` or ``DENSEKIT_ATTN_BACKEND``, through :func:`densekit.ops._backend.choose_backend`):
``'triton'`` (fused kernels, forward and backward: :mod:`densekit.ops.window_extra.triton`; CUDA,
or the CPU interpreter by name under ``TRITON_INTERPRET=1``), ``'flex'``
(``torch.nn.attention.flex_attention``, windows end to end with a block-diagonal mask; CUDA, CPU
forward only by name), ``'reference'`` (pure PyTorch, any device); automatic order as written.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

import torch

from densekit.ops._backend import (check_bias, check_qkv, choose_backend, flex_probe, int32_offset_reason,
                                   needs_grad, scale_reason, triton_probe)
from densekit.ops.window_extra.reference import window_extra_reference

__all__ = ['window_extra_attention']

_OP = 'window_extra_attention'
# Largest window (tokens per window, extra ones included) the Triton kernels take with a bias.
# The kernels stream token chunks (their code depends on the window only through the number of
# chunks), but the bias gradient's fp32 dS buffer, [groups, heads, S, S] with about
# min_programs / chunks programs' worth of groups, grows with the square of the bias side S.
# FasterViT's carrier-token attention has 384 tokens (a 16 x 16 bias block), compile-checked in
# tests/ops/test_triton_compile.py; without a bias nothing grows with the square of the window.
MAX_TRITON_TOKENS = 1024
MAX_TRITON_TOKENS_NO_BIAS = 4096


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


def _scratch_sizes(q, bias, config) -> dict:
    """Elements of the scratch buffers the Triton kernels index beyond q, k, v (checked by
    ``triton_probe``; outputs, gradients and the log-sum-exp are no larger than q): with a bias
    that needs a gradient, the backward's fp32 dS buffer (only asked once the Triton probe passed,
    so triton is importable)."""
    if bias is None or not needs_grad(bias):
        return {}
    from densekit.ops.window_extra.triton import ds_shape
    B, nW, T, heads, d = q.shape
    return {'the dS buffer of the bias gradient': math.prod(ds_shape(B, nW, T, heads, d, bias.shape[-1], q.dtype,
                                                                      config)[0])}


def window_extra_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, num_extra: int = 0,
                           bias: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                           backend: Optional[str] = None, triton_config: Optional[Mapping] = None) -> torch.Tensor:
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
        backend: ``'triton' | 'flex' | 'reference'`` or ``None`` (automatic).
        triton_config: launch configuration of the Triton kernels (keys:
            ``densekit.ops.window_extra.triton.CONFIG_KEYS``); ``None`` keeps their defaults. The
            other backends ignore it.

    Returns:
        ``[B, nW, P + N, heads, head_dim]``.
    """
    _validate(q, k, v, num_extra, bias)
    if scale is None:
        scale = q.shape[-1] ** -0.5

    def _triton(explicit):
        if q.numel() == 0:
            return 'empty input (no windows to launch programs for)'
        T = q.shape[2]
        limit = MAX_TRITON_TOKENS if bias is not None else MAX_TRITON_TOKENS_NO_BIAS
        if T > limit:
            return (f'windows of {T} tokens, more than the {limit} the Triton kernels are checked for'
                    f'{" with a bias" if bias is not None else ""}')
        return (scale_reason(scale) or triton_probe(explicit, q, k, v)
                or int32_offset_reason(_scratch_sizes(q, bias, triton_config)))

    def _flex(explicit):
        return scale_reason(scale) or flex_probe(explicit, q, k, v, bias)

    name = choose_backend(_OP, {'triton': _triton, 'flex': _flex, 'reference': lambda explicit: None}, backend)
    if name == 'triton':
        from densekit.ops.window_extra.triton import window_extra_triton
        return window_extra_triton(q, k, v, bias, scale, triton_config)
    if name == 'flex':
        from densekit.ops.window_extra.flex import window_extra_flex
        return window_extra_flex(q, k, v, bias, float(scale))
    return window_extra_reference(q, k, v, num_extra, bias, float(scale))
