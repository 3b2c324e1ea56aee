"""Small Triton helpers shared by the attention kernels.

Reductions and zero-fills use core builtins (``tl.reduce`` with triton's own combine functions,
``tl.full``) instead of ``tl.max`` / ``tl.sum`` / ``tl.zeros``: those are ``@triton.jit`` library
functions, which the CPU interpreter cannot call when triton was imported before
``TRITON_INTERPRET=1`` was set (as happens inside a test session); on GPU ``tl.max`` / ``tl.sum``
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


def precision(dtype: torch.dtype) -> str:
    """fp32 inputs use IEEE fp32 dots (no TF32), so the fp32 parity tolerances hold on GPU."""
    return 'ieee' if dtype == torch.float32 else 'tf32'


def upcast(t: torch.Tensor) -> bool:
    """Whether to widen bf16 dot operands (interpreter workaround, CPU tensors only)."""
    return t.dtype == torch.bfloat16 and t.device.type == 'cpu'


@triton.jit
def sum_axis(x, AXIS: tl.constexpr):
    return tl.reduce(x, AXIS, SUM_COMBINE)

