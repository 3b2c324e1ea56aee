"""Monocular depth in mmseg's scope: datasets, transforms, estimator, metric and visualisation hook.

Everything is registered into mmseg's registries under names that do not shadow mmseg's own depth
support (``DepthEstimator``, ``NYUDataset``, ``DepthMetric``, ``LoadDepthAnnotation``,
``SiLogLoss``); a collision raises at import. The numerics live in the core:
:mod:`densekit.evaluation.depth` (metrics), :mod:`densekit.models.depth` (heads, losses).

Conventions shared by every piece:

* depth is in metres; a png holds ``depth * depth_scale`` (NYUv2: 1000, KITTI: 256) and 0 marks a
  pixel without ground truth;
* a dataset's ``metainfo`` carries ``min_depth``, ``max_depth``, ``depth_scale``, ``eval_crop``
  and ``crop_dataset``, which :class:`DKDepthMetric` and :class:`DepthVisualizationHook` read
  unless given explicitly;
* pipelines keep ``gt_depth_map`` aligned with ``img`` (``seg_fields`` as in mmseg), and mmseg's
  ``PackSegInputs`` packs it into ``SegDataSample.gt_depth_map``; predictions are returned in
  ``SegDataSample.pred_depth_map`` at the original image size.

Literature recipes referenced below: BTS (Lee et al., arXiv:1907.10326, ``bts_dataloader.py``):
NYUv2 training crops the white border ``(43, 45, 608, 472)``, rotates by up to 2.5 degrees, takes
416x544 random crops, flips, and jitters gamma / brightness / colour; KITTI uses the KITTI-benchmark
crop (the bottom-centred 352x1216 window) and 352x704 random crops.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from mmcv.transforms import BaseTransform
from mmengine.dataset import BaseDataset
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.structures import PixelData

from densekit.datasets import checks
from densekit.evaluation.depth import CROPS, aggregate_depth_metrics, depth_metrics
from densekit.models.depth import DPTDepthHead, FPNDepthHead, L1DepthLoss, SILogLoss, valid_depth_mask

# ----------------------------------------------------------------------------------- datasets


class DepthFolderDataset(BaseDataset):
    """Images and depth pngs paired by relative path (any folder layout, e.g. the synthetic set).

    ``data_prefix=dict(img_path=..., depth_map_path=...)`` name the two folders (relative to
    ``data_root``); ``images/a/b.jpg`` pairs with ``depth/a/b.png`` (suffixes swapped). With
    ``ann_file``, each line is ``<image> <depth> [focal]`` (the BTS split-file format; a leading
    ``/`` is ignored; a depth of ``None`` marks a frame without ground truth) relative to the two
    prefixes.

    Args:
        img_suffix: image suffix for the folder scan.
        depth_suffix: depth png suffix.
        depth_scale: png value per metre.
        min_depth: lower bound of valid depth (metric, loss masks).
        max_depth: upper bound of valid depth.
        eval_crop: ``None``, ``'eigen'`` or ``'garg'`` (see :mod:`densekit.evaluation.depth`).
        crop_dataset: ``'nyu'``, ``'kitti'`` or ``'auto'``: which Eigen crop ``'eigen'`` is.
        skip_missing_depth: drop frames whose depth is ``None`` (split file) or whose depth file
            does not exist (BTS evaluation skips them the same way), with a counted log line;
            otherwise they are kept without ``depth_map_path`` (inference only). Either way, a
            depth folder in which no listed depth file exists (a wrong ``depth_map_path`` or
            ``depth_suffix``) is an error naming the folder and an expected path.
        **kwargs: ``mmengine.dataset.BaseDataset`` arguments (``data_root``, ``ann_file``,
            ``data_prefix``, ``pipeline``, ``test_mode``, ``indices``, ...).
    """

    METAINFO = dict(min_depth=1e-3, max_depth=10.0, depth_scale=1000.0, eval_crop=None,
                    crop_dataset='auto')

    def __init__(self,
                 img_suffix: str = '.png',
                 depth_suffix: str = '.png',
                 depth_scale: float | None = None,
                 min_depth: float | None = None,
                 max_depth: float | None = None,
                 eval_crop: str | None = 'from_class',
                 crop_dataset: str | None = None,
                 skip_missing_depth: bool = True,
                 **kwargs) -> None:
        self.img_suffix = img_suffix
        self.depth_suffix = depth_suffix
        self.skip_missing_depth = skip_missing_depth
        meta = dict(kwargs.pop('metainfo', None) or {})
        for key, value in (('depth_scale', depth_scale), ('min_depth', min_depth),
                           ('max_depth', max_depth), ('crop_dataset', crop_dataset)):
            if value is not None:
                meta[key] = value
        if eval_crop != 'from_class':
            if eval_crop not in CROPS:
                raise ValueError(f"{type(self).__name__}: eval_crop={eval_crop!r} must be one of "
                                 f"{CROPS}")
            meta['eval_crop'] = eval_crop
        kwargs.setdefault('data_prefix', dict(img_path='images', depth_map_path='depth'))
        super().__init__(metainfo=meta, **kwargs)
        lo, hi = self.metainfo['min_depth'], self.metainfo['max_depth']
        if not 0 <= lo < hi:
            raise ValueError(f"{type(self).__name__}: need 0 <= min_depth < max_depth, got "
                             f"{lo}, {hi}")

    def _info(self, img: str, depth: str | None) -> dict:
        info = dict(img_path=img, seg_fields=[], depth_scale=float(self.metainfo['depth_scale']))
        if depth is not None:
            info['depth_map_path'] = depth
        return info

    def load_data_list(self) -> list[dict]:
        owner = type(self).__name__
        img_dir = self.data_prefix.get('img_path', '')
        depth_dir = self.data_prefix.get('depth_map_path')
        if self.ann_file:
            checks.require_path(self.ann_file, f'{owner}: ann_file')
            images, suffix = f"ann_file '{self.ann_file}'", None
            frames = self._read_split_file(img_dir, depth_dir)
        else:
            checks.require_path(img_dir, f'{owner}: image folder data_prefix.img_path')
            images, suffix = f"data_prefix.img_path='{img_dir}'", self.depth_suffix
            frames = self._scan_folder(img_dir, depth_dir)
            checks.require_images(len(frames), owner, images, self.img_suffix)
            if depth_dir is None:  # images only (inference)
                return frames
        listed = [d for d in frames if 'depth_map_path' in d]
        missing = checks.find_missing_labels([(d['img_path'], d['depth_map_path']) for d in listed])
        if listed and len(missing) == len(listed):
            # a wrong folder or suffix, not frames without ground truth: nothing would be trained
            raise checks.missing_labels_error(
                owner, missing, len(listed), images=images,
                label_field='data_prefix.depth_map_path', label_dir=depth_dir,
                suffix_field='depth_suffix', suffix=suffix, kind='depth')
        log = MMLogger.get_current_instance()
        if missing:
            gone = {label for _, label in missing}
            for d in listed:
                if d['depth_map_path'] in gone:
                    del d['depth_map_path']
            action = 'skipped' if self.skip_missing_depth else 'kept without depth (inference only)'
            log.warning(f"{owner}: {action} {len(missing)} of the {len(frames)} frames of {images}"
                        f" whose depth file under data_prefix.depth_map_path='{depth_dir}' does "
                        f'not exist: {checks.list_missing(missing)} (skip_missing_depth='
                        f'{self.skip_missing_depth})')
        no_gt = len(frames) - len(listed)
        if no_gt:
            # BTS split files mark frames without ground truth with a 'None' depth
            action = 'skipped' if self.skip_missing_depth else 'kept without depth'
            why = ("'None' in the split file" if depth_dir is not None
                   else 'no data_prefix.depth_map_path')
            log.info(f'{owner}: {action} {no_gt} of the {len(frames)} frames of {images} that have '
                     f'no depth ({why})')
        if self.skip_missing_depth:
            frames = [d for d in frames if 'depth_map_path' in d]
        if not frames:
            raise checks.DataNotFoundError(
                f'{owner}: {images} lists no frame with a depth map (data_prefix.depth_map_path='
                f'{depth_dir!r}, skip_missing_depth={self.skip_missing_depth})')
        if self.ann_file:  # a folder scan lists only what exists
            checks.require_listed_images([d['img_path'] for d in frames], owner, images, img_dir)
        return frames

    def _scan_folder(self, img_dir: str, depth_dir: str | None) -> list[dict]:
        """Every ``*img_suffix`` image under ``img_dir`` with its expected depth path, sorted."""
        out = []
        for root, _, files in os.walk(img_dir):
            for name in files:
                if not name.endswith(self.img_suffix):
                    continue
                rel = osp.relpath(osp.join(root, name), img_dir)
                depth = None
                if depth_dir is not None:
                    depth = osp.join(depth_dir, rel[:-len(self.img_suffix)] + self.depth_suffix)
                out.append(self._info(osp.join(img_dir, rel), depth))
        return sorted(out, key=lambda d: d['img_path'])

    def _read_split_file(self, img_dir: str, depth_dir: str | None) -> list[dict]:
        """The frames of a BTS split file; a ``None`` depth gives a frame without depth."""
        out = []
        with open(self.ann_file) as f:
            for line in f:
                parts = line.split()
                if not parts:
                    continue
                depth = None
                if len(parts) > 1 and parts[1] != 'None' and depth_dir is not None:
                    depth = osp.join(depth_dir, parts[1].lstrip('/'))
                info = self._info(osp.join(img_dir, parts[0].lstrip('/')), depth)
                if len(parts) > 2:
                    info['focal'] = float(parts[2])
                out.append(info)
        if not out:
            raise checks.DataError(f"{type(self).__name__}: ann_file '{self.ann_file}' lists no "
                                   'frame (it is empty)')
        return out


class DKNYUv2Dataset(DepthFolderDataset):
    """NYU Depth v2 (Silberman et al., ECCV 2012) in one of the two common layouts.

    * BTS / AdaBins Eigen split: ``ann_file`` = ``nyudepthv2_{train,test}_files_with_gt.txt``
      with lines ``/scene/rgb_00000.jpg /scene/sync_depth_00000.png 518.8579`` relative to
      ``data_prefix`` (e.g. ``img_path='sync', depth_map_path='sync'`` for training,
      ``'official_splits/test'`` for both at test time);
    * mmseg's folder layout (no ``ann_file``): ``images/<name>.jpg`` beside
      ``annotations/<name>.png`` (the default ``data_prefix``), as in ``../shared/data/nyu_sample``.

    Depth pngs are uint16 millimetres (``depth_scale=1000``), valid up to 10 m; evaluation uses the
    NYUv2 Eigen crop by default.
    """

    METAINFO = dict(min_depth=1e-3, max_depth=10.0, depth_scale=1000.0, eval_crop='eigen',
                    crop_dataset='nyu')

    def __init__(self, img_suffix: str = '.jpg', depth_suffix: str = '.png', **kwargs) -> None:
        kwargs.setdefault('data_prefix', dict(img_path='images', depth_map_path='annotations'))
        super().__init__(img_suffix=img_suffix, depth_suffix=depth_suffix, **kwargs)


class KITTIEigenDataset(DepthFolderDataset):
    """KITTI (Geiger et al., CVPR 2012) Eigen split with the annotated depth of Uhrig et al. (3DV 2017).

    ``ann_file`` is a BTS split file (``eigen_train_files_with_gt.txt`` /
    ``eigen_test_files_with_gt.txt``): lines ``2011_09_26/..._sync/image_02/data/0000000069.png
    2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png 721.5377``, the image
    relative to ``data_prefix['img_path']`` (the raw data) and the depth to
    ``data_prefix['depth_map_path']`` (the annotated depth); ``None`` depths are skipped. Depth pngs
    are uint16 with ``depth_scale=256``, valid up to 80 m; evaluation uses the Garg crop by default
    (pass ``eval_crop='eigen'`` for the Eigen crop).
    """

    METAINFO = dict(min_depth=1e-3, max_depth=80.0, depth_scale=256.0, eval_crop='garg',
                    crop_dataset='kitti')

    def __init__(self, **kwargs) -> None:
        if not kwargs.get('ann_file'):
            raise ValueError('KITTIEigenDataset needs ann_file (a BTS Eigen split file)')
        kwargs.setdefault('data_prefix', dict(img_path='raw', depth_map_path='data_depth_annotated'))
        super().__init__(**kwargs)


# --------------------------------------------------------------------------------- transforms


class LoadDepthMap(BaseTransform):
    """Read ``results['depth_map_path']`` (16-bit png) into ``gt_depth_map`` in metres (float32).

    Args:
        depth_scale: png value per metre; ``None`` takes ``results['depth_scale']`` (set by the
            densekit datasets) and fails when absent.
    """

    def __init__(self, depth_scale: float | None = None) -> None:
        self.depth_scale = depth_scale

    def transform(self, results: dict) -> dict:
        path = results['depth_map_path']
        raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise FileNotFoundError(f"LoadDepthMap: cannot read depth map {path!r}")
        if raw.ndim != 2:
            raise ValueError(f"LoadDepthMap: {path!r} has shape {raw.shape}; expected one channel")
        scale = self.depth_scale if self.depth_scale is not None else results.get('depth_scale')
        if scale is None:
            raise KeyError("LoadDepthMap: no depth_scale given and none in the data info")
        results['gt_depth_map'] = raw.astype(np.float32) / float(scale)
        results.setdefault('seg_fields', [])
        if 'gt_depth_map' not in results['seg_fields']:
            results['seg_fields'].append('gt_depth_map')
        return results


def _crop_all(results: dict, top: int, left: int, height: int, width: int) -> None:
    results['img'] = results['img'][top:top + height, left:left + width]
    for key in results.get('seg_fields', []):
        results[key] = results[key][top:top + height, left:left + width]
    results['img_shape'] = results['img'].shape[:2]


class DepthFixedCrop(BaseTransform):
    """Crop image and depth to the box ``(x0, y0, x1, y1)`` (BTS on NYUv2: ``(43, 45, 608, 472)``,
    which removes the white border of the undistorted frames)."""

    def __init__(self, box: Sequence[int]) -> None:
        if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
            raise ValueError(f"DepthFixedCrop: box={tuple(box)} must be (x0, y0, x1, y1) with "
                             f"x0 < x1, y0 < y1")
        self.box = tuple(int(b) for b in box)

    def transform(self, results: dict) -> dict:
        x0, y0, x1, y1 = self.box
        h, w = results['img'].shape[:2]
        if x1 > w or y1 > h:
            raise ValueError(f"DepthFixedCrop: box {self.box} exceeds the {w}x{h} image "
                             f"{results.get('img_path')}")
        _crop_all(results, y0, x0, y1 - y0, x1 - x0)
        return results


class DepthKBCrop(BaseTransform):
    """KITTI-benchmark crop: the bottom-centred ``height x width`` window (352x1216).

    Args:
        height: crop height.
        width: crop width.
        crop_depth: crop ``gt_depth_map`` too (training). At test time keep it False: the
            prediction is pasted back into the full frame (``kb_crop_box`` / ``kb_ori_shape`` meta,
            add them to ``PackSegInputs.meta_keys``) and evaluated there, as BTS does.
    """

    def __init__(self, height: int = 352, width: int = 1216, crop_depth: bool = True) -> None:
        self.height, self.width, self.crop_depth = height, width, crop_depth

    def transform(self, results: dict) -> dict:
        h, w = results['img'].shape[:2]
        if h < self.height or w < self.width:
            raise ValueError(f"DepthKBCrop: image {w}x{h} is smaller than {self.width}x{self.height}")
        top, left = h - self.height, (w - self.width) // 2
        if self.crop_depth:
            _crop_all(results, top, left, self.height, self.width)
        else:
            results['img'] = results['img'][top:top + self.height, left:left + self.width]
            results['img_shape'] = results['img'].shape[:2]
            results['kb_crop_box'] = (top, left)
            results['kb_ori_shape'] = (h, w)
        return results


class DepthRandomCrop(BaseTransform):
    """Random ``crop_size = (height, width)`` window of image and depth (clipped to the image)."""

    def __init__(self, crop_size: Sequence[int]) -> None:
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f"DepthRandomCrop: crop_size={tuple(crop_size)} must be "
                             f"(height, width) > 0")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))

    def transform(self, results: dict) -> dict:
        h, w = results['img'].shape[:2]
        ch, cw = min(self.crop_size[0], h), min(self.crop_size[1], w)
        top = np.random.randint(0, h - ch + 1)
        left = np.random.randint(0, w - cw + 1)
        _crop_all(results, top, left, ch, cw)
        return results


class DepthRandomFlip(BaseTransform):
    """Horizontal flip of image and depth with probability ``prob`` (sets ``flip`` meta)."""

    def __init__(self, prob: float = 0.5) -> None:
        if not 0 <= prob <= 1:
            raise ValueError(f"DepthRandomFlip: prob={prob} must be in [0, 1]")
        self.prob = prob

    def transform(self, results: dict) -> dict:
        flip = bool(np.random.rand() < self.prob)
        if flip:
            results['img'] = np.ascontiguousarray(results['img'][:, ::-1])
            for key in results.get('seg_fields', []):
                results[key] = np.ascontiguousarray(results[key][:, ::-1])
        results['flip'] = flip
        results['flip_direction'] = 'horizontal' if flip else None
        return results


class DepthRandomRotate(BaseTransform):
    """Rotate image (bilinear) and depth (nearest: no blending across depth edges) by an angle in
    ``[-degree, degree]``; uncovered pixels get image 0 and depth 0 (invalid). BTS: 2.5 degrees
    (NYUv2), 1 degree (KITTI)."""

    def __init__(self, degree: float = 2.5, prob: float = 1.0) -> None:
        if degree < 0 or not 0 <= prob <= 1:
            raise ValueError(f"DepthRandomRotate: degree={degree} must be >= 0, prob={prob} in [0, 1]")
        self.degree, self.prob = degree, prob

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob or self.degree == 0:
            return results
        angle = np.random.uniform(-self.degree, self.degree)
        h, w = results['img'].shape[:2]
        mat = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
        results['img'] = cv2.warpAffine(results['img'], mat, (w, h), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        for key in results.get('seg_fields', []):
            results[key] = cv2.warpAffine(results[key], mat, (w, h), flags=cv2.INTER_NEAREST,
                                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return results


class DepthColorJitter(BaseTransform):
    """BTS's photometric augmentation, on the image only: with probability ``prob`` apply a random
    gamma, a brightness factor and a per-channel colour factor (uniform in the given ranges).

    Args:
        gamma: range of the exponent applied to the image in [0, 1].
        brightness: range of the global factor (BTS: (0.75, 1.25) NYUv2, (0.9, 1.1) KITTI).
        color: range of each channel's factor.
        prob: probability of augmenting (BTS: 0.5).
    """

    def __init__(self, gamma: Sequence[float] = (0.9, 1.1), brightness: Sequence[float] = (0.75, 1.25),
                 color: Sequence[float] = (0.9, 1.1), prob: float = 0.5) -> None:
        for name, rng in (('gamma', gamma), ('brightness', brightness), ('color', color)):
            if len(rng) != 2 or not 0 < rng[0] <= rng[1]:
                raise ValueError(f"DepthColorJitter: {name}={tuple(rng)} must be (low, high) with "
                                 f"0 < low <= high")
        self.gamma, self.brightness, self.color = tuple(gamma), tuple(brightness), tuple(color)
        self.prob = prob

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        img = results['img'].astype(np.float32) / 255.0
        img = img ** np.random.uniform(*self.gamma)
        img = img * np.random.uniform(*self.brightness)
        img = img * np.random.uniform(*self.color, size=img.shape[-1]).astype(np.float32)
        results['img'] = (np.clip(img, 0.0, 1.0) * 255.0).astype(np.float32)
        return results


# ---------------------------------------------------------------------------------- estimator


class DKDepthEstimator(BaseModel):
    """Backbone + depth decoder, trained with pixel losses on valid ground truth.

    Args:
        backbone: config of a backbone registered in mmseg's ``MODELS`` (densekit backbones are).
        decode_head: config of a depth head (``DPTDepthHead`` / ``FPNDepthHead``) whose
            ``in_channels`` match the backbone's outputs.
        losses: configs of the losses (``DKSILogLoss``, ``DKDepthL1Loss``), summed; ``None``:
            SILog alone (BTS / AdaBins).
        min_depth: pixels with ``gt <= min_depth`` are ignored by the losses.
        max_depth: pixels with ``gt > max_depth`` are ignored by the losses.
        flip_test: average the prediction with that of the flipped image at test time (BTS,
            AdaBins and NeWCRFs evaluate this way).
        data_preprocessor: e.g. ``dict(type='SegDataPreProcessor', mean=..., std=...,
            bgr_to_rgb=True, seg_pad_val=0)``; pad depth with 0 so padding is invalid.
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 backbone: dict,
                 decode_head: dict,
                 losses: Sequence[dict] | None = None,
                 min_depth: float = 1e-3,
                 max_depth: float = 10.0,
                 flip_test: bool = False,
                 data_preprocessor: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        from mmseg.registry import MODELS
        self.backbone = MODELS.build(backbone)
        self.decode_head = MODELS.build(decode_head)
        losses = list(losses) if losses is not None else [dict(type='DKSILogLoss')]
        if not losses:
            raise ValueError('DKDepthEstimator: losses must not be empty')
        self.losses = torch.nn.ModuleList(MODELS.build(cfg) for cfg in losses)
        names = [getattr(l, 'loss_name', f'loss_{i}') for i, l in enumerate(self.losses)]
        if len(set(names)) != len(names):
            raise ValueError(f"DKDepthEstimator: loss names {names} must be distinct (set loss_name)")
        self.min_depth, self.max_depth, self.flip_test = min_depth, max_depth, flip_test
        act = getattr(self.decode_head, 'activation', None)
        if getattr(act, 'mode', None) == 'sigmoid' and act.max_depth < max_depth:
            raise ValueError(f"DKDepthEstimator: the head's output is bounded by max_depth="
                             f"{act.max_depth} < the estimator's max_depth={max_depth}; set "
                             f"decode_head.max_depth={max_depth}")

    def extract_feat(self, inputs: torch.Tensor):
        return self.backbone(inputs)

    def _predict_depth(self, inputs: torch.Tensor) -> torch.Tensor:
        """Depth ``[N, 1, H, W]`` at the (padded) input size."""
        depth = self.decode_head(self.extract_feat(inputs))
        if depth.shape[-2:] != inputs.shape[-2:]:
            depth = F.interpolate(depth, size=inputs.shape[-2:], mode='bilinear', align_corners=False)
        return depth

    def forward(self, inputs: torch.Tensor, data_samples=None, mode: str = 'tensor'):
        """mmengine's three modes: ``'loss'`` (dict of losses), ``'predict'`` (data samples with
        ``pred_depth_map`` at the original size), ``'tensor'`` (depth ``[N, 1, H, W]``)."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self._predict_depth(inputs)
        raise ValueError(f"DKDepthEstimator: mode={mode!r} must be 'loss', 'predict' or 'tensor'")

    def loss(self, inputs: torch.Tensor, data_samples) -> dict:
        # Losses in fp32 even under AMP: logs of fp16 depths lose the small relative errors.
        pred = self._predict_depth(inputs).float()
        gt = torch.stack([ds.gt_depth_map.data for ds in data_samples]).float()
        if gt.shape != pred.shape:
            raise ValueError(f"DKDepthEstimator: gt_depth_map batch {tuple(gt.shape)} does not match "
                             f"the prediction {tuple(pred.shape)}; keep depth aligned in the pipeline")
        mask = valid_depth_mask(gt, self.min_depth, self.max_depth)
        return {loss.loss_name: loss(pred, gt, mask) for loss in self.losses}

    def predict(self, inputs: torch.Tensor, data_samples=None):
        depth = self._predict_depth(inputs)
        if self.flip_test:
            depth = 0.5 * (depth + self._predict_depth(inputs.flip(-1)).flip(-1))
        if data_samples is None:
            return depth
        for i, ds in enumerate(data_samples):
            full = self._to_original(depth[i:i + 1], ds.metainfo)
            ds.set_data(dict(pred_depth_map=PixelData(data=full[0])))
        return data_samples

    @staticmethod
    def _to_original(depth: torch.Tensor, meta: dict) -> torch.Tensor:
        """Undo padding, resizing and the KITTI-benchmark crop: ``[1, 1, H_ori, W_ori]``."""
        pad = meta.get('img_padding_size', meta.get('padding_size'))
        if pad is not None:
            left, right, top, bottom = (int(p) for p in pad)
            depth = depth[..., top:depth.shape[-2] - bottom, left:depth.shape[-1] - right]
        elif 'img_shape' in meta:
            h, w = meta['img_shape'][:2]
            depth = depth[..., :h, :w]
        if 'kb_crop_box' in meta:
            top, left = meta['kb_crop_box']
            full = depth.new_zeros(depth.shape[:2] + tuple(meta['kb_ori_shape']))
            full[..., top:top + depth.shape[-2], left:left + depth.shape[-1]] = depth
            return full
        ori = tuple(meta.get('ori_shape', depth.shape[-2:]))[:2]
        if tuple(depth.shape[-2:]) != ori:
            depth = F.interpolate(depth, size=ori, mode='bilinear', align_corners=False)
        return depth


# ------------------------------------------------------------------------------------- metric


class DKDepthMetric(BaseMetric):
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
            raise ValueError(f"DKDepthMetric: crop={crop!r} must be 'from_dataset' or one of {CROPS}")
        if format_only and not output_dir:
            raise ValueError('DKDepthMetric: format_only=True needs output_dir')
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
                raise KeyError(f"DKDepthMetric: no gt_depth_map for {ds.get('img_path')}; load it in "
                               f"the test pipeline or set format_only=True")
            if hi is None:
                raise ValueError('DKDepthMetric: max_depth is neither given nor in the dataset meta')
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


# ------------------------------------------------------------------------------- visualisation

_COLORMAPS = dict(turbo=cv2.COLORMAP_TURBO, magma=cv2.COLORMAP_MAGMA, inferno=cv2.COLORMAP_INFERNO,
                  viridis=cv2.COLORMAP_VIRIDIS, jet=cv2.COLORMAP_JET)


def colorize_depth(depth: np.ndarray, max_depth: float, min_depth: float = 0.0,
                   colormap: str = 'turbo') -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` rendering of a depth map on a fixed ``[min_depth, max_depth]``
    scale (near = low end of the colormap); pixels with depth <= 0 (missing) are black."""
    if colormap not in _COLORMAPS:
        raise ValueError(f"colorize_depth: colormap={colormap!r} must be one of {sorted(_COLORMAPS)}")
    d = np.asarray(depth, dtype=np.float32)
    norm = np.clip((d - min_depth) / max(max_depth - min_depth, 1e-6), 0, 1)
    bgr = cv2.applyColorMap((norm * 255).astype(np.uint8), _COLORMAPS[colormap])
    bgr[d <= 0] = 0
    return bgr[:, :, ::-1].copy()


class DepthVisualizationHook(Hook):
    """Draws ``input | prediction | ground truth`` side by side during validation and testing.

    Interface (what ``tools/test.py --show-dir D`` sets): ``draw=True``, ``interval=1`` and
    ``show_dir=abspath(D)``. With ``show_dir``, each test image is written to
    ``<show_dir>/<image name>.png``; without it the drawing goes to the runner's visualizer
    (``visualizer.add_image``: with a ``LocalVisBackend``, ``<save_dir>/vis_data/vis_image/``).
    During validation the first sample of every ``interval``-th batch goes to the visualizer.

    Args:
        draw: draw at all (off by default, like mmseg's ``SegVisualizationHook``).
        interval: validation batches between drawings; in testing every ``interval``-th sample.
        show_dir: output folder for test drawings (relative paths are under ``runner.work_dir``).
        max_depth: top of the colour scale; ``None`` takes the dataset's ``max_depth``.
        colormap: one of ``turbo``, ``magma``, ``inferno``, ``viridis``, ``jet``.
    """

    priority = 'NORMAL'

    def __init__(self, draw: bool = False, interval: int = 50, show_dir: str | None = None,
                 max_depth: float | None = None, colormap: str = 'turbo') -> None:
        if interval < 1:
            raise ValueError(f"DepthVisualizationHook: interval={interval} must be >= 1")
        if colormap not in _COLORMAPS:
            raise ValueError(f"DepthVisualizationHook: colormap={colormap!r} must be one of "
                             f"{sorted(_COLORMAPS)}")
        self.draw, self.interval, self.show_dir = draw, interval, show_dir
        self.max_depth, self.colormap = max_depth, colormap
        self._test_index = 0

    def _scale(self, runner, loader_name: str, ds) -> float:
        if self.max_depth is not None:
            return self.max_depth
        loader = getattr(runner, loader_name, None)
        meta = getattr(getattr(loader, 'dataset', None), 'metainfo', None) or {}
        if 'max_depth' in meta:
            return float(meta['max_depth'])
        return float(ds.pred_depth_map.data.max())

    def render(self, ds, max_depth: float) -> np.ndarray:
        """RGB uint8 ``[H, W * k, 3]``: the input image, the prediction and (if any) the ground truth."""
        pred = ds.pred_depth_map.data[0].float().cpu().numpy()
        img = cv2.imread(ds.img_path, cv2.IMREAD_COLOR) if 'img_path' in ds else None
        panels = []
        if img is not None:
            img = img[:, :, ::-1]
            if img.shape[:2] != pred.shape:
                img = cv2.resize(img, pred.shape[::-1], interpolation=cv2.INTER_LINEAR)
            panels.append(img)
        panels.append(colorize_depth(pred, max_depth, colormap=self.colormap))
        if 'gt_depth_map' in ds:
            gt = ds.gt_depth_map.data[0].float().cpu().numpy()
            if gt.shape == pred.shape:
                panels.append(colorize_depth(gt, max_depth, colormap=self.colormap))
        return np.concatenate(panels, axis=1)

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.draw or not outputs or batch_idx % self.interval:
            return
        ds = outputs[0]
        name = 'val_' + osp.splitext(osp.basename(ds.metainfo.get('img_path', str(batch_idx))))[0]
        runner.visualizer.add_image(name, self.render(ds, self._scale(runner, 'val_dataloader', ds)),
                                    step=runner.iter)

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self.draw:
            return
        for ds in outputs or []:
            self._test_index += 1
            if (self._test_index - 1) % self.interval:
                continue
            drawing = self.render(ds, self._scale(runner, 'test_dataloader', ds))
            name = osp.splitext(osp.basename(ds.metainfo.get('img_path', f'{self._test_index:06d}')))[0]
            if self.show_dir:
                out = osp.join(runner.work_dir, self.show_dir)  # no-op for an absolute show_dir
                os.makedirs(out, exist_ok=True)
                cv2.imwrite(osp.join(out, name + '.png'), drawing[:, :, ::-1])
            else:
                runner.visualizer.add_image(name, drawing, step=self._test_index)


# ------------------------------------------------------------------------------- registration

def _register(registry, scope: str, objects: dict) -> None:
    for name, obj in objects.items():
        existing = registry.module_dict.get(name)
        if existing is obj:
            continue
        if existing is not None:
            raise KeyError(f"densekit depth: '{name}' would shadow {scope}'s {existing!r}")
        registry.register_module(name=name, module=obj)


def register() -> None:
    from mmseg.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS
    _register(DATASETS, 'mmseg DATASETS', dict(DepthFolderDataset=DepthFolderDataset,
                                                DKNYUv2Dataset=DKNYUv2Dataset,
                                                KITTIEigenDataset=KITTIEigenDataset))
    _register(TRANSFORMS, 'mmseg TRANSFORMS', dict(LoadDepthMap=LoadDepthMap,
                                                    DepthFixedCrop=DepthFixedCrop,
                                                    DepthKBCrop=DepthKBCrop,
                                                    DepthRandomCrop=DepthRandomCrop,
                                                    DepthRandomFlip=DepthRandomFlip,
                                                    DepthRandomRotate=DepthRandomRotate,
                                                    DepthColorJitter=DepthColorJitter))
    _register(MODELS, 'mmseg MODELS', dict(DKDepthEstimator=DKDepthEstimator,
                                            DPTDepthHead=DPTDepthHead,
                                            FPNDepthHead=FPNDepthHead,
                                            DKSILogLoss=SILogLoss,
                                            DKDepthL1Loss=L1DepthLoss))
    _register(METRICS, 'mmseg METRICS', dict(DKDepthMetric=DKDepthMetric))
    _register(HOOKS, 'mmseg HOOKS', dict(DepthVisualizationHook=DepthVisualizationHook))


register()
