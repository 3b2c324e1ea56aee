"""Non-maximum suppression in pure PyTorch with mmcv 2.1's exact semantics.

Greedy NMS (Neubeck & Van Gool, "Efficient Non-Maximum Suppression", ICPR 2006), Soft-NMS
(Bodla et al., "Soft-NMS -- Improving Object Detection With One Line of Code", ICCV 2017) and
NMS matching (groups of suppressed boxes, used by mmdet's ``ScoreHLRSampler``).

Semantics followed (mmcv's CPU kernels):

* Box width is ``x2 - x1 + offset`` (``offset`` is 0 or 1); IoU is
  ``inter / (area_i + area_j - inter)`` evaluated in the boxes' dtype.
* ``nms`` drops a box when ``IoU > iou_threshold``; ``nms_match`` and the naive/linear
  ``soft_nms`` use ``IoU >= iou_threshold``.
* Boxes are visited in the order of ``scores.sort(descending=True)`` evaluated on CPU -- the
  same (non-stable) call mmcv's CPU kernel makes, so equal scores come out in mmcv's CPU order on
  every device (see :func:`score_order`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# IoU matrices are built in row blocks so that memory stays bounded for many boxes.
_IOU_BLOCK = 2048


def score_order(scores: Tensor) -> Tensor:
    """Indices of ``scores`` by descending score, equal scores in the order of mmcv's CPU kernel.

    mmcv's kernels call the non-stable ``scores.sort(descending=True)`` on the scores' device, and
    torch's CPU and CUDA sorts order equal scores differently. With tied boxes that suppress each
    other that choice decides which box is kept: in the golden fixture boxes 64 and 65 are the
    same box with the same score; mmcv's CPU kernel keeps 65, a CUDA sort visits 64 first and
    keeps 64. Sorting a CPU copy makes the result independent of the device, equal to
    mmcv's CPU kernel (the semantics followed here and the golden fixtures); the cost is one small
    host round trip per call (torchvision's CUDA NMS synchronises with the host anyway).
    """
    return torch.sort(scores.detach().cpu(), descending=True).indices.to(scores.device)


def _pairwise_iou(boxes: Tensor, areas: Tensor, rows: Tensor, offset: float) -> Tensor:
    """IoU of ``boxes[rows]`` against all ``boxes``: ``[len(rows), N]``."""
    b = boxes[rows]
    xx1 = torch.maximum(b[:, None, 0], boxes[None, :, 0])
    yy1 = torch.maximum(b[:, None, 1], boxes[None, :, 1])
    xx2 = torch.minimum(b[:, None, 2], boxes[None, :, 2])
    yy2 = torch.minimum(b[:, None, 3], boxes[None, :, 3])
    w = (xx2 - xx1 + offset).clamp_min(0)
    h = (yy2 - yy1 + offset).clamp_min(0)
    inter = w * h
    return inter / (areas[rows][:, None] + areas[None, :] - inter)


def _suppression_matrix(boxes: Tensor, iou_threshold: float, offset: float,
                        inclusive: bool) -> np.ndarray:
    """Boolean ``[N, N]`` matrix (numpy, CPU): ``m[i, j]`` when box ``i`` would suppress ``j``."""
    areas = (boxes[:, 2] - boxes[:, 0] + offset) * (boxes[:, 3] - boxes[:, 1] + offset)
    n = boxes.shape[0]
    out = np.empty((n, n), dtype=bool)
    for start in range(0, n, _IOU_BLOCK):
        rows = torch.arange(start, min(start + _IOU_BLOCK, n), device=boxes.device)
        iou = _pairwise_iou(boxes, areas, rows, offset)
        hit = iou >= iou_threshold if inclusive else iou > iou_threshold
        out[start:start + rows.numel()] = hit.cpu().numpy()
    return out


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: int = 0) -> Tensor:
    """Greedy NMS.

    Args:
        boxes: ``[N, 4]`` boxes ``(x1, y1, x2, y2)``.
        scores: ``[N]`` scores.
        iou_threshold: a box is dropped when its IoU with a kept box is ``> iou_threshold``.
        offset: 0 or 1, added to widths and heights (legacy pixel convention).

    Returns:
        ``[K]`` int64 indices of the kept boxes, by descending score, on ``boxes.device``.
    """
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = score_order(scores)
    # Work in score order; the thresholded IoU is computed in the boxes' dtype, like mmcv.
    sup = _suppression_matrix(boxes[order], iou_threshold, offset, inclusive=False)
    n = sup.shape[0]
    alive = np.ones(n, dtype=bool)
    keep = []
    for i in range(n):
        if not alive[i]:
            continue
        keep.append(i)
        # Only later boxes can be suppressed by box i (earlier ones are already decided).
        alive[i + 1:] &= ~sup[i, i + 1:]
    keep_t = torch.as_tensor(keep, dtype=torch.long, device=boxes.device)
    return order[keep_t]


def nms_match(dets: Tensor, iou_threshold: float) -> list[list[int]]:
    """Groups boxes by the kept box that suppresses them (IoU ``>= iou_threshold``).

    Args:
        dets: ``[N, 5]`` rows ``(x1, y1, x2, y2, score)``; widths use no offset.
        iou_threshold: suppression threshold (inclusive).

    Returns:
        One list per kept box, in descending score order: the kept index first, then the
        indices it suppressed in descending score order.
    """
    if dets.shape[0] == 0:
        return []
    order = score_order(dets[:, 4])
    sup = _suppression_matrix(dets[order, :4], iou_threshold, 0, inclusive=True)
    order_l = order.tolist()
    n = sup.shape[0]
    alive = np.ones(n, dtype=bool)
    groups = []
    for i in range(n):
        if not alive[i]:
            continue
        hit = np.flatnonzero(alive[i + 1:] & sup[i, i + 1:]) + i + 1
        alive[hit] = False
        groups.append([order_l[i]] + [order_l[j] for j in hit])
    return groups


_SOFT_METHODS = {'naive': 0, 'linear': 1, 'gaussian': 2}


def soft_nms(boxes: Tensor, scores: Tensor, iou_threshold: float = 0.3, sigma: float = 0.5,
             min_score: float = 1e-3, method: int | str = 'linear',
             offset: int = 0) -> tuple[Tensor, Tensor]:
    """Soft-NMS with mmcv's in-place selection order.

    The highest remaining score is picked (first position on ties), the scores of the boxes
    after it are decayed, and a box whose score drops below ``min_score`` is discarded by
    moving the *last* remaining box into its slot. That slot bookkeeping decides the order of
    later ties, so it is reproduced exactly.

    Args:
        boxes: ``[N, 4]`` boxes.
        scores: ``[N]`` scores.
        iou_threshold: overlap above which naive / linear decay applies (inclusive).
        sigma: Gaussian decay parameter (``exp(-iou**2 / sigma)``).
        min_score: boxes whose decayed score is below this are dropped.
        method: ``'naive'`` (hard NMS), ``'linear'`` or ``'gaussian'``, or mmcv's codes 0/1/2.
        offset: 0 or 1, added to widths and heights.

    Returns:
        ``(dets, inds)``: ``[K, 5]`` kept boxes with decayed scores and their ``[K]`` indices
        into the input, both on ``boxes.device``.
    """
    if isinstance(method, str):
        if method not in _SOFT_METHODS:
            raise ValueError(f'soft_nms method must be one of {sorted(_SOFT_METHODS)}, '
                             f'got {method!r}')
        method = _SOFT_METHODS[method]
    if method not in (0, 1, 2):
        raise ValueError(f'soft_nms method code must be 0, 1 or 2, got {method!r}')
    n = boxes.shape[0]
    if n == 0:
        return boxes.new_zeros((0, 5)), torch.empty(0, dtype=torch.long, device=boxes.device)
    # The selection is inherently sequential; numpy keeps the per-step work vectorised while
    # matching the float32 arithmetic of mmcv's kernel.
    np_dtype = np.float64 if boxes.dtype == torch.float64 else np.float32
    b = boxes.detach().cpu().numpy().astype(np_dtype, copy=True)
    sc = scores.detach().cpu().numpy().astype(np_dtype, copy=True)
    off = np_dtype(offset)
    areas = (b[:, 2] - b[:, 0] + off) * (b[:, 3] - b[:, 1] + off)
    inds = np.arange(n)
    dets = np.zeros((n, 5), dtype=np_dtype)
    thr, sig, mins = np_dtype(iou_threshold), np_dtype(sigma), np_dtype(min_score)
    i = 0
    while i < n:
        m = i + int(np.argmax(sc[i:n]))  # argmax returns the first maximum, like the kernel
        for arr in (b, sc, areas, inds):
            arr[[i, m]] = arr[[m, i]]
        dets[i, :4] = b[i]
        dets[i, 4] = sc[i]
        rest = slice(i + 1, n)
        xx1 = np.maximum(b[i, 0], b[rest, 0])
        yy1 = np.maximum(b[i, 1], b[rest, 1])
        xx2 = np.minimum(b[i, 2], b[rest, 2])
        yy2 = np.minimum(b[i, 3], b[rest, 3])
        w = np.maximum(np_dtype(0), xx2 - xx1 + off)
        h = np.maximum(np_dtype(0), yy2 - yy1 + off)
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        if method == 0:
            weight = np.where(ovr >= thr, np_dtype(0), np_dtype(1))
        elif method == 1:
            weight = np.where(ovr >= thr, np_dtype(1) - ovr, np_dtype(1))
        else:
            weight = np.exp(-(ovr * ovr) / sig)
        sc[rest] = sc[rest] * weight.astype(np_dtype)
        drop = sc[rest] < mins
        if drop.any():
            n = _discard_by_swap_with_last(i + 1, n, drop, (b, sc, areas, inds))
        i += 1
    dev = boxes.device
    return (torch.from_numpy(dets[:n]).to(device=dev, dtype=boxes.dtype),
            torch.from_numpy(inds[:n].copy()).to(device=dev, dtype=torch.long))


def _discard_by_swap_with_last(start: int, n: int, drop: np.ndarray, arrays) -> int:
    """Replays the kernel's 'overwrite slot with last box, shrink n' loop; returns the new n.

    ``drop[k]`` says whether the box at slot ``start + k`` (as laid out before this pass) is
    discarded. A box moved in from the end is re-examined in its new slot, as in the kernel.
    """
    dropped = np.zeros(n, dtype=bool)
    dropped[start:n] = drop
    pos = start
    while pos < n:
        if dropped[pos]:
            last = n - 1
            for arr in arrays:
                arr[pos] = arr[last]
            dropped[pos] = dropped[last]
            n -= 1
        else:
            pos += 1
    return n



def bbox_overlaps(bboxes1: Tensor, bboxes2: Tensor, mode: str = 'iou', aligned: bool = False,
                  offset: int = 0) -> Tensor:
    """IoU (``mode='iou'``) or intersection over ``bboxes1``'s area (``'iof'``).

    Returns ``[N, M]``, or ``[N]`` for row-aligned pairs when ``aligned``.
    """
    if mode not in ('iou', 'iof'):
        raise ValueError(f"bbox_overlaps mode must be 'iou' or 'iof', got {mode!r}")
    if aligned:
        lt = torch.maximum(bboxes1[:, :2], bboxes2[:, :2])
        rb = torch.minimum(bboxes1[:, 2:], bboxes2[:, 2:])
    else:
        lt = torch.maximum(bboxes1[:, None, :2], bboxes2[None, :, :2])
        rb = torch.minimum(bboxes1[:, None, 2:], bboxes2[None, :, 2:])
    wh = (rb - lt + offset).clamp_min(0)
    overlap = wh[..., 0] * wh[..., 1]
    area1 = (bboxes1[:, 2] - bboxes1[:, 0] + offset) * (bboxes1[:, 3] - bboxes1[:, 1] + offset)
    if not aligned:
        area1 = area1[:, None]
    if mode == 'iof':
        return overlap / area1
    area2 = (bboxes2[:, 2] - bboxes2[:, 0] + offset) * (bboxes2[:, 3] - bboxes2[:, 1] + offset)
    return overlap / (area1 + area2 - overlap)
