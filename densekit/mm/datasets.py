"""densekit's datasets in mmdet's / mmseg's ``DATASETS``: validated COCO and the synthetic sets.

* ``DenseKitCocoDataset`` (mmdet): mmdet's ``CocoDataset`` whose annotation file goes through
  :mod:`densekit.datasets.checks` first: a missing root / file / image folder, malformed json, an
  unknown category or image id, a malformed box is a one-sentence error naming the file, key and
  value; a class of ``metainfo.classes`` that is not a category name of the file, or classes listed
  in another order than the file's categories (mmdet would silently drop the class or attach the
  wrong names to the labels), and a training set that the filter leaves empty are errors too;
  zero-area boxes and boxes outside their image are skipped with a counted warning; an
  image that does not decode is named instead of failing as an assertion inside a transform.
* ``DenseKitCityscapesDataset`` and ``DenseKitADE20KDataset`` (mmseg): mmseg's
  ``CityscapesDataset`` / ``ADE20KDataset`` (same arguments) whose build fails, naming the field,
  folder, image count and an expected label path, when the image folder is missing or holds no
  image, or when any image lacks its label file (mmseg derives the label paths without looking:
  a misspelt ``data_prefix.seg_map_path`` or ``seg_map_suffix`` fails later in a data-loader
  worker, or never when the pipeline loads no labels). Without ``seg_map_path`` (unlabelled
  inference) nothing is required of labels. The checks are those of
  :class:`densekit.mm.validated.ValidatedDatasetMixin`, shared with the depth datasets.
* ``SyntheticShapesDataset`` (mmdet) and ``SyntheticADEDataset`` (mmseg): the quickstart data of
  :mod:`densekit.datasets.synthetic`, and ``SyntheticPanopticDataset`` (mmdet) its COCO-panoptic
  layout set; when absent, the error says how to generate it.
"""
from __future__ import annotations

import os.path as osp

from mmdet.datasets import CocoDataset, CocoPanopticDataset
from mmdet.datasets.api_wrappers import COCO
from mmengine.logging import MMLogger
from mmseg.datasets import ADE20KDataset, BaseSegDataset, CityscapesDataset

from densekit.datasets import checks
from densekit.datasets.synthetic import (ADE_CLASSES, ADE_PALETTE, COCO_CLASSES, PANOPTIC_CLASSES,
                                         PANOPTIC_STUFF, PANOPTIC_THINGS)
from densekit.mm.registry import register as _register
from densekit.mm.validated import ValidatedDatasetMixin, prepare_checked

_SYNTHETIC_HINT = ("generate the synthetic quickstart data with "
                   "`python tools/make_demo_data.py {root}` (or run tools/quickstart.sh)")


def _coco_from_dict(coco: dict) -> COCO:
    api = COCO()
    api.dataset = coco
    api.createIndex()
    # mmdet's snake-case aliases point at the index dicts that createIndex just replaced.
    api.img_ann_map = api.imgToAnns
    api.cat_img_map = api.catToImgs
    return api


class _CheckedCocoMixin:
    missing_hint: str | None = None

    def _hint(self) -> str | None:
        return self.missing_hint.format(root=osp.dirname(osp.normpath(self.data_root or '.'))) \
            if self.missing_hint else None

    def load_data_list(self) -> list[dict]:
        hint = self._hint()
        if self.data_root:
            checks.require_path(self.data_root, 'data root', hint)
        checks.require_path(self.ann_file, 'annotation file', hint)
        img_dir = self.data_prefix.get('img')
        if img_dir:
            checks.require_path(img_dir, 'image folder', hint)
        clean, skipped = checks.validate_coco(checks.load_json(self.ann_file), self.ann_file)
        checks.log_skipped(skipped, self.ann_file, MMLogger.get_current_instance())
        checks.check_class_names(clean, self.metainfo['classes'], self.ann_file)
        # mmdet's loader reads ``self.COCOAPI(path)``: hand it the validated dict instead.
        self.COCOAPI = lambda _path: _coco_from_dict(clean)
        try:
            return super().load_data_list()
        finally:
            del self.COCOAPI

    def filter_data(self) -> list[dict]:
        kept = super().filter_data()
        if not kept and self.data_list:
            # mmengine would fail later with "need at least one array to concatenate"
            raise checks.DataError(
                f'{self.ann_file}: no image of the {len(self.data_list)} is left for training '
                f'after filter_cfg={self.filter_cfg} (every image has no usable annotation of '
                f"the classes {tuple(self.metainfo['classes'])})")
        return kept

    def prepare_data(self, idx: int):
        return prepare_checked(self, idx)


class DenseKitCocoDataset(_CheckedCocoMixin, CocoDataset):
    """mmdet's ``CocoDataset`` with densekit's input checks (same arguments)."""


class SyntheticShapesDataset(_CheckedCocoMixin, CocoDataset):
    """The synthetic COCO-format shapes of ``tools/make_demo_data.py`` (``OUT/coco``)."""

    METAINFO = dict(
        classes=COCO_CLASSES,
        palette=[(220, 20, 60), (119, 11, 32), (0, 0, 142), (0, 0, 230), (106, 0, 228)])
    missing_hint = _SYNTHETIC_HINT


class SyntheticPanopticDataset(CocoPanopticDataset):
    """The synthetic COCO-panoptic-layout set of ``tools/make_demo_data.py --kind coco_panoptic``
    (``OUT/coco_panoptic``): the shapes as things, sky and ground as stuff."""

    METAINFO = dict(
        classes=PANOPTIC_CLASSES, thing_classes=PANOPTIC_THINGS, stuff_classes=PANOPTIC_STUFF,
        palette=[(220, 20, 60), (119, 11, 32), (0, 0, 142), (0, 0, 230), (106, 0, 228),
                 (70, 130, 180), (152, 251, 152)])

    def load_data_list(self) -> list[dict]:
        hint = ("generate the synthetic panoptic data with `python tools/make_demo_data.py "
                f"{osp.dirname(osp.normpath(self.data_root or '.'))} --kind coco_panoptic`")
        if self.data_root:
            checks.require_path(self.data_root, 'data root', hint)
        checks.require_path(self.ann_file, 'annotation file', hint)
        for key, what in (('img', 'image folder'), ('seg', 'panoptic PNG folder')):
            if self.data_prefix.get(key):
                checks.require_path(self.data_prefix[key], what, hint)
        return super().load_data_list()


class _CheckedSegMixin(ValidatedDatasetMixin):
    """``BaseSegDataset.load_data_list`` plus the folder / label checks of the module docstring."""

    def load_data_list(self) -> list[dict]:
        if not self.files_are_local():
            # object storage (``backend_args`` or an ``s3://`` / ``http://`` ... prefix): os.path
            # cannot see it and a request per label is not cheap; left unchecked, as in mmseg
            return super().load_data_list()
        images = self.require_source()
        data_list = super().load_data_list()
        from_split = self.uses_split_file()
        self.require_images(data_list, images, None if from_split else self.img_suffix)
        if from_split:  # a folder scan lists only what exists
            self.require_listed_images(data_list, images)
        if self.data_prefix.get('seg_map_path') is not None:
            missing = self.find_missing_labels(data_list)
            if missing:
                raise self.missing_labels_error(missing, len(data_list), images, self.seg_map_suffix)
        return data_list


class DenseKitCityscapesDataset(_CheckedSegMixin, CityscapesDataset):
    """mmseg's ``CityscapesDataset`` with densekit's folder / label checks (same arguments)."""


class DenseKitADE20KDataset(_CheckedSegMixin, ADE20KDataset):
    """mmseg's ``ADE20KDataset`` with densekit's folder / label checks (same arguments)."""


class SyntheticADEDataset(_CheckedSegMixin, BaseSegDataset):
    """The synthetic ADE20K-layout set of ``tools/make_demo_data.py`` (``OUT/ade``).

    Labels are stored ADE-style (0 = unlabeled), hence ``reduce_zero_label=True``.
    """

    METAINFO = dict(classes=ADE_CLASSES, palette=[list(c) for c in ADE_PALETTE])

    def __init__(self, img_suffix: str = '.jpg', seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = True, **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)

    def load_data_list(self) -> list[dict]:
        hint = _SYNTHETIC_HINT.format(root=osp.dirname(osp.normpath(self.data_root or '.')))
        if self.data_root:
            checks.require_path(self.data_root, 'data root', hint)
        for key, what in (('img_path', 'image folder'), ('seg_map_path', 'annotation folder')):
            if self.data_prefix.get(key):
                checks.require_path(self.data_prefix[key], what, hint)
        return super().load_data_list()


def register() -> None:
    from mmdet.registry import DATASETS as MMDET_DATASETS
    from mmseg.registry import DATASETS as MMSEG_DATASETS
    for cls in (DenseKitCocoDataset, SyntheticShapesDataset, SyntheticPanopticDataset):
        _register(MMDET_DATASETS, cls)
    for cls in (DenseKitCityscapesDataset, DenseKitADE20KDataset, SyntheticADEDataset):
        _register(MMSEG_DATASETS, cls)
