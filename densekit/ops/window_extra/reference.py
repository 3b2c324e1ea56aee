"""Window attention with per-window extra tokens under one softmax — pure PyTorch reference.

This is the specification of :func:`densekit.ops.window_extra.window_extra_attention` and its CPU
path (FasterViT's hierarchical attention: a window's carrier tokens are queries and keys of that
window only). q, k, v are ``[B, nW, T, heads, d]``: window ``w``'s ``T = P + N`` tokens, its
``P = num_extra`` extra tokens first. Every token attends to the ``T`` tokens of its window::

    logits = (q_w . k_w^T) * scale + b          # [heads, T, T]; b shared by all windows
    out_w  = softmax(logits) . v_w

``bias`` is ``b`` itself (``[heads, T, T]``) or its window block (``[heads, N, N]``: pairs that
involve an extra token get no bias, FasterViT's zero-padded position bias). The logits are
``(q . k) * scale`` in that order, as FasterViT computes them. It is plain autograd (double
backward works).
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ['window_extra_reference']


def window_extra_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_extra: int = 0,
                           bias: Optional[torch.Tensor] = None, scale: float = 1.0) -> torch.Tensor:
    """See the module docstring; q, k, v ``[B, nW, T, heads, d]``, returns ``[B, nW, T, heads, d]``."""
    B, nW = q.shape[:2]
    qt, kt, vt = (t.flatten(0, 1).transpose(1, 2) for t in (q, k, v))  # [B * nW, heads, T, d]
    logits = qt @ kt.transpose(-2, -1)
    # In place: the matmul's backward needs its inputs, not its output (one [.., T, T] buffer).
    if scale != 1.0:
        logits.mul_(scale)
    if bias is not None:
        pad = q.shape[2] - bias.shape[-1]
        logits.add_(torch.nn.functional.pad(bias, (pad, 0, pad, 0)) if pad else bias)
    return (logits.softmax(dim=-1) @ vt).transpose(1, 2).unflatten(0, (B, nW))
