"""kMaX-DeepLab as an mmdet panoptic head (``type='KMaXDeepLabHead'``) for mmdet's ``Mask2Former``
detector, with kMaX's own inference in ``KMaXFusionHead`` (:mod:`densekit.mm.heads.kmax_fusion`).

The network is :class:`densekit.models.heads.kmax_deeplab.KMaX` (the official pixel and k-means
transformer decoders and auxiliary semantic head, checked against the official port). Training
is kMaX's own (:class:`densekit.models.heads.kmax_criterion.KMaXCriterion`, checked against the
official ``SetCriterion``): PQ-style Hungarian matching on the final prediction, shared by every
prediction; PQ-style class and dice losses, mask-ID cross-entropy and pixel-wise instance
discrimination on every decoder prediction; the auxiliary semantic loss on the final one. Its
targets are built as the official data mapper builds them: the panoptic segments (thing
instances of ``gt_instances``, stuff regions of ``gt_sem_seg``) taken at every stride-th pixel
of the padded image (the official ``[::4, ::4]``) at the mask logits' size, segments left empty
dropped, and a semantic map of those segments with every other pixel (unlabelled, crowd,
padding) void. Inference is the official one: :meth:`KMaXDeepLabHead.predict` upsamples the
final mask logits to the padded input with the official ``align_corners`` rule and
``KMaXFusionHead`` applies the official post-processing.
"""
from __future__ import annotations

from typing import Sequence

import torch
from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
from mmdet.models.dense_heads.mask2former_head import Mask2FormerHead
from mmdet.models.utils import preprocess_panoptic_gt
from mmdet.registry import MODELS

from densekit.models.heads.kmax_criterion import KMaXCriterion, semantic_from_panoptic
from densekit.models.heads.kmax_deeplab import KMaX
from densekit.models.heads.kmax_postprocess import kmax_upsample_mask_logits
from densekit.mm.registry import register as _register


class KMaXDeepLabHead(Mask2FormerHead):
    """kMaX-DeepLab head (Yu et al., ECCV 2022) with kMaX's own losses and inference.

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
        aux_semantic_head: build the auxiliary semantic head (training only), as the official
            does when its loss weight is positive.
        aux_semantic_channels, aux_semantic_low_level_channels: its widths (256, (64, 32)).
        criterion: keyword arguments of :class:`KMaXCriterion` (loss weights, no-object weight,
            sampling); its defaults are the official COCO ones.
        train_cfg: must be empty: kMaX matches and weighs inside its criterion.
        test_cfg: as mmdet's ``Mask2FormerHead`` (read by the fusion head).
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
                 aux_semantic_head: bool = True, aux_semantic_channels: int = 256,
                 aux_semantic_low_level_channels: Sequence[int] = (64, 32),
                 criterion: dict | None = None, train_cfg: dict | None = None,
                 test_cfg: dict | None = None, init_cfg: dict | None = None) -> None:
        # mmdet's Mask2FormerHead.__init__ builds its own decoders and losses: set up what its
        # predict reads, and nothing else.
        BaseDenseHead.__init__(self, init_cfg=init_cfg)
        if train_cfg:
            raise ValueError('KMaXDeepLabHead trains with kMaX\'s criterion (criterion=dict(...)); '
                             f'the model\'s train_cfg must be empty, got {dict(train_cfg)}')
        criterion = dict(criterion or {})
        if 'num_classes' in criterion:
            raise ValueError('criterion.num_classes is num_things_classes + num_stuff_classes; '
                             f'got criterion num_classes={criterion["num_classes"]}')
        self.num_things_classes = num_things_classes
        self.num_stuff_classes = num_stuff_classes
        self.num_classes = num_things_classes + num_stuff_classes
        self.num_queries = num_queries
        self.num_transformer_decoder_layers = sum(transformer_decoder_layers)
        self.kmax = KMaX(in_channels, self.num_classes, num_queries, pixel_decoder_channels,
                         pixel_decoder_layers, pixel_decoder_types, transformer_decoder_layers,
                         embed_dims, base_filters, num_heads, feedforward_channels,
                         pixel_head_channels, mask_channels, pixel_drop_path,
                         transformer_drop_path, aux_semantic_head, aux_semantic_channels,
                         aux_semantic_low_level_channels)
        self.criterion = KMaXCriterion(self.num_classes, **criterion)
        if self.criterion.uses_aux_semantic and not aux_semantic_head:
            raise ValueError('criterion aux_semantic_weight='
                             f'{self.criterion.weight_dict["loss_aux_semantic"]} needs '
                             'aux_semantic_head=True (or set the weight to 0)')
        self.test_cfg = test_cfg
        self.train_cfg = train_cfg

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

    def loss(self, x: Sequence[torch.Tensor], batch_data_samples) -> dict:
        """kMaX's weighted losses (``loss_ce``, ``loss_mask``, ``loss_dice``,
        ``loss_pixel_insdis``, ``loss_aux_semantic``; ``_{i}`` for intermediate prediction
        ``i``) from panoptic data samples (``gt_instances`` with ``labels`` / ``masks``,
        ``gt_sem_seg`` with 255 void)."""
        x = list(x)
        # the masks are predicted at the stride-4 map's size; targets first, so that bad data
        # fail before the forward
        labels, masks, semantic = self.panoptic_targets(batch_data_samples, x[0].shape[-2:])
        return self.criterion(self.kmax.forward_train(x), labels, masks, semantic)

    def panoptic_targets(self, batch_data_samples, size) -> tuple[list, list, torch.Tensor]:
        """Per image the segments' classes ``[M]`` and masks ``[M, h, w]`` at the mask logits'
        size ``(h, w)``, and the ``[B, h, w]`` semantic map of those segments (255 elsewhere)."""
        h, w = size
        labels_all, masks_all, semantic = [], [], []
        for i, sample in enumerate(batch_data_samples):
            inst = sample.gt_instances
            sem = sample.gt_sem_seg.sem_seg if 'gt_sem_seg' in sample else None
            if sem is None and self.criterion.uses_aux_semantic:
                raise ValueError(f'data sample {i} has no gt_sem_seg: the auxiliary semantic loss '
                                 '(and the stuff classes) need it; load it with '
                                 'LoadPanopticAnnotations(with_seg=True)')
            if len(inst) and (int(inst.labels.min()) < 0
                              or int(inst.labels.max()) >= self.num_things_classes):
                raise ValueError(f'data sample {i}: gt_instances.labels must lie in [0, '
                                 f'num_things_classes={self.num_things_classes}), got '
                                 f'{inst.labels.tolist()}')
            mask_size = (inst.masks.height, inst.masks.width)
            if sem is not None and len(inst) and tuple(sem.shape[-2:]) != mask_size:
                raise ValueError(f'data sample {i}: gt_sem_seg of size {tuple(sem.shape[-2:])} '
                                 f'and instance masks of size {mask_size}')
            # thing instances, then one mask per stuff class of gt_sem_seg (mmdet's Mask2Former
            # targets, the official data mapper's segments)
            labels, masks = preprocess_panoptic_gt(inst.labels.long(), inst.masks, sem,
                                                   self.num_things_classes, self.num_stuff_classes)
            labels = labels.long()
            masks = _strided_subsample(masks.bool(), h, w)
            keep = masks.flatten(1).any(1)
            labels, masks = labels[keep], masks[keep]
            labels_all.append(labels)
            masks_all.append(masks)
            semantic.append(semantic_from_panoptic(labels, masks))
        return labels_all, masks_all, torch.stack(semantic)


def _strided_subsample(masks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``[M, H, W]`` -> ``[M, h, w]``: every ``s``-th pixel from the top-left one, ``s`` the
    rounded ratio of the sizes (the official takes ``[::4, ::4]`` of its 1281-pixel crops for
    321-pixel masks); rows / columns beyond the image are void."""
    H, W = masks.shape[-2:]
    sh, sw = max(1, round(H / h)), max(1, round(W / w))
    sub = masks[:, ::sh, ::sw][:, :h, :w]
    out = masks.new_zeros(masks.shape[:1] + (h, w))
    out[:, :sub.shape[1], :sub.shape[2]] = sub
    return out


def register() -> None:
    _register(MODELS, KMaXDeepLabHead)
