"""Triton kernels for deformable sampled-key attention, forward and backward.

q is laid out ``[B * heads, H * W, D]``, the sampled k / v ``[B * heads, N, D]``; ``pos``
``[B, G, N, 2]`` and the bias ``table`` ``[heads, Th, Tw]`` are read in fp32. The bias of a
(query, key) pair is interpolated from the table inside every kernel (four masked loads, zero
outside the table, as ``grid_sample(align_corners=True)``), so no ``[B, heads, H * W, N]`` tensor
exists in either pass:

* forward / dQ: one program per (``BLOCK_M`` query rows, image x head) streams the key chunks
  with an online softmax (forward, which also stores the log-sum-exp) or recomputes the
  probabilities from it (dQ);
* dK / dV / bias: one program per (``BLOCK_N`` keys, image x head) walks every query chunk on
  transposed ``[keys, queries]`` tiles. It owns its dK / dV rows and the per-head position
  gradient of its keys (summed over the heads of a group afterwards), so those need no atomics;
  the table gradient is scattered with fp32 atomic adds (many programs read the same table
  cells), so its last bits depend on the order of the additions.

Layouts and semantics of the public op as in ``reference.py``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from densekit.ops._triton_utils import dot, online_softmax_step, precision, sum_axis, upcast

# No launch configuration is tunable yet: 32-row tiles keep every dot at least 16 wide (tl.dot's
# minimum); DAT++ samples 50 - 1100 keys per image at detection sizes.
CONFIG_KEYS = ()
BLOCK_M = 32
BLOCK_N = 32


@triton.jit
def _query_yx(offs_m, W, DEN_Y, DEN_X, ON_Y, ON_X):
    """Normalised (y, x) of flattened query rows ``offs_m`` (``ON_*`` is 0 for a side of 1)."""
    i = (offs_m // W).to(tl.float32)
    j = (offs_m % W).to(tl.float32)
    return (i / DEN_Y * 2.0 - 1.0) * ON_Y, (j / DEN_X * 2.0 - 1.0) * ON_X


@triton.jit
def _table_coords(qy, qx, py, px, Th, Tw):
    """Table coordinates (``align_corners=True`` pixels) of the displacement ``(q - p) / 2``."""
    ty = ((qy - py) * 0.5 + 1.0) * 0.5 * (Th - 1)
    tx = ((qx - px) * 0.5 + 1.0) * 0.5 * (Tw - 1)
    return ty, tx


@triton.jit
def _bilinear(TBL, ty, tx, Th, Tw, mask):
    """Bilinear sample of one head's ``[Th, Tw]`` table at ``(ty, tx)`` (zero outside), and its
    derivatives with respect to ``ty`` and ``tx``."""
    y0f = tl.floor(ty)
    x0f = tl.floor(tx)
    wy1 = ty - y0f
    wx1 = tx - x0f
    wy0 = 1.0 - wy1
    wx0 = 1.0 - wx1
    y0 = y0f.to(tl.int32)
    x0 = x0f.to(tl.int32)
    y1 = y0 + 1
    x1 = x0 + 1
    iny0 = (y0 >= 0) & (y0 < Th)
    iny1 = (y1 >= 0) & (y1 < Th)
    inx0 = (x0 >= 0) & (x0 < Tw)
    inx1 = (x1 >= 0) & (x1 < Tw)
    v00 = tl.load(TBL + y0 * Tw + x0, mask=mask & iny0 & inx0, other=0.0)
    v01 = tl.load(TBL + y0 * Tw + x1, mask=mask & iny0 & inx1, other=0.0)
    v10 = tl.load(TBL + y1 * Tw + x0, mask=mask & iny1 & inx0, other=0.0)
    v11 = tl.load(TBL + y1 * Tw + x1, mask=mask & iny1 & inx1, other=0.0)
    bias = wy0 * (wx0 * v00 + wx1 * v01) + wy1 * (wx0 * v10 + wx1 * v11)
    dty = wx0 * (v10 - v00) + wx1 * (v11 - v01)
    dtx = wy0 * (v01 - v00) + wy1 * (v11 - v10)
    return bias, dty, dtx


@triton.jit
def _bilinear_scatter(DTBL, ty, tx, Th, Tw, mask, g):
    """Adjoint of :func:`_bilinear` for the table: add ``g`` times each corner's weight."""
    y0f = tl.floor(ty)
    x0f = tl.floor(tx)
    wy1 = ty - y0f
    wx1 = tx - x0f
    wy0 = 1.0 - wy1
    wx0 = 1.0 - wx1
    y0 = y0f.to(tl.int32)
    x0 = x0f.to(tl.int32)
    y1 = y0 + 1
    x1 = x0 + 1
    iny0 = (y0 >= 0) & (y0 < Th)
    iny1 = (y1 >= 0) & (y1 < Th)
    inx0 = (x0 >= 0) & (x0 < Tw)
    inx1 = (x1 >= 0) & (x1 < Tw)
    tl.atomic_add(DTBL + y0 * Tw + x0, g * wy0 * wx0, mask=mask & iny0 & inx0)
    tl.atomic_add(DTBL + y0 * Tw + x1, g * wy0 * wx1, mask=mask & iny0 & inx1)
    tl.atomic_add(DTBL + y1 * Tw + x0, g * wy1 * wx0, mask=mask & iny1 & inx0)
    tl.atomic_add(DTBL + y1 * Tw + x1, g * wy1 * wx1, mask=mask & iny1 & inx1)


@triton.jit
def _ds_fwd(Q, K, V, POS, TBL, O, LSE, scale, M, N, W, HEADS, G, Th, Tw, D, DV,
            DEN_Y, DEN_X, ON_Y, ON_X,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
            BLOCK_DV: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    bh = tl.program_id(1)
    b = bh // HEADS
    hh = bh % HEADS
    grp = hh // (HEADS // G)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_mask = offs_m < M
    q_rows = bh.to(tl.int64) * M + offs_m
    q = tl.load(Q + q_rows[:, None] * D + offs_d[None, :], mask=m_mask[:, None] & (offs_d[None, :] < D), other=0.0)
    qy, qx = _query_yx(offs_m, W, DEN_Y, DEN_X, ON_Y, ON_X)
    tbl = TBL + hh * Th * Tw
    pos = POS + (b * G + grp).to(tl.int64) * N * 2
    m_i = tl.full([BLOCK_M], float('-inf'), tl.float32)
    l_i = tl.full([BLOCK_M], 0.0, tl.float32)
    acc = tl.full([BLOCK_M, BLOCK_DV], 0.0, tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < N
        k_rows = bh.to(tl.int64) * N + offs_n
        k = tl.load(K + k_rows[:, None] * D + offs_d[None, :], mask=n_mask[:, None] & (offs_d[None, :] < D),
                    other=0.0)
        v = tl.load(V + k_rows[:, None] * DV + offs_dv[None, :], mask=n_mask[:, None] & (offs_dv[None, :] < DV),
                    other=0.0)
        py = tl.load(pos + offs_n * 2, mask=n_mask, other=0.0)
        px = tl.load(pos + offs_n * 2 + 1, mask=n_mask, other=0.0)
        ty, tx = _table_coords(qy[:, None], qx[:, None], py[None, :], px[None, :], Th, Tw)
        bias, _, _ = _bilinear(tbl, ty, tx, Th, Tw, m_mask[:, None] & n_mask[None, :])
        s = dot(q, tl.trans(k), PREC, UPCAST) * scale + bias
        s = tl.where(n_mask[None, :], s, float('-inf'))
        m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v, PREC, UPCAST)
    out = acc / l_i[:, None]
    tl.store(O + q_rows[:, None] * DV + offs_dv[None, :], out.to(O.dtype.element_ty),
             mask=m_mask[:, None] & (offs_dv[None, :] < DV))
    tl.store(LSE + q_rows, m_i + tl.log(l_i), mask=m_mask)


@triton.jit
def _ds_dq(Q, K, V, POS, TBL, DO, LSE, DELTA, DQ, scale, M, N, W, HEADS, G, Th, Tw, D, DV,
           DEN_Y, DEN_X, ON_Y, ON_X,
           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
           BLOCK_DV: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    bh = tl.program_id(1)
    b = bh // HEADS
    hh = bh % HEADS
    grp = hh // (HEADS // G)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_mask = offs_m < M
    q_rows = bh.to(tl.int64) * M + offs_m
    q = tl.load(Q + q_rows[:, None] * D + offs_d[None, :], mask=m_mask[:, None] & (offs_d[None, :] < D), other=0.0)
    do = tl.load(DO + q_rows[:, None] * DV + offs_dv[None, :], mask=m_mask[:, None] & (offs_dv[None, :] < DV),
                 other=0.0)
    lse = tl.load(LSE + q_rows, mask=m_mask, other=0.0)
    delta = tl.load(DELTA + q_rows, mask=m_mask, other=0.0)
    qy, qx = _query_yx(offs_m, W, DEN_Y, DEN_X, ON_Y, ON_X)
    tbl = TBL + hh * Th * Tw
    pos = POS + (b * G + grp).to(tl.int64) * N * 2
    dq = tl.full([BLOCK_M, BLOCK_D], 0.0, tl.float32)
    for n0 in range(0, N, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        n_mask = offs_n < N
        k_rows = bh.to(tl.int64) * N + offs_n
        k = tl.load(K + k_rows[:, None] * D + offs_d[None, :], mask=n_mask[:, None] & (offs_d[None, :] < D),
                    other=0.0)
        v = tl.load(V + k_rows[:, None] * DV + offs_dv[None, :], mask=n_mask[:, None] & (offs_dv[None, :] < DV),
                    other=0.0)
        py = tl.load(pos + offs_n * 2, mask=n_mask, other=0.0)
        px = tl.load(pos + offs_n * 2 + 1, mask=n_mask, other=0.0)
        mask = m_mask[:, None] & n_mask[None, :]
        ty, tx = _table_coords(qy[:, None], qx[:, None], py[None, :], px[None, :], Th, Tw)
        bias, _, _ = _bilinear(tbl, ty, tx, Th, Tw, mask)
        s = dot(q, tl.trans(k), PREC, UPCAST) * scale + bias
        p = tl.where(mask, tl.exp(s - lse[:, None]), 0.0)
        dp = dot(do, tl.trans(v), PREC, UPCAST)
        ds = p * (dp - delta[:, None])
        dq += dot(ds.to(k.dtype), k, PREC, UPCAST)
    tl.store(DQ + q_rows[:, None] * D + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=m_mask[:, None] & (offs_d[None, :] < D))


@triton.jit
def _ds_dkdv(Q, K, V, POS, TBL, DO, LSE, DELTA, DK, DV_OUT, DPOS, DTBL, scale, M, N, W, HEADS, G, Th, Tw, D, DV,
             DEN_Y, DEN_X, ON_Y, ON_X,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
             BLOCK_DV: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    bh = tl.program_id(1)
    b = bh // HEADS
    hh = bh % HEADS
    grp = hh // (HEADS // G)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    n_mask = offs_n < N
    k_rows = bh.to(tl.int64) * N + offs_n
    k = tl.load(K + k_rows[:, None] * D + offs_d[None, :], mask=n_mask[:, None] & (offs_d[None, :] < D), other=0.0)
    v = tl.load(V + k_rows[:, None] * DV + offs_dv[None, :], mask=n_mask[:, None] & (offs_dv[None, :] < DV),
                other=0.0)
    pos = POS + (b * G + grp).to(tl.int64) * N * 2
    py = tl.load(pos + offs_n * 2, mask=n_mask, other=0.0)
    px = tl.load(pos + offs_n * 2 + 1, mask=n_mask, other=0.0)
    tbl = TBL + hh * Th * Tw
    dtbl = DTBL + hh * Th * Tw
    dk = tl.full([BLOCK_N, BLOCK_D], 0.0, tl.float32)
    dv = tl.full([BLOCK_N, BLOCK_DV], 0.0, tl.float32)
    dty_acc = tl.full([BLOCK_N], 0.0, tl.float32)
    dtx_acc = tl.full([BLOCK_N], 0.0, tl.float32)
    for m0 in range(0, M, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        m_mask = offs_m < M
        q_rows = bh.to(tl.int64) * M + offs_m
        q = tl.load(Q + q_rows[:, None] * D + offs_d[None, :], mask=m_mask[:, None] & (offs_d[None, :] < D),
                    other=0.0)
        do = tl.load(DO + q_rows[:, None] * DV + offs_dv[None, :], mask=m_mask[:, None] & (offs_dv[None, :] < DV),
                     other=0.0)
        lse = tl.load(LSE + q_rows, mask=m_mask, other=0.0)
        delta = tl.load(DELTA + q_rows, mask=m_mask, other=0.0)
        qy, qx = _query_yx(offs_m, W, DEN_Y, DEN_X, ON_Y, ON_X)
        mask = n_mask[:, None] & m_mask[None, :]
        # Transposed tiles ([keys, queries]) throughout, so that no dot result is ever
        # transposed (tl.trans of a dot result miscompiles on sm_90 with triton >= 3.4).
        ty, tx = _table_coords(qy[None, :], qx[None, :], py[:, None], px[:, None], Th, Tw)
        bias, gy, gx = _bilinear(tbl, ty, tx, Th, Tw, mask)
        st = dot(k, tl.trans(q), PREC, UPCAST) * scale + bias
        pt = tl.where(mask, tl.exp(st - lse[None, :]), 0.0)
        dv += dot(pt.to(do.dtype), do, PREC, UPCAST)
        dpt = dot(v, tl.trans(do), PREC, UPCAST)
        dst = pt * (dpt - delta[None, :])
        dk += dot(dst.to(q.dtype), q, PREC, UPCAST)
        dty_acc += sum_axis(dst * gy, 1)
        dtx_acc += sum_axis(dst * gx, 1)
        _bilinear_scatter(dtbl, ty, tx, Th, Tw, mask, dst)
    tl.store(DK + k_rows[:, None] * D + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty),
             mask=n_mask[:, None] & (offs_d[None, :] < D))
    tl.store(DV_OUT + k_rows[:, None] * DV + offs_dv[None, :], dv.to(DV_OUT.dtype.element_ty),
             mask=n_mask[:, None] & (offs_dv[None, :] < DV))
    # d(ty)/d(py) = -(Th - 1) / 4 (the displacement is halved, then mapped from [-1, 1])
    tl.store(DPOS + k_rows * 2, dty_acc * (-0.25 * (Th - 1)), mask=n_mask)
    tl.store(DPOS + k_rows * 2 + 1, dtx_acc * (-0.25 * (Tw - 1)), mask=n_mask)


def _dims(D: int, DV: int):
    return max(16, triton.next_power_of_2(D)), max(16, triton.next_power_of_2(DV))


def _grid_args(H: int, W: int):
    """``DEN_Y, DEN_X, ON_Y, ON_X`` of :func:`_query_yx`."""
    return float(max(H - 1, 1)), float(max(W - 1, 1)), float(H > 1), float(W > 1)


class _DeformSampledTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, pos, table, scale):
        B, H, W, h, D = q.shape
        N, DV = k.shape[1], v.shape[-1]
        G = pos.shape[1]
        Th, Tw = table.shape[1:]
        M = H * W
        qf = q.reshape(B, M, h, D).transpose(1, 2).contiguous()
        kf = k.transpose(1, 2).contiguous()
        vf = v.transpose(1, 2).contiguous()
        pf = pos.float().contiguous()
        tf = table.float().contiguous()
        o = torch.empty(B, h, M, DV, device=q.device, dtype=q.dtype)
        lse = torch.empty(B, h, M, device=q.device, dtype=torch.float32)
        bd, bdv = _dims(D, DV)
        _ds_fwd[(triton.cdiv(M, BLOCK_M), B * h)](
            qf, kf, vf, pf, tf, o, lse, float(scale), M, N, W, h, G, Th, Tw, D, DV, *_grid_args(H, W),
            BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=bd, BLOCK_DV=bdv,
            PREC=precision(q.dtype), UPCAST=upcast(q))
        ctx.save_for_backward(qf, kf, vf, pf, tf, o, lse)
        ctx.meta = (float(scale), H, W, pos.dtype, table.dtype)
        return o.transpose(1, 2).reshape(B, H, W, h, DV)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        qf, kf, vf, pf, tf, o, lse = ctx.saved_tensors
        scale, H, W, pos_dtype, table_dtype = ctx.meta
        B, h, M, D = qf.shape
        N, DV = kf.shape[2], vf.shape[-1]
        G = pf.shape[1]
        Th, Tw = tf.shape[1:]
        do = grad_out.reshape(B, M, h, DV).transpose(1, 2).to(qf.dtype).contiguous()
        delta = (do.float() * o.float()).sum(-1).contiguous()
        dq, dk, dv = torch.empty_like(qf), torch.empty_like(kf), torch.empty_like(vf)
        dpos_heads = torch.empty(B, h, N, 2, device=qf.device, dtype=torch.float32)
        dtable = torch.zeros_like(tf)
        bd, bdv = _dims(D, DV)
        common = dict(BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=bd, BLOCK_DV=bdv,
                      PREC=precision(qf.dtype), UPCAST=upcast(qf))
        sizes = (scale, M, N, W, h, G, Th, Tw, D, DV, *_grid_args(H, W))
        _ds_dq[(triton.cdiv(M, BLOCK_M), B * h)](qf, kf, vf, pf, tf, do, lse, delta, dq, *sizes, **common)
        _ds_dkdv[(triton.cdiv(N, BLOCK_N), B * h)](qf, kf, vf, pf, tf, do, lse, delta, dk, dv, dpos_heads, dtable,
                                                   *sizes, **common)
        dpos = dpos_heads.view(B, G, h // G, N, 2).sum(2)
        return (dq.transpose(1, 2).reshape(B, H, W, h, D), dk.transpose(1, 2), dv.transpose(1, 2),
                dpos.to(pos_dtype), dtable.to(table_dtype), None)


def deform_sampled_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                          table: torch.Tensor, scale: float) -> torch.Tensor:
    """Deformable sampled-key attention through the Triton kernels on validated inputs."""
    return _DeformSampledTriton.apply(q, k, v, pos, table, scale)
