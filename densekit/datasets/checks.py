"""Input validation for datasets: one clear sentence per problem, naming the file, key and value.

Bad data otherwise surfaces deep inside a training run (a ``KeyError: 'area'`` in a worker, an
``AssertionError`` from a transform, a silently empty dataset). The checks here run once, when a
dataset loads its annotation file, and follow the COCO conventions (Lin et al., "Microsoft
COCO: Common Objects in Context", ECCV 2014) on what is an error and what is skipped:

* errors (:class:`DataError`): a missing data root / annotation file / image folder, a file that
  is not JSON, missing top-level or per-record keys, a bbox that is not four numbers or has a
  negative size, an id / size / area / coordinate of the wrong type (an array where an id
  belongs, ``true`` as a width), a malformed ``segmentation`` or ``iscrowd``, a category id or
  name listed twice, an annotation whose ``category_id`` is not in ``categories`` or whose
  ``image_id`` is not in ``images``, an image that does not decode, configured class names that
  are not the file's category names in the file's order (:func:`check_class_names`);
* for folder-layout datasets (semantic labels, depth maps paired with images by file name): an
  image folder without an image, and label files missing for listed images
  (:func:`find_missing_labels`, :func:`missing_labels_error`): a misspelt ``seg_map_path`` or
  label suffix otherwise builds fine and fails later inside a data-loader worker, and a partial
  label folder would silently train on fewer images;
* skipped with one counted warning per kind and file (mmdet's loader drops these silently):
  zero-area boxes (width or height below one pixel, or ``area <= 0``), boxes that lie
  entirely outside their image, and polygon masks none of whose polygons has three points.
  Boxes that only stick out are kept (training clips them).

Core module: numpy / OpenCV / json only, no OpenMMLab import.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Keys every record must carry for mmdet's COCO loader (``iscrowd`` and ``segmentation`` are
# optional there: iscrowd defaults to 0, a missing segmentation means "box only").
COCO_TOP_KEYS = ('images', 'annotations', 'categories')
COCO_IMAGE_KEYS = ('id', 'file_name', 'width', 'height')
COCO_ANN_KEYS = ('id', 'image_id', 'category_id', 'bbox', 'area')
COCO_CAT_KEYS = ('id', 'name')


class DataError(ValueError):
    """A dataset input that cannot be used; the message names the file, key and value."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data root, annotation file or image that does not exist."""


def require_path(path: str | Path, what: str, hint: str | None = None) -> Path:
    """Return ``path`` if it exists, else raise :class:`DataNotFoundError` naming it.

    Args:
        path: the file or folder.
        what: what it is, for the message (e.g. ``'annotation file'``).
        hint: an optional remedy appended to the message.
    """
    p = Path(path)
    if not p.exists():
        msg = f"{what} '{p}' does not exist"
        raise DataNotFoundError(f'{msg}; {hint}' if hint else msg)
    return p


def load_json(path: str | Path) -> Any:
    """Parse a JSON file; a syntax error names the file, line and column."""
    p = require_path(path, 'annotation file')
    try:
        with open(p, encoding='utf-8') as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"annotation file '{p}' is not valid JSON: {e.msg} at line {e.lineno}, "
                        f'column {e.colno}') from None
    except UnicodeDecodeError as e:
        raise DataError(f"annotation file '{p}' is not UTF-8 text ({e.reason} at byte "
                        f'{e.start})') from None


def _require_keys(record: Any, keys: tuple[str, ...], where: str, path: Path) -> None:
    if not isinstance(record, dict):
        raise DataError(f"{path}: {where} must be a JSON object, got {type(record).__name__} "
                        f'{_short(record)}')
    missing = [k for k in keys if k not in record]
    if missing:
        raise DataError(f"{path}: {where} is missing key '{missing[0]}' (has keys "
                        f'{sorted(record)})')


def _short(value: Any, limit: int = 80) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[:limit - 3] + '...'


_NUMBERS = frozenset((int, float))  # JSON numbers; ``bool`` (JSON true / false) is not one


def _is_number(v: Any) -> bool:
    return type(v) in _NUMBERS and math.isfinite(v)


def _is_id(v: Any) -> bool:
    return type(v) is int


def _box(ann: dict, path: Path) -> tuple[float, float, float, float]:
    b = ann['bbox']
    if type(b) is not list or len(b) != 4 or not all(_is_number(v) for v in b):
        raise DataError(f"{path}: annotation id {ann['id']} has bbox {_short(b)}, expected four "
                        'finite numbers [x, y, width, height]')
    x, y, w, h = b
    if w < 0 or h < 0:
        raise DataError(f"{path}: annotation id {ann['id']} has a negative bbox size {list(b)} "
                        '(COCO boxes are [x, y, width, height], not corner pairs)')
    return x, y, w, h


def _polygons_usable(seg: list, ann: dict, path: Path) -> bool:
    """Checks a polygon ``segmentation``; whether any of its polygons has three points or more
    (mmdet drops the smaller ones when it builds the mask, and the instance with them)."""
    usable = False
    for part in seg:
        if (type(part) is not list or len(part) % 2 or not set(map(type, part)) <= _NUMBERS
                or not math.isfinite(sum(part))):
            raise DataError(
                f"{path}: annotation id {ann['id']} has segmentation polygon {_short(part)}, "
                'expected a list of finite numbers [x1, y1, x2, y2, ...] (an even count)')
        usable = usable or len(part) >= 6
    return usable


def _check_rle(seg: dict, ann: dict, img: dict, path: Path) -> None:
    size, counts = seg.get('size'), seg.get('counts')
    if (type(size) is not list or len(size) != 2 or not all(_is_id(v) for v in size)
            or not (type(counts) is str or (type(counts) is list and all(_is_id(v) and v >= 0
                                                                        for v in counts)))):
        raise DataError(f"{path}: annotation id {ann['id']} has segmentation {_short(seg)}, expected "
                        "a polygon list or an RLE dict with 'size' [height, width] and 'counts'")
    if size != [img['height'], img['width']]:
        raise DataError(f"{path}: annotation id {ann['id']} has an RLE mask of size {size}, but its "
                        f"image {img['id']} is [height, width] = [{img['height']}, {img['width']}]")


def validate_coco(coco: Any, path: str | Path) -> tuple[dict, Counter]:
    """Check a COCO instances dict; return it without degenerate annotations, and the counts.

    Args:
        coco: the parsed json.
        path: the file it came from (for messages).

    Returns:
        ``(clean, skipped)``: a shallow copy of ``coco`` whose ``annotations`` omit the skipped
        ones, and a :class:`collections.Counter` of skip reasons (``'zero-area box'``,
        ``'box outside its image'``, ``'polygon of fewer than 3 points'``).

    Raises:
        DataError: on the errors listed in the module docstring. Ids are JSON integers, sizes,
            boxes, areas and coordinates finite numbers (``true`` / ``false`` are not numbers),
            ``iscrowd`` 0 or 1, a ``segmentation`` a polygon list or an RLE dict of its image's
            size; category ids and names are unique (mmdet would silently give two categories
            one label, or drop one name).
    """
    path = Path(path)
    _require_keys(coco, COCO_TOP_KEYS, 'the top level', path)
    for key in COCO_TOP_KEYS:
        if not isinstance(coco[key], list):
            raise DataError(f"{path}: '{key}' must be a list, got {type(coco[key]).__name__}")
    images = {}
    need = frozenset(COCO_IMAGE_KEYS)
    for i, img in enumerate(coco['images']):
        if type(img) is not dict or not need <= img.keys():
            _require_keys(img, COCO_IMAGE_KEYS, f'images[{i}]', path)
        if not _is_id(img['id']):
            raise DataError(f"{path}: images[{i}] has id {_short(img['id'])}, expected an integer")
        if type(img['file_name']) is not str or not img['file_name']:
            raise DataError(f"{path}: image id {img['id']} has file_name {_short(img['file_name'])}, "
                            'expected a file name')
        for key in ('width', 'height'):
            if not _is_number(img[key]) or img[key] <= 0:
                raise DataError(f"{path}: image id {img['id']} ({img['file_name']}) has {key} "
                                f'{_short(img[key])}, expected a positive number')
        if img['id'] in images:
            raise DataError(f"{path}: image id {img['id']} appears twice in 'images'")
        images[img['id']] = img
    cat_ids, cat_names = set(), set()
    for i, cat in enumerate(coco['categories']):
        _require_keys(cat, COCO_CAT_KEYS, f'categories[{i}]', path)
        if not _is_id(cat['id']):
            raise DataError(f"{path}: categories[{i}] has id {_short(cat['id'])}, expected an integer")
        if type(cat['name']) is not str:
            raise DataError(f"{path}: category id {cat['id']} has name {_short(cat['name'])}, "
                            'expected a string')
        for seen, key in ((cat_ids, 'id'), (cat_names, 'name')):
            if cat[key] in seen:
                raise DataError(f"{path}: category {key} {cat[key]!r} appears twice in 'categories' "
                                '(mmdet would merge the two categories or drop one)')
            seen.add(cat[key])
    kept, skipped, ann_ids = [], Counter(), set()
    need = frozenset(COCO_ANN_KEYS)
    numbers, isfinite = _NUMBERS, math.isfinite  # locals: this loop runs once per instance
    for i, ann in enumerate(coco['annotations']):
        if type(ann) is not dict or not need <= ann.keys():
            _require_keys(ann, COCO_ANN_KEYS, f'annotations[{i}]', path)
        ann_id, cat_id, img_id = ann['id'], ann['category_id'], ann['image_id']
        if type(ann_id) is not int:
            raise DataError(f"{path}: annotations[{i}] has id {_short(ann_id)}, expected an integer")
        if ann_id in ann_ids:
            raise DataError(f"{path}: annotation id {ann_id} appears twice in 'annotations'")
        ann_ids.add(ann_id)
        if type(cat_id) is not int or cat_id not in cat_ids:
            raise DataError(f"{path}: annotation id {ann_id} has category_id "
                            f"{_short(cat_id)}, which is not in 'categories' "
                            f'(ids {sorted(cat_ids)})')
        img = images.get(img_id) if type(img_id) is int else None
        if img is None:
            raise DataError(f"{path}: annotation id {ann_id} has image_id "
                            f"{_short(img_id)}, which is not in 'images'")
        b = ann['bbox']
        # one sum checks all four: a NaN / inf among them (or an absurd 1e308) is not finite
        if type(b) is list and len(b) == 4 and numbers.issuperset(map(type, b)) and isfinite(sum(b)):
            x, y, w, h = b
            if w < 0 or h < 0:
                _box(ann, path)  # raises the negative-size error
        else:
            x, y, w, h = _box(ann, path)
        area = ann['area']
        if type(area) not in numbers or not isfinite(area):
            raise DataError(f"{path}: annotation id {ann_id} has area {_short(area)}, expected a "
                            'finite number')
        crowd = ann.get('iscrowd', 0)
        if not (crowd == 0 or crowd == 1) or type(crowd) not in (int, bool):
            raise DataError(f"{path}: annotation id {ann_id} has iscrowd {_short(crowd)}, "
                            'expected 0 or 1')
        seg = ann.get('segmentation')
        if seg:  # absent, null or empty: a box-only annotation
            if type(seg) is list:
                usable = False
                for part in seg:
                    if (type(part) is not list or len(part) % 2
                            or not numbers.issuperset(map(type, part)) or not isfinite(sum(part))):
                        _polygons_usable(seg, ann, path)  # raises naming the polygon
                    usable = usable or len(part) >= 6
                if not usable:
                    skipped['polygon of fewer than 3 points'] += 1
                    continue
            elif type(seg) is dict:
                _check_rle(seg, ann, img, path)
            else:
                raise DataError(f"{path}: annotation id {ann_id} has segmentation {_short(seg)}, "
                                "expected a polygon list or an RLE dict with 'size' and 'counts'")
        if w < 1 or h < 1 or not area > 0:
            skipped['zero-area box'] += 1
            continue
        if x >= img['width'] or y >= img['height'] or x + w <= 0 or y + h <= 0:
            skipped['box outside its image'] += 1
            continue
        kept.append(ann)
    clean = dict(coco)
    clean['annotations'] = kept
    return clean, skipped


def check_class_names(coco: dict, classes: Any, path: str | Path) -> None:
    """Raise :class:`DataError` unless ``classes`` are category names of ``coco``, in its order.

    mmdet's ``CocoDataset`` maps ``metainfo.classes`` to category ids by name and numbers the
    labels in the order of the file's ``categories`` list: a name that is not in the file is
    dropped silently (its class never gets an annotation and every later label shifts by one), and
    names listed in another order are attached to the wrong labels (in visualisations and
    class-wise results).

    Args:
        coco: a COCO dict that passed :func:`validate_coco`.
        classes: the dataset's ``metainfo['classes']``.
        path: the file ``coco`` came from (for messages).
    """
    names = [c['name'] for c in coco['categories']]
    classes = list(classes or ())
    missing = [c for c in classes if c not in names]
    if missing:
        raise DataError(
            f'{path}: {len(missing)} of the {len(classes)} metainfo.classes are not category '
            f"names of the file: {_short(missing)} (its categories: {_short(names, 200)}); set "
            "the dataset's metainfo=dict(classes=(...)) to names from the file")
    in_file_order = [n for n in names if n in set(classes)]
    if in_file_order != classes:
        raise DataError(
            f'{path}: metainfo.classes {_short(tuple(classes), 200)} are not in the order of the '
            f"file's categories; labels follow the file's order, so list them as "
            f'{_short(tuple(in_file_order), 200)}')


def log_skipped(skipped: Counter, path: str | Path, log: logging.Logger | None = None) -> None:
    """One warning per skip reason: ``skipped 3 annotations with a zero-area box in FILE``."""
    log = log or logger
    for reason, n in sorted(skipped.items()):
        noun = 'annotation' if n == 1 else 'annotations'
        log.warning(f'skipped {n} {noun} with a {reason} in {path} (COCO convention: '
                    'degenerate boxes are not trained on)')


def load_coco(path: str | Path, log: logging.Logger | None = None) -> dict:
    """Load and validate a COCO instances file (see :func:`validate_coco`), logging skips."""
    clean, skipped = validate_coco(load_json(path), path)
    log_skipped(skipped, path, log)
    return clean


def check_image(path: str | Path) -> None:
    """Raise :class:`DataError` naming ``path`` when it is missing or does not decode."""
    import cv2
    import numpy as np

    p = require_path(path, 'image')
    data = np.fromfile(str(p), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise DataError(f"image '{p}' ({data.size} bytes) does not decode as an image file "
                        '(corrupt, truncated or not an image)')


def find_missing_labels(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``(image, label)`` pairs whose label file does not exist (one ``stat`` per label)."""
    return [(img, label) for img, label in pairs if not os.path.isfile(label)]


def _folder_note(folder: str, expected: str) -> str:
    """Why ``expected`` is not found: the folder is missing, or what the nearest folder holds.

    Only called on the error path, so listing one directory costs nothing on the normal path.
    """
    if not os.path.isdir(folder):
        return 'which does not exist'
    parent = os.path.dirname(expected)
    if not os.path.isdir(parent):
        return f"which exists but has no sub-folder '{os.path.relpath(parent, folder)}'"
    names = sorted(os.listdir(parent))
    if not names:
        return f"whose folder '{parent}' is empty"
    return f"whose folder '{parent}' holds {_first(names)}"


def missing_labels_error(owner: str, missing: list[tuple[str, str]], total: int, *,
                         images: str, label_field: str, label_dir: str, suffix_field: str,
                         suffix: str | None, kind: str = 'label') -> DataNotFoundError:
    """The error for ``missing`` of ``total`` images without their label file.

    Args:
        owner: the dataset class name (message prefix).
        missing: ``(image, expected label)`` pairs from :func:`find_missing_labels`.
        total: how many images were listed.
        images: where the images came from, e.g. ``"data_prefix.img_path='.../val'"``.
        label_field: the config field of the label folder, e.g. ``'data_prefix.seg_map_path'``.
        label_dir: its value (as joined with ``data_root``).
        suffix_field: the argument that names the label suffix, e.g. ``'seg_map_suffix'``.
        suffix: its value; ``None`` where the label paths are listed in a split file.
        kind: what a label is, for the message (``'label'``, ``'depth'``).
    """
    img, label = missing[0]
    suffix_note = f' ({suffix_field}={suffix!r})' if suffix is not None else ''
    if len(missing) == total:
        which = (f'none of the {total} images of {images} has its' if total > 1
                 else f'the one image of {images} has no')
        check = f' and {suffix_field}' if suffix is not None else ''
        return DataNotFoundError(
            f"{owner}: {which} {kind} file under {label_field}='{label_dir}' "
            f"({_folder_note(label_dir, label)}); e.g. image '{img}' needs '{label}'"
            f'{suffix_note}; check {label_field}{check}')
    return DataNotFoundError(
        f'{owner}: {len(missing)} of the {total} images of {images} have no {kind} file under '
        f"{label_field}='{label_dir}': missing {list_missing(missing)}{suffix_note}; "
        f'training on the others would silently drop them: add the {kind} files or remove the '
        'images')


def list_missing(missing: list[tuple[str, str]], max_listed: int = 3) -> str:
    """``'a.png', 'b.png' and 5 more``: the first expected label paths of ``missing``."""
    return _first([label for _, label in missing], max_listed)


def _first(names: list[str], n: int = 3) -> str:
    """``'a', 'b', 'c' and 5 more``: the first ``n`` of ``names``, quoted."""
    shown = ', '.join(repr(name) for name in names[:n])
    return shown + (f' and {len(names) - n} more' if len(names) > n else '')


def require_listed_images(paths: list[str], owner: str, images: str, img_dir: str) -> None:
    """Raise :class:`DataNotFoundError` when images a split file lists do not exist (a wrong
    ``data_prefix.img_path``, or a split file of another layout): one ``stat`` per image."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataNotFoundError(
            f"{owner}: {len(missing)} of the {len(paths)} images listed by {images} do not exist "
            f"under data_prefix.img_path='{img_dir}': {_first(missing)}")


def require_images(n_images: int, owner: str, images: str, img_suffix: str | None) -> None:
    """Raise :class:`DataNotFoundError` when a folder scan (``img_suffix``: what it looked for) or
    a split file (``img_suffix=None``) gave no image."""
    if n_images:
        return
    if img_suffix is None:
        raise DataNotFoundError(f'{owner}: {images} lists no image (it is empty)')
    raise DataNotFoundError(f'{owner}: no image found in {images} (img_suffix={img_suffix!r}); '
                            'check the folder and img_suffix')
