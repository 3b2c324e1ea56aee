"""Property-based tests (hypothesis) over the inputs a user hands densekit: COCO annotation
files, semantic label folders, depth maps and BTS split files, ``--cfg-options`` values.

The property, for every generated input: it either loads, and then gives exactly the samples
an independent reading of the input expects (no silently wrong sample), or it fails with
densekit's :class:`~densekit.datasets.checks.DataError` (or config error) naming the file and
the field; never another exception from inside mmengine / mmdet / numpy. Examples are seeded
(``derandomize=True``) and few in the default tier; the ``slow`` tier runs more of the same.
The inputs the search found broken are kept as explicit ``@example`` regressions."""
from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip('hypothesis')
pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import densekit  # noqa: E402,F401
from densekit.datasets.checks import DataError  # noqa: E402

FAST = dict(max_examples=12, derandomize=True, deadline=None, database=None,
            suppress_health_check=list(HealthCheck))
SLOW = dict(FAST, max_examples=300)

# values of every JSON type, including the ones a hand-edited or converted file gets wrong
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5))
WEIRD = st.one_of(JSON_SCALARS, st.lists(JSON_SCALARS, max_size=5),
                  st.dictionaries(st.sampled_from(['size', 'counts', 'x']), JSON_SCALARS, max_size=3))


# ------------------------------------------------------------------------------------ COCO
@st.composite
def coco_files(draw):
    """A valid small COCO dict, then zero to three mutations (a field set to a value of any
    JSON type, a key deleted, a record duplicated, a box or polygon made degenerate)."""
    n_img = draw(st.integers(1, 3))
    images = [dict(id=i + 1, file_name=f'{i + 1:03d}.jpg', width=draw(st.integers(8, 64)),
                   height=draw(st.integers(8, 64))) for i in range(n_img)]
    n_cat = draw(st.integers(1, 3))
    categories = [dict(id=10 + c, name=f'c{c}') for c in range(n_cat)]
    annotations = []
    for a in range(draw(st.integers(0, 5))):
        img = draw(st.sampled_from(images))
        x, y = draw(st.integers(0, img['width'] - 2)), draw(st.integers(0, img['height'] - 2))
        w, h = draw(st.integers(1, img['width'] - x)), draw(st.integers(1, img['height'] - y))
        ann = dict(id=100 + a, image_id=img['id'], category_id=draw(st.sampled_from(categories))['id'],
                   bbox=[x, y, w, h], area=float(w * h), iscrowd=draw(st.sampled_from([0, 0, 1])))
        if draw(st.booleans()):
            ann['segmentation'] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        annotations.append(ann)
    coco = dict(images=images, annotations=annotations, categories=categories)
    for _ in range(draw(st.integers(0, 3))):
        section = draw(st.sampled_from(['images', 'annotations', 'categories', None]))
        if section is None:
            key = draw(st.sampled_from(['images', 'annotations', 'categories']))
            if draw(st.booleans()):
                del coco[key]
            else:
                coco[key] = draw(WEIRD)
            break
        records = coco[section]
        if not records:
            continue
        rec = draw(st.sampled_from(records))
        op = draw(st.sampled_from(['set', 'set', 'set', 'delete', 'duplicate']))
        keys = sorted(rec) + (['segmentation', 'iscrowd'] if section == 'annotations' else [])
        key = draw(st.sampled_from(keys))
        if op == 'set':
            rec[key] = draw(WEIRD)
        elif op == 'delete' and key in rec:
            del rec[key]
        else:
            records.append(copy.deepcopy(rec))
    return coco


def _expected_instances(coco: dict, img: dict) -> list:
    """mmdet's reading of a valid file (independent of densekit's checks): the image's
    annotations with a box of at least one pixel inside the image and a positive area, as
    [x1, y1, x2, y2] with the label of its category's position, crowd as ignore flag."""
    labels = {c['id']: i for i, c in enumerate(coco['categories'])}
    out = []
    for ann in coco['annotations']:
        if ann['image_id'] != img['id']:
            continue
        x, y, w, h = ann['bbox']
        inside = max(0, min(x + w, img['width']) - max(x, 0)) * max(0, min(y + h, img['height']) - max(y, 0))
        if inside == 0 or not ann['area'] > 0 or w < 1 or h < 1:
            continue
        seg = ann.get('segmentation')
        if isinstance(seg, list) and seg and not any(len(p) >= 6 for p in seg):
            continue  # no polygon of three points: skipped and counted
        inst = dict(ignore_flag=int(bool(ann.get('iscrowd', 0))), bbox=[x, y, x + w, y + h],
                    bbox_label=labels[ann['category_id']])
        if seg:
            inst['mask'] = seg
        out.append(inst)
    return out


def _names_field(message: str, path: Path) -> None:
    assert str(path) in message, message
    assert "'" in message or 'id ' in message or 'field' in message, message


def check_coco(coco) -> None:
    from densekit.mm.datasets import DenseKitCocoDataset
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'instances.json'
        path.write_text(json.dumps(coco))
        cats = coco.get('categories') if isinstance(coco, dict) else None
        try:
            classes = tuple(c['name'] for c in cats)
        except Exception:  # noqa: BLE001 (malformed categories: any classes; the file is refused)
            classes = ('c0',)
        try:
            ds = DenseKitCocoDataset(ann_file=str(path), data_prefix=dict(img=tmp),
                                     metainfo=dict(classes=classes), pipeline=[], test_mode=True)
        except DataError as e:
            _names_field(str(e), path)
            return
    assert len(ds) == len(coco['images'])
    by_id = {img['id']: img for img in coco['images']}
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        img = by_id[info['img_id']]
        assert (info['width'], info['height']) == (img['width'], img['height'])
        assert info['img_path'] == os.path.join(tmp, img['file_name'])
        assert info['instances'] == _expected_instances(coco, img), (info, coco)


_VALID = dict(images=[dict(id=1, file_name='a.jpg', width=64, height=48)],
              categories=[dict(id=1, name='x'), dict(id=2, name='y')],
              annotations=[dict(id=1, image_id=1, category_id=2, bbox=[1, 2, 30, 20], area=600,
                                iscrowd=0, segmentation=[[1, 2, 31, 2, 31, 22, 1, 22]])])


def _mutated(section, key, value):
    coco = copy.deepcopy(_VALID)
    coco[section][0][key] = value
    return coco


def _with_duplicate_category(field):
    coco = copy.deepcopy(_VALID)
    coco['categories'][1][field] = coco['categories'][0][field]
    return coco


# the defects this search found, kept as regressions (each failed inside densekit's checks or
# mmdet with a TypeError, or loaded a wrong sample)
COCO_REGRESSIONS = [
    _mutated('annotations', 'area', '600'),  # TypeError: '>' between str and int
    _mutated('annotations', 'image_id', [1]),  # TypeError: unhashable type: 'list'
    _mutated('annotations', 'category_id', [2]),
    _mutated('annotations', 'id', [1]),
    _mutated('images', 'id', [1]),
    _mutated('categories', 'id', '1'),  # TypeError: '<' between str and int
    _mutated('images', 'file_name', 3),  # TypeError inside os.path.join
    _mutated('images', 'width', True),  # loaded: width 1, the box skipped as outside the image
    _mutated('images', 'width', float('nan')),  # loaded with a NaN width
    _mutated('annotations', 'area', float('nan')),  # a NaN area: skipped as zero-area
    _mutated('annotations', 'segmentation', 'abc'),  # loaded, failed in LoadAnnotations
    _mutated('annotations', 'segmentation', [[1, 2, 3]]),  # odd coordinate count: loaded
    _mutated('annotations', 'segmentation', [[1, 2, 3, 'a', 5, 6]]),
    _mutated('annotations', 'segmentation', dict(counts=5)),  # an RLE without size
    _mutated('annotations', 'iscrowd', 'no'),  # loaded as a crowd (ignored) box
    _with_duplicate_category('id'),  # two categories, one label: category 1's boxes labelled 'y'
    _with_duplicate_category('name'),
]


@pytest.mark.parametrize('coco', COCO_REGRESSIONS)
def test_coco_regressions_are_data_errors(coco):
    with pytest.raises(DataError):
        from densekit.datasets.checks import validate_coco
        validate_coco(coco, 'instances.json')
    check_coco(coco)


def test_a_valid_file_with_degenerate_polygons_loads_and_counts_them():
    coco = _mutated('annotations', 'segmentation', [[1, 2, 3, 4]])
    from densekit.datasets.checks import validate_coco
    clean, skipped = validate_coco(coco, 'instances.json')
    assert clean['annotations'] == [] and skipped == {'polygon of fewer than 3 points': 1}
    check_coco(coco)


test_coco_files_load_or_fail_clearly = settings(**FAST)(given(coco_files())(check_coco))
test_coco_files_load_or_fail_clearly_many = pytest.mark.slow(
    settings(**SLOW)(given(coco_files())(check_coco)))


# ---------------------------------------------------------------------- semantic label folders
NAMES = st.sampled_from(['a', 'b', 'c', 'd e', 'f.g', 'sub/h', 'sub/i'])


@st.composite
def label_folders(draw):
    """Image names, the names that have a label, the suffixes written and configured."""
    images = sorted(draw(st.sets(NAMES, max_size=4)))
    labels = sorted(draw(st.sets(st.sampled_from(images), max_size=len(images)))) if images else []
    written = draw(st.sampled_from(['.png', '.png', '.PNG', '_label.png']))
    configured = draw(st.sampled_from(['.png', '.png', '_label.png']))
    img_folder = draw(st.sampled_from(['images', 'images', 'missing']))
    return images, labels, written, configured, img_folder


def check_label_folder(case) -> None:
    from densekit.datasets.checks import DataNotFoundError
    from densekit.mm.datasets import DenseKitADE20KDataset
    images, labels, written, configured, img_folder = case
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in images:
            (root / 'images' / name).parent.mkdir(parents=True, exist_ok=True)
            (root / 'images' / f'{name}.jpg').write_bytes(b'')  # not read when the set is built
        (root / 'images').mkdir(exist_ok=True)
        for name in labels:
            (root / 'labels' / name).parent.mkdir(parents=True, exist_ok=True)
            (root / 'labels' / f'{name}{written}').write_bytes(b'')
        try:
            ds = DenseKitADE20KDataset(data_root=tmp, data_prefix=dict(img_path=img_folder, seg_map_path='labels'),
                                       img_suffix='.jpg', seg_map_suffix=configured, pipeline=[])
        except DataNotFoundError as e:
            msg = str(e)
            assert 'data_prefix.' in msg or 'img_suffix' in msg, msg
            expected_ok = (img_folder == 'images' and images and set(labels) == set(images)
                           and written == configured)
            assert not expected_ok, msg
            return
        assert img_folder == 'images' and set(labels) == set(images) and written == configured
        got = [(ds.get_data_info(i)['img_path'], ds.get_data_info(i)['seg_map_path']) for i in range(len(ds))]
        want = sorted((os.path.join(tmp, 'images', f'{n}.jpg'), os.path.join(tmp, 'labels', f'{n}{configured}'))
                      for n in images)
        assert sorted(got) == want


test_label_folders_load_or_fail_clearly = settings(**FAST)(given(label_folders())(check_label_folder))
test_label_folders_load_or_fail_clearly_many = pytest.mark.slow(
    settings(**SLOW)(given(label_folders())(check_label_folder)))


# ----------------------------------------------------------------------- depth maps and splits
@st.composite
def depth_files(draw):
    kind = draw(st.sampled_from(['png16', 'png8', 'png3', 'bytes', 'npy', 'npy_bad', 'empty']))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    h, w = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    if kind == 'npy':
        dtype = draw(st.sampled_from(['uint16', 'float32', 'float64', 'bool', 'complex64', 'int8']))
        ndim = draw(st.sampled_from([2, 2, 3, 1, 0]))
        shape = (h, w, 2)[:ndim]
        arr = rng.integers(0, 5000, shape).astype(dtype)
        if dtype.startswith('float') and arr.size and draw(st.booleans()):
            arr.flat[0] = draw(st.sampled_from([np.nan, np.inf, -1.0]))
        return 'd.npy', arr
    if kind == 'bytes' or kind == 'npy_bad':
        return ('d.png' if kind == 'bytes' else 'd.npy'), draw(st.binary(max_size=64))
    if kind == 'empty':
        return 'd.png', b''
    channels = 3 if kind == 'png3' else 1
    dtype = np.uint8 if kind == 'png8' else np.uint16
    arr = rng.integers(0, 255, (max(h, 1), max(w, 1), channels)).astype(dtype)
    return 'd.png', arr


def check_depth_map(case) -> None:
    import cv2

    from densekit.mm.depth.transforms import LoadDepthMap
    name, content = case
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        if isinstance(content, bytes):
            Path(path).write_bytes(content)
        elif name.endswith('.npy'):
            np.save(path, content)
        else:
            cv2.imwrite(path, content[..., 0] if content.shape[-1] == 1 else content)
        try:
            out = LoadDepthMap(depth_scale=1000.0).transform(dict(depth_map_path=path))
        except DataError as e:
            assert path in str(e), str(e)
            return
    depth = out['gt_depth_map']
    assert depth.dtype == np.float32 and depth.ndim == 2 and depth.size
    if not isinstance(content, bytes):
        ref = content[..., 0] if (not name.endswith('.npy') and content.ndim == 3) else content
        assert ref.dtype.kind in 'iuf' and ref.ndim == 2
        np.testing.assert_array_equal(depth, ref.astype(np.float32) / 1000.0)


DEPTH_REGRESSIONS = [
    ('d.npy', b'not an array'),  # numpy's ValueError: the file was not named
    ('d.npy', np.zeros((2, 2), bool)),  # loaded as depths 0 / 1 mm
    ('d.npy', np.zeros((2, 2), np.complex64)),  # numpy ComplexWarning, imaginary part dropped
    ('d.npy', np.zeros((0, 3), np.float32)),  # an empty map
    ('d.npy', np.zeros((2, 2, 2), np.float32)),  # ValueError, not densekit's data error
]


@pytest.mark.parametrize('case', DEPTH_REGRESSIONS, ids=['bytes', 'bool', 'complex', 'empty', '3d'])
def test_depth_map_regressions_are_data_errors(case):
    check_depth_map(case)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, case[0])
        Path(path).write_bytes(case[1]) if isinstance(case[1], bytes) else np.save(path, case[1])
        from densekit.mm.depth.transforms import LoadDepthMap
        with pytest.raises(DataError, match='d.npy'):
            LoadDepthMap(depth_scale=1.0).transform(dict(depth_map_path=path))


test_depth_maps_load_or_fail_clearly = settings(**FAST)(given(depth_files())(check_depth_map))
test_depth_maps_load_or_fail_clearly_many = pytest.mark.slow(
    settings(**SLOW)(given(depth_files())(check_depth_map)))

SPLIT_TOKEN = st.sampled_from(['a.png', '/b.png', 'sub/c.png', 'None', '518.8579', 'x', 'nan',
                               '-3', '0', '1e400', 'a b'])
split_lines = st.lists(st.lists(SPLIT_TOKEN, max_size=4).map(' '.join), max_size=4)


def check_split_file(lines) -> None:
    from densekit.mm.depth.datasets import DepthFolderDataset
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for folder in ('images', 'depth'):
            for name in ('a.png', 'b.png', 'sub/c.png'):
                (root / folder / name).parent.mkdir(parents=True, exist_ok=True)
                (root / folder / name).write_bytes(b'')
        split = root / 'split.txt'
        split.write_text('\n'.join(lines) + '\n')
        try:
            ds = DepthFolderDataset(data_root=tmp, ann_file='split.txt', img_suffix='.png', pipeline=[],
                                    data_prefix=dict(img_path='images', depth_map_path='depth'))
        except DataError as e:
            assert str(split) in str(e) or 'images' in str(e), str(e)
            return
        want = []
        for line in lines:
            parts = line.split()
            if not parts:
                continue
            assert len(parts) <= 3 and os.path.isfile(root / 'images' / parts[0].lstrip('/'))
            if len(parts) < 2 or parts[1] == 'None' or not os.path.isfile(root / 'depth' / parts[1].lstrip('/')):
                continue  # skip_missing_depth
            focal = float(parts[2]) if len(parts) > 2 else None
            assert focal is None or (math.isfinite(focal) and focal > 0)
            want.append((str(root / 'images' / parts[0].lstrip('/')), str(root / 'depth' / parts[1].lstrip('/')),
                         focal))
        got = [(d['img_path'], d['depth_map_path'], d.get('focal')) for d in
               (ds.get_data_info(i) for i in range(len(ds)))]
        assert got == want


@example(['a.png a.png x'])  # ValueError: could not convert string to float (no file, no line)
@example(['a.png a.png nan'])  # loaded a NaN focal length
@example(['a.png a.png 518.8 extra'])  # a fourth field was ignored
def _split_file(lines):
    check_split_file(lines)


test_split_files_load_or_fail_clearly = settings(**FAST)(given(split_lines)(_split_file))
test_split_files_load_or_fail_clearly_many = pytest.mark.slow(
    settings(**SLOW)(given(split_lines)(_split_file)))


# --------------------------------------------------------------------------- --cfg-options
CFG_TEXT = "a = dict(b=1, c=[1, dict(d=2)], e=None)\nl = [1, 2]\nt = (3, 4)\ns = 'x'\n"
KEY_PART = st.sampled_from(['a', 'b', 'c', 'd', 'e', 'l', 't', 's', '0', '1', '5', '', 'x'])
VALUE = st.sampled_from(['1', '2.5', '[1,2', '(1,2]', '[1,[2,3]]', '(1,2)', 'None', 'True', 'y', '',
                         '1,2', '[', 'a=b'])
cfg_items = st.tuples(st.lists(KEY_PART, min_size=1, max_size=4).map('.'.join),
                      st.sampled_from(['=', '=', '=', '']), VALUE).map(''.join)


def _plain(v):
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, 'items'):
        return {k: _plain(x) for k, x in v.items()}
    return v


def check_cfg_option(item: str) -> None:
    import contextlib
    import io

    from mmengine.config import DictAction

    from densekit.mm.runner import ConfigKeyError, load_config, train_parser
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'cfg.py')
        Path(path).write_text(CFG_TEXT)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                args = train_parser().parse_args([path, '--cfg-options', item])
        except SystemExit as e:
            assert e.code == 2 and f'--cfg-options item {item!r}' in err.getvalue(), err.getvalue()
            return
        try:
            cfg = load_config(path, args.cfg_options)
        except ConfigKeyError as e:
            assert f"--cfg-options key '{item.split('=')[0]}'" in str(e), str(e)
            return
    key, _, value = item.partition('=')
    node = cfg
    for part in key.split('.'):
        node = node[int(part)] if isinstance(node, (list, tuple)) else node[part]
    assert _plain(node) == _plain(DictAction._parse_iterable(value)), (item, cfg.to_dict())


@example('a.b.c=1')  # TypeError inside mmengine's merge (a.b is an int)
@example('l.0=5')  # AttributeError: 'int' object has no attribute 'copy'
@example('l.5=1')  # KeyError: 'Index 5 exceeds the length of list'
@example('l.x=1')  # TypeError: list indices must be integers
@example('a=[1,2')  # AssertionError: Imbalanced brackets
@example('a')  # ValueError: not enough values to unpack
@example('a..b=1')  # silently created the field a[''].b
@example('=1')  # silently created the top-level field ''
def _cfg_option(item):
    check_cfg_option(item)


test_cfg_options_apply_or_fail_clearly = settings(**FAST)(given(cfg_items)(_cfg_option))
test_cfg_options_apply_or_fail_clearly_many = pytest.mark.slow(
    settings(**SLOW)(given(cfg_items)(_cfg_option)))
