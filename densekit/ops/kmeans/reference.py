"""Reference k-means cross-attention: the official one-hot form, the specification.

kMaX-DeepLab (Yu et al., "k-means Mask Transformer", ECCV 2022) replaces the softmax over pixels
of cross-attention by a hard assignment: for mask logits ``[B, Q, HW]`` (Q cluster centres, HW
pixels) and pixel values ``[B, C, HW]``,

    a[b, p] = argmax_q logits[b, q, p]            (ties -> lowest q; NaN counts as largest, as torch.argmax)
    out[b, c, q] = sum_{p : a[b, p] = q} value[b, c, p]

i.e. ``out = value @ one_hot(a)^T``. The assignment carries no gradient (the official detaches
it), so ``d value[b, c, p] = d out[b, c, a[b, p]]`` and the logits get none. Computed in the
value's dtype with autocast off (the official runs this update outside autocast).

The reference is this form on every device. An index form (``scatter_add`` of each pixel's value
into its cluster's slot, ``benchmarks/kmax_kmeans.py``) is 1.3-2.8x faster on the CPU, but it sums
in another order than the official matmul (differences of an fp32 ulp or two, beyond what the
model's tests accept against a per-cluster sum), on CUDA it contends on atomics and its order
changes from run to run, and kMaX does not train on the CPU.
"""
from __future__ import annotations

import torch


def assignment(mask_logits: torch.Tensor) -> torch.Tensor:
    """``[B, HW]`` int64 index of each pixel's cluster (no gradient)."""
    return mask_logits.detach().argmax(1)


def kmeans_reference(mask_logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The official form: a ``[B, Q, HW]`` one-hot of the assignment, then one batched matmul."""
    with torch.no_grad():
        one_hot = torch.zeros(mask_logits.shape, dtype=value.dtype, device=value.device)
        one_hot.scatter_(1, assignment(mask_logits).unsqueeze(1), 1.0)
    with torch.autocast(value.device.type, enabled=False):
        return torch.einsum('bqp,bcp->bcq', one_hot, value)
