"""Fused Triton kernels for window_extra attention, forward and backward.

Semantics and layouts are those of ``reference.py``: q, k, v, out ``[B, nW, T, heads, D]`` (any
strides with D contiguous), window ``w``'s ``T = P + N`` tokens its ``P`` extra tokens first; the
bias ``[heads, S, S]`` is the whole ``T x T`` table (``S = T``) or its window block (``S = N``),
read in place through its own strides: the pair ``(i, j)`` of a window takes entry
``(i - OFF, j - OFF)`` with ``OFF = T - S``, and none when either index is negative (a pair with an
extra token). The block is never padded to ``T x T``, nor its gradient.

The structure is that of the Swin window kernels (``densekit/ops/window/triton.py``) with the
window's tokens contiguous along one axis instead of a 2-D patch of the map:

* The ``T`` tokens of a window are cut into ``BLOCK``-token chunks (:func:`_tiling`: one chunk up
  to 64 tokens in half precision, e.g. FasterViT's 4 carrier + 49 window tokens).
* Forward: a program owns one query chunk of one window and one head and streams the window's
  key chunks with an online softmax; it writes the output and the log-sum-exp.
* dK / dV: a program owns one key chunk and one head of a group of windows and streams the
  window's query chunks in the transposed orientation (``S^T = K Q^T``, ``dP^T = V dO^T``), so
  every ``tl.trans`` is applied to a tile loaded from memory, never to a dot result (the sm_90
  miscompile rule, ``tests/ops/test_triton_trans_rule.py``). A key belongs to exactly one window,
  so dK / dV need no cross-program reduction and are deterministic.
* dQ: with a single chunk the dK / dV program also has every query and computes
  ``dQ^T = K^T dS^T``; otherwise a separate kernel streams key chunks in the normal orientation.
* dBias (only when the bias needs a gradient): the bias is shared by every window of every image,
  so the dK / dV program sums dS over its group of windows (images and windows flattened) into
  ``[groups, heads, S, S]`` (each program owns its key columns: no atomics), and the groups are
  summed outside the kernel. Groups keep about ``min_programs`` programs in flight.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Optional

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from densekit.ops._buffers import grad_buffers, kernel_operand
from densekit.ops._triton_utils import dot, online_softmax_step, precision, row_dot, strides4, upcast


@triton.jit
def _bias_mask(s, qt, qok, kt, kok, bias_ptr, s_bi, s_bj, OFF, HAS_BIAS: tl.constexpr):
    """Add the bias to scaled logits ``s`` and set padding pairs to -inf. The query and key token
    vectors come broadcast to the orientation of ``s`` (``[:, None]`` / ``[None, :]`` for S, the
    other way round for S^T)."""
    allowed = qok & kok
    if HAS_BIAS:
        bi = qt - OFF
        bj = kt - OFF
        has = allowed & (bi >= 0) & (bj >= 0)  # pairs with an extra token get no window-block bias
        s += tl.load(bias_ptr + bi * s_bi + bj * s_bj, mask=has, other=0.0).to(tl.float32)
    return tl.where(allowed, s, float('-inf'))


@triton.jit
def _key_chunk(q, K, V, k_base, v_base, skt, svt, start, T, offs_d, dok, qt, qok, bias_ptr, s_bi, s_bj, OFF,
               scale, BLOCK: tl.constexpr, HAS_BIAS: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Load the key / value chunk of a window starting at token ``start``; return it with the
    query chunk's biased, masked logits against it (``[BLOCK, BLOCK]``, -inf for padding)."""
    kt = start + tl.arange(0, BLOCK)
    kok = kt < T
    km = kok[:, None] & dok
    k = tl.load(K + k_base + kt[:, None] * skt + offs_d[None, :], mask=km, other=0.0)
    v = tl.load(V + v_base + kt[:, None] * svt + offs_d[None, :], mask=km, other=0.0)
    s = dot(q, tl.trans(k), PREC, UPCAST) * scale
    s = _bias_mask(s, qt[:, None], qok[:, None], kt[None, :], kok[None, :], bias_ptr, s_bi, s_bj, OFF, HAS_BIAS)
    return k, v, s


@triton.jit
def _query_chunk(Q, sqb, sqw, sqt, sqh, NW, T, D, BLOCK: tl.constexpr, CHUNKS: tl.constexpr,
                 BLOCK_D: tl.constexpr):
    """Setup of a (window x query chunk, head) program of the forward / dQ kernels: its image,
    window, head, query tokens and the loaded query chunk."""
    pid = tl.program_id(0)
    head = tl.program_id(1)
    bw = pid // CHUNKS
    b = bw // NW
    w = bw % NW
    qt = (pid % CHUNKS) * BLOCK + tl.arange(0, BLOCK)
    qok = qt < T
    offs_d = tl.arange(0, BLOCK_D)
    dok = offs_d[None, :] < D
    qm = qok[:, None] & dok
    q_off = b * sqb + w * sqw + qt[:, None] * sqt + head * sqh + offs_d[None, :]
    q = tl.load(Q + q_off, mask=qm, other=0.0)
    return bw, b, w, head, qt, qok, offs_d, dok, qm, q_off, q


@triton.jit
def _window_extra_fwd(Q, K, V, BIAS, O, LSE,
                      sqb, sqw, sqt, sqh, skb, skw, skt, skh, svb, svw, svt, svh, sob, sow, sot, soh,
                      s_bh, s_bi, s_bj, NW, T, OFF, NHEADS, D, scale,
                      BLOCK: tl.constexpr, CHUNKS: tl.constexpr, BLOCK_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                      PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Program (window x query chunk, head): output and log-sum-exp of ``BLOCK`` queries."""
    bw, b, w, head, qt, qok, offs_d, dok, qm, q_off, q = _query_chunk(Q, sqb, sqw, sqt, sqh, NW, T, D,
                                                                      BLOCK, CHUNKS, BLOCK_D)
    k_base = b * skb + w * skw + head * skh
    v_base = b * svb + w * svw + head * svh
    bias_ptr = BIAS + head * s_bh
    m_i = tl.full([BLOCK], float('-inf'), tl.float32)
    l_i = tl.full([BLOCK], 0.0, tl.float32)
    acc = tl.full([BLOCK, BLOCK_D], 0.0, tl.float32)
    for j in range(0, CHUNKS):
        k, v, s = _key_chunk(q, K, V, k_base, v_base, skt, svt, j * BLOCK, T, offs_d, dok, qt, qok, bias_ptr,
                             s_bi, s_bj, OFF, scale, BLOCK, HAS_BIAS, PREC, UPCAST)
        m_i, l_i, acc = online_softmax_step(m_i, l_i, acc, s, v, PREC, UPCAST)  # padding rows keep -inf
    m_i = tl.where(qok, m_i, 0.0)
    l_i = tl.where(qok, l_i, 1.0)
    tl.store(O + b * sob + w * sow + qt[:, None] * sot + head * soh + offs_d[None, :],
             (acc / l_i[:, None]).to(O.dtype.element_ty), mask=qm)
    tl.store(LSE + (bw * T + qt) * NHEADS + head, m_i + tl.log(l_i), mask=qok)


@triton.jit
def _window_extra_dkdv(Q, K, V, BIAS, DO, LSE, DELTA, DQ, DK, DV, DS,
                       sqb, sqw, sqt, sqh, skb, skw, skt, skh, svb, svw, svt, svh, sdb, sdw, sdt, sdh,
                       s_bh, s_bi, s_bj, BW, NW, T, OFF, NHEADS, D, G_PER, scale,
                       BLOCK: tl.constexpr, CHUNKS: tl.constexpr, BLOCK_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                       WRITE_DS: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Program (group of G_PER windows x key chunk, head): dK, dV of those keys in each window of
    the group (and dQ when a window is one chunk); with WRITE_DS the logit gradients of its key
    columns, summed over the group, go to DS ``[groups, heads, S, S]`` (bias pairs only)."""
    pid = tl.program_id(0)
    head = tl.program_id(1)
    group = pid // CHUNKS
    ONE_CHUNK: tl.constexpr = CHUNKS == 1
    kt = (pid % CHUNKS) * BLOCK + tl.arange(0, BLOCK)
    kok = kt < T
    offs_d = tl.arange(0, BLOCK_D)
    dok = offs_d[None, :] < D
    km = kok[:, None] & dok
    bias_ptr = BIAS + head * s_bh
    S = T - OFF
    ds_base = DS + (group * NHEADS + head) * S * S
    ds_sum = tl.full([BLOCK, BLOCK], 0.0, tl.float32)  # dS^T summed over the group (one chunk only)
    if ONE_CHUNK:
        # The bias depends on no window: form the [keys, queries] tile once per program (in the
        # bias's own dtype, -inf for padding; exact, since the bias is stored in that dtype)
        # instead of gathering it again for each window of the group.
        qt = tl.arange(0, BLOCK)
        qok = qt < T
        bias_t = _bias_mask(tl.full([BLOCK, BLOCK], 0.0, tl.float32), qt[None, :], qok[None, :], kt[:, None],
                            kok[:, None], bias_ptr, s_bi, s_bj, OFF, HAS_BIAS)
        bias_t = bias_t.to(BIAS.dtype.element_ty)
    for bw in range(group * G_PER, tl.minimum(group * G_PER + G_PER, BW)):
        b = bw // NW
        w = bw % NW
        k_off = b * skb + w * skw + kt[:, None] * skt + head * skh + offs_d[None, :]
        v_off = b * svb + w * svw + kt[:, None] * svt + head * svh + offs_d[None, :]
        k = tl.load(K + k_off, mask=km, other=0.0)
        v = tl.load(V + v_off, mask=km, other=0.0)
        dk = tl.full([BLOCK, BLOCK_D], 0.0, tl.float32)
        dv = tl.full([BLOCK, BLOCK_D], 0.0, tl.float32)
        for i in range(0, CHUNKS):
            if not ONE_CHUNK:
                qt = i * BLOCK + tl.arange(0, BLOCK)
                qok = qt < T
            qm = qok[:, None] & dok
            q = tl.load(Q + b * sqb + w * sqw + qt[:, None] * sqt + head * sqh + offs_d[None, :], mask=qm, other=0.0)
            do = tl.load(DO + b * sdb + w * sdw + qt[:, None] * sdt + head * sdh + offs_d[None, :], mask=qm,
                         other=0.0)
            row = (bw * T + qt) * NHEADS + head
            lse = tl.load(LSE + row, mask=qok, other=0.0)
            delta = tl.load(DELTA + row, mask=qok, other=0.0)
            st = dot(k, tl.trans(q), PREC, UPCAST) * scale  # [keys, queries]
            if ONE_CHUNK:
                st += bias_t.to(tl.float32)
            else:
                st = _bias_mask(st, qt[None, :], qok[None, :], kt[:, None], kok[:, None], bias_ptr, s_bi, s_bj,
                                OFF, HAS_BIAS)
            pt = tl.exp(st - lse[None, :])
            dv += dot(pt.to(do.dtype), do, PREC, UPCAST)
            dpt = dot(v, tl.trans(do), PREC, UPCAST)
            dst = pt * (dpt - delta[None, :])
            dk += dot(dst.to(q.dtype), q, PREC, UPCAST)
            if ONE_CHUNK:
                # every query of the window is here: dQ^T = K^T dS^T (k is a loaded tile)
                dqt = dot(tl.trans(k), dst.to(k.dtype), PREC, UPCAST) * scale  # [D, queries]
                dqt_ptr = DQ + b * sqb + w * sqw + qt[None, :] * sqt + head * sqh + offs_d[:, None]
                tl.store(dqt_ptr, dqt.to(DQ.dtype.element_ty), mask=qok[None, :] & (offs_d[:, None] < D))
            if WRITE_DS:
                if ONE_CHUNK:
                    ds_sum += dst
                else:
                    # this program alone owns these key columns: a plain read-add-write, deterministic
                    has_t = kok[:, None] & qok[None, :] & (kt[:, None] >= OFF) & (qt[None, :] >= OFF)
                    ds_ptr = ds_base + (qt[None, :] - OFF) * S + (kt[:, None] - OFF)
                    tl.store(ds_ptr, tl.load(ds_ptr, mask=has_t, other=0.0) + dst, mask=has_t)
        tl.store(DK + k_off, (dk * scale).to(DK.dtype.element_ty), mask=km)
        tl.store(DV + v_off, dv.to(DV.dtype.element_ty), mask=km)
    if WRITE_DS:
        if ONE_CHUNK:
            has_t = kok[:, None] & qok[None, :] & (kt[:, None] >= OFF) & (qt[None, :] >= OFF)
            tl.store(ds_base + (qt[None, :] - OFF) * S + (kt[:, None] - OFF), ds_sum, mask=has_t)


@triton.jit
def _window_extra_dq(Q, K, V, BIAS, DO, LSE, DELTA, DQ,
                     sqb, sqw, sqt, sqh, skb, skw, skt, skh, svb, svw, svt, svh, sdb, sdw, sdt, sdh,
                     s_bh, s_bi, s_bj, NW, T, OFF, NHEADS, D, scale,
                     BLOCK: tl.constexpr, CHUNKS: tl.constexpr, BLOCK_D: tl.constexpr, HAS_BIAS: tl.constexpr,
                     PREC: tl.constexpr, UPCAST: tl.constexpr):
    """Program (window x query chunk, head): dQ of ``BLOCK`` queries, streaming the window's key
    chunks (windows of more than one chunk)."""
    bw, b, w, head, qt, qok, offs_d, dok, qm, q_off, q = _query_chunk(Q, sqb, sqw, sqt, sqh, NW, T, D,
                                                                      BLOCK, CHUNKS, BLOCK_D)
    do = tl.load(DO + b * sdb + w * sdw + qt[:, None] * sdt + head * sdh + offs_d[None, :], mask=qm, other=0.0)
    row = (bw * T + qt) * NHEADS + head
    lse = tl.load(LSE + row, mask=qok, other=0.0)
    delta = tl.load(DELTA + row, mask=qok, other=0.0)
    k_base = b * skb + w * skw + head * skh
    v_base = b * svb + w * svw + head * svh
    bias_ptr = BIAS + head * s_bh
    dq = tl.full([BLOCK, BLOCK_D], 0.0, tl.float32)
    for j in range(0, CHUNKS):
        k, v, s = _key_chunk(q, K, V, k_base, v_base, skt, svt, j * BLOCK, T, offs_d, dok, qt, qok, bias_ptr,
                             s_bi, s_bj, OFF, scale, BLOCK, HAS_BIAS, PREC, UPCAST)
        p = tl.exp(s - lse[:, None])
        dp = dot(do, tl.trans(v), PREC, UPCAST)
        ds = p * (dp - delta[:, None])
        dq += dot(ds.to(k.dtype), k, PREC, UPCAST)
    tl.store(DQ + q_off, (dq * scale).to(DQ.dtype.element_ty), mask=qm)


# programs the backward keeps in flight when it sums dS over windows (~8 per SM of an H100 / H200)
MIN_PROGRAMS = 1024
# Keys of a launch configuration (``window_extra_triton(config=...)``,
# ``window_extra_attention(triton_config=...)``): the ``_Tiling`` fields block, warps, kv_warps,
# kv_stages, dq_stages, fwd_stages (chunks follows from block) and min_programs (replaces
# ``MIN_PROGRAMS``).
CONFIG_KEYS = ('block', 'warps', 'kv_warps', 'kv_stages', 'dq_stages', 'fwd_stages', 'min_programs')


def check_config(config: Optional[Mapping]) -> None:
    """Raise on keys a launch configuration does not have (a typo would otherwise be ignored)."""
    unknown = sorted(set(config or {}) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f'window_extra triton: unknown launch configuration keys {unknown}; expected {CONFIG_KEYS}')
    block = (config or {}).get('block')
    if block is not None and (block < 16 or block & (block - 1)):
        raise ValueError(f'window_extra triton: block must be a power of two >= 16, got {block}')


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
    """Launch configuration for windows of ``n_tokens`` tokens. The per-program tiles are those of
    the Swin window kernels (whose ``_tiling`` explains the sizes against sm_90's registers and
    shared memory): 64-token chunks on the tensor cores up to head_dim 64, 32 beyond; the exact
    fp32 dots run on the FMA units with their operands in registers, so fp32 takes 32 tokens (16
    beyond head_dim 32). FasterViT's 4 + 49 = 53 tokens are one chunk in half precision. In fp32
    the dK / dV kernel runs 8 warps (4 spilled 8 B for FasterViT's 384-token carrier-token
    attention at head_dim 48 on sm_90) and the dQ kernel does not prefetch the next key chunk
    (two stages spilled 8 B at head_dim 48, none with one)."""
    block_d = max(16, triton.next_power_of_2(head_dim))
    if dtype == torch.float32:
        cap = 32 if block_d <= 32 else 16
    else:
        cap = 64 if block_d <= 64 else 32
    o = config or {}
    block = o.get('block', max(16, min(cap, triton.next_power_of_2(n_tokens))))
    chunks = triton.cdiv(n_tokens, block)
    fp32 = dtype == torch.float32
    t = _Tiling(block, chunks, block_d, 4, 8 if block == 64 or fp32 else 4, 3 if chunks == 1 else 1,
                2 if block_d <= 64 and not fp32 else 1)
    return t._replace(**{k: v for k, v in o.items() if k in t._fields and k not in ('block', 'chunks', 'block_d')})


def window_groups(n_windows: int, programs_per_window: int, config: Optional[Mapping] = None):
    """(groups, windows per group) of the backward that sums dS over windows: about
    ``min_programs`` programs in flight, each summing over as few windows as that allows."""
    min_programs = (config or {}).get('min_programs', MIN_PROGRAMS)
    g_per = triton.cdiv(n_windows, min(n_windows, triton.cdiv(min_programs, programs_per_window)))
    return triton.cdiv(n_windows, g_per), g_per


def ds_shape(B: int, nW: int, T: int, heads: int, head_dim: int, side: int, dtype: torch.dtype,
             config: Optional[Mapping] = None):
    """Shape ``[groups, heads, S, S]`` of the fp32 dS buffer the backward fills when the bias
    (side ``S``) needs a gradient, and the windows per group (the probe checks its size)."""
    chunks = _tiling(T, head_dim, dtype, config).chunks
    groups, g_per = window_groups(B * nW, chunks * heads, config)
    return (groups, heads, side, side), g_per


def _bias_args(bias: Optional[torch.Tensor], T: int):
    """Strides ``(head, row, column)`` of the bias and its offset ``OFF = T - S``."""
    if bias is None:
        return (0, 0, 0), 0
    return (bias.stride(0), bias.stride(1), bias.stride(2)), T - bias.shape[-1]


class WindowExtraAttentionTriton(torch.autograd.Function):
    """Autograd wrapper; inputs validated ``[B, nW, T, heads, D]``."""

    @staticmethod
    def forward(ctx, q, k, v, bias, scale, config):
        B, nW, T, nh, D = q.shape
        if nh > 65535:
            raise ValueError(f'window_extra_attention triton: heads = {nh} exceeds the grid limit 65535')
        t = _tiling(T, D, q.dtype, config)
        out = torch.empty_like(q)
        lse = torch.empty(B, nW * T, nh, device=q.device, dtype=torch.float32)
        has_bias = bias is not None
        bs, off = _bias_args(bias, T)
        _window_extra_fwd[(B * nW * t.chunks, nh)](
            q, k, v, bias if has_bias else q, out, lse, *strides4(q), *strides4(k), *strides4(v), *strides4(out),
            *bs, nW, T, off, nh, D, scale, BLOCK=t.block, CHUNKS=t.chunks, BLOCK_D=t.block_d, HAS_BIAS=has_bias,
            PREC=precision(q.dtype), UPCAST=upcast(q), num_warps=t.warps, num_stages=t.fwd_stages)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.meta = (scale, has_bias, config)
        return out

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: double backward is an error
    def backward(ctx, dout):
        q, k, v, bias, out, lse = ctx.saved_tensors
        scale, has_bias, config = ctx.meta
        B, nW, T, nh, D = q.shape
        t = _tiling(T, D, q.dtype, config)
        dout = dout.contiguous()
        delta = row_dot(dout, out)  # [B, nW * T, heads], the rows of the log-sum-exp
        # gradients are written with the strides of q / k / v (which may be views into a packed qkv)
        dq, dk, dv = grad_buffers(q, k, v)
        need_dbias = has_bias and ctx.needs_input_grad[3]
        bs, off = _bias_args(bias, T)
        if need_dbias:
            shape, g_per = ds_shape(B, nW, T, nh, D, bias.shape[-1], q.dtype, config)
            groups = shape[0]
            ds = torch.zeros(shape, device=q.device, dtype=torch.float32)
        else:  # one window per program, no dS buffer (the kernel does not write it)
            groups, g_per, ds = B * nW, 1, lse
        common = dict(BLOCK=t.block, CHUNKS=t.chunks, BLOCK_D=t.block_d, HAS_BIAS=has_bias,
                      PREC=precision(q.dtype), UPCAST=upcast(q))
        strides = (*strides4(q), *strides4(k), *strides4(v), *strides4(dout), *bs)
        b_arg = bias if has_bias else q
        _window_extra_dkdv[(groups * t.chunks, nh)](
            q, k, v, b_arg, dout, lse, delta, dq, dk, dv, ds, *strides, B * nW, nW, T, off, nh, D, g_per, scale,
            WRITE_DS=need_dbias, num_warps=t.kv_warps, num_stages=t.kv_stages, **common)
        if t.chunks > 1:
            _window_extra_dq[(B * nW * t.chunks, nh)](
                q, k, v, b_arg, dout, lse, delta, dq, *strides, nW, T, off, nh, D, scale,
                num_warps=t.warps, num_stages=t.dq_stages, **common)
        dbias = ds.sum(0).to(bias.dtype) if need_dbias else None
        return dq, dk, dv, dbias, None, None


def window_extra_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor],
                        scale: float, config: Optional[Mapping] = None) -> torch.Tensor:
    """window_extra attention through the fused Triton kernels (validated inputs; ``bias``
    ``[heads, S, S]`` with ``S`` the window's token count or its window block); ``config``: a
    launch configuration (``CONFIG_KEYS``), ``None`` for the defaults."""
    check_config(config)
    q, k, v = (kernel_operand(t) for t in (q, k, v))
    if bias is not None and bias.dtype != q.dtype:
        bias = bias.to(q.dtype)
    return WindowExtraAttentionTriton.apply(q, k, v, bias, float(scale), config)
