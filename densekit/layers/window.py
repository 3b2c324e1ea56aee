"""Window, padding and relative-position helpers for local-attention backbones.

Shared by Swin (Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted
Windows", ICCV 2021, arXiv:2103.14030), CSWin, HaloNet and NAT so that the windowing logic exists
exactly once in densekit.

Layouts (all helpers are pure functions, no parameters):

* feature maps are channels-last ``[B, H, W, C]`` (the layout of the attention ops in
  ``densekit.ops``); :func:`pad_to_multiple` also pads any trailing dims ``[B, H, W, *rest]``.
* windows are ``[B * nWh * nWw, wh, ww, C]`` with the window index running row-major over the
  ``nWh x nWw`` grid and the batch index outermost (``window_partition`` / ``window_reverse``
  round-trip exactly, matching the official Swin code).
* a Swin relative-position-bias *table* is ``[(2*wh-1) * (2*ww-1), heads]`` (official / timm
  checkpoints); densekit's ops take the *dense* form ``[heads, 2*wh-1, 2*ww-1]``
  (:func:`rpb_table_to_dense` / :func:`rpb_dense_to_table` convert, losslessly).
* the shift mask is ``[nWh * nWw, wh*ww, wh*ww]`` (one per window of a single image).
"""
from __future__ import annotations

import operator
from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F

IntOrPair = Union[int, Sequence[int]]

__all__ = [
    'to_ntuple', 'to_2tuple', 'pad_to_multiple', 'unpad', 'window_partition', 'window_reverse',
    'relative_position_index', 'relative_position_bias', 'rpb_table_to_dense',
    'rpb_dense_to_table', 'shift_region_labels', 'shift_window_mask',
]


def to_ntuple(value, n: int, name: str = 'value') -> Tuple[int, ...]:
    """Normalise an int (numpy's and 0-d integer tensors included) or a length-``n`` sequence of
    them to a tuple of ``n`` ints; floats are an error (``int()`` would truncate them silently)."""
    what = f'a {n}-tuple'
    try:
        return (operator.index(value),) * n
    except TypeError:
        pass
    try:
        out = tuple(operator.index(v) for v in value)
    except TypeError:
        raise TypeError(f'{name} must be an int or {what} of ints, got {value!r}') from None
    if len(out) != n:
        raise ValueError(f'{name} must be an int or {what}, got {value!r}')
    return out


def to_2tuple(value: IntOrPair, name: str = 'value') -> Tuple[int, int]:
    """:func:`to_ntuple` with ``n = 2``."""
    return to_ntuple(value, 2, name)


def pad_to_multiple(x: torch.Tensor, multiple: IntOrPair, value: float = 0.0) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pad the spatial dims of a ``[B, H, W, *rest]`` tensor at the bottom / right.

    This is the padding of the official Swin dense-prediction code (Swin-Transformer-Object-
    Detection / -Semantic-Segmentation): zeros are appended *after* the norm and *before* the qkv
    projection, so padded tokens carry the projection bias and are not masked out.

    Args:
        x: ``[B, H, W, *rest]`` tensor.
        multiple: target multiple for H and W (int or ``(mh, mw)``).
        value: fill value.

    Returns:
        The padded tensor ``[B, Hp, Wp, *rest]`` and the original ``(H, W)`` for :func:`unpad`.
    """
    mh, mw = to_2tuple(multiple, 'multiple')
    H, W = x.shape[1], x.shape[2]
    pad_h = (mh - H % mh) % mh
    pad_w = (mw - W % mw) % mw
    if pad_h or pad_w:
        rest = x.dim() - 3
        x = F.pad(x, (0, 0) * rest + (0, pad_w, 0, pad_h), value=value)
    return x, (H, W)


def unpad(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Crop a padded ``[B, Hp, Wp, *rest]`` tensor back to ``size = (H, W)``."""
    H, W = size
    if x.shape[1] == H and x.shape[2] == W:
        return x
    return x[:, :H, :W].contiguous()


def window_partition(x: torch.Tensor, window_size: IntOrPair) -> torch.Tensor:
    """``[B, H, W, C]`` -> ``[B * nWh * nWw, wh, ww, C]`` (H, W must be window multiples)."""
    wh, ww = to_2tuple(window_size, 'window_size')
    B, H, W, C = x.shape
    if H % wh or W % ww:
        raise ValueError(f'window_partition: spatial size {(H, W)} is not a multiple of window {(wh, ww)}; '
                         'pad first with pad_to_multiple')
    x = x.view(B, H // wh, wh, W // ww, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh, ww, C)


def window_reverse(windows: torch.Tensor, window_size: IntOrPair, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B * nW, wh, ww, C]`` -> ``[B, H, W, C]``."""
    wh, ww = to_2tuple(window_size, 'window_size')
    C = windows.shape[-1]
    x = windows.reshape(-1, H // wh, W // ww, wh, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


def relative_position_index(window_size: IntOrPair, device=None) -> torch.Tensor:
    """Swin's ``[N, N]`` index (N = wh*ww) into a ``[(2wh-1)(2ww-1), heads]`` bias table.

    Entry ``[i, j]`` encodes the offset *query minus key*:
    ``(yi - yj + wh - 1) * (2ww - 1) + (xi - xj + ww - 1)``.
    """
    wh, ww = to_2tuple(window_size, 'window_size')
    ys, xs = torch.meshgrid(torch.arange(wh, device=device), torch.arange(ww, device=device), indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + wh - 1
    dx = xs[:, None] - xs[None, :] + ww - 1
    return dy * (2 * ww - 1) + dx


def rpb_table_to_dense(table: torch.Tensor, window_size: IntOrPair) -> torch.Tensor:
    """Official/timm table ``[(2wh-1)(2ww-1), heads]`` -> densekit ``[heads, 2wh-1, 2ww-1]``.

    The result is differentiable w.r.t. ``table`` (a permuted view), so a module can keep the
    official parameter and still feed the ops.
    """
    wh, ww = to_2tuple(window_size, 'window_size')
    if table.dim() != 2 or table.shape[0] != (2 * wh - 1) * (2 * ww - 1):
        raise ValueError(f'rpb table of shape {tuple(table.shape)} does not match window {(wh, ww)}')
    return table.t().reshape(table.shape[1], 2 * wh - 1, 2 * ww - 1)


def rpb_dense_to_table(rpb: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rpb_table_to_dense`: ``[heads, 2wh-1, 2ww-1]`` -> ``[(2wh-1)(2ww-1), heads]``."""
    return rpb.reshape(rpb.shape[0], -1).t()


def relative_position_bias(rpb: torch.Tensor, window_size: IntOrPair) -> torch.Tensor:
    """Dense ``[heads, 2wh-1, 2ww-1]`` bias -> per-window logits bias ``[heads, N, N]``."""
    idx = relative_position_index(window_size, device=rpb.device)
    return rpb.reshape(rpb.shape[0], -1)[:, idx]


def shift_region_labels(length: int, window: int, shift: int, device=None) -> torch.Tensor:
    """Region label (0, 1, 2) of each position of the *shifted* axis, as Swin's ``img_mask``.

    After ``torch.roll(x, -shift)``, positions ``[0, L-window)`` are region 0,
    ``[L-window, L-shift)`` region 1 and ``[L-shift, L)`` region 2; tokens of different regions in
    one window were not neighbours before the roll and must not attend to each other.
    """
    pos = torch.arange(length, device=device)
    if shift <= 0:
        return torch.zeros_like(pos)
    return (pos >= length - window).long() + (pos >= length - shift).long()


def shift_window_mask(size: Tuple[int, int], window_size: IntOrPair, shift: IntOrPair,
                      masked_value: float = -100.0, device=None, dtype=torch.float32) -> torch.Tensor:
    """Swin's additive shifted-window mask ``[nW, N, N]`` for a padded ``(Hp, Wp)`` map.

    Entries are 0 where query and key share a region and ``masked_value`` (official: -100)
    elsewhere. ``size`` must already be a window multiple (pad first, as the official code does).
    """
    Hp, Wp = size
    wh, ww = to_2tuple(window_size, 'window_size')
    sh, sw = to_2tuple(shift, 'shift')
    lab_h = shift_region_labels(Hp, wh, sh, device)
    lab_w = shift_region_labels(Wp, ww, sw, device)
    labels = (lab_h[:, None] * 3 + lab_w[None, :]).to(dtype)[None, :, :, None]
    win = window_partition(labels, (wh, ww)).reshape(-1, wh * ww)
    diff = win[:, None, :] - win[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, masked_value)
