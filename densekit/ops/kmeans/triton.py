"""Triton kernel for k-means cross-attention: argmax over the clusters fused with the one-hot
matmul, forward; the backward is a gather.

Semantics as ``reference.py``: mask logits ``[B, Q, HW]``, values ``[B, C, HW]``, output
``[B, C, Q]``. One program per (image, cluster block, channel block, pixel split) walks the pixel
blocks of its split: it loads the logits of all ``Q`` clusters for ``BLOCK_P`` pixels, takes the
argmax over the clusters in registers (ties -> the lowest index, NaN counts as the largest: as
``torch.argmax``), builds the transposed one-hot tile ``[BLOCK_P, BLOCK_Q]`` of its cluster block
from the indices and accumulates ``value [BLOCK_C, BLOCK_P] x one_hot [BLOCK_P, BLOCK_Q]`` with
``tl.dot``: the output layout ``[C, Q]`` directly, no transpose, and the ``[B, Q, HW]`` one-hot
never exists in memory. The one-hot is exact in every dtype, so the products are the values
themselves and the fp32 accumulator holds the sums (IEEE fp32 dots for fp32 values, no TF32).

A single (image, cluster block, channel block) is a handful of programs for kMaX's 128 clusters
and 256 channels, so the pixels are split: each split writes its own fp32 partial ``[C, Q]``
and the partials are summed in a fixed order afterwards (no atomics; the split count depends on
the shape only, so the result is the same on every device and run). The programs of cluster
block 0 / channel block 0 also store each pixel's index when a backward will need it:
``d value[b, c, p] = d out[b, c, index[b, p]]`` is then one ``torch.gather``. The logits get no
gradient (the official detaches the assignment).
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from densekit.ops._backend import TRITON_GRID_X_MAX, TRITON_GRID_Y_MAX, int32_offset_reason
from densekit.ops._triton_utils import MAX_COMBINE, dot, precision, upcast

# Keys of a launch configuration (``kmeans_triton(config=...)``, ``kmeans_attention(
# triton_config=...)``): the cluster / channel / pixel tile (``block_q``, ``block_c``, ``block_p``;
# powers of two >= 16, tl.dot's minimum), the number of pixel splits (``splits``), ``num_warps``
# and ``num_stages``.
CONFIG_KEYS = ('block_q', 'block_c', 'block_p', 'splits', 'num_warps', 'num_stages')
# Programs the pixel split aims for (images x cluster blocks x channel blocks x splits): a few
# per SM of an H100 (132 SMs). Derived from the shape only (deterministic summation order).
TARGET_PROGRAMS = 512
# Every program holds the logits of all clusters for a block of pixels in registers.
MAX_QUERIES = 1024
MIN_COMBINE = tl.standard._elementwise_min


@triton.jit
def _argmax_clusters(lg, offs_qa, Q_ALL: tl.constexpr):
    """``[BLOCK_P]`` argmax over axis 0 of the logit tile ``lg [Q_ALL, BLOCK_P]`` as
    ``torch.argmax``: a NaN is larger than everything (the first NaN wins), else the first
    maximum. Padded clusters hold -inf and have indices >= Q, so they never win."""
    is_nan = lg != lg
    first_nan = tl.reduce(tl.where(is_nan, offs_qa[:, None], Q_ALL), 0, MIN_COMBINE)
    clean = tl.where(is_nan, float('-inf'), lg)
    top = tl.reduce(clean, 0, MAX_COMBINE)
    first_top = tl.reduce(tl.where(clean == top[None, :], offs_qa[:, None], Q_ALL), 0, MIN_COMBINE)
    return tl.where(first_nan < Q_ALL, first_nan, first_top)


@triton.jit
def _kmeans_fwd(LOGITS, V, PART, IDX, B, Q, C, HW, N_QB, N_CB, P_PER_SPLIT,
                Q_ALL: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
                WRITE_IDX: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    pid = tl.program_id(0)  # (image, cluster block, channel block), channel block fastest
    split = tl.program_id(1)
    cb = pid % N_CB
    qb = (pid // N_CB) % N_QB
    b = pid // (N_CB * N_QB)
    offs_qa = tl.arange(0, Q_ALL)  # every cluster, for the argmax
    offs_q = qb * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    qa_ok = offs_qa < Q
    c_ok = offs_c < C
    l_base = LOGITS + b.to(tl.int64) * Q * HW
    v_base = V + b.to(tl.int64) * C * HW
    acc = tl.full([BLOCK_C, BLOCK_Q], 0.0, tl.float32)
    p_start = split * P_PER_SPLIT
    p_end = tl.minimum(p_start + P_PER_SPLIT, HW)
    for p0 in range(p_start, p_end, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        p_ok = offs_p < p_end
        lg_ok = qa_ok[:, None] & p_ok[None, :]
        lg = tl.load(l_base + offs_qa[:, None] * HW + offs_p[None, :], mask=lg_ok, other=0.0).to(tl.float32)
        lg = tl.where(lg_ok, lg, float('-inf'))
        idx = _argmax_clusters(lg, offs_qa, Q_ALL)
        if WRITE_IDX:
            if (qb == 0) & (cb == 0):
                tl.store(IDX + b.to(tl.int64) * HW + offs_p, idx.to(tl.int64), mask=p_ok)
        v = tl.load(v_base + offs_c[:, None] * HW + offs_p[None, :], mask=c_ok[:, None] & p_ok[None, :],
                    other=0.0)
        one_hot = tl.where((idx[:, None] == offs_q[None, :]) & p_ok[:, None], 1.0, 0.0).to(v.dtype)
        acc += dot(v, one_hot, PREC, UPCAST)
    out = PART + ((split * B + b).to(tl.int64) * C + offs_c[:, None]) * Q + offs_q[None, :]
    tl.store(out, acc, mask=c_ok[:, None] & (offs_q < Q)[None, :])


def check_config(config: Optional[Mapping]) -> None:
    """Raise on keys a launch configuration does not have and on tile sizes tl.dot cannot take."""
    conf = config or {}
    unknown = sorted(set(conf) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f'kmeans triton: unknown launch configuration keys {unknown}; expected {CONFIG_KEYS}')
    for key in ('block_q', 'block_c', 'block_p'):
        v = conf.get(key, 16)
        if isinstance(v, bool) or not isinstance(v, int) or v < 16 or v & (v - 1):
            raise ValueError(f'kmeans triton: {key}={v!r} must be a power of two >= 16')
    for key in ('splits', 'num_warps', 'num_stages'):
        v = conf.get(key, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f'kmeans triton: {key}={v!r} must be a positive integer')


def _launch(Q: int, C: int, HW: int, B: int, dtype: torch.dtype, config: Optional[Mapping]) -> dict:
    """Tiles and split count. All of kMaX's 128 clusters in one block (the argmax is then done
    once per channel block, not once per cluster block too) and 64 channels, with 8 warps: the
    fp32 accumulator ``[64, 128]``, the logit tile ``[Q, BLOCK_P]`` and its argmax reductions
    then fit the registers without spills (compiled for sm_90: ``tools/dev/triton_compile.py``).
    Pixel block: 64 in half precision (the reduction depth of one tensor-core step; the logit tile
    shrinks for more clusters to stay at 8K elements), 16 for fp32 (the FMA dot holds its
    operands in registers; 32 or more spill). Splits: enough programs for ``TARGET_PROGRAMS``, at
    least one pixel block each."""
    o = config or {}
    q_all = max(16, triton.next_power_of_2(Q))
    block_q = o.get('block_q', min(q_all, 128))
    block_c = o.get('block_c', min(max(16, triton.next_power_of_2(C)), 64))
    block_p = o.get('block_p', 16 if dtype == torch.float32 else max(16, min(64, 8192 // q_all)))
    n_qb, n_cb = triton.cdiv(Q, block_q), triton.cdiv(C, block_c)
    blocks = triton.cdiv(HW, block_p)
    splits = o.get('splits', triton.cdiv(TARGET_PROGRAMS, B * n_qb * n_cb))
    splits = max(1, min(splits, blocks, TRITON_GRID_Y_MAX))
    per_split = triton.cdiv(blocks, splits) * block_p
    return dict(Q_ALL=q_all, BLOCK_Q=block_q, BLOCK_C=block_c, BLOCK_P=block_p, n_qb=n_qb, n_cb=n_cb,
                splits=triton.cdiv(HW, per_split), per_split=per_split,
                num_warps=o.get('num_warps', 8), num_stages=o.get('num_stages', 2))


def _forward(mask_logits: torch.Tensor, value: torch.Tensor, write_index: bool, config: Optional[Mapping]):
    """``[B, C, Q]`` in the value's dtype and, with ``write_index``, the ``[B, HW]`` assignment."""
    B, Q, HW = mask_logits.shape
    C = value.shape[1]
    m = _launch(Q, C, HW, B, value.dtype, config)
    part = torch.empty(m['splits'], B, C, Q, device=value.device, dtype=torch.float32)
    index = torch.empty(B, HW, device=value.device, dtype=torch.int64) if write_index else part
    _kmeans_fwd[(B * m['n_qb'] * m['n_cb'], m['splits'])](
        mask_logits, value, part, index, B, Q, C, HW, m['n_qb'], m['n_cb'], m['per_split'],
        Q_ALL=m['Q_ALL'], BLOCK_Q=m['BLOCK_Q'], BLOCK_C=m['BLOCK_C'], BLOCK_P=m['BLOCK_P'],
        WRITE_IDX=write_index, PREC=precision(value.dtype), UPCAST=upcast(value),
        num_warps=m['num_warps'], num_stages=m['num_stages'])
    out = part[0] if m['splits'] == 1 else part.sum(0)
    return out.to(value.dtype), (index if write_index else None)


class _KMeansTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mask_logits, value, config):
        out, index = _forward(mask_logits.contiguous(), value.contiguous(), ctx.needs_input_grad[1], config)
        ctx.save_for_backward(index)
        ctx.value_dtype = value.dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        (index,) = ctx.saved_tensors
        grad_value = None
        if ctx.needs_input_grad[1]:
            grad_out = grad_out.to(ctx.value_dtype)
            grad_value = grad_out.gather(2, index.unsqueeze(1).expand(-1, grad_out.shape[1], -1))
        return None, grad_value, None


def limits_reason(logits_shape, channels: int, dtype: torch.dtype,
                  config: Optional[Mapping] = None) -> Optional[str]:
    """Why the kernel cannot take this shape (``None`` if it can): the clusters held in registers,
    the grid (image x cluster x channel blocks on axis 0) and 32-bit offsets inside one image."""
    B, Q, HW = logits_shape
    if Q > MAX_QUERIES:
        return (f'{Q} clusters exceed {MAX_QUERIES} (the kernel holds the logits of every cluster for a '
                'pixel block in registers)')
    m = _launch(Q, channels, HW, B, dtype, config)
    if B * m['n_qb'] * m['n_cb'] > TRITON_GRID_X_MAX:
        return f"{B * m['n_qb'] * m['n_cb']} (image, cluster, channel) blocks exceed the Triton grid limit"
    return int32_offset_reason({'mask_logits (one image)': Q * HW, 'value (one image)': channels * HW,
                                'partial sums': m['splits'] * B * channels * Q})


def kmeans_triton(mask_logits: torch.Tensor, value: torch.Tensor, config: Optional[Mapping] = None) -> torch.Tensor:
    """k-means cross-attention through the Triton kernel (validated inputs); ``config``: a launch
    configuration (``CONFIG_KEYS``), ``None`` for the defaults. The logits get no gradient."""
    check_config(config)
    return _KMeansTriton.apply(mask_logits.detach(), value, dict(config) if config else None)
