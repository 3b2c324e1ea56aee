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
from densekit.ops.neighborhood.reference import axis_windows, flat_tables


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


@functools.lru_cache(maxsize=16)
def _bias_index(spatial: tuple, kernel: tuple, dilation: tuple, device: str) -> torch.Tensor:
    """Flat rpb index of every (query, window tap), ``[prod(spatial), prod(kernel)]``, on ``device``."""
    return flat_tables(spatial, kernel, dilation, device)[1]


def _tap(qc, kc, starts, kernel, dilation):
    """Flat window tap (row-major over the kernel axes) of key ``kc`` for query ``qc``; masked
    pairs are clamped into range."""
    tap = None
    for a in range(len(kernel)):
        t = torch.clamp((kc[a] - starts[a][qc[a]]) // dilation[a], 0, kernel[a] - 1)
        tap = t if tap is None else tap * kernel[a] + t
    return tap


def na_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Sequence[int], dilation: Sequence[int],
            rpb: Optional[torch.Tensor], scale: float, expand_bias: Optional[bool] = None) -> torch.Tensor:
    """Neighborhood attention through FlexAttention on validated inputs.

    When the bias needs a gradient (or ``expand_bias=True``), ``score_mod`` reads a per-query copy
    of it, ``[heads, prod(spatial), prod(kernel)]`` in float32, instead of the ``[heads, 2k-1,
    2k-1]`` table: flex accumulates a captured tensor's gradient with atomic adds
    (``scatter_mode="atomic_add"`` in torch/_inductor/kernel/flex/common.py), and on the table
    every query-key pair of the map adds into the same few hundred addresses, which made the
    table-reading backward 19-156x slower than the Triton kernels on Hopper. Per query, each entry
    receives one add per batch element; the reduction onto the table is the gather's backward.
    """
    spatial = tuple(q.shape[1:-2])
    B, h, D = q.shape[0], q.shape[-2], q.shape[-1]
    kernel, dilation = tuple(kernel), tuple(dilation)
    block_mask, starts = _block_mask(spatial, kernel, dilation, str(q.device))
    score_mod = None
    if expand_bias is None:
        expand_bias = rpb is not None and rpb.requires_grad and torch.is_grad_enabled()
    if rpb is not None and expand_bias:
        idx = _bias_index(spatial, kernel, dilation, str(q.device))
        per_query = rpb.float().reshape(h, -1)[:, idx]  # [h, S, K]

        def score_mod(score, b, hh, q_idx, kv_idx):
            tap = _tap(_coords(q_idx, spatial), _coords(kv_idx, spatial), starts, kernel, dilation)
            return score + per_query[hh, q_idx, tap]
    elif rpb is not None:
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
