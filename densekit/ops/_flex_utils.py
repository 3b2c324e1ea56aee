"""Shared FlexAttention plumbing for the ``flex`` backends (``torch.nn.attention.flex_attention``).

Layout at this level is flex's own ``[B, heads, S, D]``; the op packages convert.
"""
from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=1)
def compiled_flex():
    """``flex_attention`` compiled once per process (eager flex is a slow dense fallback)."""
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


def flex_call(q, k, v, score_mod, block_mask, scale):
    """Run flex on ``[B, h, S, D]`` tensors: compiled on CUDA, eager on CPU (forward only there)."""
    if q.device.type == 'cuda':
        return compiled_flex()(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)
    from torch.nn.attention.flex_attention import flex_attention
    return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)


def make_block_mask(mask_mod, q_len: int, kv_len: int, device: str):
    """BlockMask shared by all batches and heads; built by a compiled kernel on CUDA so that large
    maps (e.g. 200x336 tokens) never materialise a dense ``q_len x kv_len`` boolean."""
    from torch.nn.attention.flex_attention import create_block_mask
    return create_block_mask(mask_mod, None, None, q_len, kv_len, device=device,
                             _compile=str(device).startswith('cuda'))
