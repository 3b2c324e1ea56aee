"""Test-time augmentation for instance segmentation (boxes *and* masks), registered into mmdet.

mmdet 3.3's ``DetTTAModel`` refuses predictions that carry masks ("TTA of instance segmentation
does not support now"), so ``tools/test.py --tta`` could not run Mask R-CNN, Cascade Mask R-CNN
or Mask2Former-instance configs. ``InstanceTTAModel`` merges the views the way the
box-only model does (un-flip, concatenate, class-wise NMS, keep the top ``max_per_img``) and
carries each kept detection's mask along, un-flipped into the original image frame. Views are
predicted with ``rescale=True``, so all masks already share the original resolution.
"""
from __future__ import annotations

import torch
from mmdet.models.test_time_augs import DetTTAModel
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_flip
from mmengine.structures import InstanceData

from densekit.mm.registry import deprecated_alias, register as _register

_MASK_FLIP_DIMS = {'horizontal': (-1,), 'vertical': (-2,), 'diagonal': (-2, -1)}


def _unflip_masks(masks: torch.Tensor, direction: str) -> torch.Tensor:
    if direction not in _MASK_FLIP_DIMS:
        raise ValueError(f"unknown flip_direction={direction!r}; expected one of "
                         f"{sorted(_MASK_FLIP_DIMS)}")
    return masks.flip(_MASK_FLIP_DIMS[direction])


class InstanceTTAModel(DetTTAModel):
    """``DetTTAModel`` that also merges ``pred_instances.masks``.

    Args:
        tta_cfg: ``dict(nms=dict(type='nms', iou_threshold=...), max_per_img=...)`` as for
            ``DetTTAModel``; defaults to IoU 0.5 and 100 detections.
        **kwargs: passed to ``DetTTAModel`` (``module`` is the wrapped detector).
    """

    def __init__(self, tta_cfg: dict | None = None, **kwargs) -> None:
        if tta_cfg is None:
            tta_cfg = dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)
        super().__init__(tta_cfg=tta_cfg, **kwargs)

    def _merge_single_sample(self, data_samples: list[DetDataSample]) -> DetDataSample:
        if data_samples[0].pred_instances.get('masks', None) is None:
            return super()._merge_single_sample(data_samples)
        from mmcv.ops import batched_nms

        boxes, scores, labels, masks = [], [], [], []
        for sample in data_samples:
            inst, meta = sample.pred_instances, sample.metainfo
            b, m = inst.bboxes, inst.masks
            if not isinstance(m, torch.Tensor):
                m = torch.as_tensor(m.to_ndarray() if hasattr(m, 'to_ndarray') else m)
            if meta.get('flip', False):
                b = bbox_flip(b, meta['ori_shape'], meta['flip_direction'])
                m = _unflip_masks(m, meta['flip_direction'])
            boxes.append(b)
            scores.append(inst.scores)
            labels.append(inst.labels)
            masks.append(m)
        boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        if boxes.numel() == 0:
            return data_samples[0]
        masks = torch.cat(masks)
        dets, keep = batched_nms(boxes, scores, labels, self.tta_cfg.nms)
        top = self.tta_cfg.max_per_img
        keep = keep[:top]
        merged = InstanceData()
        merged.bboxes = dets[:top, :-1]
        merged.scores = dets[:top, -1]
        merged.labels = labels[keep]
        merged.masks = masks[keep]
        result = data_samples[0]
        result.pred_instances = merged
        return result


DenseKitInstanceTTAModel = deprecated_alias(InstanceTTAModel, 'DenseKitInstanceTTAModel')


def register() -> None:
    from mmdet.registry import MODELS
    for cls in (InstanceTTAModel, DenseKitInstanceTTAModel):
        _register(MODELS, cls)
