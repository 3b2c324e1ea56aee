"""FlexAttention backend for neighborhood attention.

Expresses NA / DiNAT (NATTEN <= 0.17 semantics, see ``reference.py``) as a ``mask_mod`` over the
flattened ``prod(spatial)`` sequence plus a ``score_mod`` that adds the relative position bias.
BlockMasks are cached per (spatial, kernel, dilation, device). On CUDA the compiled
``flex_attention`` runs; on CPU only the forward exists in current torch (the dispatcher refuses
CPU calls that need a backward).

Layouts: q, k, v, out ``[B, *spatial, heads, head_dim]``; rpb ``[heads, *(2k-1)]``.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import torch

from densekit.ops._flex_utils import flex_call, make_block_mask
from densekit.ops.neighborhood.reference import axis_windows


def _axis_start(length: int, kernel: int, dilation: int, device) -> torch.Tensor:
    """Absolute position of the first key of every query's window on one axis, ``[length]``."""
    return axis_windows(length, kernel, dilation, device)[0][:, 0].contiguous()


@functools.lru_cache(maxsize=32)
def _block_mask(spatial: tuple, kernel: tuple, dilation: tuple, device: str):
    starts = [_axis_start(L, kk, d, device) for L, kk, d in zip(spatial, kernel, dilation)]
    mask_mod = _make_mask_mod(spatial, kernel, dilation, starts)
    S = 1
    for s in spatial:
        S *= s
    return make_block_mask(mask_mod, S, S, device), starts


def _coords(idx, spatial):
    """Flat index -> per-axis coordinates (row-major)."""
    coords = []
    for L in reversed(spatial[1:]):
        coords.append(idx % L)
        idx = idx // L
    coords.append(idx)
    return coords[::-1]


def _make_mask_mod(spatial, kernel, dilation, starts):
    def mask_mod(b, h, q_idx, kv_idx):
        qc, kc = _coords(q_idx, spatial), _coords(kv_idx, spatial)
        ok = None
        for a in range(len(spatial)):
            rel = kc[a] - starts[a][qc[a]]
            this = (rel >= 0) & (rel < kernel[a] * dilation[a]) & (rel % dilation[a] == 0)
            ok = this if ok is None else ok & this
        return ok
    return mask_mod


def na_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Sequence[int], dilation: Sequence[int],
            rpb: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """Neighborhood attention through FlexAttention on validated inputs."""
    spatial = tuple(q.shape[1:-2])
    B, h, D = q.shape[0], q.shape[-2], q.shape[-1]
    block_mask, _ = _block_mask(spatial, tuple(kernel), tuple(dilation), str(q.device))
    score_mod = None
    if rpb is not None:
        rpb_c = rpb.to(q.dtype)

        def score_mod(score, b, hh, q_idx, kv_idx):
            qc, kc = _coords(q_idx, spatial), _coords(kv_idx, spatial)
            # key-minus-query offset in window units; masked pairs are clamped into range
            idx = [torch.clamp((kc[a] - qc[a]) // dilation[a] + kernel[a] - 1, 0, 2 * kernel[a] - 2)
                   for a in range(len(spatial))]
            return score + rpb_c[(hh, *idx)]

    def seq(t):
        return t.reshape(B, -1, h, D).transpose(1, 2)

    out = flex_call(seq(q), seq(k), seq(v), score_mod, block_mask, scale)
    return out.transpose(1, 2).reshape(q.shape)
