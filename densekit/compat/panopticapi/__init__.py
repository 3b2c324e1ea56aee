"""The part of the COCO panoptic API (``panopticapi``) that mmdet 3.x uses, numpy-2 safe.

mmdet's ``CocoPanopticMetric``, ``LoadPanopticAnnotations`` and ``DetInferencer`` import
``VOID``, ``OFFSET`` and ``PQStat`` from ``panopticapi.evaluation`` and ``rgb2id`` / ``id2rgb``
from ``panopticapi.utils``. :func:`densekit.compat.install` serves these modules under the names
``panopticapi``, ``panopticapi.evaluation`` and ``panopticapi.utils`` only when no real
``panopticapi`` is installed (its finder is consulted after the standard ones).

PQ follows Kirillov et al., "Panoptic Segmentation", CVPR 2019; see :mod:`.evaluation`.
"""
from . import evaluation, utils

__all__ = ['evaluation', 'utils']
