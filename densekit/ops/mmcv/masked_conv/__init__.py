"""Masked convolution (mmcv 2.1 ``masked_conv2d`` semantics), pure PyTorch, any device.

Used by mmdet's Guided Anchoring heads at test time: the convolution is evaluated only at the
positions where the guidance mask is positive, other outputs are 0. mmcv splits it into
``masked_im2col`` (gather the ``kh x kw`` patches at the masked positions, zero outside the map),
a matrix product, and ``masked_col2im`` (scatter the results back); these are the two functions
below, with mmcv's layouts. mmcv's kernels read and write batch element 0 only (its wrapper
requires batch size 1) and support stride 1. mmcv defines no gradient for this op.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ['masked_im2col', 'masked_col2im', 'masked_conv2d']


def masked_im2col(features: Tensor, mask_h_idx: Tensor, mask_w_idx: Tensor, kernel_h: int,
                  kernel_w: int, pad_h: int, pad_w: int) -> Tensor:
    """Patches ``[C * kh * kw, M]`` of batch element 0 of ``features`` ``[B, C, H, W]`` at the M
    output positions ``(mask_h_idx, mask_w_idx)``; row ``(c * kh + i) * kw + j`` reads input pixel
    ``(h - pad_h + i, w - pad_w + j)``, 0 outside the map."""
    c, h, w = features.shape[-3:]
    dev = features.device
    feat = features.reshape(-1, c, h * w)[0]
    i = torch.arange(kernel_h, device=dev).repeat_interleave(kernel_w)  # [K]
    j = torch.arange(kernel_w, device=dev).repeat(kernel_h)
    y = mask_h_idx.to(dev)[None, :] - pad_h + i[:, None]  # [K, M]
    x = mask_w_idx.to(dev)[None, :] - pad_w + j[:, None]
    inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    idx = y.clamp(0, h - 1) * w + x.clamp(0, w - 1)
    cols = feat[:, idx]  # [C, K, M]
    cols = torch.where(inside, cols, torch.zeros((), dtype=cols.dtype, device=dev))
    return cols.reshape(c * kernel_h * kernel_w, -1)


def masked_col2im(columns: Tensor, mask_h_idx: Tensor, mask_w_idx: Tensor,
                  output: Tensor) -> Tensor:
    """Writes ``columns`` ``[C, M]`` into batch element 0 of ``output`` ``[B, C, H, W]`` at
    ``(mask_h_idx, mask_w_idx)`` (in place) and returns ``output``."""
    h, w = output.shape[-2:]
    if mask_h_idx.numel() and (int(mask_h_idx.max()) >= h or int(mask_w_idx.max()) >= w):
        raise ValueError(f'masked positions reach ({int(mask_h_idx.max())}, '
                         f'{int(mask_w_idx.max())}) outside the {h}x{w} output')
    output[0, :, mask_h_idx.to(output.device), mask_w_idx.to(output.device)] = \
        columns.to(output.dtype)
    return output


def masked_conv2d(features: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None = None,
                  padding=0) -> Tensor:
    """Convolution (stride 1) of ``features`` ``[1, C, H, W]`` evaluated where ``mask``
    ``[1, H_out, W_out]`` is positive; 0 elsewhere.

    Args:
        features: ``[1, C_in, H, W]``.
        mask: ``[1, H_out, W_out]``.
        weight: ``[C_out, C_in, kh, kw]``.
        bias: ``[C_out]`` or None.
        padding: int or ``(pad_h, pad_w)``.

    Returns:
        ``[1, C_out, H_out, W_out]``.
    """
    pad_h, pad_w = (padding, padding) if isinstance(padding, int) else padding
    c_out, _, kh, kw = weight.shape
    h_out = features.shape[2] + 2 * pad_h - kh + 1
    w_out = features.shape[3] + 2 * pad_w - kw + 1
    out = features.new_zeros(features.shape[0], c_out, h_out, w_out)
    inds = torch.nonzero(mask[0] > 0)
    if inds.numel() == 0:
        return out
    cols = masked_im2col(features, inds[:, 0], inds[:, 1], kh, kw, pad_h, pad_w)
    res = weight.reshape(c_out, -1) @ cols
    if bias is not None:
        res = res + bias[:, None]
    return masked_col2im(res, inds[:, 0], inds[:, 1], out)
