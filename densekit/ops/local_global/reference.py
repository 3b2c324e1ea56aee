"""Local attention joined with extra key / value tokens under one softmax — pure PyTorch reference.

This is the specification of :func:`densekit.ops.local_global.local_global_attention` and its CPU
path. For a query at ``(y, x)`` with ``kh x kw`` window keys ``K_w`` and ``P`` extra keys ``K_e``
(TransNeXt: the pooled tokens), per head::

    logits = [scale * q.K_w + b_local | scale * q.K_e + b_extra]     # kh*kw + P entries
    p      = softmax(logits)                                         # ONE softmax over both
    out    = sum_w (p_w + a_w) V_w + sum_e p_e V_e

``a`` (``local_weights``, optional) is added to the window probabilities *after* the softmax:
TransNeXt's "dynamic local bias" ``q_norm @ learnable_tokens + learnable_bias``.

Window borders (``border``):

* ``'mask'`` — TransNeXt: the ``kh x kw`` window is centred on the query and zero-padded
  (``nn.Unfold(padding=k // 2)``); keys outside the map are excluded from the softmax and their
  ``a_w`` term multiplies a zero value (the official unfolds zero-padded values), so it drops out.
* ``'clamp'`` — NA (NATTEN <= 0.17): the window is shifted inside the map at the borders, every
  query sees exactly ``kh * kw`` keys; requires ``H >= kh`` and ``W >= kw``.

Local bias ``rpb``: ``[heads, kh, kw]`` is indexed by the key's slot in the window (TransNeXt's
``relative_pos_bias_local`` reshaped), ``[heads, 2kh-1, 2kw-1]`` by the key-minus-query offset plus
``k-1`` (NA's table). In ``'mask'`` mode both are the same thing (slot = offset + k // 2).

Extra bias ``extra_bias``: ``[heads, P]`` (one per head) or ``[heads, H, W, P]`` (per query, as
TransNeXt's pooled-token position bias).

The reference never forms an ``[HW, HW]`` matrix: the window keys are gathered
(``[B, H, W, kh*kw, heads, d]``, as the official ``unfold`` does: shifted slices of the
zero-padded map for ``'mask'``, an index gather for ``'clamp'``) and the extra part is one batched
matmul. It is plain autograd (double backward works).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

__all__ = ['window_index', 'local_global_reference']


def window_index(length: int, kernel: int, border: str, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Key positions and validity of every query's window along one axis.

    Returns:
        ``(index, valid)``, both ``[length, kernel]``: the key position of window slot ``j`` of the
        query at ``i`` (clamped into the map so it can be gathered) and whether it lies inside the
        map (always true for ``'clamp'``).
    """
    i = torch.arange(length, device=device)[:, None]
    j = torch.arange(kernel, device=device)[None, :]
    if border == 'mask':
        pos = i - kernel // 2 + j
        valid = (pos >= 0) & (pos < length)
        return pos.clamp(0, length - 1), valid
    start = (i - kernel // 2).clamp(0, length - kernel)
    pos = start + j
    return pos, torch.ones_like(pos, dtype=torch.bool)


def _local_bias(rpb: torch.Tensor, kernel, ih: torch.Tensor, iw: torch.Tensor) -> torch.Tensor:
    """``[heads, H, W, kh*kw]`` bias of every query's window slots (or ``[heads, 1, 1, kh*kw]``)."""
    kh, kw = kernel
    heads = rpb.shape[0]
    if tuple(rpb.shape[1:]) == (kh, kw):
        return rpb.reshape(heads, 1, 1, kh * kw)
    H, W = ih.shape[0], iw.shape[0]
    oh = ih - torch.arange(H, device=ih.device)[:, None] + kh - 1  # [H, kh]
    ow = iw - torch.arange(W, device=iw.device)[:, None] + kw - 1  # [W, kw]
    b = rpb[:, oh[:, None, :, None], ow[None, :, None, :]]  # [heads, H, W, kh, kw]
    return b.reshape(heads, H, W, kh * kw)


def _gather_windows(t: torch.Tensor, ih: torch.Tensor, iw: torch.Tensor, kernel, border: str) -> torch.Tensor:
    """``[B, H, W, kh*kw, heads, d]`` window tokens of every query. Masked windows are slices of
    the zero-padded map (their backward is a cheap strided add, unlike an indexed scatter)."""
    kh, kw = kernel
    H, W = t.shape[1:3]
    if border == 'mask':
        ph, pw = kh // 2, kw // 2
        tp = torch.nn.functional.pad(t, (0, 0, 0, 0, pw, pw, ph, ph))
        return torch.stack([tp[:, y:y + H, x:x + W] for y in range(kh) for x in range(kw)], dim=3)
    return t[:, ih[:, None, :, None], iw[None, :, None, :]].flatten(3, 4)


def local_global_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_extra: torch.Tensor,
                           v_extra: torch.Tensor, kernel_size: Tuple[int, int], border: str = 'mask',
                           rpb: Optional[torch.Tensor] = None, extra_bias: Optional[torch.Tensor] = None,
                           local_weights: Optional[torch.Tensor] = None, scale: float = 1.0) -> torch.Tensor:
    """See the module docstring. q, k, v ``[B, H, W, heads, d]``; k_extra, v_extra
    ``[B, P, heads, d]``; local_weights ``[B, H, W, heads, kh*kw]``; returns ``[B, H, W, heads, d]``."""
    B, H, W, heads, d = q.shape
    kh, kw = kernel_size
    ih, vh = window_index(H, kh, border, q.device)
    iw, vw = window_index(W, kw, border, q.device)
    k_win, v_win = _gather_windows(k, ih, iw, kernel_size, border), _gather_windows(v, ih, iw, kernel_size, border)
    qs = q * scale if scale != 1.0 else q
    logits_local = torch.einsum('bhwnd,bhwknd->bhwnk', qs, k_win)  # [B, H, W, heads, kh*kw]
    if rpb is not None:
        logits_local = logits_local + _local_bias(rpb, kernel_size, ih, iw).permute(1, 2, 0, 3)
    valid = None
    if border == 'mask':
        valid = (vh[:, None, :, None] & vw[None, :, None, :]).reshape(H, W, 1, kh * kw)
        logits_local = logits_local.masked_fill(~valid, float('-inf'))
    logits_extra = torch.einsum('bhwnd,bpnd->bhwnp', qs, k_extra)  # [B, H, W, heads, P]
    if extra_bias is not None:
        eb = extra_bias if extra_bias.dim() == 2 else extra_bias.permute(1, 2, 0, 3)
        logits_extra = logits_extra + eb
    attn = torch.cat([logits_local, logits_extra], dim=-1).softmax(dim=-1)
    p_local, p_extra = attn.split([kh * kw, k_extra.shape[1]], dim=-1)
    if local_weights is not None:
        lw = local_weights if valid is None else local_weights.masked_fill(~valid, 0.0)
        p_local = p_local + lw
    out = torch.einsum('bhwnk,bhwknd->bhwnd', p_local, v_win)
    return out + torch.einsum('bhwnp,bpnd->bhwnd', p_extra, v_extra)
