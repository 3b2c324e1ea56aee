"""Local window attention joined with extra key / value tokens in one softmax — public API.

TransNeXt's pixel-focused (aggregated) attention (Shi, "TransNeXt: Robust Foveal Visual
Perception for Vision Transformers", CVPR 2024, arXiv:2311.17132): every query attends to its
``k x k`` sliding window and to a set of pooled tokens under the same softmax. The window border
is TransNeXt's zero-padded, masked one (``border='mask'``) or NA's clamped one (``'clamp'``); see
:mod:`densekit.ops.local_global.reference` for the exact definition.

TransNeXt's length-scaled cosine attention is per-token work the caller does before the call
(L2-normalised keys; queries ``(normalize(q) + query_embedding) * softplus(temperature) *
log(n_local + P)``) and passes ``scale=1``; its learnable tokens enter as ``local_weights``.

Layouts: q, k, v, out ``[B, H, W, heads, head_dim]``; k_extra, v_extra ``[B, P, heads, head_dim]``.

:func:`window_extra_attention` (FasterViT's windows with per-window carrier tokens) is its own
kernel family, :mod:`densekit.ops.window_extra`; it is re-exported here.

Backends (``backend=`` or ``DENSEKIT_ATTN_BACKEND``, through :func:`densekit.ops._backend.choose_backend`),
tried in this order: ``'triton'`` (fused forward and backward kernels,
:mod:`densekit.ops.local_global.triton`; CUDA, or the CPU interpreter by name under
``TRITON_INTERPRET=1``), ``'flex'`` (``torch.nn.attention.flex_attention`` over the concatenated
key set; CUDA, CPU forward only by name), ``'reference'`` (pure PyTorch, any device).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import torch

from densekit.layers.window import to_ntuple
from densekit.ops._backend import (check_bias, check_qkv, choose_backend, flex_probe, int32_offset_reason,
                                   scale_reason, triton_probe)
from densekit.ops.local_global.reference import local_global_reference
from densekit.ops.window_extra import window_extra_attention  # noqa: F401  (re-export)

IntOrTuple = Union[int, Sequence[int]]

__all__ = ['local_global_attention', 'window_extra_attention']

_OP = 'local_global_attention'
BORDERS = ('mask', 'clamp')


def _validate(q, k, v, k_extra, v_extra, kernel, border, rpb, extra_bias, local_weights):
    if q.dim() != 5:
        raise ValueError(f'{_OP}: expected q of shape [B, H, W, heads, head_dim], got {tuple(q.shape)}')
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f'{_OP}: q, k, v must have the same shape, got {tuple(q.shape)}, '
                         f'{tuple(k.shape)}, {tuple(v.shape)}')
    check_qkv(_OP, q, k, v)
    B, H, W, heads, d = q.shape
    if k_extra.dim() != 4 or v_extra.shape != k_extra.shape or k_extra.shape[0] != B \
            or tuple(k_extra.shape[2:]) != (heads, d):
        raise ValueError(f'{_OP}: k_extra and v_extra must both be [B, P, heads, head_dim] = '
                         f'[{B}, P, {heads}, {d}], got {tuple(k_extra.shape)}, {tuple(v_extra.shape)}')
    for name, t in (('k_extra', k_extra), ('v_extra', v_extra)):
        if t.dtype != q.dtype or t.device != q.device:
            raise ValueError(f'{_OP}: {name} must match q ({q.dtype}, {q.device}), got {t.dtype}, {t.device}')
    if border not in BORDERS:
        raise ValueError(f'{_OP}: border must be one of {BORDERS}, got {border!r}')
    kernel = to_ntuple(kernel, 2, 'kernel_size')
    for a, (L, kk) in enumerate(zip((H, W), kernel)):
        if kk < 1 or kk % 2 == 0:
            raise ValueError(f'{_OP}: kernel_size must be odd and >= 1, got {kk} on axis {a}')
        if border == 'clamp' and L < kk:
            raise ValueError(f"{_OP}: border='clamp' needs the map to hold the window: size {L} < "
                             f'kernel_size {kk} on axis {a}')
    if k_extra.shape[1] == 0 and border == 'mask' and min(H, W) == 0:
        raise ValueError(f'{_OP}: empty map and no extra tokens')
    if rpb is not None:
        kh, kw = kernel
        shapes = ((heads, kh, kw), (heads, 2 * kh - 1, 2 * kw - 1))
        if tuple(rpb.shape) not in shapes:
            raise ValueError(f'{_OP}: rpb must be [heads, kh, kw] (window slot) or [heads, 2kh-1, 2kw-1] '
                             f'(offset) = {shapes[0]} or {shapes[1]}, got {tuple(rpb.shape)}')
        check_bias(_OP, 'rpb', rpb, q)
    if extra_bias is not None:
        P = k_extra.shape[1]
        shapes = ((heads, P), (heads, H, W, P))
        if tuple(extra_bias.shape) not in shapes:
            raise ValueError(f'{_OP}: extra_bias must be [heads, P] or [heads, H, W, P] = {shapes[0]} or '
                             f'{shapes[1]}, got {tuple(extra_bias.shape)}')
        check_bias(_OP, 'extra_bias', extra_bias, q)
    if local_weights is not None:
        want = (B, H, W, heads, kernel[0] * kernel[1])
        if tuple(local_weights.shape) != want:
            raise ValueError(f'{_OP}: local_weights must be [B, H, W, heads, kh*kw] = {want}, '
                             f'got {tuple(local_weights.shape)}')
        check_bias(_OP, 'local_weights', local_weights, q)
    return kernel


def local_global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_extra: torch.Tensor,
                           v_extra: torch.Tensor, kernel_size: IntOrTuple, *, border: str = 'mask',
                           rpb: Optional[torch.Tensor] = None, extra_bias: Optional[torch.Tensor] = None,
                           local_weights: Optional[torch.Tensor] = None, scale: Optional[float] = None,
                           backend: Optional[str] = None,
                           triton_config: Optional[Mapping] = None) -> torch.Tensor:
    """Sliding-window attention and attention to extra tokens under one softmax.

    Args:
        q: queries ``[B, H, W, heads, head_dim]``.
        k: window keys, same shape as ``q``.
        v: window values, same shape as ``q``.
        k_extra: extra keys ``[B, P, heads, head_dim]`` seen by every query (TransNeXt: pooled tokens).
        v_extra: extra values, same shape as ``k_extra``.
        kernel_size: odd window size, int or ``(kh, kw)``.
        border: ``'mask'`` (TransNeXt: centred window, keys outside the map excluded) or
            ``'clamp'`` (NA: the window is shifted inside the map).
        rpb: local bias ``[heads, kh, kw]`` by window slot or ``[heads, 2kh-1, 2kw-1]`` by
            key-minus-query offset.
        extra_bias: bias of the extra logits, ``[heads, P]`` or per query ``[heads, H, W, P]``.
        local_weights: ``[B, H, W, heads, kh*kw]`` added to the window probabilities after the
            softmax (TransNeXt's learnable-token term).
        scale: logit scale applied to ``q``, default ``head_dim ** -0.5`` (TransNeXt: ``1.0``).
        backend: ``'triton' | 'flex' | 'reference'`` or ``None`` (automatic).
        triton_config: launch configuration of the Triton kernels (keys
            ``densekit.ops.local_global.triton.CONFIG_KEYS``), ``None`` for the defaults.

    Returns:
        ``[B, H, W, heads, head_dim]``.
    """
    kernel = _validate(q, k, v, k_extra, v_extra, kernel_size, border, rpb, extra_bias, local_weights)
    if scale is None:
        scale = q.shape[-1] ** -0.5

    def _triton(explicit):
        if q.numel() == 0:
            return 'empty input'
        B, H, W, heads, d = q.shape
        P = k_extra.shape[1]
        # scratch of the backward: per-run partial sums of the extra-token gradients, the window
        # dS, the per-query extra-bias dS
        run = max(1, int((triton_config or {}).get('queries_per_program', 1024)))
        return (scale_reason(scale) or triton_probe(explicit, q, k, v)
                or int32_offset_reason({'k_extra partial sums': -(-H * W // run) * B * heads * P * d,
                                        'window dS': B * H * W * heads * kernel[0] * kernel[1],
                                        'extra_bias dS': B * heads * H * W * P}))

    def _flex(explicit):
        return scale_reason(scale) or flex_probe(explicit, q, k, v, k_extra, v_extra, rpb, extra_bias, local_weights)

    name = choose_backend(_OP, {'triton': _triton, 'flex': _flex, 'reference': lambda explicit: None}, backend)
    if name == 'triton':
        from densekit.ops.local_global.triton import local_global_triton
        return local_global_triton(q, k, v, k_extra, v_extra, kernel, border, rpb, extra_bias, local_weights,
                                   float(scale), triton_config)
    if name == 'flex':
        from densekit.ops.local_global.flex import local_global_flex
        return local_global_flex(q, k, v, k_extra, v_extra, kernel, border, rpb, extra_bias, local_weights,
                                 float(scale))
    return local_global_reference(q, k, v, k_extra, v_extra, kernel, border, rpb, extra_bias,
                                  local_weights, float(scale))
