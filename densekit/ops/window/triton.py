"""Fused Triton kernels for Swin (shifted) window attention, forward and backward.

Semantics and layouts are those of ``reference.py``: q, k, v, out ``[B, H, W, heads, D]`` with
window multiples; rpb ``[heads, 2wh-1, 2ww-1]`` (query-minus-key offset).

The ``N = wh*ww`` tokens of a window are cut into ``BLOCK``-token chunks (:func:`_tiling`: one
chunk for windows up to 64 tokens, e.g. Swin's 7x7; 64-token chunks beyond, e.g. 12x12 = 144
tokens in three chunks), so shared memory and registers stay bounded for every window size the
op accepts. The cyclic shift is folded into the addressing (rolled position ``r`` reads row
``(r + shift) % H``) and the shifted-window mask is recomputed from region labels, so no rolled
copies or mask tensors are materialised.

* Forward: a program owns one query chunk of one window and streams the window's key chunks with
  an online softmax.
* dK / dV: a program owns one key chunk and streams the window's query chunks in the transposed
  orientation (``S^T = K Q^T``, ``dP^T = V dO^T``), so every ``tl.trans`` is applied to a tile
  loaded from memory, never to a dot result (Triton >= 3.4 miscompiles ``dot(trans(x), y)`` for
  a computed ``x`` on sm_90, triton-lang/triton#6124). A key belongs to exactly one window, so
  dK / dV need no cross-program reduction and are deterministic.
* dQ: with a single chunk the dK / dV program also has every query and computes
  ``dQ^T = K^T dS^T``; otherwise a separate kernel streams key chunks in the normal orientation.
* dRPB (only when the bias needs a gradient): the dK / dV program sums dS over a chunk of images
  into ``[chunks, windows, heads, N, N]`` (no atomics: each program owns its key columns), and
  Swin's relative index reduces it outside the kernel.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from densekit.layers.window import relative_position_index
from densekit.ops._buffers import grad_buffers, kernel_operand
from densekit.ops._triton_utils import dot, online_softmax_step, precision, row_dot, strides4, upcast


@triton.jit
def _window_tokens(win, start, H, W, WH: tl.constexpr, WW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                   BLOCK: tl.constexpr):
    """Tokens ``start .. start + BLOCK`` of window ``win``: in-window coords, real (un-rolled)
    coords, shift-region label, validity."""
    n_ww = W // WW
    wy0 = (win // n_ww) * WH
    wx0 = (win % n_ww) * WW
    t = start + tl.arange(0, BLOCK)
    ty = t // WW
    tx = t % WW
    ok = t < WH * WW
    ry = wy0 + ty
    rx = wx0 + tx
    y = (ry + SH) % H
    x = (rx + SW) % W
    lab = tl.full([BLOCK], 0, tl.int32)
    if SH > 0:
        lab += (ry >= H - WH).to(tl.int32) + (ry >= H - SH).to(tl.int32)
    if SW > 0:
        lab += 3 * ((rx >= W - WW).to(tl.int32) + (rx >= W - SW).to(tl.int32))
    return t, ty, tx, y, x, lab, ok


@triton.jit
def _bias_mask(s, qy, qx, qlab, qok, ky, kx, klab, kok, rpb_ptr, s_ra, s_rb,
               WH: tl.constexpr, WW: tl.constexpr, HAS_RPB: tl.constexpr):
    """Add the relative position bias to scaled logits ``s`` and set pairs that may not attend
    (padding, different shift regions) to -inf. The query and key vectors come broadcast to the
    orientation of ``s`` (``[:, None]`` / ``[None, :]`` for S, the other way round for S^T)."""
    allowed = qok & kok & (qlab == klab)
    if HAS_RPB:
        bptr = rpb_ptr + (qy - ky + WH - 1) * s_ra + (qx - kx + WW - 1) * s_rb
        s += tl.load(bptr, mask=allowed, other=0.0).to(tl.float32)
    return tl.where(allowed, s, float('-inf')), allowed


@triton.jit
def _key_chunk(q, K, V, b, head, win, start, skb, sky, skx, skh, svb, svy, svx, svh, offs_d, dok,
               qty, qtx, qlab, qok, rpb_ptr, s_ra, s_rb, scale, H, W,
               WH: tl.constexpr, WW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, BLOCK: tl.constexpr,
               HAS_RPB: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Load the key / value chunk of window ``win`` starting at token ``start``; return it with the
    query chunk's biased, masked logits against it (``[BLOCK, BLOCK]``, -inf where not allowed)."""
    kt, kty, ktx, ky, kx, klab, kok = _window_tokens(win, start, H, W, WH, WW, SH, SW, BLOCK)
    km = kok[:, None] & dok
    k = tl.load(K + b * skb + ky[:, None] * sky + kx[:, None] * skx + head * skh + offs_d[None, :],
                mask=km, other=0.0)
    v = tl.load(V + b * svb + ky[:, None] * svy + kx[:, None] * svx + head * svh + offs_d[None, :],
                mask=km, other=0.0)
    s = dot(q, tl.trans(k), PREC, UPCAST) * scale
    s, allowed = _bias_mask(s, qty[:, None], qtx[:, None], qlab[:, None], qok[:, None],
                            kty[None, :], ktx[None, :], klab[None, :], kok[None, :], rpb_ptr, s_ra, s_rb,
                            WH, WW, HAS_RPB)
    return k, v, s


@triton.jit
def _query_chunk(Q, RPB, sqb, sqy, sqx, sqh, s_rh, H, W, NHEADS, D,
                 WH: tl.constexpr, WW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, BLOCK: tl.constexpr,
                 CHUNKS: tl.constexpr, BLOCK_D: tl.constexpr):
    """Setup of a (window x query chunk, batch x head) program of the forward / dQ kernels: its
    window, image, head, bias row, query tokens and the loaded query chunk."""
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    win = pid // CHUNKS
    b = bh // NHEADS
    head = bh % NHEADS
    qt, qty, qtx, qy, qx, qlab, qok = _window_tokens(win, (pid % CHUNKS) * BLOCK, H, W, WH, WW, SH, SW, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    dok = offs_d[None, :] < D
    qm = qok[:, None] & dok
    q_off = b * sqb + qy[:, None] * sqy + qx[:, None] * sqx + head * sqh + offs_d[None, :]
    q = tl.load(Q + q_off, mask=qm, other=0.0)
    return win, b, head, RPB + head * s_rh, qty, qtx, qy, qx, qlab, qok, offs_d, dok, qm, q_off, q


@triton.jit
def _window_fwd(Q, K, V, RPB, O, LSE,
                sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh, sob, soy, sox, soh,
                s_rh, s_ra, s_rb, H, W, NHEADS, D, scale,
                WH: tl.constexpr, WW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                BLOCK: tl.constexpr, CHUNKS: tl.constexpr, BLOCK_D: tl.constexpr, HAS_RPB: tl.constexpr,
                PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Program (window x query chunk, batch x head): output and log-sum-exp of ``BLOCK`` queries."""
    win, b, head, rpb_ptr, qty, qtx, qy, qx, qlab, qok, offs_d, dok, qm, q_off, q = _query_chunk(
        Q, RPB, sqb, sqy, sqx, sqh, s_rh, H, W, NHEADS, D, WH, WW, SH, SW, BLOCK, CHUNKS, BLOCK_D)
    m_i = tl.full([BLOCK], float('-inf'), tl.float32)
    l_i = tl.full([BLOCK], 0.0, tl.float32)
    acc = tl.full([BLOCK, BLOCK_D], 0.0, tl.float32)
    for j in range(0, CHUNKS):
        k, v, s = _key_chunk(q, K, V, b, head, win, j * BLOCK, skb, sky, skx, skh, svb, svy, svx, svh,
                             offs_d, dok, qty, qtx, qlab, qok, rpb_ptr, s_ra, s_rb, scale, H, W,
                             WH, WW, SH, SW, BLOCK, HAS_RPB, PREC, UPCAST)
        m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v, PREC, UPCAST)  # padding rows keep -inf
    m_i = tl.where(qok, m_i, 0.0)
    l_i = tl.where(qok, l_i, 1.0)
    tl.store(O + b * sob + qy[:, None] * soy + qx[:, None] * sox + head * soh + offs_d[None, :],
             (acc / l_i[:, None]).to(O.dtype.element_ty), mask=qm)
    tl.store(LSE + (b * H * W + qy * W + qx) * NHEADS + head, m_i + tl.log(l_i), mask=qok)


@triton.jit
def _window_bwd_dkdv(Q, K, V, RPB, DO, LSE, DELTA, DQ, DK, DV, DS,
                     sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh, sdb, sdy, sdx, sdh,
                     s_rh, s_ra, s_rb, B, H, W, NHEADS, D, B_PER, scale,
                     WH: tl.constexpr, WW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                     BLOCK: tl.constexpr, CHUNKS: tl.constexpr, BLOCK_D: tl.constexpr, HAS_RPB: tl.constexpr,
                     WRITE_DS: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Program (window x key chunk, chunk of B_PER images x head): dK, dV of those keys for each
    image (and dQ when the window is one chunk); with WRITE_DS the logit gradients of its key
    columns, summed over the images, go to DS ``[chunks, windows, heads, N, N]``."""
    pid = tl.program_id(0)
    ch = tl.program_id(1)
    win = pid // CHUNKS
    chunk = ch // NHEADS
    head = ch % NHEADS
    rpb_ptr = RPB + head * s_rh
    N: tl.constexpr = WH * WW
    ONE_CHUNK: tl.constexpr = CHUNKS == 1
    kt, kty, ktx, ky, kx, klab, kok = _window_tokens(win, (pid % CHUNKS) * BLOCK, H, W, WH, WW, SH, SW, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    dok = offs_d[None, :] < D
    km = kok[:, None] & dok
    ds_base = DS + ((chunk * (tl.num_programs(0) // CHUNKS) + win) * NHEADS + head) * N * N
    ds_sum = tl.full([BLOCK, BLOCK], 0.0, tl.float32)  # dS^T summed over images (one chunk only)
    if ONE_CHUNK:
        # The bias and the mask of a window depend on no image: form the [keys, queries] tile once
        # per program (in the bias's own dtype, -inf where not allowed; exact, since the bias is
        # stored in that dtype) instead of gathering it again for each of the B_PER images.
        qt, qty, qtx, qy, qx, qlab, qok = _window_tokens(win, 0, H, W, WH, WW, SH, SW, BLOCK)
        bias_t, _ = _bias_mask(tl.full([BLOCK, BLOCK], 0.0, tl.float32), qty[None, :], qtx[None, :],
                               qlab[None, :], qok[None, :], kty[:, None], ktx[:, None], klab[:, None],
                               kok[:, None], rpb_ptr, s_ra, s_rb, WH, WW, HAS_RPB)
        bias_t = bias_t.to(RPB.dtype.element_ty)
    for b in range(chunk * B_PER, tl.minimum(chunk * B_PER + B_PER, B)):
        k_off = b * skb + ky[:, None] * sky + kx[:, None] * skx + head * skh + offs_d[None, :]
        v_off = b * svb + ky[:, None] * svy + kx[:, None] * svx + head * svh + offs_d[None, :]
        k = tl.load(K + k_off, mask=km, other=0.0)
        v = tl.load(V + v_off, mask=km, other=0.0)
        dk = tl.full([BLOCK, BLOCK_D], 0.0, tl.float32)
        dv = tl.full([BLOCK, BLOCK_D], 0.0, tl.float32)
        for i in range(0, CHUNKS):
            if not ONE_CHUNK:
                qt, qty, qtx, qy, qx, qlab, qok = _window_tokens(win, i * BLOCK, H, W, WH, WW, SH, SW, BLOCK)
            qm = qok[:, None] & dok
            q_off = b * sqb + qy[:, None] * sqy + qx[:, None] * sqx + head * sqh + offs_d[None, :]
            q = tl.load(Q + q_off, mask=qm, other=0.0)
            do = tl.load(DO + b * sdb + qy[:, None] * sdy + qx[:, None] * sdx + head * sdh + offs_d[None, :],
                         mask=qm, other=0.0)
            row = (b * H * W + qy * W + qx) * NHEADS + head
            lse = tl.load(LSE + row, mask=qok, other=0.0)
            delta = tl.load(DELTA + row, mask=qok, other=0.0)
            st = dot(k, tl.trans(q), PREC, UPCAST) * scale  # [keys, queries]
            if ONE_CHUNK:
                st += bias_t.to(tl.float32)
            else:
                st, allowed_t = _bias_mask(st, qty[None, :], qtx[None, :], qlab[None, :], qok[None, :],
                                           kty[:, None], ktx[:, None], klab[:, None], kok[:, None], rpb_ptr, s_ra,
                                           s_rb, WH, WW, HAS_RPB)
            pt = tl.exp(st - lse[None, :])
            dv += dot(pt.to(do.dtype), do, PREC, UPCAST)
            dpt = dot(v, tl.trans(do), PREC, UPCAST)
            dst = pt * (dpt - delta[None, :])
            dk += dot(dst.to(q.dtype), q, PREC, UPCAST)
            if ONE_CHUNK:
                # every query of the window is here: dQ^T = K^T dS^T (k is a loaded tile)
                dqt = dot(tl.trans(k), dst.to(k.dtype), PREC, UPCAST) * scale  # [D, queries]
                dqt_ptr = DQ + b * sqb + qy[None, :] * sqy + qx[None, :] * sqx + head * sqh + offs_d[:, None]
                tl.store(dqt_ptr, dqt.to(DQ.dtype.element_ty), mask=qok[None, :] & (offs_d[:, None] < D))
            if WRITE_DS:
                if ONE_CHUNK:
                    ds_sum += dst
                else:
                    # this program alone owns these key columns: a plain read-add-write, deterministic
                    ds_ptr = ds_base + qt[None, :] * N + kt[:, None]
                    tl.store(ds_ptr, tl.load(ds_ptr, mask=allowed_t, other=0.0) + dst, mask=allowed_t)
        tl.store(DK + k_off, (dk * scale).to(DK.dtype.element_ty), mask=km)
        tl.store(DV + v_off, dv.to(DV.dtype.element_ty), mask=km)
    if WRITE_DS:
        if ONE_CHUNK:
            allowed_t = kok[:, None] & kok[None, :] & (klab[:, None] == klab[None, :])
            tl.store(ds_base + kt[None, :] * N + kt[:, None], ds_sum, mask=allowed_t)


@triton.jit
def _window_bwd_dq(Q, K, V, RPB, DO, LSE, DELTA, DQ,
                   sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh, sdb, sdy, sdx, sdh,
                   s_rh, s_ra, s_rb, H, W, NHEADS, D, scale,
                   WH: tl.constexpr, WW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                   BLOCK: tl.constexpr, CHUNKS: tl.constexpr, BLOCK_D: tl.constexpr, HAS_RPB: tl.constexpr,
                   PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Program (window x query chunk, batch x head): dQ of ``BLOCK`` queries, streaming the
    window's key chunks (windows of more than one chunk)."""
    win, b, head, rpb_ptr, qty, qtx, qy, qx, qlab, qok, offs_d, dok, qm, q_off, q = _query_chunk(
        Q, RPB, sqb, sqy, sqx, sqh, s_rh, H, W, NHEADS, D, WH, WW, SH, SW, BLOCK, CHUNKS, BLOCK_D)
    do = tl.load(DO + b * sdb + qy[:, None] * sdy + qx[:, None] * sdx + head * sdh + offs_d[None, :], mask=qm, other=0.0)
    row = (b * H * W + qy * W + qx) * NHEADS + head
    lse = tl.load(LSE + row, mask=qok, other=0.0)
    delta = tl.load(DELTA + row, mask=qok, other=0.0)
    dq = tl.full([BLOCK, BLOCK_D], 0.0, tl.float32)
    for j in range(0, CHUNKS):
        k, v, s = _key_chunk(q, K, V, b, head, win, j * BLOCK, skb, sky, skx, skh, svb, svy, svx, svh,
                             offs_d, dok, qty, qtx, qlab, qok, rpb_ptr, s_ra, s_rb, scale, H, W,
                             WH, WW, SH, SW, BLOCK, HAS_RPB, PREC, UPCAST)
        p = tl.exp(s - lse[:, None])
        dp = dot(do, tl.trans(v), PREC, UPCAST)
        ds = p * (dp - delta[:, None])
        dq += dot(ds.to(k.dtype), k, PREC, UPCAST)
    tl.store(DQ + q_off, (dq * scale).to(DQ.dtype.element_ty), mask=qm)


# programs the backward keeps in flight when it sums dS over images (~8 per SM of an H100 / H200)
MIN_PROGRAMS = 1024
# Keys of a launch configuration (``window_triton(config=...)``,
# ``window_attention(triton_config=...)``): the ``_Tiling`` fields block, warps, kv_warps,
# kv_stages, dq_stages, fwd_stages (chunks follows from block) and min_programs (replaces
# ``MIN_PROGRAMS``).
CONFIG_KEYS = ('block', 'warps', 'kv_warps', 'kv_stages', 'dq_stages', 'fwd_stages', 'min_programs')


def check_config(config: Optional[Mapping]) -> None:
    """Raise on keys a launch configuration does not have (a typo would otherwise be ignored)."""
    unknown = sorted(set(config or {}) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f'window triton: unknown launch configuration keys {unknown}; expected {CONFIG_KEYS}')


def _image_chunks(batch: int, programs_per_image: int, config: Optional[Mapping] = None):
    """(chunks, images per chunk) so that about ``min_programs`` backward programs run."""
    min_programs = (config or {}).get('min_programs', MIN_PROGRAMS)
    b_per = triton.cdiv(batch, min(batch, triton.cdiv(min_programs, programs_per_image)))
    return triton.cdiv(batch, b_per), b_per


def ds_shape(B: int, H: int, W: int, nh: int, head_dim: int, window: Tuple[int, int], dtype: torch.dtype,
             config: Optional[Mapping] = None):
    """Shape ``[image chunks, windows, heads, N, N]`` of the fp32 dS buffer the backward fills when
    the bias needs a gradient, and the images per chunk (the window probe checks its size)."""
    n_tokens = window[0] * window[1]
    n_win = (H // window[0]) * (W // window[1])
    img_chunks, b_per = _image_chunks(B, n_win * _tiling(n_tokens, head_dim, dtype, config).chunks * nh, config)
    return (img_chunks, n_win, nh, n_tokens, n_tokens), b_per


class _Tiling(NamedTuple):
    block: int  # tokens per chunk
    chunks: int  # chunks per window
    block_d: int
    warps: int  # forward and dQ kernels
    kv_warps: int  # dK / dV kernel
    kv_stages: int  # software pipelining of the dK / dV query loop
    dq_stages: int  # and of the dQ key loop
    fwd_stages: int = 3  # and of the forward key loop


def _tiling(n_tokens: int, head_dim: int, dtype: torch.dtype, config: Optional[Mapping] = None) -> _Tiling:
    """Launch configuration for a window of ``n_tokens`` tokens.

    One tile per window would need 324 KiB of shared memory for Swin's 12x12 (144 tokens padded
    to 256; the limit is 227 KiB on sm_90, 163 KiB on sm_80). Chunks bound the footprint for every
    window size, and their size keeps the sm_90 compile free of register
    spills (tests/ops/test_triton_compile.py): 64 tokens on the tensor cores up to head_dim 64
    (Swin's 7x7 and 8x8 windows are one chunk), 32 beyond; the exact fp32 dots run on the FMA
    units, whose operands live in registers, so fp32 takes 32 tokens (16 beyond head_dim 32).
    The dK / dV kernel holds the most live tiles (two accumulators, S^T, dP^T, the dS sum): 8
    warps with 64-token chunks, and no software pipelining of its query loop when there are
    several chunks (the prefetched tiles spilled registers for 12x12 in bf16); the dQ kernel
    prefetches one key chunk ahead up to head_dim 64 (two stages; three spilled for 14x14 in
    fp32, two for head_dim 128 in bf16)."""
    block_d = max(16, triton.next_power_of_2(head_dim))
    if dtype == torch.float32:
        cap = 32 if block_d <= 32 else 16
    else:
        cap = 64 if block_d <= 64 else 32
    o = config or {}
    block = o.get('block', max(16, min(cap, triton.next_power_of_2(n_tokens))))
    chunks = triton.cdiv(n_tokens, block)
    t = _Tiling(block, chunks, block_d, 4, 8 if block == 64 else 4, 3 if chunks == 1 else 1,
                2 if block_d <= 64 else 1)
    return t._replace(**{k: v for k, v in o.items() if k in t._fields and k not in ('block', 'chunks', 'block_d')})


class WindowAttentionTriton(torch.autograd.Function):
    """Autograd wrapper; inputs validated ``[B, H, W, heads, D]``."""

    @staticmethod
    def forward(ctx, q, k, v, rpb, window, shift, scale, config):
        B, H, W, nh, D = q.shape
        wh, ww = window
        n_win = (H // wh) * (W // ww)
        if B * nh > 65535:
            raise ValueError(f'window_attention triton: batch * heads = {B * nh} exceeds the grid limit 65535')
        t = _tiling(wh * ww, D, q.dtype, config)
        block, chunks, block_d = t.block, t.chunks, t.block_d
        out = torch.empty_like(q)
        lse = torch.empty(B, H * W, nh, device=q.device, dtype=torch.float32)
        has_rpb = rpb is not None
        rs = (rpb.stride(0), rpb.stride(1), rpb.stride(2)) if has_rpb else (0, 0, 0)
        _window_fwd[(n_win * chunks, B * nh)](q, k, v, rpb if has_rpb else q, out, lse,
                                              *strides4(q), *strides4(k), *strides4(v), *strides4(out), *rs,
                                              H, W, nh, D, scale, WH=wh, WW=ww, SH=shift[0], SW=shift[1],
                                              BLOCK=block, CHUNKS=chunks, BLOCK_D=block_d, HAS_RPB=has_rpb,
                                              PREC=precision(q.dtype), UPCAST=upcast(q), num_warps=t.warps,
                                              num_stages=t.fwd_stages)
        ctx.save_for_backward(q, k, v, rpb, out, lse)
        ctx.meta = (window, shift, scale, has_rpb, config)
        return out

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: double backward is an error
    def backward(ctx, dout):
        q, k, v, rpb, out, lse = ctx.saved_tensors
        window, shift, scale, has_rpb, config = ctx.meta
        B, H, W, nh, D = q.shape
        wh, ww = window
        N = wh * ww
        n_win = (H // wh) * (W // ww)
        block, chunks, block_d, warps, kv_warps, kv_stages, dq_stages, _ = _tiling(N, D, q.dtype, config)
        dout = dout.contiguous()
        delta = row_dot(dout, out)
        # gradients are written with the strides of q / k / v (which may be views into a packed qkv)
        dq, dk, dv = grad_buffers(q, k, v)
        need_drpb = has_rpb and ctx.needs_input_grad[3]
        # With a bias gradient, a program sums dS over a chunk of images, so the fp32 dS buffer is
        # [image chunks, windows, heads, N, N] instead of one [N, N] per image (for Swin-T stage 1
        # at batch 32: 11 MB instead of 59 MB); chunks keep >= ~min_programs programs in flight.
        if need_drpb:
            shape, b_per = ds_shape(B, H, W, nh, D, window, q.dtype, config)
            img_chunks = shape[0]
            ds = torch.zeros(shape, device=q.device, dtype=torch.float32)
        else:  # one image per program, no dS buffer (the kernel does not write it)
            img_chunks, b_per, ds = B, 1, lse
        rs = (rpb.stride(0), rpb.stride(1), rpb.stride(2)) if has_rpb else (0, 0, 0)
        common = dict(WH=wh, WW=ww, SH=shift[0], SW=shift[1], BLOCK=block, CHUNKS=chunks, BLOCK_D=block_d,
                      HAS_RPB=has_rpb, PREC=precision(q.dtype), UPCAST=upcast(q))
        strides = (*strides4(q), *strides4(k), *strides4(v), *strides4(dout), *rs)
        _window_bwd_dkdv[(n_win * chunks, img_chunks * nh)](
            q, k, v, rpb if has_rpb else q, dout, lse, delta, dq, dk, dv, ds, *strides,
            B, H, W, nh, D, b_per, scale, WRITE_DS=need_drpb, num_warps=kv_warps,
            num_stages=kv_stages, **common)
        if chunks > 1:
            _window_bwd_dq[(n_win * chunks, B * nh)](q, k, v, rpb if has_rpb else q, dout, lse, delta, dq, *strides,
                                                     H, W, nh, D, scale, num_warps=warps, num_stages=dq_stages,
                                                     **common)
        drpb = None
        if need_drpb:
            idx = relative_position_index(window, device=q.device).reshape(-1)
            flat = torch.zeros(nh, (2 * wh - 1) * (2 * ww - 1), device=q.device, dtype=torch.float32)
            flat.index_add_(1, idx, ds.sum((0, 1)).reshape(nh, N * N))
            drpb = flat.view(nh, 2 * wh - 1, 2 * ww - 1).to(rpb.dtype)
        return dq, dk, dv, drpb, None, None, None, None


def window_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: Tuple[int, int],
                  shift: Tuple[int, int], rpb: Optional[torch.Tensor], scale: float,
                  config: Optional[Mapping] = None) -> torch.Tensor:
    """Window attention through the fused Triton kernels (validated inputs); ``config``: a launch
    configuration (``CONFIG_KEYS``), ``None`` for the defaults."""
    check_config(config)
    q, k, v = (kernel_operand(t) for t in (q, k, v))
    if rpb is not None and rpb.dtype != q.dtype:
        rpb = rpb.to(q.dtype)
    return WindowAttentionTriton.apply(q, k, v, rpb, tuple(window), tuple(shift), float(scale), config)
