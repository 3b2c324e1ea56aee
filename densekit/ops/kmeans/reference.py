"""Reference k-means cross-attention: the official one-hot form (the specification) and an index
(scatter-add) form with the same sums.

kMaX-DeepLab (Yu et al., "k-means Mask Transformer", ECCV 2022) replaces the softmax over pixels
of cross-attention by a hard assignment: for mask logits ``[B, Q, HW]`` (Q cluster centres, HW
pixels) and pixel values ``[B, C, HW]``,

    a[b, p] = argmax_q logits[b, q, p]            (ties -> lowest q; NaN counts as largest, as torch.argmax)
    out[b, c, q] = sum_{p : a[b, p] = q} value[b, c, p]

i.e. ``out = value @ one_hot(a)^T``. The assignment carries no gradient (the official detaches
it), so ``d value[b, c, p] = d out[b, c, a[b, p]]`` and the logits get none. Both forms compute in
the value's dtype with autocast off (the official runs this update outside autocast).
"""
from __future__ import annotations

import torch


def assignment(mask_logits: torch.Tensor) -> torch.Tensor:
    """``[B, HW]`` int64 index of each pixel's cluster (no gradient)."""
    return mask_logits.detach().argmax(1)


def kmeans_onehot(mask_logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The official form: a ``[B, Q, HW]`` one-hot of the assignment, then one batched matmul."""
    with torch.no_grad():
        one_hot = torch.zeros(mask_logits.shape, dtype=value.dtype, device=value.device)
        one_hot.scatter_(1, assignment(mask_logits).unsqueeze(1), 1.0)
    with torch.autocast(value.device.type, enabled=False):
        return torch.einsum('bqp,bcp->bcq', one_hot, value)


def kmeans_index(mask_logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The same sums by adding every pixel's value into its cluster's slot (``scatter_add`` over
    ``C x HW`` entries; its backward is a gather), without the one-hot."""
    B, Q, _ = mask_logits.shape
    index = assignment(mask_logits).unsqueeze(1).expand(-1, value.shape[1], -1)
    return value.new_zeros(B, value.shape[1], Q).scatter_add(2, index, value)


def kmeans_reference(mask_logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The reference backend on validated inputs: the index form on the CPU, where it is faster
    than the one-hot matmul (``benchmarks/kmax_kmeans.py``) and its sequential ``scatter_add`` is
    deterministic; the one-hot form elsewhere (on CUDA ``scatter_add`` contends on atomics and
    its summation order changes from run to run)."""
    if value.device.type == 'cpu':
        return kmeans_index(mask_logits, value)
    return kmeans_onehot(mask_logits, value)
