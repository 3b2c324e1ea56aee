"""Panoptic Quality (Kirillov et al., "Panoptic Segmentation", CVPR 2019, Sec. 4).

Per category, ground-truth and predicted segments are matched when their IoU is strictly above
0.5 (which makes the matching unique) and

    PQ = sum(IoU of matches) / (TP + FP / 2 + FN / 2) = SQ * RQ,
    SQ = sum(IoU of matches) / TP,   RQ = TP / (TP + FP / 2 + FN / 2).

COCO's conventions (those of the reference ``panopticapi.evaluation``, whose names this module
keeps): pixels with id :data:`VOID` (0) in the ground truth are left out of every IoU; crowd
ground-truth segments (``iscrowd == 1``) are never matched and never count as FN; an unmatched
prediction counts as FP unless more than half of its area lies on VOID pixels or on crowd regions
of its own category. The ground-truth area is the ``area`` field of the annotation; predicted
areas are counted in the prediction map. ``(gt_id, pred_id)`` pairs are encoded in one integer,
``gt_id * OFFSET + pred_id``, so that one ``np.unique`` gives all intersections.

Deviations from the reference, on input it does not handle: :meth:`PQStat.pq_average` reports 0
with ``n == 0`` when no category of the group occurs (the reference divides by zero), and an
unmatched prediction is compared with *all* crowd regions of its category (COCO has at most one
per category and image; the reference keeps only the last one).
"""
from __future__ import annotations

import json
import multiprocessing
import os
from collections import defaultdict
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .utils import rgb2id

OFFSET = 256 * 256 * 256   # one more than the largest id an RGB PNG can hold
VOID = 0


class PQStatCat:
    """Sums for one category: matched IoU, TP, FP and FN counts."""

    def __init__(self) -> None:
        self.iou = 0.0
        self.tp = 0
        self.fp = 0
        self.fn = 0

    def __iadd__(self, other: 'PQStatCat') -> 'PQStatCat':
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self

    def __repr__(self) -> str:
        return f'PQStatCat(iou={self.iou}, tp={self.tp}, fp={self.fp}, fn={self.fn})'


class PQStat:
    """Per-category :class:`PQStatCat` sums; ``+=`` merges images (or worker results)."""

    def __init__(self) -> None:
        self.pq_per_cat: defaultdict[int, PQStatCat] = defaultdict(PQStatCat)

    def __getitem__(self, category_id: int) -> PQStatCat:
        return self.pq_per_cat[category_id]

    def __iadd__(self, other: 'PQStat') -> 'PQStat':
        for category_id, stat in other.pq_per_cat.items():
            self.pq_per_cat[category_id] += stat
        return self

    def pq_average(self, categories: Mapping[int, Mapping[str, Any]],
                   isthing: bool | None) -> tuple[dict, dict]:
        """PQ, SQ and RQ averaged over the categories that occur (TP + FP + FN > 0).

        Args:
            categories: ``{category_id: {'isthing': 0 or 1, ...}}``.
            isthing: True for things only, False for stuff only, None for all categories.

        Returns:
            ``({'pq', 'sq', 'rq', 'n'}, {category_id: {'pq', 'sq', 'rq'}})``; a category of the
            group that does not occur gets zeros in the second dict and is not counted in ``n``.
        """
        per_class: dict[int, dict[str, float]] = {}
        totals = np.zeros(3)
        n = 0
        for category_id, info in categories.items():
            if isthing is not None and (info['isthing'] == 1) != isthing:
                continue
            s = self.pq_per_cat[category_id]
            if s.tp + s.fp + s.fn == 0:
                per_class[category_id] = {'pq': 0.0, 'sq': 0.0, 'rq': 0.0}
                continue
            denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
            pq, rq = s.iou / denom, s.tp / denom
            sq = s.iou / s.tp if s.tp else 0
            per_class[category_id] = {'pq': pq, 'sq': sq, 'rq': rq}
            totals += (pq, sq, rq)
            n += 1
        if n == 0:
            return {'pq': 0.0, 'sq': 0.0, 'rq': 0.0, 'n': 0}, per_class
        pq, sq, rq = (float(t) / n for t in totals)
        return {'pq': pq, 'sq': sq, 'rq': rq, 'n': n}, per_class


def pq_stat_single_image(pan_gt: np.ndarray, pan_pred: np.ndarray,
                         gt_segments: Sequence[Mapping[str, Any]],
                         pred_segments: Sequence[Mapping[str, Any]],
                         categories: Mapping[int, Any], image_id: Any = None,
                         into: PQStat | None = None) -> PQStat:
    """PQ sums of one image from its ``[H, W]`` id maps and ``segments_info`` lists.

    Args:
        pan_gt: ground-truth segment ids (VOID = 0 for unlabelled pixels).
        pan_pred: predicted segment ids (VOID = 0 for pixels without a prediction).
        gt_segments: dicts with ``id``, ``category_id``, ``iscrowd`` and ``area``.
        pred_segments: dicts with ``id`` and ``category_id``.
        categories: the valid category ids (a mapping keyed by id).
        image_id: only used in error messages.
        into: a :class:`PQStat` to add this image's sums to (in place); a new one when None.
            Adding each match straight into a running total keeps the order of the float sums,
            and so the result, identical to the reference's.

    Returns:
        ``into`` (or the new :class:`PQStat`) with this image's TP / FP / FN counts and matched
        IoU sums added.

    Raises:
        KeyError: when the prediction map and ``pred_segments`` disagree, or a predicted segment
            has a category not in ``categories`` (as the reference does).
    """
    if pan_gt.shape != pan_pred.shape:
        raise ValueError(f'image {image_id}: ground truth {pan_gt.shape} and prediction '
                         f'{pan_pred.shape} differ in shape')
    gt = {int(s['id']): s for s in gt_segments}
    pred = {int(s['id']): s for s in pred_segments}

    ids, counts = np.unique(pan_pred, return_counts=True)
    pred_area = {int(i): int(c) for i, c in zip(ids, counts) if i != VOID}
    unknown = sorted(set(pred_area) - set(pred))
    if unknown:
        raise KeyError(f'image {image_id}: segment ids {unknown} are in the prediction map but '
                       f'not in its segments_info')
    absent = sorted(set(pred) - set(pred_area))
    if absent:
        raise KeyError(f'image {image_id}: segment ids {absent} are in segments_info but not in '
                       f'the prediction map')
    for pid, seg in pred.items():
        if seg['category_id'] not in categories:
            raise KeyError(f'image {image_id}: predicted segment {pid} has unknown category_id '
                           f'{seg["category_id"]}')

    # Every (gt id, pred id) intersection at once; uint64 since ids go up to OFFSET - 1.
    pairs = pan_gt.astype(np.uint64) * np.uint64(OFFSET) + pan_pred.astype(np.uint64)
    keys, counts = np.unique(pairs, return_counts=True)
    inter = {(int(k) // OFFSET, int(k) % OFFSET): int(c) for k, c in zip(keys, counts)}

    stat = PQStat() if into is None else into
    matched_gt, matched_pred = set(), set()
    for (gid, pid), n_inter in inter.items():
        g, p = gt.get(gid), pred.get(pid)
        if g is None or p is None or g['iscrowd'] == 1 or g['category_id'] != p['category_id']:
            continue
        # Pixels that are VOID in the ground truth do not count against the prediction.
        union = pred_area[pid] + g['area'] - n_inter - inter.get((VOID, pid), 0)
        iou = n_inter / union
        if iou > 0.5:   # strictly: two matches of one segment would need IoU <= 0.5 each
            stat[g['category_id']].tp += 1
            stat[g['category_id']].iou += iou
            matched_gt.add(gid)
            matched_pred.add(pid)

    crowd_by_cat: dict[Any, list[int]] = defaultdict(list)
    for gid, g in gt.items():
        if g['iscrowd'] == 1:
            crowd_by_cat[g['category_id']].append(gid)
        elif gid not in matched_gt:
            stat[g['category_id']].fn += 1

    for pid, p in pred.items():
        if pid in matched_pred:
            continue
        ignored = inter.get((VOID, pid), 0)
        ignored += sum(inter.get((cid, pid), 0) for cid in crowd_by_cat.get(p['category_id'], ()))
        if ignored / pred_area[pid] > 0.5:
            continue
        stat[p['category_id']].fp += 1
    return stat


def _read_ids(path: str) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        return rgb2id(np.asarray(im.convert('RGB'), dtype=np.uint32))


def pq_compute_single_core(proc_id: int, annotation_set: Iterable[tuple[dict, dict]],
                           gt_folder: str, pred_folder: str,
                           categories: Mapping[int, Any]) -> PQStat:
    """Sums :func:`pq_stat_single_image` over ``(gt_ann, pred_ann)`` pairs read from PNGs.

    Args:
        proc_id: worker index (kept for the reference's signature; unused).
        annotation_set: pairs of COCO panoptic annotations (``file_name``, ``segments_info``).
        gt_folder: folder of the ground-truth PNGs.
        pred_folder: folder of the predicted PNGs.
        categories: ``{category_id: category_info}``.
    """
    stat = PQStat()
    for gt_ann, pred_ann in annotation_set:
        pq_stat_single_image(
            _read_ids(os.path.join(gt_folder, gt_ann['file_name'])),
            _read_ids(os.path.join(pred_folder, pred_ann['file_name'])),
            gt_ann['segments_info'], pred_ann['segments_info'], categories,
            image_id=gt_ann.get('image_id'), into=stat)
    return stat


def pq_compute_multi_core(matched_annotations_list: Sequence[tuple[dict, dict]],
                          gt_folder: str, pred_folder: str,
                          categories: Mapping[int, Any]) -> PQStat:
    """:func:`pq_compute_single_core` over ``min(cpu_count, len(list))`` worker processes."""
    n_proc = max(1, min(multiprocessing.cpu_count(), len(matched_annotations_list)))
    chunks = [list(matched_annotations_list[i::n_proc]) for i in range(n_proc)]
    with multiprocessing.Pool(processes=n_proc) as pool:
        parts = pool.starmap(pq_compute_single_core,
                             [(i, c, gt_folder, pred_folder, categories)
                              for i, c in enumerate(chunks)])
    stat = PQStat()
    for part in parts:
        stat += part
    return stat


def pq_compute(gt_json_file: str, pred_json_file: str, gt_folder: str | None = None,
               pred_folder: str | None = None) -> dict:
    """PQ of a COCO panoptic prediction file against a ground-truth file.

    Args:
        gt_json_file: COCO panoptic ground-truth JSON (``annotations``, ``categories``).
        pred_json_file: prediction JSON (``annotations``).
        gt_folder: PNG folder of the ground truth; defaults to the JSON path without ``.json``.
        pred_folder: PNG folder of the prediction; same default.

    Returns:
        ``{'All' | 'Things' | 'Stuff': {'pq', 'sq', 'rq', 'n'}, 'per_class': {...}}``.
    """
    with open(gt_json_file) as f:
        gt_json = json.load(f)
    with open(pred_json_file) as f:
        pred_json = json.load(f)
    gt_folder = gt_folder or gt_json_file.replace('.json', '')
    pred_folder = pred_folder or pred_json_file.replace('.json', '')
    for folder in (gt_folder, pred_folder):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'panoptic PNG folder {folder!r} does not exist')
    categories = {c['id']: c for c in gt_json['categories']}
    preds = {a['image_id']: a for a in pred_json['annotations']}
    missing = [a['image_id'] for a in gt_json['annotations'] if a['image_id'] not in preds]
    if missing:
        raise KeyError(f'no prediction for image ids {missing[:10]}')
    pairs = [(a, preds[a['image_id']]) for a in gt_json['annotations']]
    stat = pq_compute_multi_core(pairs, gt_folder, pred_folder, categories)
    results: dict[str, Any] = {}
    for name, isthing in (('All', None), ('Things', True), ('Stuff', False)):
        results[name], per_class = stat.pq_average(categories, isthing=isthing)
        if name == 'All':
            results['per_class'] = per_class
    return results
