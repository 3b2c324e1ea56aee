"""Pure-PyTorch reference (shifted) window attention — the spec and the CPU path.

Swin Transformer (Liu et al., ICCV 2021, arXiv:2103.14030), W-MSA / SW-MSA.

Layouts: q, k, v, out ``[B, H, W, heads, head_dim]`` with ``H % wh == W % ww == 0`` (callers pad
*before* the qkv projection, as the official dense-prediction code does:
``densekit.layers.window.pad_to_multiple``); rpb ``[heads, 2wh-1, 2ww-1]`` indexed by the
*query-minus-key* offset plus ``(wh-1, ww-1)`` (Swin's convention; ``rpb_table_to_dense`` converts
an official table).

Semantics: roll the map by ``-shift``, split it into ``wh x ww`` windows, attend within each
window (query and key must also share a shift region, see
``densekit.layers.window.shift_region_labels``), roll back. Cross-region pairs are excluded
exactly (probability 0); the official code adds -100 instead, a difference of at most
``exp(-100)`` relative, below any floating-point tolerance.

Implementation: the roll and the window partition are one token permutation, so q, k and v are
each gathered once straight into ``[B, heads, nW, N, head_dim]`` (the head transpose included)
and the output is scattered back by the inverse permutation; both are cached per
``(size, window, shift)`` together with the additive shift mask. The attention itself is an
explicit matmul / softmax / matmul: on CPU it beats ``scaled_dot_product_attention`` with an
additive mask for forward+backward (the mask carries the trainable bias, so SDPA takes its math
path). fp32 and float64 run in their own precision; lower precisions are computed in fp32.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

from densekit.layers.window import relative_position_index, shift_region_labels, window_partition


def window_mask(size: Tuple[int, int], window: Tuple[int, int], shift: Tuple[int, int], device) -> Optional[torch.Tensor]:
    """Boolean ``[nW, N, N]`` (True = may attend) for the rolled map, or None without shift."""
    if shift == (0, 0):
        return None
    Hp, Wp = size
    lab = (shift_region_labels(Hp, window[0], shift[0], device)[:, None] * 3
           + shift_region_labels(Wp, window[1], shift[1], device)[None, :])
    win = window_partition(lab[None, :, :, None], window).reshape(-1, window[0] * window[1])
    return win[:, :, None] == win[:, None, :]


@functools.lru_cache(maxsize=64)
def _window_tables_cpu(size: Tuple[int, int], window: Tuple[int, int], shift: Tuple[int, int],
                       dtype: torch.dtype):
    """Token order of the rolled, partitioned map (``perm[j]`` = source token of slot ``j``), its
    inverse, and the additive shift mask ``[nW, N, N]`` (0 / -inf, or None without shift).
    Built outside inference mode: a cached inference tensor could not be saved for a later backward."""
    with torch.inference_mode(False):
        return _build_window_tables(size, window, shift, dtype)


def _build_window_tables(size, window, shift, dtype):
    H, W = size
    pos = torch.arange(H * W).view(1, H, W, 1)
    if shift != (0, 0):
        pos = torch.roll(pos, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    perm = window_partition(pos, window).reshape(-1)
    inv = torch.argsort(perm)
    allowed = window_mask(size, window, shift, None)
    neg = None
    if allowed is not None:
        neg = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, float('-inf'))
    return perm, inv, neg


class _PermuteTokens(torch.autograd.Function):
    """``x.index_select(dim, perm)`` for a permutation: the gradient is the inverse gather (a
    plain copy, where index_select's own backward would scatter-add)."""

    @staticmethod
    def forward(ctx, x, dim, perm, inv):
        ctx.dim = dim
        ctx.save_for_backward(perm, inv)
        return x.index_select(dim, perm)

    @staticmethod
    def backward(ctx, grad):
        perm, inv = ctx.saved_tensors
        return _PermuteTokens.apply(grad, ctx.dim, inv, perm), None, None, None


def window_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: Tuple[int, int],
                     shift: Tuple[int, int], rpb: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """Reference window attention on validated inputs (see module docstring)."""
    B, H, W, h, D = q.shape
    N = window[0] * window[1]
    nW = H * W // N
    ct = torch.float64 if q.dtype == torch.float64 else torch.float32
    perm, inv, neg = (t.to(q.device) if t is not None else None
                      for t in _window_tables_cpu((H, W), tuple(window), tuple(shift), ct))

    def to_windows(x):  # [B, H, W, h, D] -> [B, h, nW, N, D], one gather per tensor
        x = x.reshape(B, H * W, h, D).transpose(1, 2)
        return _PermuteTokens.apply(x, 2, perm, inv).to(ct).view(B, h, nW, N, D)

    qw, kw, vw = to_windows(q), to_windows(k), to_windows(v)
    bias = None  # additive, broadcast over the batch: [h, 1, N, N] bias and / or [nW, N, N] mask
    if rpb is not None:
        idx = relative_position_index(window, device=q.device)
        bias = rpb.to(ct).reshape(h, -1)[:, idx][:, None]
    if neg is not None:
        bias = neg if bias is None else bias + neg
    logits = (qw * scale) @ kw.transpose(-1, -2)  # [B, h, nW, N, N]
    if bias is not None:
        logits += bias  # in place: the matmul's backward needs its inputs, not its output
    out = logits.softmax(-1) @ vw  # [B, h, nW, N, D]
    out = _PermuteTokens.apply(out.view(B, h, H * W, D).transpose(1, 2), 1, inv, perm)
    return out.view(B, H, W, h, D).to(q.dtype)
