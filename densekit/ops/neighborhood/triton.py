"""Fused Triton kernels for neighborhood attention (forward and backward, RPB and dilation fused).

Semantics are those of ``reference.py`` (NATTEN <= 0.17). Layouts: q, k, v, out
``[B, *spatial, heads, head_dim]`` (any strides); rpb ``[heads, *(2k-1)]``; the saved
log-sum-exp is ``[B, prod(spatial), heads]`` float32. 1-D inputs run as 2-D with a height-1 axis.

Scheme (flash-attention style, adapted to a 2-D neighbourhood):

* Dilation is handled by residue classes: a program works inside one class ``(rh, rw)``, whose
  members form a dense sub-grid where the op is plain (undilated) NA with clamped windows.
* Forward / dQ: a program owns a ``TILE_H x TILE_W`` tile of queries. The union of their windows
  is a ``(TILE_H + kh - 1) x (TILE_W + kw - 1)`` key region (window starts move by at most one per
  query step), which is streamed in ``BLOCK_N`` chunks: ``tl.dot`` scores, the window mask and
  the RPB, and an online softmax.
* Mask and RPB: by default one contiguous tile load per chunk of precomputed ``bias + -inf mask``
  tiles (``bias_tiles.py``: they depend only on where a tile sits relative to the borders, so a
  few tile types cover a whole map); with ``bias_tiles=False`` in the launch configuration or
  beyond ``BIAS_TILE_MAX_BYTES``, an exact per-pair mask and a gather from the
  ``[heads, 2k-1, 2k-1]`` table. The tiles save the per-pair offset arithmetic, compares and
  gathers, which keep the bf16 kernels at the register cap (with spills in the backward) at
  sm_90.
* dK / dV: a program owns a tile of keys and streams the (again contiguous) region of queries
  whose windows can contain them, so no atomics are needed and results are deterministic. It
  computes in the transposed orientation (``S^T = K Q^T``) so no dot result is ever transposed.
* dRPB: the dQ kernel writes dS compactly (``[B, S, heads, kh*kw]``, only when the bias needs a
  gradient); the reduction onto ``[heads, 2kh-1, 2kw-1]`` is two small one-hot matmuls.
"""
from __future__ import annotations

import logging
from typing import Mapping, Optional, Sequence

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from densekit.ops._buffers import grad_buffers, kernel_operand
from densekit.ops._triton_utils import dot as _dot
from densekit.ops._triton_utils import precision as _precision
from densekit.ops._triton_utils import online_softmax_step, row_dot, strides4
from densekit.ops._triton_utils import upcast as _upcast
from densekit.ops.neighborhood.bias_tiles import bias_tiles, tile_bytes
from densekit.ops.neighborhood.reference import axis_windows

logger = logging.getLogger('densekit.ops')

@triton.jit
def _tile_coords(pid, H, W, DH: tl.constexpr, DW: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
                 N_TH, N_TW):
    """Program id -> residue class (rh, rw), its sub-grid size (Hc, Wc) and tile origin."""
    tiles = N_TH * N_TW
    cls = pid // tiles
    t = pid % tiles
    rh = cls // DW
    rw = cls % DW
    Hc = (H - rh + DH - 1) // DH
    Wc = (W - rw + DW - 1) // DW
    t0h = (t // N_TW) * TILE_H
    t0w = (t % N_TW) * TILE_W
    return rh, rw, Hc, Wc, t0h, t0w


@triton.jit
def _win_start(i, Lc, K: tl.constexpr):
    """Clamped window start on a sub-axis of length Lc (NATTEN: shifted, never shrunk)."""
    return tl.minimum(tl.maximum(i - K // 2, 0), Lc - K)


@triton.jit
def _scores(q, k, qi, qj, sh, sw, kr, kc, key_ok, q_ok, rpb_ptr, s_rh, s_ra, s_rb, scale,
            KH: tl.constexpr, KW: tl.constexpr, HAS_RPB: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Masked logits ``[M, N]`` of query rows against key columns (sub-grid coordinates).

    Per pair this is the inner loop of all three kernels: the window offsets ``dr, dc`` are one
    broadcast subtraction each, and ``0 <= dr < KH`` is one unsigned compare.
    """
    s = _dot(q, tl.trans(k), PREC, UPCAST) * scale
    dr = kr[None, :] - sh[:, None]
    dc = kc[None, :] - sw[:, None]
    allowed = ((dr.to(tl.uint32) < KH) & (dc.to(tl.uint32) < KW)) & (key_ok[None, :] & q_ok[:, None])
    if HAS_RPB:
        bptr = rpb_ptr + (kr[None, :] - qi[:, None] + KH - 1) * s_ra + (kc[None, :] - qj[:, None] + KW - 1) * s_rb
        s += tl.load(bptr, mask=allowed, other=0.0).to(tl.float32)
    s = tl.where(allowed, s, float('-inf'))
    return s, allowed, dr, dc


@triton.jit
def _tile_base(TILES, TYPE_H, TYPE_W, pid, head, rh, rw, N_TH, N_TW, NT_W, NPAIRS, CHUNKS,
               ROWS: tl.constexpr, COLS: tl.constexpr):
    """Start of this program's precomputed bias + mask tiles (``bias_tiles.py``): its axis types
    from the per-(class, tile) tables, then ``[heads, pairs, chunks, ROWS, COLS]``."""
    t = pid % (N_TH * N_TW)
    pair = tl.load(TYPE_H + rh * N_TH + t // N_TW) * NT_W + tl.load(TYPE_W + rw * N_TW + t % N_TW)
    return TILES + (head * NPAIRS + pair).to(tl.int64) * CHUNKS * (ROWS * COLS)


@triton.jit
def _tile(base, c, ROWS: tl.constexpr, COLS: tl.constexpr):
    """Chunk ``c`` of a program's bias + mask tiles, ``[ROWS, COLS]`` fp32 (-inf: masked)."""
    offs = tl.arange(0, ROWS)[:, None] * COLS + tl.arange(0, COLS)[None, :]
    return tl.load(base + c * (ROWS * COLS) + offs).to(tl.float32)


@triton.jit
def _na_fwd(Q, K, V, RPB, O, LSE, TILES, TYPE_H, TYPE_W,
            sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh, sob, soy, sox, soh,
            s_rh, s_ra, s_rb,
            H, W, NHEADS, D, N_TH, N_TW, NT_W, NPAIRS, CHUNKS, scale,
            KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
            TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
            HAS_RPB: tl.constexpr, BIAS_TILES: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    BLOCK_M: tl.constexpr = TILE_H * TILE_W
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // NHEADS
    head = bh % NHEADS
    rh, rw, Hc, Wc, t0h, t0w = _tile_coords(pid, H, W, DH, DW, TILE_H, TILE_W, N_TH, N_TW)

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    qi = t0h + offs_m // TILE_W
    qj = t0w + offs_m % TILE_W
    q_ok = (qi < Hc) & (qj < Wc)
    y = rh + DH * qi
    x = rw + DW * qj
    sh = _win_start(qi, Hc, KH)
    sw = _win_start(qj, Wc, KW)
    q = tl.load(Q + b * sqb + y[:, None] * sqy + x[:, None] * sqx + head * sqh + offs_d[None, :],
                mask=q_ok[:, None] & d_ok[None, :], other=0.0)

    # key region: union of the tile's windows (sub-grid coordinates)
    kr0 = _win_start(t0h, Hc, KH)
    kr1 = _win_start(tl.minimum(t0h + TILE_H - 1, Hc - 1), Hc, KH) + KH
    kc0 = _win_start(t0w, Wc, KW)
    kc1 = _win_start(tl.minimum(t0w + TILE_W - 1, Wc - 1), Wc, KW) + KW
    n_kw = kc1 - kc0
    n_keys = (kr1 - kr0) * n_kw
    rpb_ptr = RPB + head * s_rh
    if BIAS_TILES:
        tbase = _tile_base(TILES, TYPE_H, TYPE_W, pid, head, rh, rw, N_TH, N_TW, NT_W, NPAIRS, CHUNKS,
                           BLOCK_M, BLOCK_N)

    m_i = tl.full([BLOCK_M], float('-inf'), tl.float32)
    l_i = tl.full([BLOCK_M], 0.0, tl.float32)
    acc = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    for n0 in range(0, n_keys, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        key_ok = offs_n < n_keys
        kr = kr0 + offs_n // n_kw
        kc = kc0 + offs_n % n_kw
        ky = rh + DH * kr
        kx = rw + DW * kc
        kmask = key_ok[:, None] & d_ok[None, :]
        k = tl.load(K + b * skb + ky[:, None] * sky + kx[:, None] * skx + head * skh + offs_d[None, :],
                    mask=kmask, other=0.0)
        v = tl.load(V + b * svb + ky[:, None] * svy + kx[:, None] * svx + head * svh + offs_d[None, :],
                    mask=kmask, other=0.0)
        if BIAS_TILES:
            s = _dot(q, tl.trans(k), PREC, UPCAST) * scale + _tile(tbase, n0 // BLOCK_N, BLOCK_M, BLOCK_N)
        else:
            s, allowed, dr, dc = _scores(q, k, qi, qj, sh, sw, kr, kc, key_ok, q_ok, rpb_ptr, s_rh, s_ra, s_rb,
                                         scale, KH, KW, HAS_RPB, PREC, UPCAST)
        m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v, PREC, UPCAST)
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    tl.store(O + b * sob + y[:, None] * soy + x[:, None] * sox + head * soh + offs_d[None, :],
             out.to(O.dtype.element_ty), mask=q_ok[:, None] & d_ok[None, :])
    lse = m_i + tl.log(l_safe)
    tl.store(LSE + (b * H * W + y * W + x) * NHEADS + head, lse, mask=q_ok)


@triton.jit
def _na_bwd_dq(Q, K, V, RPB, DO, LSE, DELTA, DQ, DS, TILES, TYPE_H, TYPE_W,
               sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh, sdb, sdy, sdx, sdh,
               s_rh, s_ra, s_rb,
               H, W, NHEADS, D, N_TH, N_TW, NT_W, NPAIRS, CHUNKS, scale,
               KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
               TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
               HAS_RPB: tl.constexpr, BIAS_TILES: tl.constexpr, WRITE_DS: tl.constexpr, PREC: tl.constexpr,
               UPCAST: tl.constexpr):
    BLOCK_M: tl.constexpr = TILE_H * TILE_W
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // NHEADS
    head = bh % NHEADS
    rh, rw, Hc, Wc, t0h, t0w = _tile_coords(pid, H, W, DH, DW, TILE_H, TILE_W, N_TH, N_TW)

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    qi = t0h + offs_m // TILE_W
    qj = t0w + offs_m % TILE_W
    q_ok = (qi < Hc) & (qj < Wc)
    y = rh + DH * qi
    x = rw + DW * qj
    sh = _win_start(qi, Hc, KH)
    sw = _win_start(qj, Wc, KW)
    qm = q_ok[:, None] & d_ok[None, :]
    q = tl.load(Q + b * sqb + y[:, None] * sqy + x[:, None] * sqx + head * sqh + offs_d[None, :], mask=qm, other=0.0)
    do = tl.load(DO + b * sdb + y[:, None] * sdy + x[:, None] * sdx + head * sdh + offs_d[None, :], mask=qm, other=0.0)
    row = (b * H * W + y * W + x) * NHEADS + head
    lse = tl.load(LSE + row, mask=q_ok, other=0.0)
    delta = tl.load(DELTA + row, mask=q_ok, other=0.0)

    kr0 = _win_start(t0h, Hc, KH)
    kr1 = _win_start(tl.minimum(t0h + TILE_H - 1, Hc - 1), Hc, KH) + KH
    kc0 = _win_start(t0w, Wc, KW)
    kc1 = _win_start(tl.minimum(t0w + TILE_W - 1, Wc - 1), Wc, KW) + KW
    n_kw = kc1 - kc0
    n_keys = (kr1 - kr0) * n_kw
    rpb_ptr = RPB + head * s_rh
    if BIAS_TILES:
        tbase = _tile_base(TILES, TYPE_H, TYPE_W, pid, head, rh, rw, N_TH, N_TW, NT_W, NPAIRS, CHUNKS,
                           BLOCK_M, BLOCK_N)

    dq = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    for n0 in range(0, n_keys, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        key_ok = offs_n < n_keys
        kr = kr0 + offs_n // n_kw
        kc = kc0 + offs_n % n_kw
        ky = rh + DH * kr
        kx = rw + DW * kc
        kmask = key_ok[:, None] & d_ok[None, :]
        k = tl.load(K + b * skb + ky[:, None] * sky + kx[:, None] * skx + head * skh + offs_d[None, :],
                    mask=kmask, other=0.0)
        v = tl.load(V + b * svb + ky[:, None] * svy + kx[:, None] * svx + head * svh + offs_d[None, :],
                    mask=kmask, other=0.0)
        if BIAS_TILES:
            s = _dot(q, tl.trans(k), PREC, UPCAST) * scale + _tile(tbase, n0 // BLOCK_N, BLOCK_M, BLOCK_N)
            if WRITE_DS:  # the compact dS store still needs each pair's window offset
                dr = kr[None, :] - sh[:, None]
                dc = kc[None, :] - sw[:, None]
                allowed = ((dr.to(tl.uint32) < KH) & (dc.to(tl.uint32) < KW)) & (key_ok[None, :] & q_ok[:, None])
        else:
            s, allowed, dr, dc = _scores(q, k, qi, qj, sh, sw, kr, kc, key_ok, q_ok, rpb_ptr, s_rh, s_ra, s_rb,
                                         scale, KH, KW, HAS_RPB, PREC, UPCAST)
        p = tl.exp(s - lse[:, None])
        dp = _dot(do, tl.trans(v), PREC, UPCAST)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, PREC, UPCAST)
        if WRITE_DS:
            tl.store(DS + row[:, None] * (KH * KW) + dr * KW + dc, ds, mask=allowed)
    tl.store(DQ + b * sqb + y[:, None] * sqy + x[:, None] * sqx + head * sqh + offs_d[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=qm)


@triton.jit
def _scores_t(k, q_t, kr, kc, qi, qj, sh, sw, key_ok, q_ok, rpb_ptr, s_rh, s_ra, s_rb, scale,
              KH: tl.constexpr, KW: tl.constexpr, HAS_RPB: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Transposed masked logits ``[N, M]``: key rows against query columns (``q_t`` is ``[D, M]``);
    index work as in ``_scores``."""
    s = _dot(k, q_t, PREC, UPCAST) * scale
    dr = kr[:, None] - sh[None, :]
    dc = kc[:, None] - sw[None, :]
    allowed = ((dr.to(tl.uint32) < KH) & (dc.to(tl.uint32) < KW)) & (key_ok[:, None] & q_ok[None, :])
    if HAS_RPB:
        b_key = kr * s_ra + kc * s_rb
        b_query = (qi - (KH - 1)) * s_ra + (qj - (KW - 1)) * s_rb
        s += tl.load(rpb_ptr + (b_key[:, None] - b_query[None, :]), mask=allowed, other=0.0).to(tl.float32)
    return tl.where(allowed, s, float('-inf'))


@triton.jit
def _na_bwd_dkdv(Q, K, V, RPB, DO, LSE, DELTA, DK, DV, TILES, TYPE_H, TYPE_W,
                 sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh, sdb, sdy, sdx, sdh,
                 s_rh, s_ra, s_rb,
                 H, W, NHEADS, D, N_TH, N_TW, NT_W, NPAIRS, CHUNKS, scale,
                 KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
                 TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                 HAS_RPB: tl.constexpr, BIAS_TILES: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    # Works in the transposed orientation (S^T = K Q^T, P^T, dP^T = V dO^T, dS^T), so every
    # ``tl.trans`` is of a tile loaded from memory, never of a dot result: on sm_90, triton >= 3.4
    # miscompiles ``tl.dot(tl.trans(<computed>), ...)`` for some configurations (a garbage dK in
    # fp32; reported as flash-linear-attention issue #640).
    BLOCK_N: tl.constexpr = TILE_H * TILE_W
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // NHEADS
    head = bh % NHEADS
    rh, rw, Hc, Wc, t0h, t0w = _tile_coords(pid, H, W, DH, DW, TILE_H, TILE_W, N_TH, N_TW)

    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    kr = t0h + offs_n // TILE_W
    kc = t0w + offs_n % TILE_W
    key_ok = (kr < Hc) & (kc < Wc)
    ky = rh + DH * kr
    kx = rw + DW * kc
    kmask = key_ok[:, None] & d_ok[None, :]
    k = tl.load(K + b * skb + ky[:, None] * sky + kx[:, None] * skx + head * skh + offs_d[None, :], mask=kmask, other=0.0)
    v = tl.load(V + b * svb + ky[:, None] * svy + kx[:, None] * svx + head * svh + offs_d[None, :], mask=kmask, other=0.0)

    # queries whose (clamped) windows can contain this key tile: a contiguous sub-grid range
    k0h = t0h
    k1h = tl.minimum(t0h + TILE_H - 1, Hc - 1)
    k0w = t0w
    k1w = tl.minimum(t0w + TILE_W - 1, Wc - 1)
    q0h = tl.where(k0h < KH, 0, k0h - KH // 2)
    q1h = tl.where(k1h >= Hc - KH, Hc - 1, k1h + KH // 2)
    q0w = tl.where(k0w < KW, 0, k0w - KW // 2)
    q1w = tl.where(k1w >= Wc - KW, Wc - 1, k1w + KW // 2)
    n_qw = q1w - q0w + 1
    n_q = (q1h - q0h + 1) * n_qw
    rpb_ptr = RPB + head * s_rh
    if BIAS_TILES:
        tbase = _tile_base(TILES, TYPE_H, TYPE_W, pid, head, rh, rw, N_TH, N_TW, NT_W, NPAIRS, CHUNKS,
                           BLOCK_N, BLOCK_M)

    dk = tl.full([BLOCK_N, BLOCK_D], 0.0, tl.float32)
    dv = tl.full([BLOCK_N, BLOCK_D], 0.0, tl.float32)
    for m0 in range(0, n_q, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        in_region = offs_m < n_q
        qi = q0h + offs_m // n_qw
        qj = q0w + offs_m % n_qw
        q_ok = in_region & (qi < Hc) & (qj < Wc)
        y = rh + DH * qi
        x = rw + DW * qj
        sh = _win_start(qi, Hc, KH)
        sw = _win_start(qj, Wc, KW)
        qm_t = d_ok[:, None] & q_ok[None, :]
        q_t = tl.load(Q + b * sqb + y[None, :] * sqy + x[None, :] * sqx + head * sqh + offs_d[:, None],
                      mask=qm_t, other=0.0)  # [D, M]
        do_t = tl.load(DO + b * sdb + y[None, :] * sdy + x[None, :] * sdx + head * sdh + offs_d[:, None],
                       mask=qm_t, other=0.0)  # [D, M]
        row = (b * H * W + y * W + x) * NHEADS + head
        lse = tl.load(LSE + row, mask=q_ok, other=0.0)
        delta = tl.load(DELTA + row, mask=q_ok, other=0.0)
        if BIAS_TILES:
            s_t = _dot(k, q_t, PREC, UPCAST) * scale + _tile(tbase, m0 // BLOCK_M, BLOCK_N, BLOCK_M)
        else:
            s_t = _scores_t(k, q_t, kr, kc, qi, qj, sh, sw, key_ok, q_ok, rpb_ptr, s_rh, s_ra, s_rb, scale,
                            KH, KW, HAS_RPB, PREC, UPCAST)
        p_t = tl.exp(s_t - lse[None, :])  # [N, M], zero where not allowed
        dv += _dot(p_t.to(do_t.dtype), tl.trans(do_t), PREC, UPCAST)
        dp_t = _dot(v, do_t, PREC, UPCAST)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += _dot(ds_t.to(q_t.dtype), tl.trans(q_t), PREC, UPCAST)
    tl.store(DK + b * skb + ky[:, None] * sky + kx[:, None] * skx + head * skh + offs_d[None, :],
             (dk * scale).to(DK.dtype.element_ty), mask=kmask)
    tl.store(DV + b * svb + ky[:, None] * svy + kx[:, None] * svx + head * svh + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=kmask)


KERNELS = ('fwd', 'dq', 'dkdv')
# Keys of a launch configuration (``na_triton(config=...)``, ``na2d(triton_config=...)``): any of
# these replaces the default for every kernel; a dict under 'fwd', 'dq' or 'dkdv' holds the same
# keys for that kernel alone (the three kernels have their own grids, so each can take its own
# tile). ``bias_tiles=False`` selects per-pair masks and bias gathers instead of the precomputed
# bias + mask tiles (``bias_tiles.py``).
CONFIG_KEYS = ('tile_h', 'tile_w', 'block_n', 'num_warps', 'num_stages', 'bias_tiles')


def check_config(config: Optional[Mapping]) -> None:
    """Raise on keys a launch configuration does not have (a typo would otherwise be ignored)."""
    for key, value in (config or {}).items():
        if key in KERNELS and isinstance(value, Mapping):
            check_config({k: v for k, v in value.items() if k not in KERNELS})
        elif key not in CONFIG_KEYS:
            raise ValueError(f'na triton: unknown launch configuration key {key!r}; expected {CONFIG_KEYS} '
                             f'or a per-kernel dict under one of {KERNELS}')


def _kernel_config(config: Optional[Mapping], kernel: str) -> dict:
    o = config or {}
    return {**{k: v for k, v in o.items() if k not in KERNELS}, **o.get(kernel, {})}


def _launch(H: int, W: int, D: int, dtype: torch.dtype, kernel: str = 'fwd', config: Optional[Mapping] = None):
    """Tile shape and launch constants ``(tile_h, tile_w, block_n, block_d, num_warps, num_stages)``
    of one kernel (``'fwd'``, ``'dq'`` or ``'dkdv'``; ``block_n`` is the key chunk of fwd / dQ and
    the query chunk of dK / dV).

    Square 8x8 query tiles keep the key halo small for 2-D; a 1-D (height-1) problem uses a 1x64
    strip. Half precision streams keys (and, in dK/dV, queries) in chunks of 64 on 4 warps, a
    configuration timed on Hopper (``benchmarks/kernel_sweep.py`` compares the alternatives). fp32 dots run on
    the FMA units, where chunks of 64 made ptxas keep 7-14 KB per thread on the stack (sm_90
    compile, `stack_bytes`); chunks of 16 (8 warps from head dim 64) compile with no stack for head
    dims 16-64. ``config`` replaces any of these; a 1-D problem then gets a one-row strip as long as
    the 2-D tile.
    """
    if kernel not in KERNELS:
        raise ValueError(f'na triton: unknown kernel {kernel!r}; expected one of {KERNELS}')
    tile_h, tile_w = (8, 8) if H > 1 else (1, 64)
    block_d = max(16, triton.next_power_of_2(D))
    block_n, warps = (16, 4 if block_d <= 32 else 8) if dtype == torch.float32 else (64, 4)
    o = _kernel_config(config, kernel)
    if H == 1 and ('tile_h' in o or 'tile_w' in o):
        o = dict(o, tile_h=1, tile_w=o.get('tile_h', 8) * o.get('tile_w', 8))
    return (o.get('tile_h', tile_h), o.get('tile_w', tile_w), o.get('block_n', block_n), block_d,
            o.get('num_warps', warps), o.get('num_stages', 3))


# Precomputed bias + mask tiles are used up to this size (they are a few MiB for the benchmark and
# detection shapes: about 9-25 tile types x heads x 4 chunks x 8 KiB).
BIAS_TILE_MAX_BYTES = 64 << 20


def _wants_tiles(name: str, config: Optional[Mapping]) -> bool:
    return bool(_kernel_config(config, name).get('bias_tiles', True))


def _tile_args(name: str, config, rpb, q, H, W, kernel, dilation, tile, block, transposed):
    """Whether kernel ``name`` reads precomputed bias + mask tiles (``bias_tiles.py``; the default,
    ``bias_tiles=False`` in the launch configuration turns it off), and its launch arguments:
    tensors (tiles, type_h, type_w) and ints (n_types_w, pairs, chunks)."""
    use = _wants_tiles(name, config)
    if use:
        size = tile_bytes(q.shape[3], H, W, kernel, dilation, tile, block, transposed, q.element_size())
        if size > BIAS_TILE_MAX_BYTES:
            logger.debug('na triton %s: %d MiB of bias tiles > %d MiB: per-pair masks and bias gathers instead',
                         name, size >> 20, BIAS_TILE_MAX_BYTES >> 20)
            use = False
    if not use:
        return False, (q, q, q), (0, 0, 0)
    tiles, type_h, type_w, nw_t, chunks = bias_tiles(rpb, q.shape[3], H, W, kernel, dilation, tile, block, transposed,
                                                     q.dtype, q.device)
    return True, (tiles, type_h, type_w), (nw_t, tiles.shape[1], chunks)


def _grid(H, W, kernel, dilation, tile_h, tile_w, BH):
    dh, dw = dilation
    n_th = triton.cdiv(triton.cdiv(H, dh), tile_h)
    n_tw = triton.cdiv(triton.cdiv(W, dw), tile_w)
    if BH > 65535:
        raise ValueError(f'na triton: batch * heads = {BH} exceeds the grid limit 65535')
    return (dh * dw * n_th * n_tw, BH), n_th, n_tw



def _drpb_from_ds(ds: torch.Tensor, H: int, W: int, kernel, dilation) -> torch.Tensor:
    """Reduce compact dS ``[B, H*W, heads, kh*kw]`` onto ``[heads, 2kh-1, 2kw-1]`` (one-hot matmuls)."""
    kh, kw = kernel
    B, _, nh, _ = ds.shape
    s = ds.sum(0).view(H, W, nh, kh, kw).permute(2, 0, 3, 1, 4).reshape(nh, H * kh, W * kw)

    def onehot(L, kk, d):
        bias = axis_windows(L, kk, d, ds.device)[1].reshape(-1)  # [(L, kk)]
        return torch.nn.functional.one_hot(bias, 2 * kk - 1).to(ds.dtype).t()  # [2kk-1, L*kk]

    ah = onehot(H, kh, dilation[0])
    aw = onehot(W, kw, dilation[1])
    return ah @ s @ aw.t()


class NeighborhoodAttentionTriton(torch.autograd.Function):
    """Autograd wrapper around the fused kernels; inputs ``[B, H, W, heads, D]`` (validated)."""

    @staticmethod
    def forward(ctx, q, k, v, rpb, kernel, dilation, scale, config):
        B, H, W, nh, D = q.shape
        tile_h, tile_w, block_n, block_d, warps, stages = _launch(H, W, D, q.dtype, 'fwd', config)
        grid, n_th, n_tw = _grid(H, W, kernel, dilation, tile_h, tile_w, B * nh)
        use_tiles, tt, ti = _tile_args('fwd', config, rpb, q, H, W, kernel, dilation, (tile_h, tile_w), block_n, False)
        out = torch.empty_like(q)
        lse = torch.empty(B, H * W, nh, device=q.device, dtype=torch.float32)
        has_rpb = rpb is not None
        rpb_t = rpb if has_rpb else q
        rs = (rpb.stride(0), rpb.stride(1), rpb.stride(2)) if has_rpb else (0, 0, 0)
        _na_fwd[grid](q, k, v, rpb_t, out, lse, *tt,
                      *strides4(q), *strides4(k), *strides4(v), *strides4(out), *rs,
                      H, W, nh, D, n_th, n_tw, *ti, scale,
                      KH=kernel[0], KW=kernel[1], DH=dilation[0], DW=dilation[1],
                      TILE_H=tile_h, TILE_W=tile_w, BLOCK_N=block_n, BLOCK_D=block_d,
                      HAS_RPB=has_rpb, BIAS_TILES=use_tiles, PREC=_precision(q.dtype), UPCAST=_upcast(q),
                      num_warps=warps, num_stages=stages)
        ctx.save_for_backward(q, k, v, rpb, out, lse)
        ctx.meta = (kernel, dilation, scale, has_rpb, config)
        # the dQ kernel streams the same key regions: with the same tiling it reuses these tiles
        ctx.fwd_tiles = ((tile_h, tile_w, block_n), tt, ti) if use_tiles else None
        return out

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: double backward is an error
    def backward(ctx, dout):
        q, k, v, rpb, out, lse = ctx.saved_tensors
        kernel, dilation, scale, has_rpb, config = ctx.meta
        B, H, W, nh, D = q.shape
        dout = dout.contiguous()
        delta = row_dot(dout, out)
        # gradients are written with the strides of q / k / v (which may be views into a packed qkv)
        dq, dk, dv = grad_buffers(q, k, v)
        need_drpb = has_rpb and ctx.needs_input_grad[3]
        kk = kernel[0] * kernel[1]
        ds = torch.zeros(B, H * W, nh, kk, device=q.device, dtype=torch.float32) if need_drpb else lse
        rpb_t = rpb if has_rpb else q
        rs = (rpb.stride(0), rpb.stride(1), rpb.stride(2)) if has_rpb else (0, 0, 0)
        strides = (*strides4(q), *strides4(k), *strides4(v), *strides4(dout), *rs)
        flags = dict(KH=kernel[0], KW=kernel[1], DH=dilation[0], DW=dilation[1], HAS_RPB=has_rpb,
                     PREC=_precision(q.dtype), UPCAST=_upcast(q))
        tile_h, tile_w, block_n, block_d, warps, stages = _launch(H, W, D, q.dtype, 'dq', config)
        grid, n_th, n_tw = _grid(H, W, kernel, dilation, tile_h, tile_w, B * nh)
        if ctx.fwd_tiles is not None and ctx.fwd_tiles[0] == (tile_h, tile_w, block_n) and _wants_tiles('dq', config):
            use_tiles, (_, tt, ti) = True, ctx.fwd_tiles
        else:
            use_tiles, tt, ti = _tile_args('dq', config, rpb, q, H, W, kernel, dilation, (tile_h, tile_w), block_n, False)
        ctx.fwd_tiles = None
        _na_bwd_dq[grid](q, k, v, rpb_t, dout, lse, delta, dq, ds, *tt, *strides,
                         H, W, nh, D, n_th, n_tw, *ti, scale, TILE_H=tile_h, TILE_W=tile_w, BLOCK_N=block_n,
                         BLOCK_D=block_d, BIAS_TILES=use_tiles, WRITE_DS=need_drpb, num_warps=warps,
                         num_stages=stages, **flags)
        tile_h, tile_w, block_n, block_d, warps, stages = _launch(H, W, D, q.dtype, 'dkdv', config)
        grid, n_th, n_tw = _grid(H, W, kernel, dilation, tile_h, tile_w, B * nh)
        use_tiles, tt, ti = _tile_args('dkdv', config, rpb, q, H, W, kernel, dilation, (tile_h, tile_w), block_n, True)
        _na_bwd_dkdv[grid](q, k, v, rpb_t, dout, lse, delta, dk, dv, *tt, *strides,
                           H, W, nh, D, n_th, n_tw, *ti, scale, TILE_H=tile_h, TILE_W=tile_w, BLOCK_M=block_n,
                           BLOCK_D=block_d, BIAS_TILES=use_tiles, num_warps=warps, num_stages=stages, **flags)
        drpb = _drpb_from_ds(ds, H, W, kernel, dilation).to(rpb.dtype) if need_drpb else None
        return dq, dk, dv, drpb, None, None, None, None


def na_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Sequence[int], dilation: Sequence[int],
              rpb: Optional[torch.Tensor], scale: float, config: Optional[Mapping] = None) -> torch.Tensor:
    """Neighborhood attention through the fused Triton kernels (validated inputs); ``config``: a
    launch configuration (``CONFIG_KEYS``), ``None`` for the defaults."""
    check_config(config)
    one_d = q.dim() == 4
    if one_d:  # run 1-D as a height-1 2-D problem
        q, k, v = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)
        kernel, dilation = (1, kernel[0]), (1, dilation[0])
        rpb = rpb.unsqueeze(1) if rpb is not None else None
    q, k, v = (kernel_operand(t) for t in (q, k, v))
    if rpb is not None:
        rpb = rpb.to(q.dtype) if rpb.dtype != q.dtype else rpb
    out = NeighborhoodAttentionTriton.apply(q, k, v, rpb, tuple(kernel), tuple(dilation), float(scale), config)
    return out.squeeze(1) if one_d else out
