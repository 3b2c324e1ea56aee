"""FlexAttention backend of window_extra attention.

The windows (``T`` tokens each, extra tokens first) are laid end to end in one sequence of
``nW * T`` tokens per batch; ``mask_mod`` admits a key of the query's own window (a
block-diagonal mask), ``score_mod`` looks the bias up by the two tokens' positions in their
window; a window-block bias ``[heads, N, N]`` is read only for pairs of window tokens (the padded
``[heads, T, T]`` table is never formed).

Layouts: as :func:`densekit.ops.window_extra.window_extra_attention`.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from densekit.ops._flex_utils import flex_call, make_block_mask


@functools.lru_cache(maxsize=32)
def _window_block_mask(num_windows: int, T: int, device: str):
    def mask_mod(b, h, q_idx, kv_idx):
        return q_idx // T == kv_idx // T

    return make_block_mask(mask_mod, num_windows * T, num_windows * T, device)


def window_extra_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor],
                      scale: float) -> torch.Tensor:
    """window_extra attention through FlexAttention on validated inputs."""
    B, nW, T, h, d = q.shape

    def seq(t):
        return t.reshape(B, nW * T, h, -1).transpose(1, 2)

    score_mod = None
    if bias is not None:
        table = bias.float()
        P = T - bias.shape[-1]

        def score_mod(score, b, hh, q_idx, kv_idx):
            qi, ki = q_idx % T - P, kv_idx % T - P
            value = table[hh, qi.clamp(min=0), ki.clamp(min=0)]  # in range for every pair
            return score + torch.where((qi >= 0) & (ki >= 0), value, 0.0)

    block_mask = _window_block_mask(nW, T, str(q.device))
    out = flex_call(seq(q), seq(k), seq(v), score_mod, block_mask, scale)
    return out.transpose(1, 2).reshape(B, nW, T, h, -1)
