"""VWFormer: a multi-scale decoder built on varying window attention (VWA).

Yan, Wu and Zhang, "Multi-Scale Representations by Varying Window Attention for Semantic
Segmentation", ICLR 2024 (arXiv:2404.16573); official code: github.com/yan-hao-tian/VW
(``mmsegmentation-custom/mmseg/models/decode_heads/vw_head.py``, ``VWHead``).

The decoder, on the four backbone maps ``c1..c4`` (strides 4, 8, 16, 32):

1. multi-layer aggregation: ``c2``, ``c3``, ``c4`` are embedded to ``channels`` by 1x1 linear
   layers, ``c3`` / ``c4`` bilinearly resized to the stride-8 grid, concatenated and fused (1x1
   conv-norm-ReLU) into one map ``x``;
2. multi-scale representations: five branches of ``x`` are concatenated and merged (1x1
   conv-norm-ReLU): a 1x1 conv-norm-ReLU ("short path"), global average pooling + 1x1
   conv-norm-ReLU broadcast back ("image pool"), and one VWA branch per context ratio ``R`` in
   ``ratios`` (2, 4, 8);
3. low-level enhancement: the merged map is resized to the stride-4 grid and fused with a
   48-channel linear embedding of ``c1`` (1x1 conv-norm-ReLU).

Varying window attention: ``x`` is split into a ``num_windows x num_windows`` grid of query
windows of ``p x p`` pixels. For ratio ``R`` each query window attends to a context window of
``R p x R p`` pixels centred on it, at the cost of a ``p x p`` window (the paper's pre-scaling):
``x`` is first embedded to ``channels / R^2`` channels by an ``R x R`` convolution with stride 1
("densely overlapping patch embedding", DOPE), the map is extended at its borders by copies of
its own pixels (copy-shift padding, CSP: the first ``R p - (R + 1) p // 2`` columns of the
extension come from columns ``(R + 1) p // 2 .. R p`` of the map, mirrored at the other side) and
each ``R p x R p`` context window is folded to ``p x p`` tokens of ``channels`` features
(space-to-depth, channel order ``(row-in-cell, column-in-cell, channel)``). Query and context
then meet in multi-head attention with 1x1 projections, an output projection with a norm and no
activation, and a residual connection to ``x``.

Differences from the official code, all outside the sizes it accepts: a stride-8 map whose sides
are not multiples of ``num_windows`` is zero-padded at the bottom / right for the VWA branches
and their outputs cropped back (the official head fails there; its ADE20K test pipeline resizes
images to multiples of 64); with one-pixel windows the official ``unfold`` yields one extra
window per side, of which the first ``num_windows`` are the centred ones used here.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['ConvNormAct', 'VaryingWindowAttention', 'VWFormerDecoder', 'copy_shift_pad',
           'context_windows', 'convert_official_vw_head']

NormLayer = Callable[[int], nn.Module]


class ConvNormAct(nn.Sequential):
    """Convolution (no bias) -> norm -> optional ReLU, as mmcv's ``ConvModule`` with a norm."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int | tuple[int, int] = 1, *,
                 norm_layer: NormLayer = nn.BatchNorm2d, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, bias=False)
        self.norm = norm_layer(out_chs)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()


# ----------------------------------------------------------------------------- windows

def copy_shift_pad(x: torch.Tensor, ratio: int, patch: int, dim: int) -> torch.Tensor:
    """Extends ``x`` along ``dim`` (a multiple of ``patch`` long) by copies of its own pixels.

    ``margin = ratio * patch - (ratio + 1) * patch // 2`` pixels are added on each side: on the
    low side pixels ``[(ratio + 1) * patch // 2, ratio * patch)``, on the high side pixels
    ``[L - ratio * patch, L - (ratio + 1) * patch // 2)``, so that window ``i`` of
    ``ratio * patch`` pixels starting at ``i * patch`` of the result is centred on query window
    ``i`` and never sees padding zeros.
    """
    length = x.shape[dim]
    lo, hi = (ratio + 1) * patch // 2, ratio * patch
    if hi <= lo:  # margin 0: the window is the query window
        return x
    left = x.narrow(dim, lo, hi - lo)
    right = x.narrow(dim, length - hi, hi - lo)
    return torch.cat([left, x, right], dim=dim)


def context_windows(x: torch.Tensor, ratio: int, num_windows: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B * n * n, p_h * p_w, ratio^2 * C]`` context tokens.

    Window ``(i, j)`` covers ``ratio * p`` pixels per side around query window ``(i, j)`` of the
    ``n x n`` grid (``p = H / n``), on the copy-shift padded map, folded to ``p x p`` tokens:
    pixel ``(a * ratio + u, b * ratio + v)`` of the window goes to token ``(a, b)``, features
    ``(u, v, c)`` (channel fastest).
    """
    B, C, H, W = x.shape
    n = num_windows
    ph, pw = H // n, W // n
    x = copy_shift_pad(copy_shift_pad(x, ratio, pw, 3), ratio, ph, 2)
    # [B, C, n, n, R*ph, R*pw]: the first n windows per side (see the module docstring).
    x = x.unfold(2, ratio * ph, ph)[:, :, :n].unfold(3, ratio * pw, pw)[:, :, :, :n]
    x = x.reshape(B, C, n, n, ph, ratio, pw, ratio)
    x = x.permute(0, 2, 3, 4, 6, 5, 7, 1)  # B, i, j, a, b, u, v, C
    return x.reshape(B * n * n, ph * pw, ratio * ratio * C)


def query_windows(x: torch.Tensor, num_windows: int) -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B * n * n, p_h * p_w, C]`` (row-major windows and pixels)."""
    B, C, H, W = x.shape
    n = num_windows
    x = x.reshape(B, C, n, H // n, n, W // n).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B * n * n, (H // n) * (W // n), C)


def merge_windows(x: torch.Tensor, batch: int, num_windows: int, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`query_windows`: ``[B * n * n, p_h * p_w, C]`` -> ``[B, C, H, W]``."""
    n = num_windows
    H, W = size
    C = x.shape[-1]
    x = x.reshape(batch, n, n, H // n, W // n, C).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(batch, C, H, W)


# ----------------------------------------------------------------------------- attention

class VaryingWindowAttention(nn.Module):
    """Multi-head attention of query windows to their (pre-scaled) context windows.

    Args:
        channels: query and context feature width (the context carries ``ratio^2`` cells of
            ``channels / ratio^2`` features each).
        num_heads: attention heads; head ``h`` uses channels ``[h * d, (h + 1) * d)``.
        norm_layer: norm after the output projection.
    """

    def __init__(self, channels: int, num_heads: int = 1, *,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f'channels={channels} is not divisible by num_heads={num_heads}')
        self.num_heads = num_heads
        self.q = nn.Linear(channels, channels)
        self.k = nn.Linear(channels, channels)
        self.v = nn.Linear(channels, channels)
        self.proj = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = norm_layer(channels)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``query``, ``context``: ``[windows, tokens, channels]`` -> ``[windows, tokens, channels]``
        (before the output projection, which :class:`VWFormerDecoder` applies on the map)."""
        Bw, N, C = query.shape
        h = self.num_heads

        def heads(t):
            return t.reshape(Bw, -1, h, C // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q(query)), heads(self.k(context)),
                                             heads(self.v(context)))
        return out.transpose(1, 2).reshape(Bw, N, C)


# ----------------------------------------------------------------------------- decoder

class VWFormerDecoder(nn.Module):
    """VWFormer's decoder: four backbone maps -> one stride-4 map of ``channels`` features.

    Args:
        in_channels: channels of ``c1..c4`` (strides 4, 8, 16, 32).
        channels: decoder width (512 in every official config).
        num_heads: heads of each varying window attention (1 in the official ADE20K configs).
        ratios: context-window ratios ``R`` of the VWA branches.
        num_windows: query windows per side of the stride-8 map.
        low_level_channels: width of the ``c1`` embedding.
        shortcut: add the input map to each VWA branch (the official ``short_cut=True``).
        norm_layer: norm of every conv-norm block (``nn.BatchNorm2d``; SyncBN when training
            on several GPUs, given by the mmseg head).
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 512, num_heads: int = 1,
                 ratios: Sequence[int] = (2, 4, 8), num_windows: int = 8,
                 low_level_channels: int = 48, shortcut: bool = True, *,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f'VWFormerDecoder takes 4 maps (strides 4..32), got in_channels={in_channels}')
        bad = [r for r in ratios if r < 1 or r > num_windows or channels % (r * r)]
        if bad:
            raise ValueError(f'ratios {bad} must be in [1, num_windows={num_windows}] and their '
                             f'squares must divide channels={channels}')
        self.channels = channels
        self.ratios = tuple(ratios)
        self.num_windows = num_windows
        self.shortcut = shortcut
        E = channels
        self.embed_c2 = nn.Conv2d(in_channels[1], E, 1)
        self.embed_c3 = nn.Conv2d(in_channels[2], E, 1)
        self.embed_c4 = nn.Conv2d(in_channels[3], E, 1)
        self.fuse = ConvNormAct(3 * E, E, norm_layer=norm_layer)
        self.short_path = ConvNormAct(E, E, norm_layer=norm_layer)
        self.image_pool = ConvNormAct(E, E, norm_layer=norm_layer)
        self.context_embed = nn.ModuleList(
            ConvNormAct(E, E // (r * r), r, norm_layer=norm_layer) for r in self.ratios)
        self.attn = nn.ModuleList(
            VaryingWindowAttention(E, num_heads, norm_layer=norm_layer) for _ in self.ratios)
        self.merge = ConvNormAct((2 + len(self.ratios)) * E, E, norm_layer=norm_layer)
        self.embed_c1 = nn.Conv2d(in_channels[0], low_level_channels, 1)
        self.low_level_fuse = ConvNormAct(E + low_level_channels, E, norm_layer=norm_layer)
        self.init_weights()

    def init_weights(self) -> None:
        """The official initialisation: conv-norm blocks as mmcv's ``ConvModule`` (Kaiming
        normal, fan-out; unit norms), the query projection as the non-local block's (N(0, 0.01)),
        key / value projections as ``ConvModule`` convolutions, the output norm of every VWA
        zero (each branch starts as its shortcut); the linear embeddings keep PyTorch's init."""
        def kaiming(w):
            nn.init.kaiming_normal_(w, mode='fan_out', nonlinearity='relu')

        for m in self.modules():
            if isinstance(m, ConvNormAct):
                kaiming(m.conv.weight)
                if getattr(m.norm, 'weight', None) is not None:
                    nn.init.ones_(m.norm.weight)
                    nn.init.zeros_(m.norm.bias)
        for attn in self.attn:
            nn.init.normal_(attn.q.weight, std=0.01)
            for lin in (attn.k, attn.v):
                kaiming(lin.weight)
            for lin in (attn.q, attn.k, attn.v):
                nn.init.zeros_(lin.bias)
            kaiming(attn.proj.weight)
            if getattr(attn.norm, 'weight', None) is not None:
                nn.init.zeros_(attn.norm.weight)
                nn.init.zeros_(attn.norm.bias)

    def aggregate(self, c2: torch.Tensor, c3: torch.Tensor, c4: torch.Tensor) -> torch.Tensor:
        size = c2.shape[-2:]
        up = dict(size=size, mode='bilinear', align_corners=False)
        return self.fuse(torch.cat([F.interpolate(self.embed_c4(c4), **up),
                                    F.interpolate(self.embed_c3(c3), **up),
                                    self.embed_c2(c2)], dim=1))

    def varying_window_attention(self, x: torch.Tensor, j: int) -> torch.Tensor:
        """Branch ``j`` (ratio ``ratios[j]``) on a map whose sides are multiples of the grid."""
        r, n = self.ratios[j], self.num_windows
        B, _, H, W = x.shape
        # DOPE: an r x r convolution, stride 1, padded (r//2 - 1, r//2) for even r
        lo = r // 2 - 1 if r % 2 == 0 else r // 2
        context = self.context_embed[j](F.pad(x, (lo, r // 2, lo, r // 2)))
        attn = self.attn[j]
        out = attn(query_windows(x, n), context_windows(context, r, n))
        out = attn.norm(attn.proj(merge_windows(out, B, n, (H, W))))
        return out + x if self.shortcut else out

    def multi_scale(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        pooled = self.image_pool(F.adaptive_avg_pool2d(x, 1)).expand(B, C, H, W)
        n = self.num_windows
        pad_h, pad_w = (-H) % n, (-W) % n
        xp = F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x
        branches = [self.short_path(x), pooled]
        for j in range(len(self.ratios)):
            branches.append(self.varying_window_attention(xp, j)[..., :H, :W])
        return self.merge(torch.cat(branches, dim=1))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """``feats``: ``[c1, c2, c3, c4]`` (NCHW, strides 4..32) -> ``[B, channels, H1, W1]``."""
        c1, c2, c3, c4 = feats
        x = self.multi_scale(self.aggregate(c2, c3, c4))
        x = F.interpolate(x, size=c1.shape[-2:], mode='bilinear', align_corners=False)
        return self.low_level_fuse(torch.cat([x, self.embed_c1(c1)], dim=1))


# ----------------------------------------------------------------------------- converter

def convert_official_vw_head(state_dict: dict, prefix: str = 'decode_head.',
                             out_prefix: str = 'decode_head.decoder.') -> dict:
    """Maps the keys of the official ``VWHead`` (under ``prefix``) to :class:`VWFormerDecoder`'s
    (under ``out_prefix``); ``conv_seg`` stays beside the decoder (``decode_head.conv_seg``) and
    every other key passes unchanged.

    Official -> densekit: ``linear_c{i}.proj`` (``nn.Linear``) -> ``embed_c{i}`` (1x1 conv),
    ``linear_fuse`` -> ``fuse``, ``cat`` -> ``merge``, ``ds.{j}`` -> ``context_embed.{j}``,
    ``image_pool.1`` -> ``image_pool``, ``attn.{j}.{theta,phi,g}.conv`` -> ``attn.{j}.{q,k,v}``,
    ``attn.{j}.conv_out.{conv,bn}`` -> ``attn.{j}.{proj,norm}``, ``ConvModule``'s ``bn`` ->
    ``norm``.
    """
    out = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix) or key[len(prefix):].startswith(('conv_seg.', 'conv_seg')):
            out[key] = value
            continue
        k = key[len(prefix):]
        parts = k.split('.')
        head = parts[0]
        if head.startswith('linear_c') and parts[1] == 'proj':
            k = f'embed_c{head[-1]}.' + '.'.join(parts[2:])
            if value.ndim == 2:
                value = value[:, :, None, None]
        elif head == 'attn':
            j, name = parts[1], parts[2]
            rest = '.'.join(parts[4:])
            if name in ('theta', 'phi', 'g'):
                k = f'attn.{j}.' + dict(theta='q', phi='k', g='v')[name] + f'.{rest}'
                if value.ndim == 4:
                    value = value[:, :, 0, 0]
            elif name == 'conv_out':
                k = f'attn.{j}.' + ('proj' if parts[3] == 'conv' else 'norm') + f'.{rest}'
            else:
                raise KeyError(f'unexpected official VWHead key {key}')
        else:
            rename = {'linear_fuse': 'fuse', 'cat': 'merge', 'ds': 'context_embed',
                      'short_path': 'short_path', 'low_level_fuse': 'low_level_fuse',
                      'image_pool': 'image_pool'}
            if head not in rename:
                raise KeyError(f'unexpected official VWHead key {key}')
            if head == 'image_pool':  # nn.Sequential(AdaptiveAvgPool2d, ConvModule)
                parts = parts[1:]
            parts[0] = rename[head]
            k = '.'.join(parts).replace('.bn.', '.norm.')
        out[out_prefix + k] = value
    return out
