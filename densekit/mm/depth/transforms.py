"""Depth transforms: loading the depth map, and crops / flips / rotations that keep every map of
``seg_fields`` (``gt_depth_map`` among them) aligned with ``img``, as mmseg's transforms do.

Literature recipes: BTS (Lee et al., arXiv:1907.10326, ``bts_dataloader.py``): NYUv2 training
crops the white border ``(43, 45, 608, 472)``, rotates by up to 2.5 degrees, takes 416x544 random
crops, flips, and jitters gamma / brightness / colour; KITTI uses the KITTI-benchmark crop (the
bottom-centred 352x1216 window) and 352x704 random crops.
"""
from __future__ import annotations

import io
from typing import Sequence

import cv2
import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmengine import fileio

from densekit.datasets.checks import DataError, DataNotFoundError


def decode_depth_map(content: bytes, path: str) -> np.ndarray:
    """The stored values of a depth map file: an image decoded unchanged (a 16-bit png gives
    ``uint16``, as ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` does), or the array of a ``.npy``.

    Raises :class:`~densekit.datasets.checks.DataError` naming the file when it does not decode
    or does not hold one channel of integer or floating-point values (a boolean, complex or
    object array would turn into depths without an error). Non-finite values of a float array
    are kept: outside ``(min_depth, max_depth)``, they count as pixels without depth.
    """
    if path.endswith('.npy'):
        try:
            raw = np.load(io.BytesIO(content), allow_pickle=False)
        except Exception as e:  # noqa: BLE001 (numpy raises ValueError, EOFError, OSError, ...)
            raise DataError(f'LoadDepthMap: {path!r} ({len(content)} bytes) is not a readable .npy '
                            f'array: {type(e).__name__}: {e}') from None
    else:
        try:
            raw = mmcv.imfrombytes(content, flag='unchanged', backend='cv2')
        except cv2.error:
            raw = None
        if raw is None:
            raise DataError(f"LoadDepthMap: {path!r} ({len(content)} bytes) does not decode as an "
                            'image (corrupt, truncated or not an image)')
    if not isinstance(raw, np.ndarray) or raw.dtype.kind not in 'iuf':
        raise DataError(f'LoadDepthMap: {path!r} holds {getattr(raw, "dtype", type(raw))} values; '
                        'expected integer or floating-point depths')
    if raw.ndim != 2 or 0 in raw.shape:
        raise DataError(f'LoadDepthMap: {path!r} has shape {raw.shape}; expected one channel '
                        '(height x width)')
    return raw


class LoadDepthMap(BaseTransform):
    """Read ``results['depth_map_path']`` into ``gt_depth_map`` in metres (float32).

    The file is read through mmengine's file backends (``backend_args``, or a prefix such as
    ``s3://``) and holds ``depth * depth_scale``: a one-channel image (16-bit png) or a 2-d
    ``.npy`` array (``depth_scale=1`` for an array in metres).

    Args:
        depth_scale: stored value per metre; ``None`` takes ``results['depth_scale']`` (set by the
            densekit datasets) and fails when absent.
        backend_args: mmengine file-backend arguments (as for ``LoadImageFromFile``).
    """

    def __init__(self, depth_scale: float | None = None, backend_args: dict | None = None) -> None:
        self.depth_scale = depth_scale
        self.backend_args = backend_args.copy() if backend_args else None

    def transform(self, results: dict) -> dict:
        path = results['depth_map_path']
        try:
            content = fileio.get(path, backend_args=self.backend_args)
        except FileNotFoundError as e:
            raise DataNotFoundError(f"LoadDepthMap: cannot read depth map {path!r}") from e
        raw = decode_depth_map(content, path)
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

