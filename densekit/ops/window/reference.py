"""Pure-PyTorch reference (shifted) window attention — the spec and the CPU path.

Swin Transformer (Liu et al., ICCV 2021, arXiv:2103.14030), W-MSA / SW-MSA.

Layouts: q, k, v, out ``[B, H, W, heads, head_dim]`` with ``H % wh == W % ww == 0`` (callers pad
*before* the qkv projection, as the official dense-prediction code does:
``densekit.layers.window.pad_to_multiple``); rpb ``[heads, 2wh-1, 2ww-1]`` indexed by the
*query-minus-key* offset plus ``(wh-1, ww-1)`` (Swin's convention; ``rpb_table_to_dense`` converts
an official table).

Semantics: roll the map by ``-shift``, split it into ``wh x ww`` windows, attend within each
window (query and key must also share a shift region, see
``densekit.layers.window.shift_region_labels``), roll back. Cross-region pairs are excluded
exactly (probability 0); the official code adds -100 instead, a difference of at most
``exp(-100)`` relative, below any floating-point tolerance.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from densekit.layers.window import relative_position_index, shift_region_labels, window_partition, window_reverse


def window_mask(size: Tuple[int, int], window: Tuple[int, int], shift: Tuple[int, int], device) -> Optional[torch.Tensor]:
    """Boolean ``[nW, N, N]`` (True = may attend) for the rolled map, or None without shift."""
    if shift == (0, 0):
        return None
    Hp, Wp = size
    lab = (shift_region_labels(Hp, window[0], shift[0], device)[:, None] * 3
           + shift_region_labels(Wp, window[1], shift[1], device)[None, :])
    win = window_partition(lab[None, :, :, None], window).reshape(-1, window[0] * window[1])
    return win[:, :, None] == win[:, None, :]


def window_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: Tuple[int, int],
                     shift: Tuple[int, int], rpb: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """Reference window attention on validated inputs (see module docstring)."""
    B, H, W, h, D = q.shape
    wh, ww = window
    N = wh * ww
    ct = torch.float64 if q.dtype == torch.float64 else torch.float32

    def to_windows(x):
        x = x.to(ct)
        if shift != (0, 0):
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        x = window_partition(x.reshape(B, H, W, h * D), window)  # [B*nW, wh, ww, h*D]
        return x.reshape(-1, N, h, D).transpose(1, 2)  # [B*nW, h, N, D]

    qw, kw, vw = to_windows(q), to_windows(k), to_windows(v)
    # additive mask: bias (+ -inf across shift regions), [1 or nW, h, N, N], fed to SDPA so the
    # CPU path runs fused kernels (math backend for float64)
    bias = None
    if rpb is not None:
        idx = relative_position_index(window, device=q.device)
        bias = rpb.to(ct).reshape(h, -1)[:, idx][None]  # [1, h, N, N]
    mask = window_mask((H, W), window, shift, q.device)
    if mask is not None:
        neg = torch.zeros(mask.shape, dtype=ct, device=q.device).masked_fill(~mask, float('-inf'))[:, None]
        bias = neg if bias is None else bias + neg  # [nW, h, N, N]
    if bias is not None and bias.shape[0] > 1:
        nW = bias.shape[0]
        out = F.scaled_dot_product_attention(qw.view(B, nW, h, N, D), kw.view(B, nW, h, N, D),
                                             vw.view(B, nW, h, N, D), attn_mask=bias, scale=scale)
        out = out.view(-1, h, N, D)
    else:
        out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=bias, scale=scale)  # [B*nW, h, N, D]
    out = window_reverse(out.transpose(1, 2).reshape(-1, wh, ww, h * D), window, H, W)
    if shift != (0, 0):
        out = torch.roll(out, shifts=shift, dims=(1, 2))
    return out.reshape(B, H, W, h, D).to(q.dtype)
