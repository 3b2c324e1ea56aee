"""FlexAttention backend of local_global attention.

The window keys and the extra keys form one key sequence ``[H*W map tokens | P extra tokens]``:
``mask_mod`` admits a map key when it lies in the query's window (masked or clamped border, see
``reference.py``) and every extra key; ``score_mod`` adds one per-query bias table
``[heads, H*W, kh*kw + P]`` (window-slot bias, then extra bias), indexed once (flex's backward
lowering refuses a capture indexed twice). The post-softmax ``local_weights`` term is not a
logit, so it is added outside flex as ``sum_w a_w V_w`` over the gathered windows.

Layouts: as :func:`densekit.ops.local_global.local_global_attention`.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

from densekit.ops._flex_utils import flex_call, make_block_mask
from densekit.ops.local_global.reference import _gather_windows, _local_bias, window_index


def _starts(length: int, kernel: int, border: str, device) -> torch.Tensor:
    """First window position of every query on one axis (negative at masked borders)."""
    i = torch.arange(length, device=device)
    if border == 'mask':
        return i - kernel // 2
    return (i - kernel // 2).clamp(0, length - kernel)


def _slot(q_idx, kv_idx, W, kernel, sy, sx):
    """Window slot of map key ``kv_idx`` for query ``q_idx`` and whether the key is in the window."""
    kh, kw = kernel
    ry = kv_idx // W - sy[q_idx // W]
    rx = kv_idx % W - sx[q_idx % W]
    inside = (ry >= 0) & (ry < kh) & (rx >= 0) & (rx < kw)
    return ry.clamp(0, kh - 1) * kw + rx.clamp(0, kw - 1), inside


@functools.lru_cache(maxsize=32)
def _block_mask(H: int, W: int, P: int, kernel: tuple, border: str, device: str):
    sy, sx = _starts(H, kernel[0], border, device), _starts(W, kernel[1], border, device)
    N = H * W

    def mask_mod(b, h, q_idx, kv_idx):
        _, inside = _slot(q_idx, kv_idx, W, kernel, sy, sx)
        return inside | (kv_idx >= N)

    return make_block_mask(mask_mod, N, N + P, device), sy, sx


def local_global_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_extra: torch.Tensor,
                      v_extra: torch.Tensor, kernel_size: Tuple[int, int], border: str,
                      rpb: Optional[torch.Tensor], extra_bias: Optional[torch.Tensor],
                      local_weights: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """local_global attention through FlexAttention on validated inputs."""
    B, H, W, h, d = q.shape
    P, N = k_extra.shape[1], H * W
    kernel = tuple(kernel_size)
    kk = kernel[0] * kernel[1]
    block_mask, sy, sx = _block_mask(H, W, P, kernel, border, str(q.device))
    ih, vh = window_index(H, kernel[0], border, q.device)
    iw, vw = window_index(W, kernel[1], border, q.device)
    score_mod = None
    if rpb is not None or extra_bias is not None:
        local = (_local_bias(rpb.float(), kernel, ih, iw).expand(h, H, W, kk) if rpb is not None
                 else q.new_zeros(h, H, W, kk, dtype=torch.float32))
        if extra_bias is None:
            extra = q.new_zeros(h, H, W, P, dtype=torch.float32)
        elif extra_bias.dim() == 2:
            extra = extra_bias.float()[:, None, None].expand(h, H, W, P)
        else:
            extra = extra_bias.float()
        table = torch.cat([local, extra], dim=-1).reshape(h, N, kk + P)

        def score_mod(score, b, hh, q_idx, kv_idx):
            slot, _ = _slot(q_idx, kv_idx, W, kernel, sy, sx)
            col = torch.where(kv_idx < N, slot, kk + (kv_idx - N).clamp(min=0))  # both in range
            return score + table[hh, q_idx, col]

    keys = torch.cat([k.reshape(B, N, h, d), k_extra], dim=1).transpose(1, 2)
    values = torch.cat([v.reshape(B, N, h, d), v_extra], dim=1).transpose(1, 2)
    out = flex_call(q.reshape(B, N, h, d).transpose(1, 2), keys, values, score_mod, block_mask, scale)
    out = out.transpose(1, 2).reshape(q.shape)
    if local_weights is not None:
        if border == 'mask':  # keys outside the map carry zero values in TransNeXt
            valid = (vh[:, None, :, None] & vw[None, :, None, :]).reshape(H, W, 1, kk)
            local_weights = local_weights.masked_fill(~valid, 0.0)
        out = out + torch.einsum('bhwnk,bhwknd->bhwnd', local_weights, _gather_windows(v, ih, iw, kernel, border))
    return out
