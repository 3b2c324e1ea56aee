"""The depth metric: the nine metrics of :func:`densekit.evaluation.depth_metrics` per image,
averaged over the dataset as BTS / AdaBins report them."""
from __future__ import annotations

import os
import os.path as osp
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.evaluator import BaseMetric

from densekit.evaluation.depth import CROPS, aggregate_depth_metrics, depth_metrics
from densekit.mm.registry import deprecated_alias


class DenseKitDepthMetric(BaseMetric):
    """The nine depth metrics, per image (:func:`densekit.evaluation.depth_metrics`), averaged over
    the dataset as BTS / AdaBins report them.

    Args:
        min_depth: evaluation lower bound; ``None`` takes ``dataset_meta['min_depth']``.
        max_depth: evaluation upper bound; ``None`` takes ``dataset_meta['max_depth']``.
        crop: ``None``, ``'eigen'``, ``'garg'``, or ``'from_dataset'`` (the dataset's
            ``eval_crop``).
        crop_dataset: ``'nyu'`` / ``'kitti'`` / ``'auto'`` or ``None`` (the dataset's).
        output_dir: if given, write each prediction as a uint16 png (``depth * depth_scale``, named
            after the image) there.
        format_only: only write the predictions (no ground truth needed); requires ``output_dir``.
        keep_results: accepted for the interface of mmseg's ``IoUMetric`` (which ``tools/test.py
            --out`` sets); predictions in ``output_dir`` are always kept.
        collect_device: mmengine's device for collecting results across ranks.
        prefix: mmengine's key prefix.
    """

    default_prefix = None

    def __init__(self,
                 min_depth: float | None = None,
                 max_depth: float | None = None,
                 crop: str | None = 'from_dataset',
                 crop_dataset: str | None = None,
                 output_dir: str | None = None,
                 format_only: bool = False,
                 keep_results: bool = False,
                 collect_device: str = 'cpu',
                 prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if crop != 'from_dataset' and crop not in CROPS:
            raise ValueError(f"{type(self).__name__}: crop={crop!r} must be 'from_dataset' or one of {CROPS}")
        if format_only and not output_dir:
            raise ValueError(f'{type(self).__name__}: format_only=True needs output_dir')
        self.min_depth, self.max_depth = min_depth, max_depth
        self.crop, self.crop_dataset = crop, crop_dataset
        self.output_dir, self.format_only, self.keep_results = output_dir, format_only, keep_results

    def _meta(self, key: str, value, default=None):
        if value is not None:
            return value
        return (self.dataset_meta or {}).get(key, default)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        lo = self._meta('min_depth', self.min_depth, 1e-3)
        hi = self._meta('max_depth', self.max_depth)
        crop = self._meta('eval_crop', None) if self.crop == 'from_dataset' else self.crop
        which = self._meta('crop_dataset', self.crop_dataset, 'auto')
        for ds in data_samples:
            pred = ds['pred_depth_map']['data'].float()
            if self.output_dir:
                self._save(pred, ds)
            if self.format_only:
                continue
            if 'gt_depth_map' not in ds:
                raise KeyError(f"{type(self).__name__}: no gt_depth_map for {ds.get('img_path')}; load it in "
                               f"the test pipeline or set format_only=True")
            if hi is None:
                raise ValueError(f'{type(self).__name__}: max_depth is neither given nor in the dataset meta')
            gt = ds['gt_depth_map']['data'].float()
            if pred.shape[-2:] != gt.shape[-2:]:  # e.g. a test pipeline that resized the gt
                pred = F.interpolate(pred[None], size=gt.shape[-2:], mode='bilinear',
                                     align_corners=False)[0]
            self.results.append(depth_metrics(pred, gt, lo, hi, crop=crop, dataset=which))

    def _save(self, pred: torch.Tensor, ds: dict) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        scale = float(self._meta('depth_scale', None, 1000.0))
        name = osp.splitext(osp.basename(ds.get('img_path', f'{len(self.results):06d}')))[0]
        png = (pred[0].cpu().numpy() * scale).round().clip(0, 65535).astype(np.uint16)
        cv2.imwrite(osp.join(self.output_dir, name + '.png'), png)

    def compute_metrics(self, results: list) -> dict:
        if self.format_only:
            return {}
        return aggregate_depth_metrics(results)


DKDepthMetric = deprecated_alias(DenseKitDepthMetric, 'DKDepthMetric')
