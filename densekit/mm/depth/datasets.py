"""Depth datasets: images paired with depth maps by relative path or by a BTS split file.

Each dataset's ``metainfo`` carries ``min_depth``, ``max_depth``, ``depth_scale``, ``eval_crop``
and ``crop_dataset``, which :class:`~densekit.mm.depth.metric.DenseKitDepthMetric` and
:class:`~densekit.mm.depth.visualization.DepthVisualizationHook` read unless given explicitly.
The folder / split-file / missing-depth checks are those of
:class:`densekit.mm.validated.ValidatedDatasetMixin`, shared with the segmentation datasets.
"""
from __future__ import annotations

import math
import os.path as osp

from mmengine.dataset import BaseDataset
from mmengine.fileio import list_dir_or_file, list_from_file
from mmengine.logging import MMLogger

from densekit.datasets import checks
from densekit.evaluation.depth import CROPS
from densekit.mm.registry import deprecated_alias
from densekit.mm.validated import ValidatedDatasetMixin


class DepthFolderDataset(ValidatedDatasetMixin, BaseDataset):
    """Images and depth maps paired by relative path (any folder layout, e.g. the synthetic set).

    ``data_prefix=dict(img_path=..., depth_map_path=...)`` name the two folders (relative to
    ``data_root``); ``images/a/b.jpg`` pairs with ``depth/a/b.png`` (suffixes swapped). With
    ``ann_file``, each line is ``<image> <depth> [focal]`` (the BTS split-file format; a leading
    ``/`` is ignored; a depth of ``None`` marks a frame without ground truth) relative to the two
    prefixes. Folders and split files are read through mmengine's file backends.

    Args:
        img_suffix: image suffix for the folder scan.
        depth_suffix: depth map suffix (``.png``, or ``.npy`` for arrays).
        depth_scale: stored value per metre.
        min_depth: lower bound of valid depth (metric, loss masks).
        max_depth: upper bound of valid depth.
        eval_crop: ``None``, ``'eigen'`` or ``'garg'`` (see :mod:`densekit.evaluation.depth`).
        crop_dataset: ``'nyu'``, ``'kitti'`` or ``'auto'``: which Eigen crop ``'eigen'`` is.
        skip_missing_depth: drop frames whose depth is ``None`` (split file) or whose depth file
            does not exist (BTS evaluation skips them the same way), with a counted log line;
            otherwise they are kept without ``depth_map_path`` (inference only). Either way, a
            depth folder in which no listed depth file exists (a wrong ``depth_map_path`` or
            ``depth_suffix``) is an error naming the folder and an expected path.
        backend_args: mmengine file-backend arguments for listing the folders and reading the
            split file (pass the same to ``LoadImageFromFile`` and ``LoadDepthMap``).
        **kwargs: ``mmengine.dataset.BaseDataset`` arguments (``data_root``, ``ann_file``,
            ``data_prefix``, ``pipeline``, ``test_mode``, ``indices``, ...).
    """

    METAINFO = dict(min_depth=1e-3, max_depth=10.0, depth_scale=1000.0, eval_crop=None,
                    crop_dataset='auto')
    label_key = 'depth_map_path'
    label_kind = 'depth'
    suffix_field = 'depth_suffix'

    def __init__(self,
                 img_suffix: str = '.png',
                 depth_suffix: str = '.png',
                 depth_scale: float | None = None,
                 min_depth: float | None = None,
                 max_depth: float | None = None,
                 eval_crop: str | None = 'from_class',
                 crop_dataset: str | None = None,
                 skip_missing_depth: bool = True,
                 backend_args: dict | None = None,
                 **kwargs) -> None:
        self.img_suffix = img_suffix
        self.depth_suffix = depth_suffix
        self.skip_missing_depth = skip_missing_depth
        self.backend_args = backend_args.copy() if backend_args else None
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
        img_dir = self.data_prefix.get('img_path', '')
        depth_dir = self.data_prefix.get('depth_map_path')
        if not self.files_are_local():
            frames = (self._read_split_file(img_dir, depth_dir) if self.ann_file
                      else self._scan_folder(img_dir, depth_dir))
            return [d for d in frames if 'depth_map_path' in d] if self.skip_missing_depth else frames
        images = self.require_source()
        if self.ann_file:
            suffix = None
            frames = self._read_split_file(img_dir, depth_dir)
        else:
            suffix = self.depth_suffix
            frames = self._scan_folder(img_dir, depth_dir)
            self.require_images(frames, images, self.img_suffix)
            if depth_dir is None:  # images only (inference)
                return frames
        listed = [d for d in frames if 'depth_map_path' in d]
        missing = self.find_missing_labels(listed)
        if listed and len(missing) == len(listed):
            # a wrong folder or suffix, not frames without ground truth: nothing would be trained
            raise self.missing_labels_error(missing, len(listed), images, suffix)
        log = MMLogger.get_current_instance()
        if missing:
            gone = {label for _, label in missing}
            for d in listed:
                if d['depth_map_path'] in gone:
                    del d['depth_map_path']
            action = 'skipped' if self.skip_missing_depth else 'kept without depth (inference only)'
            log.warning(f"{self.owner}: {action} {len(missing)} of the {len(frames)} frames of "
                        f"{images} whose depth file under data_prefix.depth_map_path='{depth_dir}' "
                        f'does not exist: {checks.list_missing(missing)} (skip_missing_depth='
                        f'{self.skip_missing_depth})')
        no_gt = len(frames) - len(listed)
        if no_gt:
            # BTS split files mark frames without ground truth with a 'None' depth
            action = 'skipped' if self.skip_missing_depth else 'kept without depth'
            why = ("'None' in the split file" if depth_dir is not None
                   else 'no data_prefix.depth_map_path')
            log.info(f'{self.owner}: {action} {no_gt} of the {len(frames)} frames of {images} that '
                     f'have no depth ({why})')
        if self.skip_missing_depth:
            frames = [d for d in frames if 'depth_map_path' in d]
        if not frames:
            raise checks.DataNotFoundError(
                f'{self.owner}: {images} lists no frame with a depth map (data_prefix.depth_map_path='
                f'{depth_dir!r}, skip_missing_depth={self.skip_missing_depth})')
        if self.ann_file:  # a folder scan lists only what exists
            self.require_listed_images(frames, images)
        return frames

    def _scan_folder(self, img_dir: str, depth_dir: str | None) -> list[dict]:
        """Every ``*img_suffix`` image under ``img_dir`` with its expected depth path, sorted."""
        out = []
        for rel in list_dir_or_file(img_dir, list_dir=False, suffix=self.img_suffix,
                                    recursive=True, backend_args=self.backend_args):
            depth = None
            if depth_dir is not None:
                depth = osp.join(depth_dir, rel[:-len(self.img_suffix)] + self.depth_suffix)
            out.append(self._info(osp.join(img_dir, rel), depth))
        return sorted(out, key=lambda d: d['img_path'])

    def _read_split_file(self, img_dir: str, depth_dir: str | None) -> list[dict]:
        """The frames of a BTS split file; a ``None`` depth gives a frame without depth."""
        out = []
        for number, line in enumerate(list_from_file(self.ann_file, backend_args=self.backend_args), 1):
            parts = line.split()
            if not parts:
                continue
            where = f"{self.owner}: ann_file '{self.ann_file}' line {number} ({line.strip()[:80]!r})"
            if len(parts) > 3:
                raise checks.DataError(f'{where} has {len(parts)} fields; expected '
                                       '<image> <depth> [focal] (no spaces inside a path)')
            depth = None
            if len(parts) > 1 and parts[1] != 'None' and depth_dir is not None:
                depth = osp.join(depth_dir, parts[1].lstrip('/'))
            info = self._info(osp.join(img_dir, parts[0].lstrip('/')), depth)
            if len(parts) > 2:
                try:
                    focal = float(parts[2])
                except ValueError:
                    focal = float('nan')
                if not (math.isfinite(focal) and focal > 0):
                    raise checks.DataError(f'{where}: focal {parts[2]!r} is not a positive number')
                info['focal'] = focal
            out.append(info)
        if not out:
            raise checks.DataError(f"{self.owner}: ann_file '{self.ann_file}' lists no frame (it "
                                   'is empty)')
        return out


class NYUv2Dataset(DepthFolderDataset):
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


DKNYUv2Dataset = deprecated_alias(NYUv2Dataset, 'DKNYUv2Dataset')
