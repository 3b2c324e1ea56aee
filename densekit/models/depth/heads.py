"""Depth decoders for hierarchical backbones: a DPT-style head and a light FPN head.

* :class:`DPTDepthHead` follows Ranftl et al., "Vision Transformers for Dense Prediction" (DPT,
  ICCV 2021): every backbone level is *reassembled* (for a hierarchical backbone the token-to-image
  step is the identity, so reassembling is a 1x1 projection followed by a 3x3 conv to a common
  width) and the levels are merged coarse-to-fine by *fusion blocks* (two residual conv units and a
  2x upsampling). The depth head (3x3 conv, 2x upsampling, 3x3 conv, ReLU, 1x1 conv) is DPT's.
* :class:`FPNDepthHead` is the FPN of Lin et al. (CVPR 2017) with the "semantic FPN" merge of
  Kirillov et al., "Panoptic Feature Pyramid Networks" (CVPR 2019): each pyramid level is brought
  to the finest stride, summed, and a small conv stack regresses depth.

Output range (both heads, :class:`DepthActivation`): ``'sigmoid'`` gives
``max_depth * sigmoid(x)`` as in BTS, NeWCRFs and the Monocular-Depth-Estimation-Toolbox
(``scale_up=True``); ``'relu'`` gives ``relu(x) + min_depth`` (the toolbox's ``scale_up=False``),
unbounded above. Heads return depth in metres at their own resolution (stride 1 of the finest level
for DPT when that level is at stride 4 — i.e. the input resolution —, stride 4 for FPN); the
estimator resizes to the input.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

_ACTIVATIONS = ('sigmoid', 'relu')
_NORMS = ('none', 'bn', 'gn')


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == 'bn':
        return nn.BatchNorm2d(channels)
    if kind == 'gn':
        # 32 groups (Wu & He) when the width allows it, else the largest divisor below 32.
        groups = next(g for g in range(min(32, channels), 0, -1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


def _conv_norm_act(cin: int, cout: int, k: int, norm: str, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=norm == 'none'), _norm(norm, cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DepthActivation(nn.Module):
    """Maps logits to metric depth: ``max_depth * sigmoid(x)`` or ``relu(x) + min_depth``.

    Args:
        mode: ``'sigmoid'`` (bounded to ``(0, max_depth)``) or ``'relu'`` (``>= min_depth``).
        min_depth: lower bound used by ``'relu'``.
        max_depth: scale used by ``'sigmoid'``.
    """

    def __init__(self, mode: str = 'sigmoid', min_depth: float = 1e-3, max_depth: float = 10.0) -> None:
        super().__init__()
        if mode not in _ACTIVATIONS:
            raise ValueError(f"activation={mode!r} must be one of {_ACTIVATIONS}")
        if not 0 <= min_depth < max_depth:
            raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth}, {max_depth}")
        self.mode = mode
        self.min_depth = min_depth
        self.max_depth = max_depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == 'sigmoid':
            return torch.sigmoid(x) * self.max_depth
        return F.relu(x) + self.min_depth

    def extra_repr(self) -> str:
        return f"mode={self.mode}, min_depth={self.min_depth}, max_depth={self.max_depth}"


class ResidualConvUnit(nn.Module):
    """DPT's residual unit: ``x + conv(relu(conv(relu(x))))`` (3x3 convs, optional norm)."""

    def __init__(self, channels: int, norm: str = 'none') -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=norm == 'none')
        self.norm1 = _norm(norm, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=norm == 'none')
        self.norm2 = _norm(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not in-place: x is also the residual.
        out = self.norm1(self.conv1(F.relu(x)))
        out = self.norm2(self.conv2(F.relu(out)))
        return x + out


class FusionBlock(nn.Module):
    """DPT fusion: ``up2(rcu2(path + rcu1(skip)))`` followed by a 1x1 projection.

    The coarser path is first resized to the skip's size (not a fixed 2x), so inputs whose size is
    not a multiple of the backbone stride work. The coarsest block has no skip and hence no
    ``rcu1`` (``with_skip=False``), so that every parameter receives a gradient (DDP without
    ``find_unused_parameters``).
    """

    def __init__(self, channels: int, norm: str = 'none', align_corners: bool = True,
                 with_skip: bool = True) -> None:
        super().__init__()
        self.rcu1 = ResidualConvUnit(channels, norm) if with_skip else None
        self.rcu2 = ResidualConvUnit(channels, norm)
        self.project = nn.Conv2d(channels, channels, 1)
        self.align_corners = align_corners

    def forward(self, path: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            if self.rcu1 is None:
                raise ValueError('FusionBlock(with_skip=False) got a skip connection')
            if path.shape[-2:] != skip.shape[-2:]:
                path = F.interpolate(path, size=skip.shape[-2:], mode='bilinear',
                                     align_corners=self.align_corners)
            path = path + self.rcu1(skip)
        path = self.rcu2(path)
        path = F.interpolate(path, scale_factor=2.0, mode='bilinear', align_corners=self.align_corners)
        return self.project(path)


def _check_feats(head: str, in_channels: tuple[int, ...], feats: Sequence[torch.Tensor]) -> None:
    # A backbone swapped without updating decode_head.in_channels would otherwise fail deep in a
    # conv with no hint of which config field to change.
    got = [int(f.shape[1]) for f in feats]
    if len(feats) != len(in_channels) or tuple(got) != in_channels:
        raise ValueError(f"{head} expects {len(in_channels)} maps with channels {in_channels} "
                         f"(decode_head.in_channels), the backbone gave channels {got} (shapes "
                         f"{[tuple(f.shape) for f in feats]}); set decode_head.in_channels={got}")


class DPTDepthHead(nn.Module):
    """DPT-style depth decoder for a backbone returning NCHW maps from fine to coarse.

    Args:
        in_channels: channels of each backbone map, fine to coarse (e.g. ``(96, 192, 384, 768)``).
        channels: common width of the fusion path (DPT: 256).
        reassemble_channels: per-level width of the 1x1 reassembly projection; ``None`` keeps each
            level's ``in_channels`` (DPT-ViT uses 96/192/384/768 for ViT-B, hierarchical
            backbones already have such widths).
        activation: ``'sigmoid'`` or ``'relu'``, see :class:`DepthActivation`.
        min_depth: lower bound for ``'relu'``.
        max_depth: scale for ``'sigmoid'``.
        norm: ``'none'`` (DPT's default), ``'bn'`` or ``'gn'`` inside the residual units.
        head_channels: width of the last hidden conv of the depth head (DPT: 32).
        align_corners: bilinear resampling convention (DPT: True).

    Shapes: inputs ``[N, in_channels[i], H_i, W_i]`` from fine to coarse; output
    ``[N, 1, 4 * H_0, 4 * W_0]`` (the last fusion and the head each upsample 2x), i.e. about the
    input size when the finest level has stride 4.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 channels: int = 256,
                 reassemble_channels: Sequence[int] | None = None,
                 activation: str = 'sigmoid',
                 min_depth: float = 1e-3,
                 max_depth: float = 10.0,
                 norm: str = 'none',
                 head_channels: int = 32,
                 align_corners: bool = True) -> None:
        super().__init__()
        in_channels = tuple(int(c) for c in in_channels)
        if not in_channels:
            raise ValueError('DPTDepthHead: in_channels must list at least one level')
        if norm not in _NORMS:
            raise ValueError(f"DPTDepthHead: norm={norm!r} must be one of {_NORMS}")
        mid = tuple(reassemble_channels) if reassemble_channels is not None else in_channels
        if len(mid) != len(in_channels):
            raise ValueError(f"DPTDepthHead: reassemble_channels={tuple(mid)} must have one entry per "
                             f"level of in_channels={in_channels}")
        self.in_channels = in_channels
        self.reassemble = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, m, 1), nn.Conv2d(m, channels, 3, padding=1, bias=False))
            for c, m in zip(in_channels, mid))
        self.fusions = nn.ModuleList(
            FusionBlock(channels, norm, align_corners, with_skip=i < len(in_channels) - 1)
            for i in range(len(in_channels)))
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels // 2, 3, padding=1),
            nn.Upsample(scale_factor=2.0, mode='bilinear', align_corners=align_corners),
            nn.Conv2d(channels // 2, head_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(head_channels, 1, 1))
        self.activation = DepthActivation(activation, min_depth, max_depth)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_feats('DPTDepthHead', self.in_channels, feats)
        levels = [r(f) for r, f in zip(self.reassemble, feats)]
        path = self.fusions[-1](levels[-1])
        for i in range(len(levels) - 2, -1, -1):
            path = self.fusions[i](path, levels[i])
        return self.activation(self.head(path))


class FPNDepthHead(nn.Module):
    """Light FPN depth decoder (semantic-FPN merge at the finest level).

    Args:
        in_channels: channels of each backbone map, fine to coarse.
        channels: FPN width.
        merge_channels: width of the per-level branch merged at the finest stride.
        activation: ``'sigmoid'`` or ``'relu'``, see :class:`DepthActivation`.
        min_depth: lower bound for ``'relu'``.
        max_depth: scale for ``'sigmoid'``.
        norm: norm of the merge branches (``'gn'`` default: depth batches are small).
        align_corners: bilinear resampling convention.

    Shapes: output ``[N, 1, H_0, W_0]`` at the size of the finest input map.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 channels: int = 256,
                 merge_channels: int = 128,
                 activation: str = 'sigmoid',
                 min_depth: float = 1e-3,
                 max_depth: float = 10.0,
                 norm: str = 'gn',
                 align_corners: bool = False) -> None:
        super().__init__()
        in_channels = tuple(int(c) for c in in_channels)
        if not in_channels:
            raise ValueError('FPNDepthHead: in_channels must list at least one level')
        if norm not in _NORMS:
            raise ValueError(f"FPNDepthHead: norm={norm!r} must be one of {_NORMS}")
        self.in_channels = in_channels
        self.align_corners = align_corners
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)
        self.merge = nn.ModuleList(
            _conv_norm_act(channels, merge_channels, 3, norm) for _ in in_channels)
        self.predict = nn.Sequential(_conv_norm_act(merge_channels, merge_channels, 3, norm),
                                     nn.Conv2d(merge_channels, 1, 1))
        self.activation = DepthActivation(activation, min_depth, max_depth)

    def _resize(self, x: torch.Tensor, size) -> torch.Tensor:
        if x.shape[-2:] == size:
            return x
        return F.interpolate(x, size=size, mode='bilinear', align_corners=self.align_corners)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_feats('FPNDepthHead', self.in_channels, feats)
        lat = [l(f) for l, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 2, -1, -1):  # top-down pathway
            lat[i] = lat[i] + self._resize(lat[i + 1], lat[i].shape[-2:])
        size = lat[0].shape[-2:]
        merged = sum(self._resize(m(s(x)), size) for x, s, m in zip(lat, self.smooth, self.merge))
        return self.activation(self.predict(merged))
