"""Small Triton helpers shared by the attention kernels.

Reductions and zero-fills use core builtins (``tl.reduce`` with triton's own combine functions,
``tl.full``) instead of ``tl.max`` / ``tl.sum`` / ``tl.zeros``: those are ``@triton.jit`` library
functions, which the CPU interpreter cannot call when triton is imported before
``TRITON_INTERPRET=1`` is set (as happens inside a pytest run); on GPU ``tl.max`` / ``tl.sum``
lower to exactly these reductions.
"""
import torch
import triton
import triton.language as tl

MAX_COMBINE = tl.standard._elementwise_max
SUM_COMBINE = tl.standard._sum_combine


@triton.jit
def dot(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """``tl.dot``; with UPCAST the operands (already rounded to the input dtype) are widened to
    fp32 first, because the CPU interpreter of triton 3.8 computes bf16 dots wrongly."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision='ieee')
    return tl.dot(a, b, input_precision=PREC)


@triton.jit
def row_max(x):
    return tl.reduce(x, 1, MAX_COMBINE)


@triton.jit
def row_sum(x):
    return tl.reduce(x, 1, SUM_COMBINE)


@triton.jit
def online_softmax_step(m_i, l_i, acc, s, v, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """One key chunk of a streaming (flash-style) softmax: fold logits ``s [M, N]`` (-inf where
    not attended) and values ``v [N, Dv]`` into the running row max ``m_i``, normaliser ``l_i``
    and unnormalised output ``acc``; returns the three updated. A row with no attended key yet
    keeps ``m = -inf``: the shift is 0 there, so ``exp`` gives 0 instead of NaN."""
    m_new = tl.maximum(m_i, row_max(s))
    m_use = tl.where(m_new == float('-inf'), 0.0, m_new)
    alpha = tl.exp(m_i - m_use)
    p = tl.exp(s - m_use[:, None])
    l_i = l_i * alpha + row_sum(p)
    acc = acc * alpha[:, None] + dot(p.to(v.dtype), v, PREC, UPCAST)
    return m_new, l_i, acc


def precision(dtype: torch.dtype) -> str:
    """fp32 inputs use IEEE fp32 dots (no TF32), so the fp32 parity tolerances hold on GPU."""
    return 'ieee' if dtype == torch.float32 else 'tf32'


def upcast(t: torch.Tensor) -> bool:
    """Whether to widen bf16 dot operands (interpreter workaround, CPU tensors only)."""
    return t.dtype == torch.bfloat16 and t.device.type == 'cpu'


@triton.jit
def sum_axis(x, AXIS: tl.constexpr):
    return tl.reduce(x, AXIS, SUM_COMBINE)


def strides4(t: torch.Tensor):
    """Strides of the four outer dims of a ``[B, H, W, heads, D]`` tensor (D is contiguous)."""
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3)


@triton.jit
def _row_dot_kernel(DO, O, DELTA, n_rows, H, W, NHEADS, D,
                    sdb, sdy, sdx, sdh, sob, soy, sox, soh,
                    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    ok = rows < n_rows
    head = rows % NHEADS
    t = rows // NHEADS
    x = t % W
    t = t // W
    y = t % H
    b = t // H
    d = tl.arange(0, BLOCK_D)
    m = ok[:, None] & (d[None, :] < D)
    do = tl.load(DO + (b * sdb + y * sdy + x * sdx + head * sdh)[:, None] + d[None, :], mask=m, other=0.0)
    o = tl.load(O + (b * sob + y * soy + x * sox + head * soh)[:, None] + d[None, :], mask=m, other=0.0)
    tl.store(DELTA + rows, row_sum(do.to(tl.float32) * o.to(tl.float32)), mask=ok)


def row_dot(dout: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``delta = sum(dout * out, -1)`` in fp32 as ``[B, H*W, heads]`` for ``[B, H, W, heads, D]``
    inputs (last dim contiguous, any other strides), without the three full-size fp32 temporaries
    of ``(dout.float() * out.float()).sum(-1)`` (for Swin-T stage 1 at batch 32 those would be 110 MiB,
    the backward's peak)."""
    B, H, W, nh, D = out.shape
    n_rows = B * H * W * nh
    delta = torch.empty(B, H * W, nh, device=out.device, dtype=torch.float32)
    block_d = max(16, triton.next_power_of_2(D))
    block_r = max(16, min(128, 4096 // block_d))
    _row_dot_kernel[(triton.cdiv(n_rows, block_r),)](
        dout, out, delta, n_rows, H, W, nh, D, *strides4(dout), *strides4(out),
        BLOCK_R=block_r, BLOCK_D=block_d, num_warps=4)
    return delta
