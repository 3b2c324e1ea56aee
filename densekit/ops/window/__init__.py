"""Swin (shifted) window attention — public functional API.

Swin Transformer (Liu et al., ICCV 2021, arXiv:2103.14030). Layouts and semantics: see
:mod:`densekit.ops.window.reference`. Validation happens once here, before dispatch.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Union

import torch

from densekit.layers.window import to_2tuple
from densekit.ops._backend import (check_bias, check_qkv, choose_backend, flex_probe, int32_offset_reason,
                                   needs_grad, scale_reason, triton_probe)

# Largest window (in tokens) the fused Triton kernels take with a relative position bias: Swin's
# 12x12 (144) and 16x16 compile for sm_90 without spills (tests/ops/test_triton_compile.py); the
# bias gradient's dS buffer grows with the square of the window, larger ones are not checked.
MAX_TRITON_WINDOW = 256
# Without a bias (CSWin's stripes: 7 x 40 = 280 tokens at 640 px, 1 x 336 and whole 25 x 42 maps
# at detection sizes) nothing grows with the square of the window: the kernels stream its token
# chunks (the kernel code does not depend on the window length; compile-tested up to 1 x 1024).
MAX_TRITON_WINDOW_NO_BIAS = 4096

__all__ = ['window_attention']


def _scratch_sizes(q, window, rpb, config) -> dict:
    """Elements of the scratch buffers the Triton kernels index (``int32_offset_reason``; q, k, v
    are checked by ``triton_probe``). Outputs, gradients and the log-sum-exp are no larger than q;
    with a bias that needs a gradient, the backward's fp32 dS buffer (``ds_shape``; only asked once
    the Triton probe passed, so triton is importable)."""
    sizes = {}
    if rpb is not None and needs_grad(rpb):
        from densekit.ops.window.triton import ds_shape
        B, H, W, nh, D = q.shape
        sizes['the dS buffer of the rpb gradient'] = math.prod(ds_shape(B, H, W, nh, D, window, q.dtype, config)[0])
    return sizes


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window_size: Union[int, Sequence[int]],
                     shift: Union[int, Sequence[int]] = 0, rpb: Optional[torch.Tensor] = None,
                     scale: Optional[float] = None, backend: Optional[str] = None,
                     triton_config: Optional[Mapping] = None) -> torch.Tensor:
    """Swin window attention with optional cyclic shift and relative position bias.

    Args:
        q: queries ``[B, H, W, heads, head_dim]``; ``H`` and ``W`` must be multiples of the window
            (pad the *input of the qkv projection* with ``densekit.layers.window.pad_to_multiple``
            to reproduce the official Swin detection / segmentation numerics).
        k: keys, same shape as ``q``.
        v: values, same shape as ``q``.
        window_size: int or ``(wh, ww)``.
        shift: cyclic shift, int or ``(sh, sw)``, ``0 <= shift < window``; ``0`` = W-MSA.
        rpb: optional ``[heads, 2wh-1, 2ww-1]`` bias (query-minus-key offset; convert an official
            table with ``densekit.layers.window.rpb_table_to_dense``).
        scale: logit scale, default ``head_dim ** -0.5``.
        backend: ``'triton' | 'flex' | 'reference'`` or ``None`` (automatic).
        triton_config: launch configuration of the Triton kernels (keys:
            ``densekit.ops.window.triton.CONFIG_KEYS``); ``None`` keeps their defaults. The other
            backends ignore it.

    Returns:
        ``[B, H, W, heads, head_dim]``.
    """
    if q.dim() != 5:
        raise ValueError(f'window_attention: expected q [B, H, W, heads, head_dim], got {tuple(q.shape)}')
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f'window_attention: q, k, v shapes differ: {tuple(q.shape)}, {tuple(k.shape)}, '
                         f'{tuple(v.shape)}')
    check_qkv('window_attention', q, k, v)
    window = to_2tuple(window_size, 'window_size')
    shift = to_2tuple(shift, 'shift')
    if min(window) < 1:
        raise ValueError(f'window_attention: window_size must be >= 1, got {window}')
    H, W = q.shape[1], q.shape[2]
    if H % window[0] or W % window[1]:
        raise ValueError(f'window_attention: spatial size {(H, W)} is not a multiple of window {window}; '
                         'pad the qkv input with densekit.layers.window.pad_to_multiple first')
    for s, w in zip(shift, window):
        if not 0 <= s < w:
            raise ValueError(f'window_attention: shift {shift} must satisfy 0 <= shift < window {window}')
    if rpb is not None:
        want = (q.shape[-2], 2 * window[0] - 1, 2 * window[1] - 1)
        if tuple(rpb.shape) != want:
            raise ValueError(f'window_attention: rpb must have shape {want}, got {tuple(rpb.shape)}')
        check_bias('window_attention', 'rpb', rpb, q)
    if scale is None:
        scale = q.shape[-1] ** -0.5

    def _triton(explicit):
        # The kernels walk a window in token chunks (each program loops over all of its window's
        # chunks); see MAX_TRITON_WINDOW / MAX_TRITON_WINDOW_NO_BIAS for the sizes checked.
        tokens = window[0] * window[1]
        limit = MAX_TRITON_WINDOW if rpb is not None else MAX_TRITON_WINDOW_NO_BIAS
        if tokens > limit:
            return (f'window {window} has {tokens} tokens, more than the {limit} the Triton kernels '
                    f'are checked for{" with a relative position bias" if rpb is not None else ""}')
        return (scale_reason(scale) or triton_probe(explicit, q, k, v)
                or int32_offset_reason(_scratch_sizes(q, window, rpb, triton_config)))

    def _flex(explicit):
        return scale_reason(scale) or flex_probe(explicit, q, k, v, rpb)

    name = choose_backend('window_attention',
                          {'triton': _triton, 'flex': _flex, 'reference': lambda explicit: None}, backend)
    if name == 'triton':
        from densekit.ops.window.triton import window_triton
        return window_triton(q, k, v, window, shift, rpb, scale, triton_config)
    if name == 'flex':
        from densekit.ops.window.flex import window_flex
        return window_flex(q, k, v, window, shift, rpb, scale)
    from densekit.ops.window.reference import window_reference
    return window_reference(q, k, v, window, shift, rpb, scale)
