"""kMaX-DeepLab's own inference as an mmdet panoptic fusion head (``type='KMaXFusionHead'``), the
``panoptic_fusion_head`` of the kMaX configs in mmdet's ``Mask2Former`` detector.

The rules (softmax of the masks over the queries, pixel-confidence threshold, thing / stuff
class thresholds, reorder score, overlap rule, stuff merging; the align-corners resizing) are
:mod:`densekit.models.heads.kmax_postprocess`; this module reads their settings from the
detector's ``test_cfg`` and writes mmdet's result formats, those of ``MaskFormerFusionHead``:

* ``pred_panoptic_seg.sem_seg`` ``[1, H, W]`` int32: ``label + instance * INSTANCE_OFFSET``
  (things numbered from 1, stuff 0), ``num_classes`` where no segment (read by
  ``CocoPanopticMetric`` and the ``--show-dir`` panels);
* ``pred_instances``: ``bboxes`` (of the masks), ``labels``, ``scores``, bool ``masks``;
* ``pred_sem_seg.sem_seg`` ``[1, H, W]``: the arg-max class of the semantic probabilities.
  mmdet's ``Mask2Former.add_pred_to_datasample`` refuses semantic results, so this head puts
  them on the data samples itself.
"""
from __future__ import annotations

from typing import List

import torch
from mmdet.evaluation.functional import INSTANCE_OFFSET
from mmdet.models.seg_heads.panoptic_fusion_heads.base_panoptic_fusion_head import \
    BasePanopticFusionHead
from mmdet.registry import MODELS
from mmdet.structures.mask import mask2bbox
from mmengine.structures import InstanceData, PixelData

from densekit.mm.registry import register as _register
from densekit.models.heads.kmax_postprocess import (kmax_align_corners, kmax_crop_and_resize,
                                                    kmax_instance_inference,
                                                    kmax_panoptic_inference,
                                                    kmax_semantic_inference)

# test_cfg keys and their defaults: the official COCO test settings (kmax_r50.yaml)
INFERENCE_DEFAULTS = dict(pixel_confidence_threshold=0.4, class_threshold_thing=0.7,
                          class_threshold_stuff=0.5, overlap_threshold=0.8,
                          reorder_class_weight=1.0, reorder_mask_weight=1.0)
SWITCHES = dict(panoptic_on=True, semantic_on=False, instance_on=False, max_per_image=100)


class KMaXFusionHead(BasePanopticFusionHead):
    """kMaX-DeepLab's panoptic / semantic / instance inference (Yu et al., ECCV 2022).

    Args:
        num_things_classes, num_stuff_classes: panoptic classes (labels below
            ``num_things_classes`` are things).
        test_cfg: the detector's ``test_cfg``: ``panoptic_on`` / ``semantic_on`` /
            ``instance_on``, ``max_per_image`` (instance pairs kept, 100) and the settings of
            :func:`~densekit.models.heads.kmax_postprocess.kmax_panoptic_inference`
            (``pixel_confidence_threshold`` 0.4, ``class_threshold_thing`` 0.7,
            ``class_threshold_stuff`` 0.5, ``overlap_threshold`` 0.8, ``reorder_class_weight``
            and ``reorder_mask_weight`` 1.0). Any other key is an error: MaskFormerFusionHead's
            ``object_mask_thr`` / ``iou_thr`` / ``filter_low_score`` mean nothing here.
        loss_panoptic, init_cfg: as mmdet's fusion heads (no loss).
    """

    def __init__(self, num_things_classes: int = 80, num_stuff_classes: int = 53,
                 test_cfg: dict | None = None, loss_panoptic: dict | None = None,
                 init_cfg: dict | None = None, **kwargs) -> None:
        super().__init__(num_things_classes=num_things_classes,
                         num_stuff_classes=num_stuff_classes, test_cfg=test_cfg,
                         loss_panoptic=loss_panoptic, init_cfg=init_cfg, **kwargs)
        cfg = dict(test_cfg or {})
        unknown = sorted(set(cfg) - set(INFERENCE_DEFAULTS) - set(SWITCHES))
        if unknown:
            raise ValueError(f'KMaXFusionHead: test_cfg keys {unknown} are not kMaX inference '
                             f'settings; known: {sorted(SWITCHES) + sorted(INFERENCE_DEFAULTS)}')
        self.inference_cfg = {k: cfg.get(k, v) for k, v in INFERENCE_DEFAULTS.items()}
        self.switches = {k: cfg.get(k, v) for k, v in SWITCHES.items()}
        for name, value in self.inference_cfg.items():
            if name.startswith('reorder'):
                if float(value) < 0:
                    raise ValueError(f'KMaXFusionHead: test_cfg.{name} must be >= 0, '
                                     f'got {value!r}')
            elif not 0.0 <= float(value) <= 1.0:
                raise ValueError(f'KMaXFusionHead: test_cfg.{name} must be in [0, 1], '
                                 f'got {value!r}')
        if int(self.switches['max_per_image']) < 1:
            raise ValueError(f"KMaXFusionHead: test_cfg.max_per_image must be >= 1, got "
                             f"{self.switches['max_per_image']!r}")

    def loss(self, **kwargs) -> dict:
        """No training loss."""
        return dict()

    def panoptic_postprocess(self, mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> PixelData:
        """One image's panoptic map in mmdet's encoding from ``[Q, K + 1]`` class and
        ``[Q, H, W]`` mask logits."""
        ids, segments = kmax_panoptic_inference(mask_cls, mask_pred,
                                                num_things_classes=self.num_things_classes,
                                                **self.inference_cfg)
        pan = torch.full_like(ids, self.num_classes)
        instance = 0
        for seg in segments:
            value = seg['category_id']
            if seg['isthing']:
                instance += 1
                value += instance * INSTANCE_OFFSET
            pan[ids == seg['id']] = value
        return PixelData(sem_seg=pan[None])

    def semantic_postprocess(self, mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> PixelData:
        """One image's semantic label map ``[1, H, W]``."""
        return PixelData(sem_seg=kmax_semantic_inference(mask_cls, mask_pred).argmax(0)[None])

    def instance_postprocess(self, mask_cls: torch.Tensor,
                             mask_pred: torch.Tensor) -> InstanceData:
        """One image's instances; with panoptic inference on, things only (as the official)."""
        things = self.num_things_classes if self.switches['panoptic_on'] else None
        out = kmax_instance_inference(
            mask_cls, mask_pred, max_per_image=int(self.switches['max_per_image']),
            pixel_confidence_threshold=self.inference_cfg['pixel_confidence_threshold'],
            num_things_classes=things)
        return InstanceData(bboxes=mask2bbox(out['masks']), labels=out['labels'],
                            scores=out['scores'], masks=out['masks'])

    def predict(self, mask_cls_results: torch.Tensor, mask_pred_results: torch.Tensor,
                batch_data_samples, rescale: bool = False, **kwargs) -> List[dict]:
        """Results per image from class logits ``[B, Q, K + 1]`` and mask logits
        ``[B, Q, H, W]`` at the padded input size (``KMaXDeepLabHead.predict``'s output).

        Each image's masks are cropped to ``img_shape`` and, with ``rescale``, resized to
        ``ori_shape`` with ``align_corners`` when the padded width is odd (the official rule).
        Returns ``pan_results`` / ``ins_results`` dicts as ``MaskFormerFusionHead``; semantic
        results go straight to each sample's ``pred_sem_seg``.
        """
        results = []
        for mask_cls, mask_pred, sample in zip(mask_cls_results, mask_pred_results,
                                               batch_data_samples):
            meta = sample.metainfo
            pad_w = meta.get('batch_input_shape', mask_pred.shape[-2:])[1]
            mask_pred = kmax_crop_and_resize(mask_pred, meta['img_shape'][:2],
                                             meta['ori_shape'][:2] if rescale else None,
                                             kmax_align_corners(pad_w))
            result = dict()
            if self.switches['panoptic_on']:
                result['pan_results'] = self.panoptic_postprocess(mask_cls, mask_pred)
            if self.switches['instance_on']:
                result['ins_results'] = self.instance_postprocess(mask_cls, mask_pred)
            if self.switches['semantic_on']:
                sample.pred_sem_seg = self.semantic_postprocess(mask_cls, mask_pred)
            results.append(result)
        return results


def register() -> None:
    _register(MODELS, KMaXFusionHead)
