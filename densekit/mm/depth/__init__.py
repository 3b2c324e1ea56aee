"""Monocular depth in mmseg's scope: datasets, transforms, estimator, metric and visualisation.

One module per role: :mod:`.datasets`, :mod:`.transforms`, :mod:`.estimator`, :mod:`.metric`,
:mod:`.visualization`. :func:`register` puts them into mmseg's registries under names that do not
shadow mmseg's own depth support (``DepthEstimator``, ``NYUDataset``, ``DepthMetric``,
``LoadDepthAnnotation``, ``SiLogLoss``), following the naming rule of :mod:`densekit.mm`. The
numerics live in the core: :mod:`densekit.evaluation.depth` (metrics), :mod:`densekit.models.depth`
(heads, losses).

Conventions shared by every piece:

* depth is in metres; a depth file holds ``depth * depth_scale`` (NYUv2 png: 1000, KITTI png:
  256) and 0 marks a pixel without ground truth;
* a dataset's ``metainfo`` carries ``min_depth``, ``max_depth``, ``depth_scale``, ``eval_crop``
  and ``crop_dataset``, which :class:`DenseKitDepthMetric` and :class:`DepthVisualizationHook`
  read unless given explicitly;
* pipelines keep ``gt_depth_map`` aligned with ``img`` (``seg_fields`` as in mmseg), and mmseg's
  ``PackSegInputs`` packs it into ``SegDataSample.gt_depth_map``; predictions are returned in
  ``SegDataSample.pred_depth_map`` at the original image size.
"""
from __future__ import annotations

from densekit.mm.depth.datasets import DepthFolderDataset, DKNYUv2Dataset, KITTIEigenDataset, NYUv2Dataset
from densekit.mm.depth.estimator import DenseKitDepthEstimator, DKDepthEstimator
from densekit.mm.depth.metric import DenseKitDepthMetric, DKDepthMetric
from densekit.mm.depth.transforms import (DepthColorJitter, DepthFixedCrop, DepthKBCrop, DepthRandomCrop,
                                          DepthRandomFlip, DepthRandomRotate, LoadDepthMap)
from densekit.mm.depth.visualization import DepthVisualizationHook, colorize_depth
from densekit.mm.registry import deprecated_alias, register as _register
from densekit.models.depth import DPTDepthHead, FPNDepthHead, L1DepthLoss, PolyMaXDepthHead, SILogLoss

__all__ = [
    'DepthFolderDataset', 'NYUv2Dataset', 'KITTIEigenDataset', 'LoadDepthMap', 'DepthFixedCrop',
    'DepthKBCrop', 'DepthRandomCrop', 'DepthRandomFlip', 'DepthRandomRotate', 'DepthColorJitter',
    'DenseKitDepthEstimator', 'DenseKitDepthMetric', 'DepthVisualizationHook', 'colorize_depth',
    'register',
]

# The core losses' former registered names, as deprecated aliases (configs may still hold them).
DKSILogLoss = deprecated_alias(SILogLoss, 'DKSILogLoss', 'DenseKitSILogLoss', module=__name__)
DKDepthL1Loss = deprecated_alias(L1DepthLoss, 'DKDepthL1Loss', 'L1DepthLoss', module=__name__)


def register() -> None:
    """Registers the depth classes into mmseg's registries, with the deprecated ``DK`` names."""
    from mmseg.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS
    for cls in (DepthFolderDataset, NYUv2Dataset, KITTIEigenDataset, DKNYUv2Dataset):
        _register(DATASETS, cls)
    for cls in (LoadDepthMap, DepthFixedCrop, DepthKBCrop, DepthRandomCrop, DepthRandomFlip,
                DepthRandomRotate, DepthColorJitter):
        _register(TRANSFORMS, cls)
    for cls in (DenseKitDepthEstimator, DKDepthEstimator, DPTDepthHead, FPNDepthHead,
                PolyMaXDepthHead, L1DepthLoss, DKSILogLoss, DKDepthL1Loss):
        _register(MODELS, cls)
    # mmseg registers SiLogLoss: the core's SILogLoss takes the prefix of the naming rule
    _register(MODELS, SILogLoss, 'DenseKitSILogLoss')
    for cls in (DenseKitDepthMetric, DKDepthMetric):
        _register(METRICS, cls)
    _register(HOOKS, DepthVisualizationHook)
