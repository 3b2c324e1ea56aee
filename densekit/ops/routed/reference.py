"""Pure-PyTorch reference routed (bi-level routing) attention — the spec and the CPU path.

BiFormer (Zhu et al., CVPR 2023, arXiv:2303.08810), the token-to-token step of bi-level routing
attention.

Layouts: q, k ``[B, H, W, heads, head_dim]``, v and out ``[B, H, W, heads, head_dim_v]``;
``index`` ``[B, R, topk]`` (int64) with ``R = rh * rw`` regions of an ``rh x rw`` partition of
the map, numbered row-major (region ``i * rw + j`` holds rows ``i * H/rh ...`` and columns
``j * W/rw ...``, the official ``"n (j h) (i w) c -> n (j i) h w c"``). ``H % rh == W % rw == 0``.

Semantics: every query of region ``r`` attends (one softmax, scale times ``q . k``) to all the
tokens of the regions ``index[b, r, 0..topk-1]``, the same regions for every head. Entries of a
row are distinct (``torch.topk`` indices); a repeated entry would count its region's keys twice
here and once in the fused backends.

Implementation: q, k, v are permuted once into region-major ``[B, heads, R, T, D]`` (``T`` tokens
per region); the keys / values of the routed regions are gathered per query region into
``[B, heads, R, topk * T, D]``, as the official code does, and the attention is an explicit
matmul / softmax / matmul, with the query regions processed in chunks so the logits of one chunk
(not of the whole map) exist at a time in the forward pass. fp32 and float64 run in their own
precision; lower precisions are computed in fp32.
"""
from __future__ import annotations

from typing import Tuple

import torch

# Upper bound on the elements of one chunk's logits (``B * heads * regions * T * topk * T``).
_CHUNK_LOGITS = 1 << 25


def to_regions(t: torch.Tensor, regions: Tuple[int, int]) -> torch.Tensor:
    """``[B, H, W, h, D]`` -> region-major ``[B, h, R, T, D]`` (row-major regions and tokens)."""
    B, H, W, h, D = t.shape
    rh, rw = regions
    t = t.reshape(B, rh, H // rh, rw, W // rw, h, D)
    return t.permute(0, 5, 1, 3, 2, 4, 6).reshape(B, h, rh * rw, (H // rh) * (W // rw), D)


def from_regions(t: torch.Tensor, size: Tuple[int, int], regions: Tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`to_regions`: ``[B, h, R, T, D]`` -> ``[B, H, W, h, D]``."""
    B, h, R, T, D = t.shape
    H, W = size
    rh, rw = regions
    t = t.reshape(B, h, rh, rw, H // rh, W // rw, D)
    return t.permute(0, 2, 4, 3, 5, 1, 6).reshape(B, H, W, h, D)


def gather_regions(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t`` ``[B, h, R, T, D]``, ``index`` ``[B, Rq, topk]`` -> ``[B, h, Rq, topk * T, D]``."""
    B, h, R, T, D = t.shape
    Rq, topk = index.shape[1:]
    flat = index.reshape(B, 1, Rq * topk, 1, 1).expand(B, h, Rq * topk, T, D)
    return torch.gather(t, 2, flat).reshape(B, h, Rq, topk * T, D)


def routed_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor,
                     regions: Tuple[int, int], scale) -> torch.Tensor:
    """Routed attention on validated inputs (layouts in the module docstring)."""
    B, H, W, h, _ = q.shape
    dtype = q.dtype
    compute = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    qr, kr, vr = (to_regions(t.to(compute), regions) for t in (q, k, v))
    R, T = qr.shape[2], qr.shape[3]
    topk = index.shape[-1]
    per_region = max(1, B * h * T * topk * T)
    chunk = max(1, min(R, _CHUNK_LOGITS // per_region))
    outs = []
    for r0 in range(0, R, chunk):
        idx = index[:, r0:r0 + chunk]
        ks, vs = gather_regions(kr, idx), gather_regions(vr, idx)
        logits = (qr[:, :, r0:r0 + chunk] * scale) @ ks.transpose(-1, -2)
        outs.append(logits.softmax(-1) @ vs)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    return from_regions(out, (H, W), regions).to(dtype)
