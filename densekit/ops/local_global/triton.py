"""Fused Triton kernels for local_global attention (TransNeXt's aggregated attention), forward and
backward.

Semantics are those of ``reference.py``: every query attends to its ``kh x kw`` window (masked,
zero-padded border or NA's clamped one) and to ``P`` extra tokens under one softmax; the optional
``local_weights`` term is added to the window probabilities after it. Layouts: q, k, v, out
``[B, H, W, heads, D]`` (any strides with a contiguous last dim); k_extra, v_extra
``[B, P, heads, D]``; the saved log-sum-exp and the softmax's ``delta = dO . O_softmax`` are
``[B, H*W, heads]`` float32.

Scheme. The window is small (TransNeXt: 3 x 3) and differs per query, so its part is computed
per window slot: for slot ``j`` every query of a ``BLOCK_M`` block gathers its key / value row
and takes the dot product as an elementwise product and row sum (fp32), folded into the running
softmax one column at a time. A tile-of-keys ``tl.dot`` over the union of the block's windows
would spend most of its work on pairs outside the windows (a 3 x 3 window over a 64-query tile
uses 9 of ~100 keys per query). The extra tokens are shared by all queries: they are streamed in
``BLOCK_P`` chunks with ``tl.dot`` and an online softmax. Nothing of size ``[H*W, window + P]``
is formed; biases are read in place (``rpb`` by slot or offset, ``extra_bias`` per head or per
query).

* forward: one program per (``BLOCK_M`` queries, image x head): local slots, then extra chunks;
  stores the output and the log-sum-exp.
* dQ: the same blocking. It first computes ``delta`` (``sum_keys P dP`` in fp32, a first pass
  over the keys; not ``dO . O`` from the stored output, see the kernel) and stores it for the
  other kernels, then dQ, and
  the per-query gradients: ``d local_weights`` (``dO . V_j``), the window dS for the ``rpb``
  gradient (``[B, H*W, heads, kh*kw]`` fp32, reduced onto the table in PyTorch as the
  neighborhood kernels do), and for a per-query ``extra_bias`` its dS (``[B, heads, H*W, P]``
  fp32, summed over the batch in PyTorch: it is the gradient of an input of that size).
* dK / dV (window keys): one program per ``BLOCK_N`` keys walks the queries whose windows hold
  them (a range per axis: within ``k // 2`` for the masked border, up to ``k - 1`` near the
  borders for the clamped one; the slot is recomputed per pair); every key row is written by one
  program.
* dK_extra / dV_extra (and the per-head ``extra_bias`` gradient): one program per (``BLOCK_P``
  extra tokens, run of ``queries_per_program`` queries, image x head) in the transposed
  orientation (``S^T = K_e Q^T``); the per-run partial sums ``[runs, B, heads, P, D]`` fp32 are
  added in PyTorch (a fixed order, so deterministic; a single run would leave the GPU idle:
  ``B * heads * ceil(P / BLOCK_P)`` programs only).

No atomics: every gradient element is written by exactly one program or reduced in PyTorch.
"""
from __future__ import annotations

from typing import Mapping, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from densekit.ops._buffers import grad_buffers, kernel_operand
from densekit.ops._triton_utils import MAX_COMBINE, dot, online_softmax_step, precision, row_sum, strides4, upcast
from densekit.ops.local_global.reference import window_index

# Launch configuration (``local_global_attention(triton_config=...)``): ``block_m`` queries per
# forward / dQ program, ``block_n`` keys per window dK / dV program, ``block_p`` extra tokens per
# chunk (forward / dQ) and per program (extra-token gradients), ``queries_per_program`` the run
# of queries one extra-token gradient program walks, ``num_warps`` / ``num_stages`` for all.
CONFIG_KEYS = ('block_m', 'block_n', 'block_p', 'queries_per_program', 'num_warps', 'num_stages')


@triton.jit
def _window_key(y, x, j, H, W, KH: tl.constexpr, KW: tl.constexpr, CLAMP: tl.constexpr):
    """Map position of window slot ``j`` of queries at ``(y, x)`` and whether it is inside the map."""
    sy = j // KW
    sx = j % KW
    if CLAMP:
        ky = tl.minimum(tl.maximum(y - KH // 2, 0), H - KH) + sy
        kx = tl.minimum(tl.maximum(x - KW // 2, 0), W - KW) + sx
        inside = (ky >= 0) & (kx >= 0)  # always true for a valid query; keeps the shapes
    else:
        ky = y - KH // 2 + sy
        kx = x - KW // 2 + sx
        inside = (ky >= 0) & (ky < H) & (kx >= 0) & (kx < W)
    return ky, kx, inside


@triton.jit
def _slot_bias(RPB, head, s_rh, s_ra, s_rb, y, x, ky, kx, j, ok,
               KH: tl.constexpr, KW: tl.constexpr, RPB_OFFSET: tl.constexpr):
    """Local bias of slot ``j`` for each query: table ``[heads, kh, kw]`` by slot or
    ``[heads, 2kh-1, 2kw-1]`` by key-minus-query offset."""
    if RPB_OFFSET:
        a = ky - y + KH - 1
        c = kx - x + KW - 1
    else:
        a = y * 0 + j // KW
        c = x * 0 + j % KW
    return tl.load(RPB + head * s_rh + a * s_ra + c * s_rb, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _lg_fwd(Q, K, V, KE, VE, RPB, EB, LW, O, LSE,
            sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh, sob, soy, sox, soh,
            s_rh, s_ra, s_rb, s_lb, s_ly, s_lx, s_lh,
            H, W, NHEADS, D, P, scale,
            KH: tl.constexpr, KW: tl.constexpr, CLAMP: tl.constexpr, BLOCK_M: tl.constexpr,
            BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, HAS_RPB: tl.constexpr, RPB_OFFSET: tl.constexpr,
            EB_MODE: tl.constexpr, HAS_LW: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // NHEADS
    head = bh % NHEADS
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q_ok = offs_m < H * W
    y = offs_m // W
    x = offs_m % W
    qm = q_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + b * sqb + y[:, None] * sqy + x[:, None] * sqx + head * sqh + offs_d[None, :], mask=qm, other=0.0)
    qf = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float('-inf'), tl.float32)
    l_i = tl.full([BLOCK_M], 0.0, tl.float32)
    acc = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    acc_lw = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    for j in range(0, KH * KW):
        ky, kx, inside = _window_key(y, x, j, H, W, KH, KW, CLAMP)
        ok = inside & q_ok
        km = ok[:, None] & d_ok[None, :]
        k = tl.load(K + b * skb + ky[:, None] * sky + kx[:, None] * skx + head * skh + offs_d[None, :],
                    mask=km, other=0.0).to(tl.float32)
        v = tl.load(V + b * svb + ky[:, None] * svy + kx[:, None] * svx + head * svh + offs_d[None, :],
                    mask=km, other=0.0).to(tl.float32)
        s = row_sum(qf * k) * scale
        if HAS_RPB:
            s += _slot_bias(RPB, head, s_rh, s_ra, s_rb, y, x, ky, kx, j, ok, KH, KW, RPB_OFFSET)
        s = tl.where(ok, s, float('-inf'))
        # one column of the streaming softmax
        m_new = tl.maximum(m_i, s)
        m_use = tl.where(m_new == float('-inf'), 0.0, m_new)
        alpha = tl.exp(m_i - m_use)
        p = tl.exp(s - m_use)
        l_i = l_i * alpha + p
        acc = acc * alpha[:, None] + p[:, None] * v
        m_i = m_new
        if HAS_LW:
            a = tl.load(LW + b * s_lb + y * s_ly + x * s_lx + head * s_lh + j, mask=ok, other=0.0).to(tl.float32)
            acc_lw += a[:, None] * v

    for p0 in range(0, P, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        p_ok = offs_p < P
        em = p_ok[:, None] & d_ok[None, :]
        erow = ((b * P + offs_p) * NHEADS + head) * D
        ke = tl.load(KE + erow[:, None] + offs_d[None, :], mask=em, other=0.0)
        ve = tl.load(VE + erow[:, None] + offs_d[None, :], mask=em, other=0.0)
        s = dot(q, tl.trans(ke), PREC, UPCAST) * scale
        if EB_MODE == 1:
            s += tl.load(EB + head * P + offs_p, mask=p_ok, other=0.0).to(tl.float32)[None, :]
        if EB_MODE == 2:
            s += tl.load(EB + (head * H * W + offs_m[:, None]) * P + offs_p[None, :],
                         mask=q_ok[:, None] & p_ok[None, :], other=0.0).to(tl.float32)
        s = tl.where(p_ok[None, :], s, float('-inf'))
        m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, ve, PREC, UPCAST)

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    if HAS_LW:
        out += acc_lw
    tl.store(O + b * sob + y[:, None] * soy + x[:, None] * sox + head * soh + offs_d[None, :],
             out.to(O.dtype.element_ty), mask=qm)
    tl.store(LSE + (b * H * W + offs_m) * NHEADS + head, m_i + tl.log(l_safe), mask=q_ok)


@triton.jit
def _lg_dq(Q, K, V, KE, VE, RPB, EB, LW, DO, LSE, DELTA, DQ, DS, DLW, DEB,
           sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh,
           sdb, sdy, sdx, sdh, s_rh, s_ra, s_rb, s_lb, s_ly, s_lx, s_lh,
           H, W, NHEADS, D, P, scale,
           KH: tl.constexpr, KW: tl.constexpr, CLAMP: tl.constexpr, BLOCK_M: tl.constexpr,
           BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, HAS_RPB: tl.constexpr, RPB_OFFSET: tl.constexpr,
           EB_MODE: tl.constexpr, HAS_LW: tl.constexpr, WRITE_DS: tl.constexpr, WRITE_DLW: tl.constexpr,
           WRITE_DEB: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // NHEADS
    head = bh % NHEADS
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q_ok = offs_m < H * W
    y = offs_m // W
    x = offs_m % W
    qm = q_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + b * sqb + y[:, None] * sqy + x[:, None] * sqx + head * sqh + offs_d[None, :], mask=qm, other=0.0)
    do = tl.load(DO + b * sdb + y[:, None] * sdy + x[:, None] * sdx + head * sdh + offs_d[None, :], mask=qm,
                 other=0.0)
    qf = q.to(tl.float32)
    dof = do.to(tl.float32)
    row = (b * H * W + offs_m) * NHEADS + head
    lse = tl.load(LSE + row, mask=q_ok, other=0.0)
    # delta = sum over keys of P * dP (= dO . O of the softmax part), in a first pass over the
    # keys in fp32. Taking it from the stored output would mean dO . (O - sum_j a_j V_j) with
    # local_weights, cancelling that term (often the larger one) out of a half-precision O; and
    # without them the bf16 rounding of O alone put dQ just past the bf16 tolerance.
    delta = tl.full([BLOCK_M], 0.0, tl.float32)
    for j in range(0, KH * KW):
        ky, kx, inside = _window_key(y, x, j, H, W, KH, KW, CLAMP)
        ok = inside & q_ok
        km = ok[:, None] & d_ok[None, :]
        k = tl.load(K + b * skb + ky[:, None] * sky + kx[:, None] * skx + head * skh + offs_d[None, :],
                    mask=km, other=0.0).to(tl.float32)
        v = tl.load(V + b * svb + ky[:, None] * svy + kx[:, None] * svx + head * svh + offs_d[None, :],
                    mask=km, other=0.0).to(tl.float32)
        s = row_sum(qf * k) * scale
        if HAS_RPB:
            s += _slot_bias(RPB, head, s_rh, s_ra, s_rb, y, x, ky, kx, j, ok, KH, KW, RPB_OFFSET)
        delta += tl.where(ok, tl.exp(s - lse), 0.0) * row_sum(dof * v)
    for p0 in range(0, P, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        p_ok = offs_p < P
        em = p_ok[:, None] & d_ok[None, :]
        erow = ((b * P + offs_p) * NHEADS + head) * D
        ke = tl.load(KE + erow[:, None] + offs_d[None, :], mask=em, other=0.0)
        ve = tl.load(VE + erow[:, None] + offs_d[None, :], mask=em, other=0.0)
        s = dot(q, tl.trans(ke), PREC, UPCAST) * scale
        if EB_MODE == 1:
            s += tl.load(EB + head * P + offs_p, mask=p_ok, other=0.0).to(tl.float32)[None, :]
        if EB_MODE == 2:
            s += tl.load(EB + (head * H * W + offs_m[:, None]) * P + offs_p[None, :],
                         mask=q_ok[:, None] & p_ok[None, :], other=0.0).to(tl.float32)
        p = tl.where(q_ok[:, None] & p_ok[None, :], tl.exp(s - lse[:, None]), 0.0)
        delta += row_sum(p * dot(do, tl.trans(ve), PREC, UPCAST))
    tl.store(DELTA + row, delta, mask=q_ok)

    dq = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    for j in range(0, KH * KW):
        ky, kx, inside = _window_key(y, x, j, H, W, KH, KW, CLAMP)
        ok = inside & q_ok
        km = ok[:, None] & d_ok[None, :]
        k = tl.load(K + b * skb + ky[:, None] * sky + kx[:, None] * skx + head * skh + offs_d[None, :],
                    mask=km, other=0.0).to(tl.float32)
        v = tl.load(V + b * svb + ky[:, None] * svy + kx[:, None] * svx + head * svh + offs_d[None, :],
                    mask=km, other=0.0).to(tl.float32)
        s = row_sum(qf * k) * scale
        if HAS_RPB:
            s += _slot_bias(RPB, head, s_rh, s_ra, s_rb, y, x, ky, kx, j, ok, KH, KW, RPB_OFFSET)
        p = tl.where(ok, tl.exp(s - lse), 0.0)
        dp = row_sum(dof * v)  # zero outside the map (v loaded as 0)
        ds = p * (dp - delta)
        dq += ds[:, None] * k
        if WRITE_DS:
            tl.store(DS + row * (KH * KW) + j, ds, mask=q_ok)
        if WRITE_DLW:
            tl.store(DLW + b * s_lb + y * s_ly + x * s_lx + head * s_lh + j, dp.to(DLW.dtype.element_ty), mask=q_ok)

    for p0 in range(0, P, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        p_ok = offs_p < P
        em = p_ok[:, None] & d_ok[None, :]
        erow = ((b * P + offs_p) * NHEADS + head) * D
        ke = tl.load(KE + erow[:, None] + offs_d[None, :], mask=em, other=0.0)
        ve = tl.load(VE + erow[:, None] + offs_d[None, :], mask=em, other=0.0)
        s = dot(q, tl.trans(ke), PREC, UPCAST) * scale
        if EB_MODE == 1:
            s += tl.load(EB + head * P + offs_p, mask=p_ok, other=0.0).to(tl.float32)[None, :]
        if EB_MODE == 2:
            s += tl.load(EB + (head * H * W + offs_m[:, None]) * P + offs_p[None, :],
                         mask=q_ok[:, None] & p_ok[None, :], other=0.0).to(tl.float32)
        pm = q_ok[:, None] & p_ok[None, :]
        p = tl.where(pm, tl.exp(s - lse[:, None]), 0.0)
        dp = dot(do, tl.trans(ve), PREC, UPCAST)
        ds = p * (dp - delta[:, None])
        dq += dot(ds.to(ke.dtype), ke, PREC, UPCAST)
        if WRITE_DEB:
            tl.store(DEB + ((b * NHEADS + head) * H * W + offs_m[:, None]) * P + offs_p[None, :], ds, mask=pm)
    tl.store(DQ + b * sqb + y[:, None] * sqy + x[:, None] * sqx + head * sqh + offs_d[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=qm)


@triton.jit
def _lg_dkdv(Q, K, V, RPB, LW, DO, LSE, DELTA, DK, DV,
             sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh,
             sdb, sdy, sdx, sdh, s_rh, s_ra, s_rb, s_lb, s_ly, s_lx, s_lh,
             H, W, NHEADS, D, scale,
             KH: tl.constexpr, KW: tl.constexpr, CLAMP: tl.constexpr, BLOCK_N: tl.constexpr,
             BLOCK_D: tl.constexpr, HAS_RPB: tl.constexpr, RPB_OFFSET: tl.constexpr, HAS_LW: tl.constexpr):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // NHEADS
    head = bh % NHEADS
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    k_ok = offs_n < H * W
    ky = offs_n // W
    kx = offs_n % W
    km = k_ok[:, None] & d_ok[None, :]
    k = tl.load(K + b * skb + ky[:, None] * sky + kx[:, None] * skx + head * skh + offs_d[None, :],
                mask=km, other=0.0).to(tl.float32)
    v = tl.load(V + b * svb + ky[:, None] * svy + kx[:, None] * svx + head * svh + offs_d[None, :],
                mask=km, other=0.0).to(tl.float32)
    # The queries whose window holds a key form a range per axis: within k // 2 of it (masked,
    # centred window), or as NA's clamped windows give it (wider near the borders, where windows
    # are shifted inwards); a block walks the largest of its keys' ranges.
    if CLAMP:
        q0y = tl.where(ky < KH, 0, ky - KH // 2)
        q1y = tl.where(ky >= H - KH, H - 1, ky + KH // 2)
        q0x = tl.where(kx < KW, 0, kx - KW // 2)
        q1x = tl.where(kx >= W - KW, W - 1, kx + KW // 2)
    else:
        q0y = tl.maximum(ky - KH // 2, 0)
        q1y = tl.minimum(ky + KH // 2, H - 1)
        q0x = tl.maximum(kx - KW // 2, 0)
        q1x = tl.minimum(kx + KW // 2, W - 1)
    ny = tl.reduce(tl.where(k_ok, q1y - q0y + 1, 0), 0, MAX_COMBINE)
    nx = tl.reduce(tl.where(k_ok, q1x - q0x + 1, 0), 0, MAX_COMBINE)
    dk = tl.full([BLOCK_N, BLOCK_D], 0.0, tl.float32)
    dv = tl.full([BLOCK_N, BLOCK_D], 0.0, tl.float32)
    for c in range(0, ny * nx):
        y = q0y + c // nx
        x = q0x + c % nx
        if CLAMP:
            sy = ky - tl.minimum(tl.maximum(y - KH // 2, 0), H - KH)
            sx = kx - tl.minimum(tl.maximum(x - KW // 2, 0), W - KW)
        else:
            sy = ky - y + KH // 2
            sx = kx - x + KW // 2
        ok = k_ok & (y <= q1y) & (x <= q1x) & (sy >= 0) & (sy < KH) & (sx >= 0) & (sx < KW)
        j = sy * KW + sx
        qm = ok[:, None] & d_ok[None, :]
        q = tl.load(Q + b * sqb + y[:, None] * sqy + x[:, None] * sqx + head * sqh + offs_d[None, :],
                    mask=qm, other=0.0).to(tl.float32)
        do = tl.load(DO + b * sdb + y[:, None] * sdy + x[:, None] * sdx + head * sdh + offs_d[None, :],
                     mask=qm, other=0.0).to(tl.float32)
        row = (b * H * W + y * W + x) * NHEADS + head
        lse = tl.load(LSE + row, mask=ok, other=0.0)
        delta = tl.load(DELTA + row, mask=ok, other=0.0)
        s = row_sum(q * k) * scale
        if HAS_RPB:
            if RPB_OFFSET:
                a = ky - y + KH - 1
                cc = kx - x + KW - 1
            else:
                a = sy
                cc = sx
            s += tl.load(RPB + head * s_rh + a * s_ra + cc * s_rb, mask=ok, other=0.0).to(tl.float32)
        p = tl.where(ok, tl.exp(s - lse), 0.0)
        w = p
        if HAS_LW:
            w += tl.load(LW + b * s_lb + y * s_ly + x * s_lx + head * s_lh + j, mask=ok, other=0.0).to(tl.float32)
        dv += w[:, None] * do
        ds = p * (row_sum(do * v) - delta)
        dk += ds[:, None] * q
    tl.store(DK + b * skb + ky[:, None] * sky + kx[:, None] * skx + head * skh + offs_d[None, :],
             (dk * scale).to(DK.dtype.element_ty), mask=km)
    tl.store(DV + b * svb + ky[:, None] * svy + kx[:, None] * svx + head * svh + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=km)


@triton.jit
def _lg_dextra(Q, KE, VE, EB, DO, LSE, DELTA, DKE, DVE, DEB,
               sqb, sqy, sqx, sqh, sdb, sdy, sdx, sdh,
               H, W, NHEADS, D, P, B, NUM_PB, RUN, scale,
               BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr, EB_MODE: tl.constexpr,
               WRITE_DEB: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    # Transposed orientation (S^T = K_e Q^T): every tl.trans is of a tile loaded from memory.
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // NHEADS
    head = bh % NHEADS
    run = pid // NUM_PB
    offs_p = (pid % NUM_PB) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    p_ok = offs_p < P
    em = p_ok[:, None] & d_ok[None, :]
    erow = ((b * P + offs_p) * NHEADS + head) * D
    ke = tl.load(KE + erow[:, None] + offs_d[None, :], mask=em, other=0.0)
    ve = tl.load(VE + erow[:, None] + offs_d[None, :], mask=em, other=0.0)
    if EB_MODE == 1:
        eb_head = tl.load(EB + head * P + offs_p, mask=p_ok, other=0.0).to(tl.float32)
    dke = tl.full([BLOCK_P, BLOCK_D], 0.0, tl.float32)
    dve = tl.full([BLOCK_P, BLOCK_D], 0.0, tl.float32)
    deb = tl.full([BLOCK_P], 0.0, tl.float32)
    q_end = tl.minimum((run + 1) * RUN, H * W)
    for m0 in range(run * RUN, q_end, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        q_ok = offs_m < q_end
        y = offs_m // W
        x = offs_m % W
        qm_t = d_ok[:, None] & q_ok[None, :]
        q_t = tl.load(Q + b * sqb + y[None, :] * sqy + x[None, :] * sqx + head * sqh + offs_d[:, None],
                      mask=qm_t, other=0.0)  # [D, M]
        do_t = tl.load(DO + b * sdb + y[None, :] * sdy + x[None, :] * sdx + head * sdh + offs_d[:, None],
                       mask=qm_t, other=0.0)  # [D, M]
        row = (b * H * W + offs_m) * NHEADS + head
        lse = tl.load(LSE + row, mask=q_ok, other=0.0)
        delta = tl.load(DELTA + row, mask=q_ok, other=0.0)
        pm = p_ok[:, None] & q_ok[None, :]
        s_t = dot(ke, q_t, PREC, UPCAST) * scale
        if EB_MODE == 1:
            s_t += eb_head[:, None]
        if EB_MODE == 2:
            s_t += tl.load(EB + (head * H * W + offs_m[None, :]) * P + offs_p[:, None], mask=pm,
                           other=0.0).to(tl.float32)
        p_t = tl.where(pm, tl.exp(s_t - lse[None, :]), 0.0)
        dve += dot(p_t.to(do_t.dtype), tl.trans(do_t), PREC, UPCAST)
        ds_t = p_t * (dot(ve, do_t, PREC, UPCAST) - delta[None, :])
        dke += dot(ds_t.to(q_t.dtype), tl.trans(q_t), PREC, UPCAST)
        if WRITE_DEB:
            deb += row_sum(ds_t)
    part = ((run * B + b) * NHEADS + head) * P + offs_p
    tl.store(DKE + part[:, None] * D + offs_d[None, :], dke * scale, mask=em)
    tl.store(DVE + part[:, None] * D + offs_d[None, :], dve, mask=em)
    if WRITE_DEB:
        tl.store(DEB + part, deb, mask=p_ok)


def check_config(config: Optional[Mapping]) -> None:
    """Raise on keys a launch configuration does not have (a typo would otherwise be ignored)."""
    for key in config or {}:
        if key not in CONFIG_KEYS:
            raise ValueError(f'local_global triton: unknown launch configuration key {key!r}; expected one of '
                             f'{CONFIG_KEYS}')


def _launch(D: int, P: int, dtype: torch.dtype, config: Optional[Mapping]) -> dict:
    """Launch constants. 32-query blocks (the extra-token dots need at least 16 rows); extra tokens
    in chunks of 32 in fp32 (FMA dots, whose operands live in registers) and 64 in half precision;
    runs of 1024 queries per extra-token gradient program (about 65 runs per image x head at
    TransNeXt's stage 1 of an 800x1333 input). fp32 takes 8 warps: its FMA dots hold their
    operands in registers, and with 4 warps the dQ kernel spilled (48 B of stack at sm_90)."""
    o = dict(config or {})
    block_d = max(16, triton.next_power_of_2(D))
    block_p = 32 if dtype == torch.float32 else 64
    block_p = min(block_p, max(16, triton.next_power_of_2(max(P, 1))))
    return dict(block_m=o.get('block_m', 32), block_n=o.get('block_n', 32), block_p=o.get('block_p', block_p),
                block_d=block_d, run=o.get('queries_per_program', 1024),
                num_warps=o.get('num_warps', 8 if dtype == torch.float32 else 4),
                num_stages=o.get('num_stages', 2))


def _rpb_args(rpb, q, kernel):
    if rpb is None:
        return q, (0, 0, 0), False
    return rpb, (rpb.stride(0), rpb.stride(1), rpb.stride(2)), tuple(rpb.shape[1:]) != tuple(kernel)


def _lw_args(lw, q):
    return (lw, (lw.stride(0), lw.stride(1), lw.stride(2), lw.stride(3))) if lw is not None else (q, (0, 0, 0, 0))


def drpb_from_ds(ds: torch.Tensor, H: int, W: int, kernel, border: str, offset_table: bool) -> torch.Tensor:
    """Reduce the window dS ``[B, H*W, heads, kh*kw]`` onto the bias table: ``[heads, kh, kw]``
    (by slot: a sum) or ``[heads, 2kh-1, 2kw-1]`` (by offset: two one-hot matmuls, deterministic)."""
    kh, kw = kernel
    B, _, nh, _ = ds.shape
    s = ds.sum(0).view(H, W, nh, kh, kw)
    if not offset_table:
        return s.sum((0, 1))
    s = s.permute(2, 0, 3, 1, 4).reshape(nh, H * kh, W * kw)

    def onehot(L, kk):
        pos, _ = window_index(L, kk, border, ds.device)
        off = pos - torch.arange(L, device=ds.device)[:, None] + kk - 1  # [L, kk]; masked slots carry dS 0
        return torch.nn.functional.one_hot(off.reshape(-1), 2 * kk - 1).to(ds.dtype).t()

    return onehot(H, kh) @ s @ onehot(W, kw).t()


class LocalGlobalTriton(torch.autograd.Function):
    """Autograd wrapper around the fused kernels (validated inputs, see :func:`local_global_triton`)."""

    @staticmethod
    def forward(ctx, q, k, v, k_extra, v_extra, rpb, extra_bias, local_weights, kernel, border, scale, config):
        B, H, W, nh, D = q.shape
        P = k_extra.shape[1]
        c = _launch(D, P, q.dtype, config)
        rpb_t, rs, rpb_offset = _rpb_args(rpb, q, kernel)
        lw_t, ls = _lw_args(local_weights, q)
        eb_mode = 0 if extra_bias is None else (1 if extra_bias.dim() == 2 else 2)
        eb_t = extra_bias if extra_bias is not None else q
        ke_t = k_extra if P else q
        ve_t = v_extra if P else q
        out = torch.empty_like(q)
        lse = torch.empty(B, H * W, nh, device=q.device, dtype=torch.float32)
        grid = (triton.cdiv(H * W, c['block_m']), B * nh)
        _lg_fwd[grid](q, k, v, ke_t, ve_t, rpb_t, eb_t, lw_t, out, lse,
                      *strides4(q), *strides4(k), *strides4(v), *strides4(out), *rs, *ls,
                      H, W, nh, D, P, scale,
                      KH=kernel[0], KW=kernel[1], CLAMP=border == 'clamp', BLOCK_M=c['block_m'],
                      BLOCK_P=c['block_p'], BLOCK_D=c['block_d'], HAS_RPB=rpb is not None, RPB_OFFSET=rpb_offset,
                      EB_MODE=eb_mode, HAS_LW=local_weights is not None, PREC=precision(q.dtype), UPCAST=upcast(q),
                      num_warps=c['num_warps'], num_stages=c['num_stages'])
        ctx.save_for_backward(q, k, v, k_extra, v_extra, rpb, extra_bias, local_weights, lse)
        ctx.meta = (kernel, border, scale, config)
        return out

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: double backward is an error
    def backward(ctx, dout):
        q, k, v, k_extra, v_extra, rpb, extra_bias, local_weights, lse = ctx.saved_tensors
        kernel, border, scale, config = ctx.meta
        B, H, W, nh, D = q.shape
        P = k_extra.shape[1]
        kk = kernel[0] * kernel[1]
        c = _launch(D, P, q.dtype, config)
        dout = dout.contiguous()
        rpb_t, rs, rpb_offset = _rpb_args(rpb, q, kernel)
        lw_t, ls = _lw_args(local_weights, q)
        eb_mode = 0 if extra_bias is None else (1 if extra_bias.dim() == 2 else 2)
        eb_t = extra_bias if extra_bias is not None else q
        ke_t = k_extra if P else q
        ve_t = v_extra if P else q
        need = ctx.needs_input_grad
        write_ds = rpb is not None and need[5]
        write_deb_q = eb_mode == 2 and need[6] and P > 0
        write_dlw = local_weights is not None and need[7]
        dq, dk, dv = grad_buffers(q, k, v)
        delta = torch.empty_like(lse)
        ds = torch.empty(B, H * W, nh, kk, device=q.device, dtype=torch.float32) if write_ds else lse
        dlw = torch.empty_like(local_weights) if write_dlw else lse
        deb_q = torch.empty(B, nh, H * W, P, device=q.device, dtype=torch.float32) if write_deb_q else lse
        flags = dict(KH=kernel[0], KW=kernel[1], CLAMP=border == 'clamp', BLOCK_D=c['block_d'],
                     HAS_RPB=rpb is not None, RPB_OFFSET=rpb_offset, HAS_LW=local_weights is not None,
                     num_warps=c['num_warps'], num_stages=c['num_stages'])
        prec = dict(PREC=precision(q.dtype), UPCAST=upcast(q))
        grid = (triton.cdiv(H * W, c['block_m']), B * nh)
        _lg_dq[grid](q, k, v, ke_t, ve_t, rpb_t, eb_t, lw_t, dout, lse, delta, dq, ds, dlw, deb_q,
                     *strides4(q), *strides4(k), *strides4(v), *strides4(dout), *rs, *ls,
                     H, W, nh, D, P, scale, BLOCK_M=c['block_m'], BLOCK_P=c['block_p'], EB_MODE=eb_mode,
                     WRITE_DS=write_ds, WRITE_DLW=write_dlw, WRITE_DEB=write_deb_q, **prec, **flags)
        grid = (triton.cdiv(H * W, c['block_n']), B * nh)
        _lg_dkdv[grid](q, k, v, rpb_t, lw_t, dout, lse, delta, dk, dv,
                       *strides4(q), *strides4(k), *strides4(v), *strides4(dout), *rs, *ls,
                       H, W, nh, D, scale, BLOCK_N=c['block_n'], **flags)
        dke = dve = deb = None
        if P:
            run = max(c['block_m'], c['run'] // c['block_m'] * c['block_m'])
            runs = triton.cdiv(H * W, run)
            num_pb = triton.cdiv(P, c['block_p'])
            write_deb_h = eb_mode == 1 and need[6]
            dke_p = torch.empty(runs, B, nh, P, D, device=q.device, dtype=torch.float32)
            dve_p = torch.empty_like(dke_p)
            deb_p = torch.empty(runs, B, nh, P, device=q.device, dtype=torch.float32) if write_deb_h else lse
            _lg_dextra[(runs * num_pb, B * nh)](
                q, ke_t, ve_t, eb_t, dout, lse, delta, dke_p, dve_p, deb_p,
                *strides4(q), *strides4(dout), H, W, nh, D, P, B, num_pb, run, scale,
                BLOCK_M=c['block_m'], BLOCK_P=c['block_p'], BLOCK_D=c['block_d'], EB_MODE=eb_mode,
                WRITE_DEB=write_deb_h, num_warps=c['num_warps'], num_stages=c['num_stages'], **prec)
            dke = dke_p.sum(0).transpose(1, 2).to(k_extra.dtype)
            dve = dve_p.sum(0).transpose(1, 2).to(v_extra.dtype)
            if write_deb_h:
                deb = deb_p.sum((0, 1)).to(extra_bias.dtype)
        else:
            dke, dve = torch.zeros_like(k_extra), torch.zeros_like(v_extra)
        if write_deb_q:
            deb = deb_q.sum(0).view(nh, H, W, P).to(extra_bias.dtype)
        if extra_bias is not None and need[6] and P == 0:
            deb = torch.zeros_like(extra_bias)
        drpb = drpb_from_ds(ds, H, W, kernel, border, rpb_offset).to(rpb.dtype) if write_ds else None
        if drpb is not None and not rpb_offset:
            drpb = drpb.view(rpb.shape)
        return (dq, dk, dv, dke, dve, drpb, deb, dlw if write_dlw else None, None, None, None, None)


def local_global_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_extra: torch.Tensor,
                        v_extra: torch.Tensor, kernel_size: Tuple[int, int], border: str,
                        rpb: Optional[torch.Tensor], extra_bias: Optional[torch.Tensor],
                        local_weights: Optional[torch.Tensor], scale: float,
                        config: Optional[Mapping] = None) -> torch.Tensor:
    """local_global attention through the fused Triton kernels on validated inputs; ``config``: a
    launch configuration (``CONFIG_KEYS``), ``None`` for the defaults."""
    check_config(config)
    q, k, v = (kernel_operand(t) for t in (q, k, v))
    k_extra, v_extra = k_extra.contiguous(), v_extra.contiguous()
    # the kernels read the extra bias and the local weights with their contiguous layouts, the
    # rpb table through its strides; all three in their own dtype (loaded as fp32)
    extra_bias = extra_bias.contiguous() if extra_bias is not None else None
    local_weights = local_weights.contiguous() if local_weights is not None else None
    return LocalGlobalTriton.apply(q, k, v, k_extra, v_extra, rpb, extra_bias, local_weights, tuple(kernel_size),
                                   border, float(scale), config)
