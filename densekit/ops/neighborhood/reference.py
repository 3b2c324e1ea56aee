"""Pure-PyTorch reference neighborhood attention (the spec and the CPU path).

Neighborhood Attention (Hassani et al., "Neighborhood Attention Transformer", CVPR 2023,
arXiv:2204.07143) and its dilated form (Hassani & Shi, "Dilated Neighborhood Attention
Transformer", arXiv:2209.15001), with the semantics of NATTEN <= 0.17.

Layouts: q, k, v, out ``[B, *spatial, heads, head_dim]`` (1 or 2 spatial dims); rpb
``[heads, 2*k_1-1, ..., 2*k_n-1]``; log-sum-exp ``[B, prod(spatial), heads]`` (float32).

Semantics, per spatial axis of length ``L`` with kernel ``k`` (odd) and dilation ``d``:
a query at ``i`` belongs to residue class ``r = i % d`` whose members ``r, r+d, ...`` form a
sub-axis of length ``Lc = ceil((L - r) / d)``; on that sub-axis the query sits at ``i' = i // d``
and attends to the ``k`` consecutive members starting at ``s = clamp(i' - k//2, 0, Lc - k)``
(the window is shifted, not shrunk, at the borders). Key ``t`` of the window is at
``r + d * (s + t)`` and uses bias ``rpb[k - 1 + (s + t - i')]``, i.e. the key-minus-query offset
in window units. ``L >= k * d`` is required so that every class holds a full window.

Memory: the computation loops over chunks of kernel offsets and gathers only the keys of that
chunk, so it never forms an ``L x L`` score matrix; its own ``torch.autograd.Function``
recomputes the probabilities in backward (flash-attention style) instead of saving one gathered
copy of k and v per offset.
"""
from __future__ import annotations

import functools
import itertools
from typing import Optional, Sequence, Tuple

import torch


@functools.lru_cache(maxsize=256)
def _axis_windows_cpu(length: int, kernel: int, dilation: int) -> Tuple[torch.Tensor, torch.Tensor]:
    pos = torch.arange(length)
    r = pos % dilation
    sub = pos // dilation
    class_len = (length - r + dilation - 1) // dilation
    start = torch.minimum(torch.clamp(sub - kernel // 2, min=0), class_len - kernel)
    t = torch.arange(kernel)
    key = r[:, None] + dilation * (start[:, None] + t[None, :])
    bias = kernel - 1 + start[:, None] + t[None, :] - sub[:, None]
    return key, bias


def axis_windows(length: int, kernel: int, dilation: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Key positions and bias indices of every query of one axis, both ``[length, kernel]`` long."""
    key, bias = _axis_windows_cpu(length, kernel, dilation)
    return key.to(device), bias.to(device)


@functools.lru_cache(maxsize=64)
def _flat_tables_cpu(spatial: Tuple[int, ...], kernel: Tuple[int, ...], dilation: Tuple[int, ...]):
    """Flat key index and flat rpb index ``[prod(spatial), prod(kernel)]`` for an N-d grid."""
    n = len(spatial)
    key_flat = torch.zeros((), dtype=torch.long)
    bias_flat = torch.zeros((), dtype=torch.long)
    for a in range(n):
        key, bias = _axis_windows_cpu(spatial[a], kernel[a], dilation[a])
        # axis a's query dim sits at position a, its offset dim at position n + a
        shape = [1] * (2 * n)
        shape[a], shape[n + a] = spatial[a], kernel[a]
        key_stride = int(torch.tensor(spatial[a + 1:]).prod()) if a + 1 < n else 1
        bias_stride = int(torch.tensor([2 * k - 1 for k in kernel[a + 1:]]).prod()) if a + 1 < n else 1
        key_flat = key_flat + (key * key_stride).view(shape)
        bias_flat = bias_flat + (bias * bias_stride).view(shape)
    S = int(torch.tensor(spatial).prod())
    K = int(torch.tensor(kernel).prod())
    return key_flat.reshape(S, K).contiguous(), bias_flat.reshape(S, K).contiguous()


def flat_tables(spatial, kernel, dilation, device) -> Tuple[torch.Tensor, torch.Tensor]:
    key, bias = _flat_tables_cpu(tuple(spatial), tuple(kernel), tuple(dilation))
    return key.to(device), bias.to(device)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _chunks(K: int, chunk: int):
    for c0 in range(0, K, chunk):
        yield c0, min(c0 + chunk, K)


def _scores(qf, kf, rpb_flat, key_idx, bias_idx, c0, c1, scale):
    """Logits of offsets ``[c0, c1)``: ``[B, S, h, c]`` and the gathered keys ``[B, S, c, h, D]``."""
    B, S, h, D = qf.shape
    idx = key_idx[:, c0:c1]
    kt = kf.index_select(1, idx.reshape(-1)).view(B, S, c1 - c0, h, D)
    s = torch.einsum('bshd,bschd->bshc', qf, kt) * scale
    if rpb_flat is not None:
        # rpb_flat: [h, R]; gather -> [h, S, c] -> [S, h, c]
        s = s + rpb_flat[:, bias_idx[:, c0:c1]].permute(1, 0, 2)
    return s, kt, idx


def na_forward(qf, kf, vf, rpb_flat, key_idx, bias_idx, scale, chunk):
    """Forward on flattened inputs ``[B, S, h, D]`` (compute dtype). Returns ``(out, lse)``."""
    B, S, h, D = qf.shape
    K = key_idx.shape[1]
    logits = torch.empty(B, S, h, K, dtype=qf.dtype, device=qf.device)
    for c0, c1 in _chunks(K, chunk):
        logits[..., c0:c1] = _scores(qf, kf, rpb_flat, key_idx, bias_idx, c0, c1, scale)[0]
    lse = torch.logsumexp(logits, dim=-1)
    p = torch.exp(logits - lse[..., None])
    del logits
    out = torch.zeros_like(qf)
    for c0, c1 in _chunks(K, chunk):
        vt = vf.index_select(1, key_idx[:, c0:c1].reshape(-1)).view(B, S, c1 - c0, h, D)
        out += torch.einsum('bshc,bschd->bshd', p[..., c0:c1], vt)
    return out, lse


def na_backward(dout, qf, kf, vf, out, lse, rpb_flat, key_idx, bias_idx, scale, chunk, need_drpb):
    """Gradients of :func:`na_forward` by recomputation; returns ``(dq, dk, dv, drpb_flat)``."""
    B, S, h, D = qf.shape
    K = key_idx.shape[1]
    delta = (dout * out).sum(-1)  # [B, S, h]
    dq = torch.zeros_like(qf)
    dk = torch.zeros_like(kf)
    dv = torch.zeros_like(vf)
    drpb = torch.zeros_like(rpb_flat) if need_drpb else None
    for c0, c1 in _chunks(K, chunk):
        c = c1 - c0
        s, kt, idx = _scores(qf, kf, rpb_flat, key_idx, bias_idx, c0, c1, scale)
        p = torch.exp(s - lse[..., None])
        flat = idx.reshape(-1)
        vt = vf.index_select(1, flat).view(B, S, c, h, D)
        dv.index_add_(1, flat, torch.einsum('bshc,bshd->bschd', p, dout).reshape(B, S * c, h, D))
        dp = torch.einsum('bshd,bschd->bshc', dout, vt)
        ds = p * (dp - delta[..., None])
        dq += torch.einsum('bshc,bschd->bshd', ds, kt) * scale
        dk.index_add_(1, flat, (torch.einsum('bshc,bshd->bschd', ds, qf) * scale).reshape(B, S * c, h, D))
        if need_drpb:
            ds_h = ds.sum(0).permute(1, 0, 2).reshape(h, S * c)  # [h, S*c]
            drpb.index_add_(1, bias_idx[:, c0:c1].reshape(-1), ds_h)
    return dq, dk, dv, drpb


class NeighborhoodAttentionReference(torch.autograd.Function):
    """Autograd wrapper; inputs already validated and in ``[B, *spatial, h, D]`` layout."""

    @staticmethod
    def forward(ctx, q, k, v, rpb, kernel, dilation, scale):
        spatial = tuple(q.shape[1:-2])
        B, h, D = q.shape[0], q.shape[-2], q.shape[-1]
        ct = _compute_dtype(q.dtype)
        qf = q.reshape(B, -1, h, D).to(ct)
        kf = k.reshape(B, -1, h, D).to(ct)
        vf = v.reshape(B, -1, h, D).to(ct)
        rpb_flat = rpb.reshape(h, -1).to(ct) if rpb is not None else None
        key_idx, bias_idx = flat_tables(spatial, kernel, dilation, q.device)
        chunk = kernel[-1]
        out, lse = na_forward(qf, kf, vf, rpb_flat, key_idx, bias_idx, scale, chunk)
        ctx.save_for_backward(qf, kf, vf, out, lse, rpb_flat)
        ctx.meta = (spatial, kernel, dilation, scale, chunk, q.dtype, rpb is not None,
                    rpb.dtype if rpb is not None else None)
        return out.to(q.dtype).view(q.shape)

    @staticmethod
    def backward(ctx, dout):
        qf, kf, vf, out, lse, rpb_flat = ctx.saved_tensors
        spatial, kernel, dilation, scale, chunk, dtype, has_rpb, rpb_dtype = ctx.meta
        shape = dout.shape
        B, h, D = shape[0], shape[-2], shape[-1]
        key_idx, bias_idx = flat_tables(spatial, kernel, dilation, dout.device)
        need_drpb = has_rpb and ctx.needs_input_grad[3]
        dq, dk, dv, drpb = na_backward(dout.reshape(B, -1, h, D).to(qf.dtype), qf, kf, vf, out, lse,
                                       rpb_flat, key_idx, bias_idx, scale, chunk, need_drpb)
        drpb_out = None
        if need_drpb:
            drpb_out = drpb.view(h, *[2 * kk - 1 for kk in kernel]).to(rpb_dtype)
        return (dq.to(dtype).view(shape), dk.to(dtype).view(shape), dv.to(dtype).view(shape),
                drpb_out, None, None, None)


def na_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Sequence[int],
                 dilation: Sequence[int], rpb: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """Reference N-d neighborhood attention on validated inputs (see module docstring)."""
    return NeighborhoodAttentionReference.apply(q, k, v, rpb, tuple(kernel), tuple(dilation), float(scale))
