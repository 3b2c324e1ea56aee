"""Triton kernels for the large-kernel depthwise convolution, forward and backward.

Semantics as ``reference.py``: ``x [B, C, H, W]``, weight ``[C, 1, K, K]`` (``K`` odd), stride 1,
zero padding ``P = DIL * (K - 1) / 2``. Depthwise convolution has one output channel per group, so
the implicit GEMM of a dense convolution (output channels x input channels * K * K) has nothing to
multiply along its channel axis; the kernels below find tensor-core shaped products elsewhere:

* forward (and the input gradient, which is the same convolution of the output gradient with the
  kernel flipped in both axes): one program per ``BLOCK_H x BLOCK_W`` output tile of one
  (image, channel) plane. For kernel row ``i`` the tile's contribution is a banded (Toeplitz)
  product: ``out[y, x] += sum_a in[y + i*DIL - P, x0 - P + a] * T_i[a, x]`` with
  ``T_i[a, x] = w[i, (a - x) / DIL]`` where that is a kernel tap (else 0). The input rows are
  loaded in column chunks of ``BLOCK_K`` and ``T_i`` is gathered from the weight, so each step is
  a ``[BLOCK_H, BLOCK_K] x [BLOCK_K, BLOCK_W]`` ``tl.dot``; only the chunks that meet the band
  (``BLOCK_W + (K - 1) * DIL`` columns) are visited. Narrow output tiles keep the zeros of ``T_i``
  few: with ``BLOCK_W = BLOCK_K = 16`` a 31-tap row computes 48 products per 31 useful ones.
* weight gradient: ``dw[i, j] = sum_{b, y', x} dy[b, y' - i*DIL + P, x] * in[b, y', x + j*DIL - P]``
  over input rows ``y'`` and output columns ``x`` is a GEMM ``[K, N] x [N, K]`` over positions
  ``N``, both operands gathered from the maps (an implicit im2col, never stored). One program per
  (channel, split) sums its share of the positions into its own fp32 ``[K, K]`` partial; the
  partials are summed in a fixed order afterwards (no atomics: the result does not depend on
  scheduling). The bias gradient is the sum of the output gradient over ``b, y, x`` in fp32.

Accumulation is fp32 for every input dtype; fp32 inputs use IEEE dots (no TF32).
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from densekit.ops._backend import TRITON_GRID_X_MAX, TRITON_GRID_Y_MAX, int32_offset_reason
from densekit.ops._triton_utils import dot, precision, upcast

# Keys of a launch configuration (``large_kernel_triton(config=...)``, ``large_kernel_conv2d(
# triton_config=...)``): the forward / input-gradient tile (``block_h`` rows x ``block_w`` columns,
# input column chunks of ``block_k``; powers of two >= 16, tl.dot's minimum), its ``num_warps`` /
# ``num_stages``; the weight-gradient position tile (``wgrad_rows`` x ``wgrad_cols``), the number
# of partial sums per channel (``wgrad_splits``) and its ``wgrad_warps``.
CONFIG_KEYS = ('block_h', 'block_w', 'block_k', 'num_warps', 'num_stages',
               'wgrad_rows', 'wgrad_cols', 'wgrad_splits', 'wgrad_warps')
# Programs the weight gradient aims for (channels x splits): enough to fill a GPU's SMs a few
# times over; derived from the shape only, so the summation order is the same on every device.
WGRAD_PROGRAMS = 2048


@triton.jit
def _dw_conv_kernel(X, Wt, BIAS, OUT, C, H, W, N_TW,
                    K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr, HAS_BIAS: tl.constexpr,
                    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_K: tl.constexpr,
                    PREC: tl.constexpr, UPCAST: tl.constexpr):
    bc = tl.program_id(0)  # image * C + channel
    tile = tl.program_id(1)
    c = bc % C
    y0 = (tile // N_TW) * BLOCK_H
    x0 = (tile % N_TW) * BLOCK_W
    offs_y = y0 + tl.arange(0, BLOCK_H)
    offs_x = tl.arange(0, BLOCK_W)  # within the tile
    offs_a = tl.arange(0, BLOCK_K)
    plane = bc.to(tl.int64) * H * W
    x_base = X + plane
    w_base = Wt + c * K * K
    acc = tl.full([BLOCK_H, BLOCK_W], 0.0, tl.float32)
    # Only the kernel rows that reach an input row of the map, and only the band's input columns
    # inside the map, are visited (maps smaller than the kernel: deep stages, small images).
    y_last = tl.minimum(y0 + BLOCK_H, H) - 1
    i_lo = tl.maximum((PAD - y_last + DIL - 1) // DIL, 0)
    i_hi = tl.minimum((H - 1 + PAD - y0) // DIL + 1, K)
    a_lo = tl.maximum(PAD - x0, 0)
    a_hi = tl.minimum(BLOCK_W + (K - 1) * DIL, W + PAD - x0)
    for i in range(i_lo, i_hi):
        iy = offs_y + i * DIL - PAD
        row_ok = (iy >= 0) & (iy < H)
        for a0 in range(a_lo, a_hi, BLOCK_K):
            ix = x0 - PAD + a0 + offs_a
            a = tl.load(x_base + iy[:, None] * W + ix[None, :],
                        mask=row_ok[:, None] & ((ix >= 0) & (ix < W))[None, :], other=0.0)
            rel = a0 + offs_a[:, None] - offs_x[None, :]  # [BLOCK_K, BLOCK_W]: tap offset * DIL
            tap = rel // DIL
            t_ok = (rel >= 0) & (rel % DIL == 0) & (tap < K)
            t = tl.load(w_base + i * K + tap, mask=t_ok, other=0.0)
            acc += dot(a, t, PREC, UPCAST)
    if HAS_BIAS:
        acc += tl.load(BIAS + c).to(tl.float32)
    ox = x0 + offs_x
    tl.store(OUT + plane + offs_y[:, None] * W + ox[None, :], acc.to(OUT.dtype.element_ty),
             mask=(offs_y < H)[:, None] & (ox < W)[None, :])


@triton.jit
def _dw_wgrad_kernel(X, DY, PART, C, H, W, N_TH, N_TW, N_TILES, SPLITS,
                     K: tl.constexpr, DIL: tl.constexpr, PAD: tl.constexpr,
                     BLOCK_KK: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
                     PREC: tl.constexpr, UPCAST: tl.constexpr):
    s = tl.program_id(0)
    c = tl.program_id(1)
    offs_n = tl.arange(0, ROWS * COLS)
    r = offs_n // COLS
    xx = offs_n % COLS
    taps = tl.arange(0, BLOCK_KK)
    tap_ok = taps < K
    acc = tl.full([BLOCK_KK, BLOCK_KK], 0.0, tl.float32)
    # position tiles (image, row tile, column tile) numbered 0 .. N_TILES - 1; split s takes
    # s, s + SPLITS, ...: a fixed order per program
    for t in range(s, N_TILES, SPLITS):
        b = t // (N_TH * N_TW)
        rem = t % (N_TH * N_TW)
        yi = (rem // N_TW) * ROWS + r  # input row y'
        x = (rem % N_TW) * COLS + xx  # output column
        pos_ok = (yi < H) & (x < W)
        plane = (b * C + c).to(tl.int64) * H * W
        # dy[y' - i*DIL + P, x] as [taps i, positions]
        oy = yi[None, :] - taps[:, None] * DIL + PAD
        g = tl.load(DY + plane + oy * W + x[None, :],
                    mask=tap_ok[:, None] & pos_ok[None, :] & (oy >= 0) & (oy < H), other=0.0)
        # in[y', x + j*DIL - P] as [positions, taps j]
        ix = x[:, None] + taps[None, :] * DIL - PAD
        v = tl.load(X + plane + yi[:, None] * W + ix,
                    mask=pos_ok[:, None] & tap_ok[None, :] & (ix >= 0) & (ix < W), other=0.0)
        acc += dot(g, v, PREC, UPCAST)
    out = PART + (s * C + c) * K * K
    tl.store(out + taps[:, None] * K + taps[None, :], acc, mask=tap_ok[:, None] & tap_ok[None, :])


def check_config(config: Optional[Mapping]) -> None:
    """Raise on keys a launch configuration does not have and on tile sizes tl.dot cannot take."""
    conf = config or {}
    unknown = sorted(set(conf) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f'large_kernel triton: unknown launch configuration keys {unknown}; expected {CONFIG_KEYS}')
    for key in ('block_h', 'block_w', 'block_k'):
        v = conf.get(key, 16)
        if not isinstance(v, int) or v < 16 or v & (v - 1):
            raise ValueError(f'large_kernel triton: {key}={v!r} must be a power of two >= 16')
    n = conf.get('wgrad_rows', 1) * conf.get('wgrad_cols', 16)
    if n < 16 or n & (n - 1):
        raise ValueError(f"large_kernel triton: wgrad_rows * wgrad_cols = {n} must be a power of two >= 16 "
                         f"(got {conf.get('wgrad_rows')}, {conf.get('wgrad_cols')})")
    splits = conf.get('wgrad_splits', 1)
    if not isinstance(splits, int) or splits < 1:
        raise ValueError(f'large_kernel triton: wgrad_splits={splits!r} must be a positive integer')


def _conv_launch(dtype: torch.dtype, config: Optional[Mapping]) -> dict:
    """Forward / input-gradient tile. Half precision: 64 output rows (the rows of Hopper's
    warpgroup MMA) x 16 columns (few zeros in the banded weight tile); fp32 (FMA dots, operands in
    registers): 32 x 16. Chunks of 16 input columns: the band of a 16-wide tile is 16 + (K-1)*DIL
    columns (46 for K = 31), so larger chunks would mostly multiply zeros."""
    o = config or {}
    half = dtype != torch.float32
    return dict(BLOCK_H=o.get('block_h', 64 if half else 32), BLOCK_W=o.get('block_w', 16),
                BLOCK_K=o.get('block_k', 16), num_warps=o.get('num_warps', 4), num_stages=o.get('num_stages', 2))


def _wgrad_tile(config: Optional[Mapping]):
    """Weight-gradient positions per step: 2 input rows x 32 columns (64-long GEMM reduction;
    every gathered operand element is reused by the K taps of the other operand)."""
    o = config or {}
    return o.get('wgrad_rows', 2), o.get('wgrad_cols', 32)


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dilation: int,
          config: Optional[Mapping]) -> torch.Tensor:
    B, C, H, W = x.shape
    k = weight.shape[-1]
    out = torch.empty_like(x)
    meta = _conv_launch(x.dtype, config)
    n_th, n_tw = triton.cdiv(H, meta['BLOCK_H']), triton.cdiv(W, meta['BLOCK_W'])
    _dw_conv_kernel[(B * C, n_th * n_tw)](
        x, weight, bias if bias is not None else weight, out, C, H, W, n_tw,
        K=k, DIL=dilation, PAD=dilation * (k - 1) // 2, HAS_BIAS=bias is not None,
        PREC=precision(x.dtype), UPCAST=upcast(x), **meta)
    return out


def _wgrad(x: torch.Tensor, grad_out: torch.Tensor, k: int, dilation: int,
           config: Optional[Mapping]) -> torch.Tensor:
    """fp32 ``[C, 1, k, k]`` weight gradient: per-(split, channel) partials summed in order."""
    B, C, H, W = x.shape
    rows, cols = _wgrad_tile(config)
    n_th, n_tw = triton.cdiv(H, rows), triton.cdiv(W, cols)
    n_tiles = B * n_th * n_tw
    splits = (config or {}).get('wgrad_splits', max(1, min(n_tiles, triton.cdiv(WGRAD_PROGRAMS, C))))
    splits = min(splits, n_tiles)
    part = torch.empty(splits, C, k, k, device=x.device, dtype=torch.float32)
    _dw_wgrad_kernel[(splits, C)](
        x, grad_out, part, C, H, W, n_th, n_tw, n_tiles, splits,
        K=k, DIL=dilation, PAD=dilation * (k - 1) // 2, BLOCK_KK=max(16, triton.next_power_of_2(k)),
        ROWS=rows, COLS=cols, PREC=precision(x.dtype), UPCAST=upcast(x),
        num_warps=(config or {}).get('wgrad_warps', 4))
    return part.sum(0).unsqueeze(1)


class _LargeKernelTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, dilation, config):
        x = x.contiguous()
        weight = weight.contiguous()
        bias_c = bias.contiguous() if bias is not None else None
        ctx.save_for_backward(x, weight)
        ctx.meta = (dilation, config, bias is not None)
        return _conv(x, weight, bias_c, dilation, config)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        dilation, config, has_bias = ctx.meta
        grad_out = grad_out.to(x.dtype).contiguous()
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _conv(grad_out, weight.flip(-1, -2).contiguous(), None, dilation, config)
        if ctx.needs_input_grad[1]:
            gw = _wgrad(x, grad_out, weight.shape[-1], dilation, config).to(weight.dtype)
        if has_bias and ctx.needs_input_grad[2]:
            gb = grad_out.sum((0, 2, 3), dtype=torch.float32).to(weight.dtype)
        return gx, gw, gb, None, None


def limits_reason(x_shape, k: int, dilation: int, config: Optional[Mapping] = None) -> Optional[str]:
    """Why the kernels cannot take this shape (``None`` if they can): the grid limits (image x
    channel planes on axis 0, output tiles on axis 1; channels on axis 1 of the weight gradient)
    and 32-bit offsets inside one launch's tensors."""
    B, C, H, W = x_shape
    meta = _conv_launch(torch.float32, config)
    tiles = triton.cdiv(H, min(meta['BLOCK_H'], 32)) * triton.cdiv(W, meta['BLOCK_W'])
    if B * C > TRITON_GRID_X_MAX:
        return f'batch * channels = {B * C} exceeds the Triton grid limit {TRITON_GRID_X_MAX}'
    if tiles > TRITON_GRID_Y_MAX:
        return f'{tiles} output tiles of an {H}x{W} map exceed the Triton grid limit {TRITON_GRID_Y_MAX}'
    if C > TRITON_GRID_Y_MAX:
        return f'channels = {C} exceed the Triton grid limit {TRITON_GRID_Y_MAX}'
    return int32_offset_reason({'x': B * C * H * W})


def large_kernel_triton(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dilation: int,
                        config: Optional[Mapping] = None) -> torch.Tensor:
    """The depthwise convolution through the Triton kernels (validated inputs); ``config``: a
    launch configuration (``CONFIG_KEYS``), ``None`` for the defaults."""
    check_config(config)
    return _LargeKernelTriton.apply(x, weight, bias, dilation, dict(config) if config else None)
