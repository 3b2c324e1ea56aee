"""FlexAttention backend for routed (bi-level routing) attention.

q, k, v are laid out region-major (the tokens of each region contiguous, regions row-major), so a
query region and a routed key region are each one contiguous run of ``T`` tokens; the routing
table becomes a per-image ``[B, R, R]`` region adjacency read by ``mask_mod``, from which the
BlockMask (per image, shared by the heads) skips every key block outside the routed regions.
Nothing is gathered: flex streams the routed key / value blocks. Layouts as in ``reference.py``.
"""
from __future__ import annotations

from typing import Tuple

import torch

from densekit.ops._flex_utils import flex_call
from densekit.ops.routed.reference import from_regions, to_regions


def region_adjacency(index: torch.Tensor, num_regions: int) -> torch.Tensor:
    """``[B, R, topk]`` routing table -> boolean ``[B, R, R]`` (True = query region may attend)."""
    B, R, _ = index.shape
    adj = torch.zeros(B, R, num_regions, dtype=torch.bool, device=index.device)
    return adj.scatter_(2, index, True)


def routed_block_mask(index: torch.Tensor, num_regions: int, tokens: int):
    """BlockMask of the region-major sequence (``num_regions * tokens`` long) for ``index``."""
    from torch.nn.attention.flex_attention import create_block_mask
    adj = region_adjacency(index, num_regions)
    B = index.shape[0]
    L = num_regions * tokens

    def mask_mod(b, h, q_idx, kv_idx):
        return adj[b, q_idx // tokens, kv_idx // tokens]

    return create_block_mask(mask_mod, B, None, L, L, device=index.device,
                             _compile=index.device.type == 'cuda')


def routed_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor,
                regions: Tuple[int, int], scale: float) -> torch.Tensor:
    """Routed attention through FlexAttention on validated inputs."""
    B, H, W, h, _ = q.shape
    R = regions[0] * regions[1]
    T = (H // regions[0]) * (W // regions[1])

    def seq(t):  # [B, H, W, h, D] -> [B, h, R * T, D]
        r = to_regions(t, regions)
        return r.reshape(B, h, R * T, r.shape[-1])

    mask = routed_block_mask(index, R, T)
    out = flex_call(seq(q), seq(k), seq(v), None, mask, scale)
    return from_regions(out.reshape(B, h, R, T, -1), (H, W), regions)
