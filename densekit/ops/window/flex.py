"""FlexAttention backend for Swin (shifted) window attention.

The map is rolled by ``-shift`` in PyTorch, then one flex call over the flattened map uses a
``mask_mod`` (same window and same shift region) and a ``score_mod`` adding the relative position
bias; BlockMasks are cached per (size, window, shift, device). Layouts as in ``reference.py``.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

from densekit.layers.window import shift_region_labels
from densekit.ops._flex_utils import flex_call, make_block_mask


@functools.lru_cache(maxsize=32)
def _block_mask(H: int, W: int, window: Tuple[int, int], shift: Tuple[int, int], device: str):
    wh, ww = window
    lab = (shift_region_labels(H, wh, shift[0], device)[:, None] * 3
           + shift_region_labels(W, ww, shift[1], device)[None, :]).reshape(-1)

    def mask_mod(b, h, q_idx, kv_idx):
        qy, qx, ky, kx = q_idx // W, q_idx % W, kv_idx // W, kv_idx % W
        same = (qy // wh == ky // wh) & (qx // ww == kx // ww)
        return same & (lab[q_idx] == lab[kv_idx])

    return make_block_mask(mask_mod, H * W, H * W, device)


def window_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: Tuple[int, int],
                shift: Tuple[int, int], rpb: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """Window attention through FlexAttention on validated inputs."""
    B, H, W, h, D = q.shape
    wh, ww = window
    rolled = shift != (0, 0)

    def seq(t):
        if rolled:
            t = torch.roll(t, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        return t.reshape(B, H * W, h, D).transpose(1, 2)

    score_mod = None
    if rpb is not None:
        rpb_c = rpb.to(q.dtype)

        def score_mod(score, b, hh, q_idx, kv_idx):
            dy = (q_idx // W) % wh - (kv_idx // W) % wh + wh - 1
            dx = (q_idx % W) % ww - (kv_idx % W) % ww + ww - 1
            return score + rpb_c[hh, dy, dx]

    out = flex_call(seq(q), seq(k), seq(v), score_mod, _block_mask(H, W, window, shift, str(q.device)), scale)
    out = out.transpose(1, 2).reshape(B, H, W, h, D)
    if rolled:
        out = torch.roll(out, shifts=shift, dims=(1, 2))
    return out
