"""Non-maximum suppression: ``nms``, ``soft_nms``, ``nms_match``, ``bbox_overlaps`` (mmcv 2.1).

``nms`` uses torchvision's compiled kernel when it is available and ``offset == 0``: its greedy
rule (``IoU > threshold``, IoU in the boxes' dtype) is mmcv's. Two details differ and are
neutralised here: torchvision orders equal scores differently (so it is fed as the score the
rank in mmcv's CPU order, on every device: :func:`reference.score_order`), and it compares IoU
with the threshold in double precision where mmcv uses float32 (so the threshold is rounded to
float32 first). Checked against mmcv's kernel by
``tests/ops/test_mmcv_nms.py``. The pure-PyTorch reference covers ``offset == 1``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from densekit.ops.mmcv.nms import reference
from densekit.ops.mmcv.nms.reference import bbox_overlaps, nms_match, soft_nms

__all__ = ['bbox_overlaps', 'nms', 'nms_match', 'soft_nms', 'reference']


def _torchvision_nms():
    try:
        import torchvision
        from torchvision.extension import _has_ops
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    return torchvision.ops.nms if _has_ops() else None


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: int = 0) -> Tensor:
    """Greedy NMS; see :func:`densekit.ops.mmcv.nms.reference.nms` for the exact contract."""
    if offset not in (0, 1):
        raise ValueError(f'nms offset must be 0 or 1, got {offset!r}')
    if boxes.dim() != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f'nms expects boxes [N, 4] and scores [N], got '
                         f'{tuple(boxes.shape)} and {tuple(scores.shape)}')
    tv_nms = _torchvision_nms() if offset == 0 else None
    if tv_nms is None or boxes.shape[0] == 0:
        return reference.nms(boxes, scores, float(iou_threshold), offset)
    order = reference.score_order(scores)  # mmcv's CPU order, ties included, on every device
    rank = torch.arange(order.numel(), 0, -1, device=boxes.device, dtype=torch.float32)
    thr = float(torch.tensor(float(iou_threshold), dtype=torch.float32))
    keep = tv_nms(boxes[order].float() if boxes.dtype == torch.float16 else boxes[order],
                  rank.to(boxes.dtype) if boxes.dtype != torch.float16 else rank, thr)
    return order[keep]
