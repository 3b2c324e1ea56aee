"""Buffer helpers shared by the fast backends (plain PyTorch: importing this never defines a
``@triton.jit`` function, so it is safe before ``TRITON_INTERPRET`` is set)."""
from __future__ import annotations

import torch


def _non_overlapping(shape, stride) -> bool:
    """Sufficient test that a strided layout maps distinct indices to distinct elements."""
    reach = 1
    for st, n in sorted((st, n) for n, st in zip(shape, stride) if n > 1):
        if st < reach:
            return False
        reach += st * (n - 1)
    return True


def grad_buffers(*ts: torch.Tensor):
    """Uninitialised gradient buffers with exactly the shapes and strides of ``ts`` (the kernels
    write gradients through the input strides).

    ``torch.empty_strided`` with the strides of a view into a packed projection (``q, k, v =
    qkv.unbind(...)``) allocates the whole packed extent for *each* view, three times the memory.
    Equally spaced, non-overlapping views of one storage with one shape and one set of strides
    (the packed case) therefore share one buffer, each gradient a view at its input's relative
    offset; anything else (including the same tensor passed twice) gets ``empty_strided``.
    """
    t0 = ts[0]
    if len(ts) > 1 and t0.numel() > 0 and all(
            t.untyped_storage().data_ptr() == t0.untyped_storage().data_ptr() and t.shape == t0.shape
            and t.stride() == t0.stride() and t.dtype == t0.dtype for t in ts[1:]):
        offsets = sorted(t.storage_offset() for t in ts)
        sep = offsets[1] - offsets[0]
        if all(b - a == sep for a, b in zip(offsets, offsets[1:])) and _non_overlapping(
                tuple(t0.shape) + (len(ts),), t0.stride() + (sep,)):
            extent = 1 + sep * (len(ts) - 1) + sum((n - 1) * st for n, st in zip(t0.shape, t0.stride()))
            buf = torch.empty(extent, dtype=t0.dtype, device=t0.device)
            return tuple(buf.as_strided(t.shape, t.stride(), t.storage_offset() - offsets[0]) for t in ts)
    return tuple(torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device) for t in ts)


def kernel_operand(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when the kernels can read it in place and write its gradient through its strides
    (last dim contiguous, no two indices on one element), else a contiguous copy.

    An expanded input (stride 0, e.g. keys shared by a batch through ``expand``) must be copied:
    its gradient buffer from :func:`grad_buffers` would alias the expanded positions, every program
    would write into the same elements, and the gradient would be one image's times the batch.
    """
    if t.stride(-1) == 1 and _non_overlapping(tuple(t.shape), t.stride()):
        return t
    return t.contiguous()
