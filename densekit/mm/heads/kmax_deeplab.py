"""kMaX-DeepLab as an mmdet panoptic head (``type='KMaXDeepLabHead'``) for mmdet's ``Mask2Former``
detector, with kMaX's own inference in ``KMaXFusionHead`` (:mod:`densekit.mm.heads.kmax_fusion`).

The network is :class:`densekit.models.heads.kmax_deeplab.KMaX` (the official pixel and k-means
transformer decoders, checked against the official port). Training is NOT kMaX's own: the
official criterion (PQ-style loss with mask-ID cross-entropy, pixel-wise instance
discrimination and an auxiliary semantic head, matched by a PQ-style Hungarian cost) is not
implemented. The head uses mmdet's Mask2Former training instead: Hungarian matching (class +
point-sampled mask BCE + dice costs), class cross-entropy, point-sampled mask BCE and dice on
every prediction (deep supervision). Inference is the official one: :meth:`KMaXDeepLabHead.predict`
upsamples the final mask logits to the padded input with the official ``align_corners`` rule and
``KMaXFusionHead`` applies the official post-processing.
"""
from __future__ import annotations

from typing import Sequence

import torch
from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
from mmdet.models.dense_heads.mask2former_head import Mask2FormerHead
from mmdet.registry import MODELS, TASK_UTILS

from densekit.models.heads.kmax_deeplab import KMaX
from densekit.models.heads.kmax_postprocess import kmax_upsample_mask_logits
from densekit.mm.registry import register as _register


class KMaXDeepLabHead(Mask2FormerHead):
    """kMaX-DeepLab head (Yu et al., ECCV 2022) with Mask2Former's losses and kMaX's own inference.

    Args:
        in_channels: channels of the four backbone maps (strides 4..32).
        num_things_classes, num_stuff_classes: panoptic classes.
        num_queries: cluster centres (128).
        pixel_decoder_channels, pixel_decoder_layers, pixel_decoder_types: per stage, stride 32
            first (``(512, 256, 128, 64)``, ``(1, 5, 1, 1)``, axial at 32 / 16, bottleneck at
            8 / 4: the official R50 / ConvNeXt setting).
        transformer_decoder_layers: kMaX layers at strides 32, 16, 8 (``(2, 2, 2)``).
        embed_dims, base_filters, num_heads, feedforward_channels, pixel_head_channels,
        mask_channels: decoder widths (256, 128, 8, 2048, 256, 128).
        pixel_drop_path, transformer_drop_path: drop-path probabilities (0.0 and 0.2 for R50).
        loss_cls, loss_mask, loss_dice, train_cfg, test_cfg: as mmdet's ``Mask2FormerHead``.
    """

    def __init__(self, in_channels: Sequence[int], num_things_classes: int = 80,
                 num_stuff_classes: int = 53, num_queries: int = 128,
                 pixel_decoder_channels: Sequence[int] = (512, 256, 128, 64),
                 pixel_decoder_layers: Sequence[int] = (1, 5, 1, 1),
                 pixel_decoder_types: Sequence[str] = ('axial', 'axial', 'bottleneck', 'bottleneck'),
                 transformer_decoder_layers: Sequence[int] = (2, 2, 2), embed_dims: int = 256,
                 base_filters: int = 128, num_heads: int = 8, feedforward_channels: int = 2048,
                 pixel_head_channels: int = 256, mask_channels: int = 128,
                 pixel_drop_path: float = 0.0, transformer_drop_path: float = 0.0,
                 loss_cls: dict | None = None, loss_mask: dict | None = None,
                 loss_dice: dict | None = None, train_cfg: dict | None = None,
                 test_cfg: dict | None = None, init_cfg: dict | None = None) -> None:
        # mmdet's Mask2FormerHead.__init__ builds its own decoders: set up what its losses and
        # predict read, and nothing else.
        BaseDenseHead.__init__(self, init_cfg=init_cfg)
        self.num_things_classes = num_things_classes
        self.num_stuff_classes = num_stuff_classes
        self.num_classes = num_things_classes + num_stuff_classes
        self.num_queries = num_queries
        self.num_transformer_decoder_layers = sum(transformer_decoder_layers)
        self.kmax = KMaX(in_channels, self.num_classes, num_queries, pixel_decoder_channels,
                         pixel_decoder_layers, pixel_decoder_types, transformer_decoder_layers,
                         embed_dims, base_filters, num_heads, feedforward_channels,
                         pixel_head_channels, mask_channels, pixel_drop_path,
                         transformer_drop_path)
        self.test_cfg = test_cfg
        self.train_cfg = train_cfg
        if train_cfg:
            self.assigner = TASK_UTILS.build(train_cfg['assigner'])
            self.sampler = TASK_UTILS.build(train_cfg['sampler'], default_args=dict(context=self))
            self.num_points = train_cfg.get('num_points', 12544)
            self.oversample_ratio = train_cfg.get('oversample_ratio', 3.0)
            self.importance_sample_ratio = train_cfg.get('importance_sample_ratio', 0.75)
        loss_cls = loss_cls or dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0,
                                    reduction='mean', class_weight=[1.0] * self.num_classes + [0.1])
        loss_mask = loss_mask or dict(type='CrossEntropyLoss', use_sigmoid=True, reduction='mean',
                                      loss_weight=5.0)
        loss_dice = loss_dice or dict(type='DiceLoss', use_sigmoid=True, activate=True,
                                      reduction='mean', naive_dice=True, eps=1.0, loss_weight=5.0)
        self.class_weight = loss_cls.get('class_weight')
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_mask = MODELS.build(loss_mask)
        self.loss_dice = MODELS.build(loss_dice)

    def init_weights(self) -> None:
        """The core modules initialise themselves (the official schemes) at construction."""

    def forward(self, x: Sequence[torch.Tensor], batch_data_samples=None):
        """Class logits ``[B, Q, K+1]`` and stride-4 mask logits of every prediction (one per
        decoder layer, then the final one)."""
        return self.kmax(list(x))

    def predict(self, x: Sequence[torch.Tensor],
                batch_data_samples) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits ``[B, Q, K+1]`` and mask logits at the padded input size of the final
        prediction. Mask2Former's ``predict`` upsamples with ``align_corners=False``; the official
        kMaX aligns the corners when the padded width is odd (its 1281-pixel crops, whose stride-4
        maps are ``(side - 1) / 4 + 1`` wide), which ``kmax_upsample_mask_logits`` follows."""
        all_cls, all_masks = self(x, batch_data_samples)
        padded = batch_data_samples[0].metainfo['batch_input_shape']
        return all_cls[-1], kmax_upsample_mask_logits(all_masks[-1], padded)


def register() -> None:
    _register(MODELS, KMaXDeepLabHead)
