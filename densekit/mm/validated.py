"""The validated-dataset base of the image + per-image label datasets (segmentation and depth).

mmseg's ``BaseSegDataset`` and densekit's depth datasets derive a label path for every image
without looking: a misspelt ``data_prefix`` or suffix builds fine and fails later inside a
data-loader worker, or never when the pipeline loads no labels, and a partial label folder
trains on fewer images without a word. :class:`ValidatedDatasetMixin` holds the checks both
kinds run when they list their images, with the messages of :mod:`densekit.datasets.checks`:

* the split file (``ann_file``) or the image folder exists;
* a folder scan found an image, a split file lists one, and the images a split file lists exist;
* which listed images lack their label file (the dataset decides whether that is an error);
* an image that is missing or does not decode is named when a sample fails to load.

Files are listed and read through mmengine's file backends (``backend_args``, or a prefix such
as ``s3://``), as mmseg does. The existence checks need ``os.path`` and one ``stat`` per file,
so they run for local folders only; object storage is left unchecked, as in mmseg.
"""
from __future__ import annotations

import os.path as osp

from mmengine.fileio import LocalBackend, get_file_backend

from densekit.datasets import checks


class ValidatedDatasetMixin:
    """Checks for a dataset whose data infos pair ``img_path`` with a label path.

    Mixed in before an mmengine ``BaseDataset`` subclass; reads its ``ann_file``,
    ``data_prefix``, ``data_root`` and ``backend_args`` (``None`` when the class has none).

    Class attributes:
        label_key: the data-info key and ``data_prefix`` key of the label path.
        label_kind: what a label is, for messages (``'label'``, ``'depth'``).
        suffix_field: the argument that names the label suffix, for messages.
    """

    label_key: str = 'seg_map_path'
    label_kind: str = 'label'
    suffix_field: str = 'seg_map_suffix'

    @property
    def owner(self) -> str:
        """The class name, which starts every message (the name the config builds)."""
        return type(self).__name__

    def files_are_local(self) -> bool:
        """Whether the data sit on the local file system, where the existence checks run."""
        where = self.data_prefix.get('img_path') or self.ann_file or self.data_root or '.'
        backend = get_file_backend(where, backend_args=getattr(self, 'backend_args', None))
        return isinstance(backend, LocalBackend)

    def uses_split_file(self) -> bool:
        return bool(self.ann_file) and not osp.isdir(self.ann_file)

    def require_source(self) -> str:
        """Requires the split file or the image folder; returns where the images come from, for
        messages (``"ann_file '...'"`` or ``"data_prefix.img_path='...'"``)."""
        if self.uses_split_file():
            checks.require_path(self.ann_file, f'{self.owner}: ann_file')
            return f"ann_file '{self.ann_file}'"
        img_dir = self.data_prefix.get('img_path') or ''
        checks.require_path(img_dir, f'{self.owner}: image folder data_prefix.img_path')
        return f"data_prefix.img_path='{img_dir}'"

    def require_images(self, data_list: list[dict], images: str, img_suffix: str | None) -> None:
        """Requires at least one image (``img_suffix``: what a folder scan looked for; ``None`` for
        a split file)."""
        checks.require_images(len(data_list), self.owner, images, img_suffix)

    def require_listed_images(self, data_list: list[dict], images: str) -> None:
        """Requires every image a split file lists to exist (a folder scan lists only what exists)."""
        checks.require_listed_images([d['img_path'] for d in data_list], self.owner, images,
                                     self.data_prefix.get('img_path') or '')

    def find_missing_labels(self, data_list: list[dict]) -> list[tuple[str, str]]:
        """The ``(image, label)`` pairs of the infos that name a label file which does not exist."""
        return checks.find_missing_labels(
            [(d['img_path'], d[self.label_key]) for d in data_list if self.label_key in d])

    def missing_labels_error(self, missing: list[tuple[str, str]], total: int, images: str,
                             suffix: str | None) -> checks.DataNotFoundError:
        """The error for ``missing`` of ``total`` images without their label file (``suffix``:
        the label suffix the paths were derived with; ``None`` when a split file lists them)."""
        return checks.missing_labels_error(
            self.owner, missing, total, images=images,
            label_field=f'data_prefix.{self.label_key}', label_dir=self.data_prefix.get(self.label_key),
            suffix_field=self.suffix_field, suffix=suffix, kind=self.label_kind)

    def prepare_data(self, idx: int):
        """``BaseDataset.prepare_data`` that names an image which is missing or does not decode."""
        return prepare_checked(self, idx)


def prepare_checked(dataset, idx: int):
    """Runs the pipeline on sample ``idx``; on failure, names a local image that is missing or does
    not decode instead of the transform's assertion (decoding again costs nothing on the normal
    path)."""
    try:
        return dataset.pipeline(dataset.get_data_info(idx))
    except Exception:
        path = dataset.get_data_info(idx)['img_path']
        backend_args = getattr(dataset, 'backend_args', None)
        if isinstance(get_file_backend(path, backend_args=backend_args), LocalBackend):
            checks.check_image(path)
        raise
