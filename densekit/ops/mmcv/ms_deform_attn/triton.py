"""Fused Triton kernels for multi-scale deformable attention (forward and backward).

Semantics are those of ``reference.py`` (Deformable DETR, Zhu et al., ICLR 2021): a location
``(x, y)`` in ``[0, 1]`` reads level ``l`` at pixel ``(x * W_l - 0.5, y * H_l - 0.5)`` with
bilinear interpolation and zeros outside the map.

Layouts: ``value`` ``[B, S, heads, D]``; ``spatial_shapes`` ``[L, 2]`` ``(H, W)``;
``level_start_index`` ``[L]``; ``sampling_locations`` ``[B, Q, heads, L, P, 2]``;
``attention_weights`` ``[B, Q, heads, L, P]``; output ``[B, Q, heads * D]``. Contiguous
row-major layouts are required (the wrapper makes them so).

Scheme: one program per ``(batch, query, head)``. It walks the levels, and for each level loads
all ``P`` sampling points at once and gathers the four ``[P, D]`` corner rows of ``value``
(``D`` contiguous, so each row is one coalesced load), so the ``[B*Q*heads*L*P, D]`` sampled
tensor that ``grid_sample`` materialises never exists. The backward recomputes the corners,
writes the location / weight gradients (each owned by exactly one program) and scatters the
value gradient with fp32 atomics. Accumulation is fp32 for every input dtype.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from densekit.ops._backend import TRITON_GRID_X_MAX, int32_offset_reason

# Reductions and fills use core builtins (``tl.reduce`` with triton's combine function,
# ``tl.full``) instead of ``tl.sum`` / ``tl.zeros``, which are ``@triton.jit`` library functions
# the CPU interpreter cannot call when triton is imported before ``TRITON_INTERPRET=1`` is set;
# on GPU both lower to the same reduction.
_SUM = tl.standard._sum_combine


@triton.jit
def _level_setup(shapes_ptr, starts_ptr, loc_ptr, attn_ptr, row, lvl, P, offs_p):
    """Level geometry and the P sampling points of one (b, q, head) row at level ``lvl``."""
    h_l = tl.load(shapes_ptr + 2 * lvl).to(tl.int32)
    w_l = tl.load(shapes_ptr + 2 * lvl + 1).to(tl.int32)
    start = tl.load(starts_ptr + lvl).to(tl.int32)
    p_ok = offs_p < P
    lp = row * P + offs_p  # flat index of (b, q, head, lvl, p); int64, as row is
    x = tl.load(loc_ptr + 2 * lp, mask=p_ok, other=0.0).to(tl.float32) * w_l - 0.5
    y = tl.load(loc_ptr + 2 * lp + 1, mask=p_ok, other=0.0).to(tl.float32) * h_l - 0.5
    a = tl.load(attn_ptr + lp, mask=p_ok, other=0.0).to(tl.float32)
    return h_l, w_l, start, p_ok, lp, x, y, a


@triton.jit
def _corner(v_base, start, yy, xx, h_l, w_l, p_ok, offs_d, d_ok, ROW_STRIDE):
    """Element offsets, mask and fp32 values ``[P, D]`` of one bilinear corner (0 outside)."""
    ok = p_ok & (yy >= 0) & (yy < h_l) & (xx >= 0) & (xx < w_l)
    idx = start + yy * w_l + xx
    offs = idx[:, None] * ROW_STRIDE + offs_d[None, :]
    m = ok[:, None] & d_ok[None, :]
    return offs, m, tl.load(v_base + offs, mask=m, other=0.0).to(tl.float32)


@triton.jit
def _msda_fwd_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr,
                     S, Q, NH, L, P, D,
                     BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)  # = (b * Q + q) * NH + head
    head = pid % NH
    b = pid // (Q * NH)
    offs_p = tl.arange(0, BLOCK_P)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    row_stride = NH * D
    v_base = value_ptr + b.to(tl.int64) * S * row_stride + head * D
    acc = tl.full([BLOCK_D], 0.0, tl.float32)
    for lvl in range(0, L):
        h_l, w_l, start, p_ok, lp, x, y, a = _level_setup(
            shapes_ptr, starts_ptr, loc_ptr, attn_ptr, pid.to(tl.int64) * L + lvl, lvl, P, offs_p)
        x0f = tl.floor(x)
        y0f = tl.floor(y)
        lx = x - x0f
        ly = y - y0f
        hx = 1.0 - lx
        hy = 1.0 - ly
        x0 = x0f.to(tl.int32)
        y0 = y0f.to(tl.int32)
        _, _, v1 = _corner(v_base, start, y0, x0, h_l, w_l, p_ok, offs_d, d_ok, row_stride)
        _, _, v2 = _corner(v_base, start, y0, x0 + 1, h_l, w_l, p_ok, offs_d, d_ok, row_stride)
        _, _, v3 = _corner(v_base, start, y0 + 1, x0, h_l, w_l, p_ok, offs_d, d_ok, row_stride)
        _, _, v4 = _corner(v_base, start, y0 + 1, x0 + 1, h_l, w_l, p_ok, offs_d, d_ok,
                           row_stride)
        val = ((hy * hx)[:, None] * v1 + (hy * lx)[:, None] * v2
               + (ly * hx)[:, None] * v3 + (ly * lx)[:, None] * v4)
        acc += tl.reduce(val * a[:, None], 0, _SUM)
    tl.store(out_ptr + pid.to(tl.int64) * D + offs_d, acc.to(out_ptr.dtype.element_ty),
             mask=d_ok)


@triton.jit
def _msda_bwd_kernel(value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, gout_ptr,
                     gvalue_ptr, gloc_ptr, gattn_ptr,
                     S, Q, NH, L, P, D,
                     BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0)
    head = pid % NH
    b = pid // (Q * NH)
    offs_p = tl.arange(0, BLOCK_P)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    row_stride = NH * D
    v_off = b.to(tl.int64) * S * row_stride + head * D
    v_base = value_ptr + v_off
    gv_base = gvalue_ptr + v_off
    g = tl.load(gout_ptr + pid.to(tl.int64) * D + offs_d, mask=d_ok, other=0.0).to(tl.float32)
    for lvl in range(0, L):
        h_l, w_l, start, p_ok, lp, x, y, a = _level_setup(
            shapes_ptr, starts_ptr, loc_ptr, attn_ptr, pid.to(tl.int64) * L + lvl, lvl, P, offs_p)
        x0f = tl.floor(x)
        y0f = tl.floor(y)
        lx = x - x0f
        ly = y - y0f
        hx = 1.0 - lx
        hy = 1.0 - ly
        x0 = x0f.to(tl.int32)
        y0 = y0f.to(tl.int32)
        p1, m1, v1 = _corner(v_base, start, y0, x0, h_l, w_l, p_ok, offs_d, d_ok, row_stride)
        p2, m2, v2 = _corner(v_base, start, y0, x0 + 1, h_l, w_l, p_ok, offs_d, d_ok,
                             row_stride)
        p3, m3, v3 = _corner(v_base, start, y0 + 1, x0, h_l, w_l, p_ok, offs_d, d_ok,
                             row_stride)
        p4, m4, v4 = _corner(v_base, start, y0 + 1, x0 + 1, h_l, w_l, p_ok, offs_d, d_ok,
                             row_stride)
        val = ((hy * hx)[:, None] * v1 + (hy * lx)[:, None] * v2
               + (ly * hx)[:, None] * v3 + (ly * lx)[:, None] * v4)
        gattn = tl.reduce(val * g[None, :], 1, _SUM)
        # d(val)/dx and d(val)/dy in pixels; x = loc_x * W - 0.5, so d/dloc_x = W * d/dx.
        dx = hy[:, None] * (v2 - v1) + ly[:, None] * (v4 - v3)
        dy = hx[:, None] * (v3 - v1) + lx[:, None] * (v4 - v2)
        gx = a * tl.reduce(dx * g[None, :], 1, _SUM) * w_l
        gy = a * tl.reduce(dy * g[None, :], 1, _SUM) * h_l
        tl.store(gattn_ptr + lp, gattn, mask=p_ok)
        tl.store(gloc_ptr + 2 * lp, gx, mask=p_ok)
        tl.store(gloc_ptr + 2 * lp + 1, gy, mask=p_ok)
        ag = a[:, None] * g[None, :]
        tl.atomic_add(gv_base + p1, (hy * hx)[:, None] * ag, mask=m1)
        tl.atomic_add(gv_base + p2, (hy * lx)[:, None] * ag, mask=m2)
        tl.atomic_add(gv_base + p3, (ly * hx)[:, None] * ag, mask=m3)
        tl.atomic_add(gv_base + p4, (ly * lx)[:, None] * ag, mask=m4)


def _launch_meta(points: int, dim: int):
    return dict(BLOCK_P=triton.next_power_of_2(points), BLOCK_D=triton.next_power_of_2(dim))


class _MSDeformAttnTriton(torch.autograd.Function):

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations,
                attention_weights):
        bs, s, nh, d = value.shape
        _, nq, _, nl, np_, _ = sampling_locations.shape
        value = value.contiguous()
        loc = sampling_locations.to(value.dtype).contiguous()
        attn = attention_weights.to(value.dtype).contiguous()
        shapes = spatial_shapes.to(device=value.device, dtype=torch.int64).contiguous()
        starts = level_start_index.to(device=value.device, dtype=torch.int64).contiguous()
        out = torch.empty(bs, nq, nh, d, device=value.device, dtype=value.dtype)
        _msda_fwd_kernel[(bs * nq * nh,)](value, shapes, starts, loc, attn, out,
                                          s, nq, nh, nl, np_, d, **_launch_meta(np_, d))
        ctx.save_for_backward(value, shapes, starts, loc, attn)
        ctx.in_dtypes = (sampling_locations.dtype, attention_weights.dtype)
        return out.reshape(bs, nq, nh * d)

    @staticmethod
    def backward(ctx, grad_output):
        value, shapes, starts, loc, attn = ctx.saved_tensors
        bs, s, nh, d = value.shape
        _, nq, _, nl, np_, _ = loc.shape
        gout = grad_output.reshape(bs, nq, nh, d).contiguous()
        gvalue = torch.zeros(value.shape, device=value.device, dtype=torch.float32)
        gloc = torch.empty(loc.shape, device=value.device, dtype=torch.float32)
        gattn = torch.empty(attn.shape, device=value.device, dtype=torch.float32)
        _msda_bwd_kernel[(bs * nq * nh,)](value, shapes, starts, loc, attn, gout, gvalue, gloc,
                                          gattn, s, nq, nh, nl, np_, d,
                                          **_launch_meta(np_, d))
        return (gvalue.to(value.dtype), None, None, gloc.to(ctx.in_dtypes[0]),
                gattn.to(ctx.in_dtypes[1]))


def int32_reason(value_shape, loc_shape) -> Optional[str]:
    """Why the kernels cannot take these shapes, or ``None``. Offsets into the flat per-point
    tensors (locations, weights and their gradients) and into output rows are int64, as is each
    image's start in ``value``; a row inside one image (``S * heads * D`` elements) is addressed
    in int32 by the gather, whose per-element arithmetic stays 32-bit. The grid has one program
    per (batch, query, head) on axis 0 (CUDA allows 2**31 - 1)."""
    bs, s, nh, d = value_shape
    nq = loc_shape[1]
    if bs * nq * nh > TRITON_GRID_X_MAX:
        return (f'batch * queries * heads = {bs} * {nq} * {nh} = {bs * nq * nh} programs exceed the grid limit '
                f'{TRITON_GRID_X_MAX}')
    return int32_offset_reason({'one image of value (S * heads * head_dim)': s * nh * d})


def ms_deform_attn_triton(value: torch.Tensor, spatial_shapes: torch.Tensor,
                          level_start_index: torch.Tensor, sampling_locations: torch.Tensor,
                          attention_weights: torch.Tensor) -> torch.Tensor:
    """Fused multi-scale deformable attention (CUDA, or CPU under ``TRITON_INTERPRET=1``)."""
    if value.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f'ms_deform_attn_triton supports float32/float16/bfloat16 values, got '
                         f'{value.dtype}')
    reason = int32_reason(value.shape, sampling_locations.shape)
    if reason is not None:
        raise ValueError(f'ms_deform_attn_triton cannot run this call: {reason}')
    return _MSDeformAttnTriton.apply(value, spatial_shapes, level_start_index,
                                     sampling_locations, attention_weights)
