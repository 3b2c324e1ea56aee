"""Monocular depth metrics with the BTS / AdaBins conventions (no OpenMMLab dependency).

The nine numbers reported by the depth literature since Eigen et al., "Depth Map Prediction from a
Single Image using a Multi-Scale Deep Network" (NeurIPS 2014), computed exactly as in the
evaluation scripts of BTS (Lee et al., arXiv:1907.10326, ``pytorch/bts_eval.py``:
``compute_errors`` and ``eval``) and AdaBins (Bhat et al., CVPR 2021, ``evaluate.py``), which the
later NYUv2 / KITTI papers copy:

* ``a1, a2, a3``: fraction of pixels with ``max(gt / pred, pred / gt) < 1.25 ** k``;
* ``abs_rel = mean(|gt - pred| / gt)``, ``sq_rel = mean((gt - pred) ** 2 / gt)``;
* ``rmse = sqrt(mean((gt - pred) ** 2))``, ``rmse_log = sqrt(mean((ln gt - ln pred) ** 2))``;
* ``log10 = mean(|log10 gt - log10 pred|)``;
* ``silog = 100 * sqrt(mean(e ** 2) - mean(e) ** 2)`` with ``e = ln pred - ln gt``.

As in those scripts, the prediction is clamped to ``[min_depth, max_depth]`` (``inf`` becomes
``max_depth`` and ``nan`` becomes ``min_depth``) and only pixels with
``min_depth < gt < max_depth`` that also lie inside the evaluation crop are used. Dataset-level
numbers are the mean of the per-image numbers (BTS ``eval``: ``silog.mean()``, ...), which
:func:`aggregate_depth_metrics` implements.

Evaluation crops (boolean masks over the ground-truth frame, ``int()`` truncation of the bounds as
in BTS):

* ``'garg'`` (KITTI; Garg et al., ECCV 2016): rows ``[0.40810811 H, 0.99189189 H)``, columns
  ``[0.03594771 W, 0.96405229 W)``. Monodepth2's ``evaluate_depth.py`` uses the same fractions for
  its ``eigen`` split.
* ``'eigen'`` on KITTI (Eigen et al. 2014): rows ``[0.3324324 H, 0.91351351 H)``, columns
  ``[0.0359477 W, 0.96405229 W)``.
* ``'eigen'`` on NYUv2: rows ``45:471``, columns ``41:601`` of the 480x640 frame (BTS and AdaBins:
  ``eval_mask[45:471, 41:601] = 1``). For frames of another size (e.g. mmseg's 160x120 sample) the
  bounds are scaled by ``H / 480`` and ``W / 640`` and truncated, which reproduces the pixel bounds
  exactly at 480x640.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

METRIC_NAMES: tuple[str, ...] = ('a1', 'a2', 'a3', 'abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'log10',
                                 'silog')
CROPS: tuple[str | None, ...] = (None, 'eigen', 'garg')
_DATASETS = ('auto', 'nyu', 'kitti')

# NYUv2 Eigen crop of BTS / AdaBins on the 480x640 frame: rows 45:471, columns 41:601.
_NYU_EIGEN = (45, 471, 41, 601)
_NYU_FRAME = (480, 640)
# KITTI crops as fractions of the ground-truth frame (BTS ``bts_eval.py``).
_KITTI_GARG = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
_KITTI_EIGEN = (0.3324324, 0.91351351, 0.0359477, 0.96405229)


def _resolve_dataset(dataset: str, height: int, width: int) -> str:
    if dataset not in _DATASETS:
        raise ValueError(f"dataset={dataset!r} must be one of {_DATASETS}")
    if dataset != 'auto':
        return dataset
    # KITTI frames are about 1242x375 (aspect ~3.3), NYUv2 frames 640x480 (aspect 1.33).
    return 'kitti' if width > 2 * height else 'nyu'


def eval_crop_mask(height: int, width: int, crop: str | None, dataset: str = 'auto') -> np.ndarray:
    """Boolean ``[height, width]`` mask of the evaluation crop (all True for ``crop=None``).

    Args:
        height: ground-truth height in pixels.
        width: ground-truth width in pixels.
        crop: ``None``, ``'eigen'`` or ``'garg'`` (see the module docstring for the bounds).
        dataset: which Eigen crop ``'eigen'`` means: ``'nyu'``, ``'kitti'`` or ``'auto'`` (KITTI
            when ``width > 2 * height``, else NYUv2). ``'garg'`` is KITTI's in every case.

    Returns:
        ``np.ndarray`` of dtype bool and shape ``[height, width]``.
    """
    if crop not in CROPS:
        raise ValueError(f"crop={crop!r} must be one of {CROPS}")
    mask = np.zeros((height, width), dtype=bool)
    if crop is None:
        mask[:] = True
        return mask
    if crop == 'garg':
        fr = _KITTI_GARG
    elif _resolve_dataset(dataset, height, width) == 'kitti':
        fr = _KITTI_EIGEN
    else:
        top, bottom, left, right = _NYU_EIGEN
        fr = (top / _NYU_FRAME[0], bottom / _NYU_FRAME[0], left / _NYU_FRAME[1], right / _NYU_FRAME[1])
        if (height, width) == _NYU_FRAME:  # avoid any float round-off at the native size
            mask[top:bottom, left:right] = True
            return mask
    mask[int(fr[0] * height):int(fr[1] * height), int(fr[2] * width):int(fr[3] * width)] = True
    return mask


def _as_2d_float64(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    t = t.detach().to('cpu', torch.float64)
    while t.ndim > 2 and t.shape[0] == 1:  # accept [1, H, W] and [1, 1, H, W]
        t = t[0]
    if t.ndim != 2:
        raise ValueError(f"{name} must be [H, W] (or with leading singleton dims), got shape "
                         f"{tuple(t.shape)}")
    return t


def depth_metrics(pred, gt, min_depth: float, max_depth: float, crop: str | None = None,
                  dataset: str = 'auto') -> dict[str, float]:
    """The nine standard depth metrics of one image (BTS / AdaBins conventions).

    Args:
        pred: predicted depth in metres, ``[H, W]`` (numpy or torch; leading singleton dims are
            dropped). Must have the ground truth's size: resize it before calling.
        gt: ground-truth depth in metres, ``[H, W]``; pixels outside ``(min_depth, max_depth)``
            (0 marks missing depth in NYUv2 / KITTI pngs) are ignored.
        min_depth: lower evaluation bound (BTS / AdaBins: 1e-3).
        max_depth: upper evaluation bound (10 for NYUv2, 80 for KITTI).
        crop: ``None``, ``'eigen'`` or ``'garg'``; see :func:`eval_crop_mask`.
        dataset: which Eigen crop to use, see :func:`eval_crop_mask`.

    Returns:
        dict with float values for ``a1 a2 a3 abs_rel sq_rel rmse rmse_log log10 silog``.

    Raises:
        ValueError: on mismatched shapes, bad bounds, or when no pixel is valid.
    """
    if not 0 < min_depth < max_depth:
        raise ValueError(f"need 0 < min_depth < max_depth, got min_depth={min_depth}, "
                         f"max_depth={max_depth}")
    p = _as_2d_float64(pred, 'pred')
    g = _as_2d_float64(gt, 'gt')
    if p.shape != g.shape:
        raise ValueError(f"pred shape {tuple(p.shape)} != gt shape {tuple(g.shape)}; resize the "
                         f"prediction to the ground truth first")
    # Clamp exactly as BTS / AdaBins do before taking logs and ratios.
    p = torch.nan_to_num(p, nan=min_depth, posinf=max_depth, neginf=min_depth)
    p = p.clamp(min_depth, max_depth)
    valid = (g > min_depth) & (g < max_depth)
    valid &= torch.from_numpy(eval_crop_mask(g.shape[0], g.shape[1], crop, dataset))
    if not bool(valid.any()):
        raise ValueError(f"no valid ground-truth pixel in ({min_depth}, {max_depth}) inside crop "
                         f"{crop!r} (gt range [{float(g.min())}, {float(g.max())}])")
    g = g[valid]
    p = p[valid]

    ratio = torch.maximum(g / p, p / g)
    diff = g - p
    log_err = torch.log(p) - torch.log(g)
    # mean(e^2) - mean(e)^2 can fall a few ulps below zero for near-perfect predictions.
    silog_var = (log_err.pow(2).mean() - log_err.mean().pow(2)).clamp_min(0)
    out = {
        'a1': (ratio < 1.25).double().mean(),
        'a2': (ratio < 1.25 ** 2).double().mean(),
        'a3': (ratio < 1.25 ** 3).double().mean(),
        'abs_rel': (diff.abs() / g).mean(),
        'sq_rel': (diff.pow(2) / g).mean(),
        'rmse': diff.pow(2).mean().sqrt(),
        'rmse_log': log_err.pow(2).mean().sqrt(),
        'log10': (torch.log10(g) - torch.log10(p)).abs().mean(),
        'silog': 100.0 * silog_var.sqrt(),
    }
    return {k: float(out[k]) for k in METRIC_NAMES}


def aggregate_depth_metrics(per_image: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Dataset-level metrics: the mean over images of each per-image metric (as BTS / AdaBins)."""
    rows: Sequence[Mapping[str, float]] = list(per_image)
    if not rows:
        raise ValueError('aggregate_depth_metrics: no per-image results to aggregate')
    return {k: math.fsum(r[k] for r in rows) / len(rows) for k in METRIC_NAMES}
