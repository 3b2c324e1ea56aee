"""FlexAttention backend for HaloNet blocked-halo attention.

Keys / values are zero-padded by ``halo`` on each side in PyTorch (exactly timm's padding); one
flex call then attends from the ``H*W`` queries to the ``(H+2h)*(W+2h)`` padded keys with a
``mask_mod`` selecting each block's window (and, for ``padding='mask'``, only in-map keys) and a
``score_mod`` adding the query-dependent relative logits gathered from per-query tables.
BlockMasks are cached per (size, block, halo, padding, device). Layouts as in ``reference.py``.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F

from densekit.ops._flex_utils import flex_call, make_block_mask


@functools.lru_cache(maxsize=32)
def _block_mask(H: int, W: int, block: int, halo: int, mask_pad: bool, stride: int, device: str):
    win = block + 2 * halo
    Wp = W + 2 * halo
    Wq, bq = W // stride, block // stride  # query map width, queries per block side

    def mask_mod(b, h, q_idx, kv_idx):
        qy, qx = q_idx // Wq, q_idx % Wq
        py, px = kv_idx // Wp, kv_idx % Wp  # padded key coordinates
        oy, ox = py - (qy // bq) * block, px - (qx // bq) * block  # position in the block's window
        ok = (oy >= 0) & (oy < win) & (ox >= 0) & (ox < win)
        if mask_pad:
            ok = ok & (py >= halo) & (py < H + halo) & (px >= halo) & (px < W + halo)
        return ok

    return make_block_mask(mask_mod, (H // stride) * Wq, (H + 2 * halo) * Wp, device)


def halo_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int, halo: int,
              rel_h: Optional[torch.Tensor], rel_w: Optional[torch.Tensor], scale: float,
              scale_pos_embed: bool, padding: str, query_stride: int = 1) -> torch.Tensor:
    """Halo attention through FlexAttention on validated inputs."""
    B, H, W, h, D = k.shape
    Hq, Wq = q.shape[1], q.shape[2]
    bq = block // query_stride
    win = block + 2 * halo
    Wp = W + 2 * halo

    def keys(t):
        t = F.pad(t, (0, 0, 0, 0, halo, halo, halo, halo))
        return t.reshape(B, -1, h, t.shape[-1]).transpose(1, 2)

    # The relative logits are formed and kept in float32 (float64 for float64 inputs), as the
    # reference does: flex adds them to its float32 scores, and q . rel is large (|q . rel| ~ 30 for
    # O(1) q and tables, HaloNet's own init gives ~ sqrt(head_dim)), where one bfloat16 rounding
    # of the table moves a logit by up to 0.125 and the softmax weight by ~13%.
    ct = torch.float64 if q.dtype == torch.float64 else torch.float32

    def table(rel):  # [B, h, Hq*Wq, 2win-1]; flex applies ``scale`` to q.k only
        if rel is None:
            return None
        t = torch.einsum('bhwnd,rd->bnhwr', q.to(ct), rel.to(ct)).reshape(B, h, Hq * Wq, 2 * win - 1)
        return t * scale if scale_pos_embed else t

    th, tw = table(rel_h), table(rel_w)
    score_mod = None
    if th is not None or tw is not None:
        def score_mod(score, b, hh, q_idx, kv_idx):
            qy, qx = q_idx // Wq, q_idx % Wq
            # window position minus in-block query position: padded ky - block row start - ty
            ry = torch.clamp(kv_idx // Wp - (qy // bq) * block - qy % bq + win - 1, 0, 2 * win - 2)
            rx = torch.clamp(kv_idx % Wp - (qx // bq) * block - qx % bq + win - 1, 0, 2 * win - 2)
            if th is not None:
                score = score + th[b, hh, q_idx, ry]
            if tw is not None:
                score = score + tw[b, hh, q_idx, rx]
            return score

    bm = _block_mask(H, W, block, halo, padding == 'mask', query_stride, str(q.device))
    out = flex_call(q.reshape(B, Hq * Wq, h, D).transpose(1, 2), keys(k), keys(v), score_mod, bm, scale)
    return out.transpose(1, 2).reshape(B, Hq, Wq, h, v.shape[-1])
