"""Fused Triton kernels for Swin (shifted) window attention, forward and backward.

Semantics and layouts are those of ``reference.py``: q, k, v, out ``[B, H, W, heads, D]`` with
window multiples; rpb ``[heads, 2wh-1, 2ww-1]`` (query-minus-key offset).

One program owns one window of one (batch, head): the whole ``wh*ww`` window (padded to a power
of two) fits a single tile, so the softmax is exact without an online pass. The cyclic shift is
folded into the addressing (rolled position ``r`` reads row ``(r + shift) % H``) and the
shifted-window mask is recomputed from region labels, so no rolled copies or mask tensors are
materialised. The backward is one kernel per window as well (a key belongs to exactly one
window, so dK / dV need no cross-program reduction). dRPB: dS is written compactly per window and
reduced with Swin's relative index outside the kernel (only when the bias needs a gradient).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from densekit.layers.window import relative_position_index
from densekit.ops._buffers import grad_buffers
from densekit.ops._triton_utils import dot, precision, row_dot, row_max, row_sum, strides4, upcast


@triton.jit
def _window_tokens(pid, H, W, WH: tl.constexpr, WW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                   BLOCK: tl.constexpr):
    """Tokens of window ``pid``: in-window coords, real (un-rolled) coords, region label, validity."""
    n_ww = W // WW
    wy0 = (pid // n_ww) * WH
    wx0 = (pid % n_ww) * WW
    t = tl.arange(0, BLOCK)
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
    return ty, tx, y, x, lab, ok


@triton.jit
def _window_allowed(lab, ok):
    """Query-key pairs that may attend: both real tokens of the same shift region."""
    return ok[:, None] & ok[None, :] & (lab[:, None] == lab[None, :])


@triton.jit
def _window_logits(q, k, ty, tx, lab, ok, rpb_ptr, s_ra, s_rb, scale,
                   WH: tl.constexpr, WW: tl.constexpr, HAS_RPB: tl.constexpr, PREC: tl.constexpr,
                   UPCAST: tl.constexpr):
    s = dot(q, tl.trans(k), PREC, UPCAST) * scale
    allowed = _window_allowed(lab, ok)
    if HAS_RPB:
        bptr = rpb_ptr + (ty[:, None] - ty[None, :] + WH - 1) * s_ra + (tx[:, None] - tx[None, :] + WW - 1) * s_rb
        s += tl.load(bptr, mask=allowed, other=0.0).to(tl.float32)
    return tl.where(allowed, s, float('-inf')), allowed


@triton.jit
def _window_fwd(Q, K, V, RPB, O, LSE,
                sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh, sob, soy, sox, soh,
                s_rh, s_ra, s_rb, H, W, NHEADS, D, scale,
                WH: tl.constexpr, WW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_RPB: tl.constexpr, PREC: tl.constexpr,
                UPCAST: tl.constexpr):
    pid = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // NHEADS
    head = bh % NHEADS
    ty, tx, y, x, lab, ok = _window_tokens(pid, H, W, WH, WW, SH, SW, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    m = ok[:, None] & (offs_d[None, :] < D)
    q = tl.load(Q + b * sqb + y[:, None] * sqy + x[:, None] * sqx + head * sqh + offs_d[None, :], mask=m, other=0.0)
    k = tl.load(K + b * skb + y[:, None] * sky + x[:, None] * skx + head * skh + offs_d[None, :], mask=m, other=0.0)
    v = tl.load(V + b * svb + y[:, None] * svy + x[:, None] * svx + head * svh + offs_d[None, :], mask=m, other=0.0)
    s, allowed = _window_logits(q, k, ty, tx, lab, ok, RPB + head * s_rh, s_ra, s_rb, scale,
                                WH, WW, HAS_RPB, PREC, UPCAST)
    mx = row_max(s)
    mx = tl.where(ok, mx, 0.0)
    p = tl.exp(s - mx[:, None])
    l = row_sum(p)
    l = tl.where(ok, l, 1.0)
    out = dot(p.to(v.dtype), v, PREC, UPCAST) / l[:, None]
    tl.store(O + b * sob + y[:, None] * soy + x[:, None] * sox + head * soh + offs_d[None, :],
             out.to(O.dtype.element_ty), mask=m)
    tl.store(LSE + (b * H * W + y * W + x) * NHEADS + head, mx + tl.log(l), mask=ok)


@triton.jit
def _window_bwd(Q, K, V, RPB, DO, LSE, DELTA, DQ, DK, DV, DS,
                sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh, sdb, sdy, sdx, sdh,
                s_rh, s_ra, s_rb, B, H, W, NHEADS, D, B_PER, scale,
                WH: tl.constexpr, WW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
                BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, HAS_RPB: tl.constexpr, WRITE_DS: tl.constexpr,
                PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Program (window, chunk of B_PER images x head): dq, dk, dv of each image's window; with
    WRITE_DS the logit gradients summed over the chunk go to DS ``[chunks, windows, heads, N, N]``."""
    pid = tl.program_id(0)
    ch = tl.program_id(1)
    chunk = ch // NHEADS
    head = ch % NHEADS
    ty, tx, y, x, lab, ok = _window_tokens(pid, H, W, WH, WW, SH, SW, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    m = ok[:, None] & (offs_d[None, :] < D)
    ds_sum = tl.full([BLOCK, BLOCK], 0.0, tl.float32)
    for b in range(chunk * B_PER, tl.minimum(chunk * B_PER + B_PER, B)):
        ds_sum += _window_bwd_one(Q, K, V, RPB, DO, LSE, DELTA, DQ, DK, DV, b, head, ty, tx, y, x, lab, ok, m,
                                  offs_d, sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh,
                                  sdb, sdy, sdx, sdh, s_rh, s_ra, s_rb, H, W, NHEADS, scale,
                                  WH, WW, HAS_RPB, PREC, UPCAST)
    if WRITE_DS:
        N: tl.constexpr = WH * WW
        t = tl.arange(0, BLOCK)
        allowed = _window_allowed(lab, ok)
        base = ((chunk * tl.num_programs(0) + pid) * NHEADS + head) * N * N
        tl.store(DS + base + t[:, None] * N + t[None, :], ds_sum, mask=allowed)


@triton.jit
def _window_bwd_one(Q, K, V, RPB, DO, LSE, DELTA, DQ, DK, DV, b, head, ty, tx, y, x, lab, ok, m, offs_d,
                    sqb, sqy, sqx, sqh, skb, sky, skx, skh, svb, svy, svx, svh, sdb, sdy, sdx, sdh,
                    s_rh, s_ra, s_rb, H, W, NHEADS, scale,
                    WH: tl.constexpr, WW: tl.constexpr, HAS_RPB: tl.constexpr, PREC: tl.constexpr,
                    UPCAST: tl.constexpr):
    """Backward of one image's window for one head; returns the logit gradient dS (fp32)."""
    q_off = b * sqb + y[:, None] * sqy + x[:, None] * sqx + head * sqh + offs_d[None, :]
    k_off = b * skb + y[:, None] * sky + x[:, None] * skx + head * skh + offs_d[None, :]
    v_off = b * svb + y[:, None] * svy + x[:, None] * svx + head * svh + offs_d[None, :]
    q = tl.load(Q + q_off, mask=m, other=0.0)
    k = tl.load(K + k_off, mask=m, other=0.0)
    v = tl.load(V + v_off, mask=m, other=0.0)
    do = tl.load(DO + b * sdb + y[:, None] * sdy + x[:, None] * sdx + head * sdh + offs_d[None, :], mask=m, other=0.0)
    row = (b * H * W + y * W + x) * NHEADS + head
    lse = tl.load(LSE + row, mask=ok, other=0.0)
    delta = tl.load(DELTA + row, mask=ok, other=0.0)
    s, allowed = _window_logits(q, k, ty, tx, lab, ok, RPB + head * s_rh, s_ra, s_rb, scale,
                                WH, WW, HAS_RPB, PREC, UPCAST)
    p = tl.exp(s - lse[:, None])
    dv = dot(tl.trans(p).to(do.dtype), do, PREC, UPCAST)
    dp = dot(do, tl.trans(v), PREC, UPCAST)
    ds = p * (dp - delta[:, None])
    dq = dot(ds.to(k.dtype), k, PREC, UPCAST) * scale
    dk = dot(tl.trans(ds).to(q.dtype), q, PREC, UPCAST) * scale
    tl.store(DQ + q_off, dq.to(DQ.dtype.element_ty), mask=m)
    tl.store(DK + k_off, dk.to(DK.dtype.element_ty), mask=m)
    tl.store(DV + v_off, dv.to(DV.dtype.element_ty), mask=m)
    return ds


# programs the backward keeps in flight when it sums dS over images (~8 per SM of an H100 / H200)
_MIN_PROGRAMS = 1024


def _image_chunks(batch: int, programs_per_image: int):
    """(chunks, images per chunk) so that about ``_MIN_PROGRAMS`` backward programs run."""
    b_per = triton.cdiv(batch, min(batch, triton.cdiv(_MIN_PROGRAMS, programs_per_image)))
    return triton.cdiv(batch, b_per), b_per



class WindowAttentionTriton(torch.autograd.Function):
    """Autograd wrapper; inputs validated ``[B, H, W, heads, D]``."""

    @staticmethod
    def forward(ctx, q, k, v, rpb, window, shift, scale):
        B, H, W, nh, D = q.shape
        wh, ww = window
        n_win = (H // wh) * (W // ww)
        if B * nh > 65535:
            raise ValueError(f'window_attention triton: batch * heads = {B * nh} exceeds the grid limit 65535')
        block = max(16, triton.next_power_of_2(wh * ww))
        block_d = max(16, triton.next_power_of_2(D))
        out = torch.empty_like(q)
        lse = torch.empty(B, H * W, nh, device=q.device, dtype=torch.float32)
        has_rpb = rpb is not None
        rs = (rpb.stride(0), rpb.stride(1), rpb.stride(2)) if has_rpb else (0, 0, 0)
        _window_fwd[(n_win, B * nh)](q, k, v, rpb if has_rpb else q, out, lse,
                                     *strides4(q), *strides4(k), *strides4(v), *strides4(out), *rs,
                                     H, W, nh, D, scale, WH=wh, WW=ww, SH=shift[0], SW=shift[1],
                                     BLOCK=block, BLOCK_D=block_d, HAS_RPB=has_rpb, PREC=precision(q.dtype),
                                     UPCAST=upcast(q), num_warps=4 if block <= 64 else 8)
        ctx.save_for_backward(q, k, v, rpb, out, lse)
        ctx.meta = (window, shift, scale, has_rpb, block, block_d)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, rpb, out, lse = ctx.saved_tensors
        window, shift, scale, has_rpb, block, block_d = ctx.meta
        B, H, W, nh, D = q.shape
        wh, ww = window
        N = wh * ww
        n_win = (H // wh) * (W // ww)
        dout = dout.contiguous()
        delta = row_dot(dout, out)
        # gradients are written with the strides of q / k / v (which may be views into a packed qkv)
        dq, dk, dv = grad_buffers(q, k, v)
        need_drpb = has_rpb and ctx.needs_input_grad[3]
        # With a bias gradient, a program sums dS over a chunk of images, so the fp32 dS buffer is
        # [chunks, windows, heads, N, N] instead of one [N, N] per image (for Swin-T stage 1 at
        # batch 32: 11 MB instead of 59 MB); chunks keep >= ~_MIN_PROGRAMS programs in flight.
        chunks, b_per = _image_chunks(B, n_win * nh) if need_drpb else (B, 1)
        ds = torch.zeros(chunks, n_win, nh, N, N, device=q.device, dtype=torch.float32) if need_drpb else lse
        rs = (rpb.stride(0), rpb.stride(1), rpb.stride(2)) if has_rpb else (0, 0, 0)
        _window_bwd[(n_win, chunks * nh)](q, k, v, rpb if has_rpb else q, dout, lse, delta, dq, dk, dv, ds,
                                     *strides4(q), *strides4(k), *strides4(v), *strides4(dout), *rs,
                                     B, H, W, nh, D, b_per, scale, WH=wh, WW=ww, SH=shift[0], SW=shift[1],
                                     BLOCK=block, BLOCK_D=block_d, HAS_RPB=has_rpb, WRITE_DS=need_drpb,
                                     PREC=precision(q.dtype), UPCAST=upcast(q), num_warps=4 if block <= 64 else 8)
        drpb = None
        if need_drpb:
            idx = relative_position_index(window, device=q.device).reshape(-1)
            flat = torch.zeros(nh, (2 * wh - 1) * (2 * ww - 1), device=q.device, dtype=torch.float32)
            flat.index_add_(1, idx, ds.sum((0, 1)).reshape(nh, N * N))
            drpb = flat.view(nh, 2 * wh - 1, 2 * ww - 1).to(rpb.dtype)
        return dq, dk, dv, drpb, None, None, None


def window_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: Tuple[int, int],
                  shift: Tuple[int, int], rpb: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """Window attention through the fused Triton kernels (validated inputs)."""
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    if rpb is not None and rpb.dtype != q.dtype:
        rpb = rpb.to(q.dtype)
    return WindowAttentionTriton.apply(q, k, v, rpb, tuple(window), tuple(shift), float(scale))
