"""Triton block-sparse kernels for routed (bi-level routing) attention, forward and backward.

q, k, v are laid out region-major (``[B * heads, R * T, D]``: the ``T`` tokens of a region
contiguous, regions row-major, as ``reference.to_regions``). Nothing is gathered:

* forward / dQ: one program per (query region, ``BLOCK_M`` query rows, image x head) streams the
  key / value chunks of the ``topk`` regions its row of the routing table lists, with an online
  softmax (forward, which also stores the log-sum-exp) or recomputing the probabilities from it (dQ);
* dK / dV: one program per (key region, ``BLOCK_N`` key rows, image x head) walks the query
  regions that route to its region: the inverted routing table (per image, query regions grouped
  by key region, with offsets), built in PyTorch. Each dK / dV row is written by one program, so
  the backward is deterministic and needs no atomics.

Layouts of the public op as in ``reference.py``.
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from densekit.ops._triton_utils import dot, online_softmax_step, precision, row_sum, upcast
from densekit.ops.routed.reference import from_regions, to_regions

# No launch configuration is tunable yet: 32-row tiles keep every dot at least 16 wide (tl.dot's
# minimum) and waste at most 31 padded rows of a region (BiFormer's regions hold 1 - 300 tokens).
CONFIG_KEYS = ()
BLOCK_M = 32
BLOCK_N = 32


@triton.jit
def _routed_fwd(Q, K, V, IDX, O, LSE, scale, T, R, TOPK, HEADS, NUM_MB, D, DV,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                BLOCK_DV: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    r = pid // NUM_MB
    b = bh // HEADS
    offs_m = (pid % NUM_MB) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_mask = offs_m < T
    base = bh.to(tl.int64) * R * T
    q = tl.load(Q + (base + r * T + offs_m)[:, None] * D + offs_d[None, :],
                mask=m_mask[:, None] & (offs_d[None, :] < D), other=0.0)
    m_i = tl.full([BLOCK_M], float('-inf'), tl.float32)
    l_i = tl.full([BLOCK_M], 0.0, tl.float32)
    acc = tl.full([BLOCK_M, BLOCK_DV], 0.0, tl.float32)
    for j in range(0, TOPK):
        kr = tl.load(IDX + (b * R + r) * TOPK + j)
        for n0 in range(0, T, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            n_mask = offs_n < T
            rows = base + kr * T + offs_n
            k = tl.load(K + rows[:, None] * D + offs_d[None, :],
                        mask=n_mask[:, None] & (offs_d[None, :] < D), other=0.0)
            v = tl.load(V + rows[:, None] * DV + offs_dv[None, :],
                        mask=n_mask[:, None] & (offs_dv[None, :] < DV), other=0.0)
            s = dot(q, tl.trans(k), PREC, UPCAST) * scale
            s = tl.where(n_mask[None, :], s, float('-inf'))
            m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v, PREC, UPCAST)
    out = acc / l_i[:, None]
    rows_q = base + r * T + offs_m
    tl.store(O + rows_q[:, None] * DV + offs_dv[None, :], out.to(O.dtype.element_ty),
             mask=m_mask[:, None] & (offs_dv[None, :] < DV))
    tl.store(LSE + rows_q, m_i + tl.log(l_i), mask=m_mask)


@triton.jit
def _routed_dq(Q, K, V, DO, LSE, DELTA, IDX, DQ, scale, T, R, TOPK, HEADS, NUM_MB, D, DV,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
               BLOCK_DV: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    r = pid // NUM_MB
    b = bh // HEADS
    offs_m = (pid % NUM_MB) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_mask = offs_m < T
    base = bh.to(tl.int64) * R * T
    rows_q = base + r * T + offs_m
    q = tl.load(Q + rows_q[:, None] * D + offs_d[None, :], mask=m_mask[:, None] & (offs_d[None, :] < D), other=0.0)
    do = tl.load(DO + rows_q[:, None] * DV + offs_dv[None, :], mask=m_mask[:, None] & (offs_dv[None, :] < DV),
                 other=0.0)
    lse = tl.load(LSE + rows_q, mask=m_mask, other=0.0)
    delta = tl.load(DELTA + rows_q, mask=m_mask, other=0.0)
    dq = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    for j in range(0, TOPK):
        kr = tl.load(IDX + (b * R + r) * TOPK + j)
        for n0 in range(0, T, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            n_mask = offs_n < T
            rows = base + kr * T + offs_n
            k = tl.load(K + rows[:, None] * D + offs_d[None, :],
                        mask=n_mask[:, None] & (offs_d[None, :] < D), other=0.0)
            v = tl.load(V + rows[:, None] * DV + offs_dv[None, :],
                        mask=n_mask[:, None] & (offs_dv[None, :] < DV), other=0.0)
            s = dot(q, tl.trans(k), PREC, UPCAST) * scale
            p = tl.where(m_mask[:, None] & n_mask[None, :], tl.exp(s - lse[:, None]), 0.0)
            dp = dot(do, tl.trans(v), PREC, UPCAST)
            ds = p * (dp - delta[:, None])
            dq += dot(ds.to(k.dtype), k, PREC, UPCAST)
    tl.store(DQ + rows_q[:, None] * D + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=m_mask[:, None] & (offs_d[None, :] < D))


@triton.jit
def _routed_dkdv(Q, K, V, DO, LSE, DELTA, INV, INV_OFF, DK, DV_OUT, scale, T, R, TOPK, HEADS, NUM_NB, D, DV,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                 BLOCK_DV: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    kr = pid // NUM_NB
    b = bh // HEADS
    offs_n = (pid % NUM_NB) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    n_mask = offs_n < T
    base = bh.to(tl.int64) * R * T
    rows_k = base + kr * T + offs_n
    k = tl.load(K + rows_k[:, None] * D + offs_d[None, :], mask=n_mask[:, None] & (offs_d[None, :] < D), other=0.0)
    v = tl.load(V + rows_k[:, None] * DV + offs_dv[None, :], mask=n_mask[:, None] & (offs_dv[None, :] < DV),
                other=0.0)
    dk = tl.full([BLOCK_N, BLOCK_D], 0.0, tl.float32)
    dv = tl.full([BLOCK_N, BLOCK_DV], 0.0, tl.float32)
    start = tl.load(INV_OFF + b * (R + 1) + kr)
    end = tl.load(INV_OFF + b * (R + 1) + kr + 1)
    for e in range(start, end):
        qr = tl.load(INV + b * R * TOPK + e)
        for m0 in range(0, T, BLOCK_M):
            offs_m = m0 + tl.arange(0, BLOCK_M)
            m_mask = offs_m < T
            rows_q = base + qr * T + offs_m
            q = tl.load(Q + rows_q[:, None] * D + offs_d[None, :],
                        mask=m_mask[:, None] & (offs_d[None, :] < D), other=0.0)
            do = tl.load(DO + rows_q[:, None] * DV + offs_dv[None, :],
                         mask=m_mask[:, None] & (offs_dv[None, :] < DV), other=0.0)
            lse = tl.load(LSE + rows_q, mask=m_mask, other=0.0)
            delta = tl.load(DELTA + rows_q, mask=m_mask, other=0.0)
            # Transposed tiles ([keys, queries]) throughout, so that no dot result is ever
            # transposed (tl.trans of a dot result miscompiles on sm_90 with triton >= 3.4).
            st = dot(k, tl.trans(q), PREC, UPCAST) * scale
            pt = tl.where(n_mask[:, None] & m_mask[None, :], tl.exp(st - lse[None, :]), 0.0)
            dv += dot(pt.to(do.dtype), do, PREC, UPCAST)
            dpt = dot(v, tl.trans(do), PREC, UPCAST)
            dst = pt * (dpt - delta[None, :])
            dk += dot(dst.to(q.dtype), q, PREC, UPCAST)
    tl.store(DK + rows_k[:, None] * D + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty),
             mask=n_mask[:, None] & (offs_d[None, :] < D))
    tl.store(DV_OUT + rows_k[:, None] * DV + offs_dv[None, :], dv.to(DV_OUT.dtype.element_ty),
             mask=n_mask[:, None] & (offs_dv[None, :] < DV))


def invert_routing(index: torch.Tensor, num_regions: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """``[B, R, topk]`` routing table -> (``[B, R * topk]`` query regions grouped by the key
    region they route to, ``[B, R + 1]`` int32 offsets of each key region's group)."""
    B, R, topk = index.shape
    flat = index.reshape(B, R * topk)
    order = torch.argsort(flat, dim=1, stable=True)
    inv = (order // topk).to(torch.int32)
    counts = torch.zeros(B, num_regions + 1, dtype=torch.int64, device=index.device)
    counts.scatter_add_(1, flat + 1, torch.ones_like(flat))
    return inv.contiguous(), counts.cumsum(1).to(torch.int32).contiguous()


def _dims(D: int, DV: int):
    return max(16, triton.next_power_of_2(D)), max(16, triton.next_power_of_2(DV))


class _RoutedTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, index, regions, scale):
        B, H, W, h, D = q.shape
        DV = v.shape[-1]
        R = regions[0] * regions[1]
        T = (H // regions[0]) * (W // regions[1])
        qr, kr, vr = (to_regions(t, regions).contiguous() for t in (q, k, v))
        idx = index.to(torch.int32).contiguous()
        o = torch.empty(B, h, R, T, DV, device=q.device, dtype=q.dtype)
        lse = torch.empty(B, h, R, T, device=q.device, dtype=torch.float32)
        num_mb = triton.cdiv(T, BLOCK_M)
        bd, bdv = _dims(D, DV)
        _routed_fwd[(R * num_mb, B * h)](
            qr, kr, vr, idx, o, lse, float(scale), T, R, idx.shape[-1], h, num_mb, D, DV,
            BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=bd, BLOCK_DV=bdv,
            PREC=precision(q.dtype), UPCAST=upcast(q))
        ctx.save_for_backward(qr, kr, vr, o, lse, idx)
        ctx.meta = (regions, float(scale), (H, W))
        return from_regions(o, (H, W), regions)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        qr, kr, vr, o, lse, idx = ctx.saved_tensors
        regions, scale, size = ctx.meta
        B, h, R, T, D = qr.shape
        DV = vr.shape[-1]
        do = to_regions(grad_out.to(qr.dtype), regions).contiguous()
        delta = (do.float() * o.float()).sum(-1).contiguous()
        dq, dk = torch.empty_like(qr), torch.empty_like(kr)
        dv = torch.empty_like(vr)
        bd, bdv = _dims(D, DV)
        common = dict(BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=bd, BLOCK_DV=bdv,
                      PREC=precision(qr.dtype), UPCAST=upcast(qr))
        topk = idx.shape[-1]
        num_mb = triton.cdiv(T, BLOCK_M)
        _routed_dq[(R * num_mb, B * h)](qr, kr, vr, do, lse, delta, idx, dq, scale, T, R, topk, h, num_mb, D, DV,
                                        **common)
        inv, inv_off = invert_routing(idx.long(), R)
        num_nb = triton.cdiv(T, BLOCK_N)
        _routed_dkdv[(R * num_nb, B * h)](qr, kr, vr, do, lse, delta, inv, inv_off, dk, dv, scale, T, R, topk, h,
                                          num_nb, D, DV, **common)
        back = lambda t: from_regions(t, size, regions)  # noqa: E731
        return back(dq), back(dk), back(dv), None, None, None


def routed_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor,
                  regions: Tuple[int, int], scale: float) -> torch.Tensor:
    """Routed attention through the Triton kernels on validated inputs."""
    return _RoutedTriton.apply(q, k, v, index, regions, scale)
