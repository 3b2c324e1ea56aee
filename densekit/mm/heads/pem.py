"""PEM as an mmseg decode head (``type='PEMHead'``).

The network is :class:`densekit.models.heads.pem.PEM`; training and inference are mmseg's
``Mask2FormerHead``'s, which PEM's official (detectron2) code shares with Mask2Former: semantic
labels become one binary mask per class present, Hungarian matching (class + point-sampled mask
BCE + dice costs) per prediction, class cross-entropy (no-object weight 0.1), point-sampled mask
BCE and dice losses on every prediction (deep supervision), and at test time
``softmax(class)[:-1] x sigmoid(mask)`` summed over the queries. Only the constructor and the
forward pass differ from mmseg's head, which builds mmdet's Mask2Former decoders.
"""
from __future__ import annotations

from typing import Sequence

import torch
from mmcv.cnn import build_norm_layer
from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
from mmdet.registry import TASK_UTILS
from mmseg.models.decode_heads.mask2former_head import Mask2FormerHead
from mmseg.registry import MODELS

from densekit.models.heads.pem import PEM
from densekit.mm.registry import register as _register


class PEMHead(Mask2FormerHead):
    """PEM head (Cavagnero et al., CVPR 2024) with Mask2Former's losses and inference.

    Args:
        in_channels: channels of the four backbone maps (strides 4..32).
        num_classes: classes.
        feat_channels: pixel-decoder width (the official ``CONVS_DIM``, 128).
        out_channels: mask-feature width (``MASK_DIM``, 256; as mmseg's Mask2Former head, the
            attribute ``out_channels`` is then the number of classes).
        embed_dims, num_queries, num_heads, feedforward_channels, num_layers: transformer
            decoder (256, 100, 8, 2048, 6; ``num_layers`` is the official ``DEC_LAYERS`` - 1).
        norm_cfg: norm of the pixel decoder and of the prototype attention's pixel features.
        loss_cls, loss_mask, loss_dice, train_cfg: as mmseg's ``Mask2FormerHead``.
        align_corners, ignore_index: as mmseg's ``Mask2FormerHead``.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, feat_channels: int = 128,
                 out_channels: int = 256, embed_dims: int = 256, num_queries: int = 100,
                 num_heads: int = 8, feedforward_channels: int = 2048, num_layers: int = 6,
                 norm_cfg: dict | None = None, loss_cls: dict | None = None,
                 loss_mask: dict | None = None, loss_dice: dict | None = None,
                 train_cfg: dict | None = None, test_cfg: dict | None = None,
                 align_corners: bool = False, ignore_index: int = 255,
                 init_cfg: dict | None = None) -> None:
        # mmdet's Mask2FormerHead.__init__ builds its own decoders: set up what its losses and
        # mmseg's predict read, and nothing else.
        BaseDenseHead.__init__(self, init_cfg=init_cfg)
        self.num_classes = num_classes
        self.out_channels = num_classes
        self.align_corners = align_corners
        self.ignore_index = ignore_index
        self.num_queries = num_queries
        self.num_transformer_decoder_layers = num_layers
        norm_cfg = norm_cfg or dict(type='BN', requires_grad=True)
        self.pem = PEM(in_channels, num_classes, feat_channels, out_channels, embed_dims,
                       num_queries, num_heads, feedforward_channels, num_layers,
                       norm_layer=lambda c: build_norm_layer(norm_cfg, c)[1])
        self.test_cfg = test_cfg
        self.train_cfg = train_cfg
        if train_cfg:
            self.assigner = TASK_UTILS.build(train_cfg['assigner'])
            self.sampler = TASK_UTILS.build(train_cfg['sampler'], default_args=dict(context=self))
            self.num_points = train_cfg.get('num_points', 12544)
            self.oversample_ratio = train_cfg.get('oversample_ratio', 3.0)
            self.importance_sample_ratio = train_cfg.get('importance_sample_ratio', 0.75)
        loss_cls = loss_cls or dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0,
                                    reduction='mean', class_weight=[1.0] * num_classes + [0.1])
        loss_mask = loss_mask or dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True,
                                      reduction='mean', loss_weight=5.0)
        loss_dice = loss_dice or dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True,
                                      reduction='mean', naive_dice=True, eps=1.0, loss_weight=5.0)
        self.class_weight = loss_cls.get('class_weight')
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_mask = MODELS.build(loss_mask)
        self.loss_dice = MODELS.build(loss_dice)

    def init_weights(self) -> None:
        """The core modules initialise themselves (the official schemes) at construction."""

    def forward(self, x: Sequence[torch.Tensor], batch_data_samples=None):
        """Class and mask logits of every prediction (``num_layers + 1`` of each)."""
        return self.pem(list(x))


def register() -> None:
    _register(MODELS, PEMHead)
