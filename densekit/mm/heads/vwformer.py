"""VWFormer as an mmseg decode head (``type='VWFormerHead'``).

The decoder is :class:`densekit.models.heads.vwformer.VWFormerDecoder`; this class adds what
mmseg's ``BaseDecodeHead`` gives every head: input selection (the four backbone maps), dropout
and the 1x1 classifier (``conv_seg``), the pixel-wise losses of ``loss_decode`` on logits resized
to the labels, and prediction resized to the input. The official ``VWHead`` is the same
subclass of mmseg 0.x's ``BaseDecodeHead``; official checkpoints load after
:func:`densekit.models.heads.vwformer.convert_official_vw_head`.
"""
from __future__ import annotations

from typing import Sequence

import torch
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead

from densekit.models.heads.vwformer import VWFormerDecoder
from densekit.mm.registry import register as _register


class VWFormerHead(BaseDecodeHead):
    """VWFormer decode head (Yan et al., ICLR 2024).

    Args:
        num_heads: heads of each varying window attention (the official ``nheads``).
        ratios: context-window ratios of the VWA branches.
        num_windows: query windows per side of the stride-8 map.
        shortcut: residual connection around each VWA branch (the official ``short_cut``).
        **kwargs: ``BaseDecodeHead``'s (``in_channels`` of the four maps, ``channels``,
            ``num_classes``, ``norm_cfg`` (every conv-norm block), ``loss_decode`` ...).
    """

    def __init__(self, num_heads: int = 1, ratios: Sequence[int] = (2, 4, 8),
                 num_windows: int = 8, shortcut: bool = True, **kwargs) -> None:
        kwargs.setdefault('in_index', [0, 1, 2, 3])
        super().__init__(input_transform='multiple_select', **kwargs)
        norm_cfg = self.norm_cfg or dict(type='BN', requires_grad=True)
        self.decoder = VWFormerDecoder(
            self.in_channels, self.channels, num_heads=num_heads, ratios=ratios,
            num_windows=num_windows, shortcut=shortcut,
            norm_layer=lambda c: build_norm_layer(norm_cfg, c)[1])

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.cls_seg(self.decoder(self._transform_inputs(inputs)))


def register() -> None:
    from mmseg.registry import MODELS
    _register(MODELS, VWFormerHead)
