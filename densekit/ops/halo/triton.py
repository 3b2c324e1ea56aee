"""Fused Triton kernels for HaloNet blocked-halo attention, forward and backward.

Semantics and layouts are those of ``reference.py``: q, k, v, out ``[B, H, W, heads, D]`` with
block multiples. The relative-position logits are query dependent (``q . rel``), so the wrapper
computes the two per-query tables ``th, tw = q @ rel_h^T, q @ rel_w^T`` (``[B, H, W, heads,
2*win-1]``, fp32) with ordinary autograd and the kernels add ``th[.., ky - qy + win - 1] +
tw[.., kx - qx + win - 1]`` (window-local coordinates) to the logits; their gradients come back
from the dQ kernel and flow to q and rel_h / rel_w through autograd.

* forward / dQ (+ dth, dtw): one program per (query block, batch*head); the block's whole
  ``win x win`` key window (padded to ``WP x WP``, WP a power of two) is one tile, so the softmax
  is exact. Out-of-map keys load as zeros (``'zeros'``: timm numerics) or are masked (``'mask'``).
* dK / dV: one program per key block, looping over the neighbouring query blocks whose windows
  reach it; deterministic, no atomics. It computes ``S^T = K Q^T`` (keys as rows) so that no dot
  result is ever transposed: on sm_90, triton >= 3.4 miscompiles ``tl.dot(tl.trans(<computed>),
  ...)`` for some configurations (a garbage dK; reported as flash-linear-attention issue #640;
  ``tests/ops/test_triton_trans_rule.py`` enforces the rule).
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from densekit.ops._backend import TRITON_INT32_ELEMENTS, index_span
from densekit.ops._buffers import grad_buffers
from densekit.ops._triton_utils import (dot, online_softmax_step, precision, row_dot, row_max, row_sum, strides4,
                                       sum_axis, upcast)


@triton.jit
def _halo_logits(q, k, q_row, ty, tx, q_ok, allowed, TH, TW, scale, r0,
                 WIN: tl.constexpr, WP: tl.constexpr, RC: tl.constexpr, BM: tl.constexpr, HAS_TH: tl.constexpr,
                 HAS_TW: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Masked logits ``[BM, RC*WP]`` of a query block against rows ``r0 .. r0+RC`` of its key
    window, laid out as a grid (key ``u = (uy - r0) * WP + ux``). ``th`` varies only along the
    grid's rows and ``tw`` only along its columns, so each table is gathered once per (query, grid
    row / column), ``[BM, RC]`` / ``[BM, WP]``, and broadcast over the other axis: RC + WP loads
    per query instead of 2 * RC * WP (and pointer tiles of that size in registers)."""
    R: tl.constexpr = 2 * WIN - 1
    s = dot(q, tl.trans(k), PREC, UPCAST) * scale
    if HAS_TH or HAS_TW:
        s3 = tl.reshape(s, [BM, RC, WP])
        if HAS_TH:
            wr = r0 + tl.arange(0, RC)
            s3 += tl.load(TH + q_row[:, None] * R + (wr[None, :] - ty[:, None] + WIN - 1),
                          mask=q_ok[:, None] & (wr[None, :] < WIN), other=0.0)[:, :, None]
        if HAS_TW:
            wc = tl.arange(0, WP)
            s3 += tl.load(TW + q_row[:, None] * R + (wc[None, :] - tx[:, None] + WIN - 1),
                          mask=q_ok[:, None] & (wc[None, :] < WIN), other=0.0)[:, None, :]
        s = tl.reshape(s3, [BM, RC * WP])
    return tl.where(allowed, s, float('-inf'))


@triton.jit
def _halo_key_rows(K, V, b, head, by0, bx0, H, W, skb, sky, skx, skh, svb, svy, svx, svh, r0, offs_d, d_ok,
                   offs_dv, dv_ok,
                   q_ok, WIN: tl.constexpr, HALO: tl.constexpr, WP: tl.constexpr, RC: tl.constexpr,
                   MASK_PAD: tl.constexpr):
    """Keys and values of rows ``r0 .. r0+RC`` of a query block's window (``[RC*WP, BLOCK_D]`` /
    ``[RC*WP, BLOCK_DV]``;
    zeros outside the map) and which (query, key) pairs are attended: the whole window in
    ``'zeros'`` mode (timm), its in-map part in ``'mask'`` mode."""
    u = tl.arange(0, RC * WP)
    uy = r0 + u // WP
    ux = u % WP
    in_win = (uy < WIN) & (ux < WIN)
    ky = by0 - HALO + uy
    kx = bx0 - HALO + ux
    inside = in_win & (ky >= 0) & (ky < H) & (kx >= 0) & (kx < W)
    k = tl.load(K + b * skb + ky[:, None] * sky + kx[:, None] * skx + head * skh + offs_d[None, :],
                mask=inside[:, None] & d_ok[None, :], other=0.0)
    v = tl.load(V + b * svb + ky[:, None] * svy + kx[:, None] * svx + head * svh + offs_dv[None, :],
                mask=inside[:, None] & dv_ok[None, :], other=0.0)
    if MASK_PAD:
        allowed = q_ok[:, None] & inside[None, :]
    else:
        allowed = q_ok[:, None] & in_win[None, :]
    return k, v, allowed


@triton.jit
def _halo_logits_t(k, q_t, q_row, ty, tx, q_ok, uy, ux, uy0, ux0, allowed_t, TH, TW, scale,
                   WIN: tl.constexpr, BS: tl.constexpr, BMK: tl.constexpr, BMQ: tl.constexpr, HAS_TH: tl.constexpr,
                   HAS_TW: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """``_halo_logits`` transposed (``[BMK]`` key rows, ``[BMQ]`` query columns; ``q_t`` is
    ``[D, BMQ]``), for dK / dV. ``uy`` / ``ux``: each key's position in the query block's window,
    ``uy0`` / ``ux0`` that of the key block's first key. When the key block fills its tile
    (``BMK == BS * BS``: power-of-two blocks), ``uy`` depends only on the key's row in the block and
    ``ux`` only on its column, so the tables are gathered per (block row, query) and (block column,
    query), ``[BS, BMQ]``, and broadcast; otherwise per (key, query)."""
    R: tl.constexpr = 2 * WIN - 1
    s = dot(k, q_t, PREC, UPCAST) * scale
    if BMK == BS * BS and (HAS_TH or HAS_TW):
        r = tl.arange(0, BS)
        s3 = tl.reshape(s, [BS, BS, BMQ])
        if HAS_TH:
            uy_r = uy0 + r  # the window row of each key row of the block
            g_ok = ((uy_r >= 0) & (uy_r < WIN))[:, None] & q_ok[None, :]
            s3 += tl.load(TH + q_row[None, :] * R + (uy_r[:, None] - ty[None, :] + WIN - 1), mask=g_ok,
                          other=0.0)[:, None, :]
        if HAS_TW:
            ux_c = ux0 + r
            g_ok = ((ux_c >= 0) & (ux_c < WIN))[:, None] & q_ok[None, :]
            s3 += tl.load(TW + q_row[None, :] * R + (ux_c[:, None] - tx[None, :] + WIN - 1), mask=g_ok,
                          other=0.0)[None, :, :]
        s = tl.reshape(s3, [BMK, BMQ])
    else:
        if HAS_TH:
            s += tl.load(TH + q_row[None, :] * R + (uy[:, None] - ty[None, :] + WIN - 1), mask=allowed_t, other=0.0)
        if HAS_TW:
            s += tl.load(TW + q_row[None, :] * R + (ux[:, None] - tx[None, :] + WIN - 1), mask=allowed_t, other=0.0)
    return tl.where(allowed_t, s, float('-inf'))


@triton.jit
def _halo_fwd_or_dq(Q, K, V, TH, TW, O, LSE, DO, DELTA, DQ, DTH, DTW,
                    sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh, sob, soy, sox, soh,
                    H, W, NQ, WQ, NHEADS, D, D_V, scale,
                    BS: tl.constexpr, BQ: tl.constexpr, HALO: tl.constexpr, WP: tl.constexpr, RC: tl.constexpr,
                    BM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, MASK_PAD: tl.constexpr,
                    HAS_TH: tl.constexpr,
                    HAS_TW: tl.constexpr, BACKWARD: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Forward (BACKWARD=False: writes O, LSE; the whole window as one tile when RC == WP, else RC
    rows at a time with an online softmax) or dQ/dth/dtw (BACKWARD=True; O/DO strides shared),
    streaming the window in chunks of RC rows (its fp32 [BM, WP*WP] tiles in one piece spilled
    registers on sm_90). ``H, W``: the key map;
    a block holds ``BQ x BQ`` queries (``BQ = BS / query_stride``) of the query map (``NQ`` queries
    per image, ``WQ`` per row)."""
    WIN: tl.constexpr = BS + 2 * HALO
    R: tl.constexpr = 2 * WIN - 1
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // NHEADS
    head = bh % NHEADS
    n_bw = W // BS
    by0 = (pid // n_bw) * BS  # the block's first key row / column
    bx0 = (pid % n_bw) * BS
    t = tl.arange(0, BM)
    ty = t // BQ  # position in the query block
    tx = t % BQ
    q_ok = t < BQ * BQ
    y = (pid // n_bw) * BQ + ty  # query map coordinates
    x = (pid % n_bw) * BQ + tx
    offs_d = tl.arange(0, BLOCK_D)  # query / key channels
    d_ok = offs_d < D
    offs_dv = tl.arange(0, BLOCK_DV)  # value / output channels
    dv_ok = offs_dv < D_V
    qm = q_ok[:, None] & d_ok[None, :]
    om = q_ok[:, None] & dv_ok[None, :]
    q_off = b * sqb + y[:, None] * sqy + x[:, None] * sqx + head * sqh + offs_d[None, :]
    q = tl.load(Q + q_off, mask=qm, other=0.0)
    q_row = (b * NQ + y * WQ + x) * NHEADS + head
    o_off = b * sob + y[:, None] * soy + x[:, None] * sox + head * soh + offs_dv[None, :]
    # The one-tile forward is kept apart from the streaming one: the streaming form run with
    # RC == WP compiles to 218 instead of 178 registers in bf16 and spills 2.8 KB in fp32 (sm_90,
    # benchmark case (e)).
    if not BACKWARD and RC == WP:  # the whole window in one tile: an exact softmax
        k, v, allowed = _halo_key_rows(K, V, b, head, by0, bx0, H, W, skb, sky, skx, skh, svb, svy, svx, svh, 0,
                                       offs_d, d_ok, offs_dv, dv_ok, q_ok, WIN, HALO, WP, WP, MASK_PAD)
        s = _halo_logits(q, k, q_row, ty, tx, q_ok, allowed, TH, TW, scale, 0, WIN, WP, WP, BM, HAS_TH, HAS_TW,
                         PREC, UPCAST)
        mx = tl.where(q_ok, row_max(s), 0.0)
        p = tl.exp(s - mx[:, None])
        l = tl.where(q_ok, row_sum(p), 1.0)
        out = dot(p.to(v.dtype), v, PREC, UPCAST) / l[:, None]
        tl.store(O + o_off, out.to(O.dtype.element_ty), mask=om)
        tl.store(LSE + q_row, mx + tl.log(l), mask=q_ok)
    elif not BACKWARD:  # RC window rows at a time with an online softmax
        m_i = tl.full([BM], float('-inf'), tl.float32)
        l_i = tl.full([BM], 0.0, tl.float32)
        acc = tl.full([BM, BLOCK_DV], 0.0, tl.float32)
        for r0 in range(0, WIN, RC):
            k, v, allowed = _halo_key_rows(K, V, b, head, by0, bx0, H, W, skb, sky, skx, skh, svb, svy, svx, svh,
                                           r0, offs_d, d_ok, offs_dv, dv_ok, q_ok, WIN, HALO, WP, RC, MASK_PAD)
            s = _halo_logits(q, k, q_row, ty, tx, q_ok, allowed, TH, TW, scale, r0, WIN, WP, RC, BM, HAS_TH,
                             HAS_TW, PREC, UPCAST)
            m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v, PREC, UPCAST)
        m_i = tl.where(q_ok, m_i, 0.0)
        l_i = tl.where(q_ok, l_i, 1.0)
        tl.store(O + o_off, (acc / l_i[:, None]).to(O.dtype.element_ty), mask=om)
        tl.store(LSE + q_row, m_i + tl.log(l_i), mask=q_ok)
    else:
        lse = tl.load(LSE + q_row, mask=q_ok, other=0.0)
        delta = tl.load(DELTA + q_row, mask=q_ok, other=0.0)
        do = tl.load(DO + o_off, mask=om, other=0.0)
        dq = tl.full([BM, BLOCK_D], 0.0, tl.float32)
        dtw = tl.full([BM, WP], 0.0, tl.float32)
        for r0 in range(0, WIN, RC):
            k, v, allowed = _halo_key_rows(K, V, b, head, by0, bx0, H, W, skb, sky, skx, skh, svb, svy, svx, svh,
                                           r0, offs_d, d_ok, offs_dv, dv_ok, q_ok, WIN, HALO, WP, RC, MASK_PAD)
            s = _halo_logits(q, k, q_row, ty, tx, q_ok, allowed, TH, TW, scale, r0, WIN, WP, RC, BM, HAS_TH,
                             HAS_TW, PREC, UPCAST)
            p = tl.exp(s - lse[:, None])
            ds = p * (dot(do, tl.trans(v), PREC, UPCAST) - delta[:, None])
            dq += dot(ds.to(k.dtype), k, PREC, UPCAST)
            ds3 = tl.reshape(ds, [BM, RC, WP])
            if HAS_TH:  # d th[q, uy - ty + WIN - 1] = sum over kx of dS (these rows only)
                wr = r0 + tl.arange(0, RC)
                tl.store(DTH + q_row[:, None] * R + (wr[None, :] - ty[:, None] + WIN - 1), sum_axis(ds3, 2),
                         mask=q_ok[:, None] & (wr[None, :] < WIN))
            if HAS_TW:  # d tw[q, ux - tx + WIN - 1] = sum over ky of dS (all rows)
                dtw += sum_axis(ds3, 1)
        tl.store(DQ + q_off, (dq * scale).to(DQ.dtype.element_ty), mask=qm)
        if HAS_TW:
            wc = tl.arange(0, WP)
            tl.store(DTW + q_row[:, None] * R + (wc[None, :] - tx[:, None] + WIN - 1), dtw,
                     mask=q_ok[:, None] & (wc[None, :] < WIN))


@triton.jit
def _halo_dkdv(Q, K, V, TH, TW, LSE, DO, DELTA, DK, DV,
               sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh, sob, soy, sox, soh,
               H, W, NQ, WQ, NHEADS, D, D_V, scale,
               BS: tl.constexpr, BQ: tl.constexpr, HALO: tl.constexpr, BM: tl.constexpr, BMQ: tl.constexpr,
               BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, HAS_TH: tl.constexpr, HAS_TW: tl.constexpr, PREC: tl.constexpr,
               UPCAST: tl.constexpr):
    """Program (key block, batch*head): dK, dV of its ``BS x BS`` keys (tile ``BM``) from the
    ``BQ x BQ`` queries (tile ``BMQ``) of each neighbouring block whose window reaches them."""
    WIN: tl.constexpr = BS + 2 * HALO
    NB: tl.constexpr = (HALO + BS - 1) // BS  # query blocks on each side whose window reaches us
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // NHEADS
    head = bh % NHEADS
    n_bw = W // BS
    n_bh = H // BS
    kbi = pid // n_bw
    kbj = pid % n_bw
    t = tl.arange(0, BM)
    t_ok = t < BS * BS
    ky = kbi * BS + t // BS
    kx = kbj * BS + t % BS
    offs_d = tl.arange(0, BLOCK_D)  # query / key channels
    d_ok = offs_d < D
    offs_dv = tl.arange(0, BLOCK_DV)  # value / output channels
    dv_ok = offs_dv < D_V
    km = t_ok[:, None] & d_ok[None, :]
    vm = t_ok[:, None] & dv_ok[None, :]
    k_off = b * skb + ky[:, None] * sky + kx[:, None] * skx + head * skh + offs_d[None, :]
    v_off = b * svb + ky[:, None] * svy + kx[:, None] * svx + head * svh + offs_dv[None, :]
    k = tl.load(K + k_off, mask=km, other=0.0)
    v = tl.load(V + v_off, mask=vm, other=0.0)
    dk = tl.full([BM, BLOCK_D], 0.0, tl.float32)
    dv = tl.full([BM, BLOCK_DV], 0.0, tl.float32)
    for dbi in range(-NB, NB + 1):
        for dbj in range(-NB, NB + 1):
            qbi = kbi + dbi
            qbj = kbj + dbj
            blk_ok = (qbi >= 0) & (qbi < n_bh) & (qbj >= 0) & (qbj < n_bw)
            tq = tl.arange(0, BMQ)
            ty = tq // BQ
            tx = tq % BQ
            q_ok = (tq < BQ * BQ) & blk_ok
            y = qbi * BQ + ty
            x = qbj * BQ + tx
            q_t = tl.load(Q + b * sqb + y[None, :] * sqy + x[None, :] * sqx + head * sqh + offs_d[:, None],
                          mask=d_ok[:, None] & q_ok[None, :], other=0.0)  # [D, BMQ]
            do_t = tl.load(DO + b * sob + y[None, :] * soy + x[None, :] * sox + head * soh + offs_dv[:, None],
                           mask=dv_ok[:, None] & q_ok[None, :], other=0.0)  # [D_V, BMQ]
            q_row = (b * NQ + y * WQ + x) * NHEADS + head
            lse = tl.load(LSE + q_row, mask=q_ok, other=0.0)
            delta = tl.load(DELTA + q_row, mask=q_ok, other=0.0)
            uy = ky - (qbi * BS - HALO)  # key position inside that query block's window
            ux = kx - (qbj * BS - HALO)
            k_in = t_ok & (uy >= 0) & (uy < WIN) & (ux >= 0) & (ux < WIN)
            allowed_t = k_in[:, None] & q_ok[None, :]
            s_t = _halo_logits_t(k, q_t, q_row, ty, tx, q_ok, uy, ux, (kbi - qbi) * BS + HALO, (kbj - qbj) * BS + HALO,
                                 allowed_t, TH, TW, scale, WIN, BS, BM, BMQ,
                                 HAS_TH, HAS_TW, PREC, UPCAST)
            p_t = tl.exp(s_t - lse[None, :])  # [keys, queries]
            dv += dot(p_t.to(do_t.dtype), tl.trans(do_t), PREC, UPCAST)
            ds_t = p_t * (dot(v, do_t, PREC, UPCAST) - delta[None, :])
            dk += dot(ds_t.to(q_t.dtype), tl.trans(q_t), PREC, UPCAST)
    tl.store(DK + k_off, (dk * scale).to(DK.dtype.element_ty), mask=km)
    tl.store(DV + v_off, dv.to(DV.dtype.element_ty), mask=vm)



# Keys of a launch configuration (``halo_triton(config=...)``, ``halo_attention(triton_config=...)``),
# each replacing the default of _launch / _fwd_rows / _dq_rows.
CONFIG_KEYS = ('fwd_warps', 'dq_warps', 'dkdv_warps', 'fwd_stages', 'dq_stages', 'dkdv_stages', 'fwd_rows', 'dq_rows')


def check_config(config: Optional[Mapping]) -> None:
    """Raise on keys a launch configuration does not have (a typo would otherwise be ignored)."""
    unknown = sorted(set(config or {}) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f'halo triton: unknown launch configuration keys {unknown}; expected {CONFIG_KEYS}')


def _launch(kernel: str, dtype: torch.dtype = torch.bfloat16, stride: int = 1, block_d: int = 32,
            config: Optional[Mapping] = None) -> dict:
    """``num_warps`` / ``num_stages`` of one kernel (``'fwd'``, ``'dq'``, ``'dkdv'``): 8 warps and
    triton's default 3 stages, except 4 warps for the fp32 dK / dV of strided queries up to head
    dim 32 (sm_90, block 8, halo 3: 8 warps keep 24 B on the stack, 4 none; at head dim 64, 4
    warps keep 160 B, 8 warps 24 B; stride 1 at head dim 64 keeps 512 B either way)."""
    o = config or {}
    warps = 4 if kernel == 'dkdv' and dtype == torch.float32 and stride > 1 and block_d <= 32 else 8
    return dict(num_warps=o.get(f'{kernel}_warps', warps), num_stages=o.get(f'{kernel}_stages', 3))


def _fwd_rows(wp: int, dtype: torch.dtype, config: Optional[Mapping] = None) -> int:
    """Window rows per step of the forward: the whole window (one exact softmax) in half
    precision; in fp32, 32 keys at a time with an online softmax, like the dQ kernel. The fp32
    FMA dot ``P [BM, WP*WP] @ V`` in one piece does not fit the registers (sm_90, block 8, halo 3):
    triton 3.6 keeps 5.9 KB per thread on the stack at head dim 32, triton 3.8 none but 254
    registers, and both 9-10 KB with 64-wide value heads; in 32-key steps 124 / 128 registers and
    no stack."""
    rows = wp if dtype != torch.float32 else max(1, min(wp, 32 // wp))
    return (config or {}).get('fwd_rows', rows)


def _dq_rows(wp: int, dtype: torch.dtype, config: Optional[Mapping] = None) -> int:
    """Window rows per chunk of the dQ kernel: 64 keys per chunk in half precision (tensor cores),
    16 in fp32 (FMA dots, operands in registers). In one piece, the dQ kernel's [64, 256] tiles of
    a 14x14 window (block 8, halo 3) keep 264 B (bf16) / 7.9 KB (fp32) per thread on the sm_90
    stack; in these chunks, none (fp32 with 32-key chunks: 16 B), with 174 / 86 registers
    (``python tools/dev/triton_aot.py report``)."""
    rows = max(1, min(wp, (16 if dtype == torch.float32 else 64) // wp))
    return (config or {}).get('dq_rows', rows)


class HaloAttentionTriton(torch.autograd.Function):
    """Autograd wrapper; k ``[B, H, W, heads, D]``, v ``[B, H, W, heads, D_V]``, q ``[B, H/s, W/s,
    heads, D]`` (query stride s); th / tw fp32 ``[B, H/s, W/s, heads, 2win-1]`` or None."""

    @staticmethod
    def forward(ctx, q, k, v, th, tw, block, halo, scale, mask_pad, stride, config):
        B, H, W, nh, D = k.shape
        dv = v.shape[-1]
        if B * nh > 65535:
            raise ValueError(f'halo_attention triton: batch * heads = {B * nh} exceeds the grid limit 65535')
        win = block + 2 * halo
        wp = triton.next_power_of_2(win)
        bq = block // stride
        bmq = max(16, triton.next_power_of_2(bq * bq))  # query tile
        block_d = max(16, triton.next_power_of_2(D))
        block_dv = max(16, triton.next_power_of_2(dv))
        out = q.new_empty(*q.shape[:-1], dv)
        lse = torch.empty(B, q.shape[1] * q.shape[2], nh, device=q.device, dtype=torch.float32)
        grid = ((H // block) * (W // block), B * nh)
        meta = dict(BS=block, BQ=bq, HALO=halo, WP=wp, BM=bmq, BLOCK_D=block_d, BLOCK_DV=block_dv, MASK_PAD=mask_pad,
                    HAS_TH=th is not None, HAS_TW=tw is not None, PREC=precision(q.dtype), UPCAST=upcast(q),
                    **_launch('fwd', config=config))
        _halo_fwd_or_dq[grid](q, k, v, th if th is not None else lse, tw if tw is not None else lse, out, lse,
                              out, lse, out, lse, lse,
                              *strides4(q), *strides4(k), *strides4(v), *strides4(out),
                              H, W, q.shape[1] * q.shape[2], q.shape[2], nh, D, dv, scale,
                              RC=_fwd_rows(wp, q.dtype, config), BACKWARD=False, **meta)
        ctx.save_for_backward(q, k, v, th, tw, out, lse)
        ctx.meta = (block, bq, halo, scale, mask_pad, wp, bmq, block_d, block_dv, config)
        return out

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: double backward is an error
    def backward(ctx, dout):
        q, k, v, th, tw, out, lse = ctx.saved_tensors
        block, bq, halo, scale, mask_pad, wp, bmq, block_d, block_dv, config = ctx.meta
        B, H, W, nh, D = k.shape
        dv_dim = v.shape[-1]
        bm = max(16, triton.next_power_of_2(block * block))  # key tile of the dK / dV kernel
        qmap = (q.shape[1] * q.shape[2], q.shape[2])  # queries per image, per row
        # its own strides are passed; a strided view (e.g. the gradient of a channel slice of a
        # concatenation) may span 2**31 elements that the int32 offsets cannot reach, out never does
        if dout.stride(-1) != 1 or index_span(dout) >= TRITON_INT32_ELEMENTS:
            dout = dout.contiguous()
        delta = row_dot(dout, out)
        dq, dk, dv = grad_buffers(q, k, v)
        dth = torch.zeros_like(th) if th is not None else None
        dtw = torch.zeros_like(tw) if tw is not None else None
        grid = ((H // block) * (W // block), B * nh)
        flags = dict(HAS_TH=th is not None, HAS_TW=tw is not None, PREC=precision(q.dtype), UPCAST=upcast(q))
        _halo_fwd_or_dq[grid](q, k, v, th if th is not None else lse, tw if tw is not None else lse, out, lse,
                              dout, delta, dq, dth if dth is not None else lse, dtw if dtw is not None else lse,
                              *strides4(q), *strides4(k), *strides4(v), *strides4(dout),
                              H, W, *qmap, nh, D, dv_dim, scale, BS=block, BQ=bq, HALO=halo, WP=wp,
                              RC=_dq_rows(wp, q.dtype, config), BM=bmq, BLOCK_D=block_d, BLOCK_DV=block_dv, MASK_PAD=mask_pad,
                              BACKWARD=True, **flags, **_launch('dq', config=config))
        _halo_dkdv[grid](q, k, v, th if th is not None else lse, tw if tw is not None else lse, lse, dout, delta,
                         dk, dv, *strides4(q), *strides4(k), *strides4(v), *strides4(dout),
                         H, W, *qmap, nh, D, dv_dim, scale, BS=block, BQ=bq, HALO=halo, BM=bm, BMQ=bmq,
                         BLOCK_D=block_d, BLOCK_DV=block_dv, **flags,
                         **_launch('dkdv', q.dtype, block // bq, max(block_d, block_dv), config))
        return dq, dk, dv, dth, dtw, None, None, None, None, None, None


def halo_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int, halo: int,
                rel_h: Optional[torch.Tensor], rel_w: Optional[torch.Tensor], scale: float,
                scale_pos_embed: bool, padding: str, query_stride: int = 1,
                config: Optional[Mapping] = None) -> torch.Tensor:
    """Halo attention through the fused Triton kernels (validated inputs); ``config``: a launch
    configuration (``CONFIG_KEYS``), ``None`` for the defaults."""
    check_config(config)
    q, k, v = (t.contiguous() for t in (q, k, v))

    def table(rel):
        if rel is None:
            return None
        t = torch.einsum('bhwnd,rd->bhwnr', q.float(), rel.float())
        return (t * scale if scale_pos_embed else t).contiguous()

    return HaloAttentionTriton.apply(q, k, v, table(rel_h), table(rel_w), block, halo, float(scale), padding == 'mask',
                                     query_stride, config)
