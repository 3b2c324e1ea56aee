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


@functools.lru_cache(maxsize=32)
def _bias_index(H: int, W: int, window: Tuple[int, int], device: str) -> torch.Tensor:
    """``[H*W, wh*ww]``: for each (rolled) query position and each in-window key index, the entry
    of the flattened ``[2wh-1, 2ww-1]`` table (query-minus-key offset)."""
    wh, ww = window
    qy = (torch.arange(H, device=device) % wh)[:, None].expand(H, W).reshape(-1, 1)
    qx = (torch.arange(W, device=device) % ww)[None, :].expand(H, W).reshape(-1, 1)
    t = torch.arange(wh * ww, device=device)[None, :]
    return (qy - t // ww + wh - 1) * (2 * ww - 1) + (qx - t % ww + ww - 1)


def window_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: Tuple[int, int],
                shift: Tuple[int, int], rpb: Optional[torch.Tensor], scale: float,
                expand_bias: Optional[bool] = None) -> torch.Tensor:
    """Window attention through FlexAttention on validated inputs.

    When the bias needs a gradient (or ``expand_bias=True``), ``score_mod`` reads a per-query copy
    of it, ``[heads, H*W, wh*ww]`` in float32, instead of the ``[heads, 2wh-1, 2ww-1]`` table:
    flex accumulates a captured tensor's gradient with atomic adds, and on the table every pair of
    every window of every image adds into the same few hundred addresses (as in the NA backend),
    which made the table-reading backward about ten times slower than the Triton kernels. Per
    query, each entry receives one add per image; the reduction onto the table is the gather's
    backward.
    """
    B, H, W, h, D = q.shape
    wh, ww = window
    rolled = shift != (0, 0)

    def seq(t):
        if rolled:
            t = torch.roll(t, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        return t.reshape(B, H * W, h, D).transpose(1, 2)

    score_mod = None
    if expand_bias is None:
        expand_bias = rpb is not None and rpb.requires_grad and torch.is_grad_enabled()
    if rpb is not None and expand_bias:
        per_query = rpb.float().reshape(h, -1)[:, _bias_index(H, W, window, str(q.device))]  # [h, HW, N]

        def score_mod(score, b, hh, q_idx, kv_idx):
            tap = ((kv_idx // W) % wh) * ww + (kv_idx % W) % ww
            return score + per_query[hh, q_idx, tap]
    elif rpb is not None:
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
