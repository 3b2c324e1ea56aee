"""The synthetic quickstart datasets: determinism, COCO / ADE20K layout, visible-mask geometry."""
import json
import runpy

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from densekit.datasets.synthetic import (ADE_CLASSES, COCO_CLASSES, make_ade_shapes,
                                         make_coco_shapes)
from conftest import REPO


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def test_coco_same_seed_identical_bytes(tmp_path):
    a = make_coco_shapes(tmp_path / 'a', 'train', 12, seed=3)
    b = make_coco_shapes(tmp_path / 'b', 'train', 12, seed=3)
    assert a.read_bytes() == b.read_bytes()
    fa, fb = _files(tmp_path / 'a'), _files(tmp_path / 'b')
    assert fa.keys() == fb.keys() and len(fa) == 13
    for k in fa:
        if k.suffix == '.jpg':
            np.testing.assert_array_equal(cv2.imread(str(tmp_path / 'a' / k)),
                                          cv2.imread(str(tmp_path / 'b' / k)))
        assert fa[k] == fb[k], k


def test_coco_seed_and_split_change_content(tmp_path):
    a = json.loads(make_coco_shapes(tmp_path / 'a', 'train', 6, seed=0).read_text())
    b = json.loads(make_coco_shapes(tmp_path / 'b', 'train', 6, seed=1).read_text())
    c = json.loads(make_coco_shapes(tmp_path / 'a', 'val', 6, seed=0).read_text())
    assert a['annotations'] != b['annotations']
    assert a['annotations'] != c['annotations']
    # Image i does not depend on how many images are requested.
    d = json.loads(make_coco_shapes(tmp_path / 'd', 'train', 3, seed=0).read_text())
    assert d['annotations'] == [x for x in a['annotations'] if x['image_id'] <= 3]


def test_coco_layout_and_visible_geometry(tmp_path):
    n = 16
    ann_file = make_coco_shapes(tmp_path, 'train', n, seed=0)
    coco = json.loads(ann_file.read_text())
    assert set(coco) >= {'images', 'annotations', 'categories'}
    assert [c['name'] for c in coco['categories']] == list(COCO_CLASSES)
    assert [c['id'] for c in coco['categories']] == list(range(1, len(COCO_CLASSES) + 1))
    assert len(coco['images']) == n
    assert len({a['id'] for a in coco['annotations']}) == len(coco['annotations'])
    seen_classes, multi_part = set(), 0
    for img in coco['images']:
        pixels = cv2.imread(str(tmp_path / 'train' / img['file_name']))
        assert pixels.shape == (img['height'], img['width'], 3)
        h, w = img['height'], img['width']
        anns = [a for a in coco['annotations'] if a['image_id'] == img['id']]
        union = np.zeros((h, w), np.uint8)
        for a in anns:
            assert a['iscrowd'] == 0 and a['category_id'] in range(1, len(COCO_CLASSES) + 1)
            seen_classes.add(a['category_id'])
            multi_part += len(a['segmentation']) > 1
            assert all(len(p) >= 6 and len(p) % 2 == 0 for p in a['segmentation'])
            x, y, bw, bh = a['bbox']
            assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h and bw > 0 and bh > 0
            m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(a['segmentation'], h, w)))
            # The stored area is the visible area; the polygon rasterisation agrees closely.
            assert abs(int(m.sum()) - a['area']) <= 0.15 * a['area'] + 12, a
            # Visible masks of one image do not overlap (occluded parts are cut away).
            overlap = int((union & m).sum())
            assert overlap <= 0.05 * a['area'] + 8, (img['file_name'], a['id'], overlap)
            union |= m
    assert seen_classes == set(range(1, len(COCO_CLASSES) + 1))
    assert multi_part > 0  # occlusion splits some objects into several polygons


def test_ade_layout_and_determinism(tmp_path):
    make_ade_shapes(tmp_path / 'a', 'training', 5, seed=0)
    make_ade_shapes(tmp_path / 'b', 'training', 5, seed=0)
    fa, fb = _files(tmp_path / 'a'), _files(tmp_path / 'b')
    assert fa == fb and len(fa) == 10
    labels = []
    for p in sorted((tmp_path / 'a' / 'annotations' / 'training').glob('*.png')):
        lab = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        img = cv2.imread(str(tmp_path / 'a' / 'images' / 'training' / p.name.replace('.png', '.jpg')))
        assert lab.dtype == np.uint8 and lab.ndim == 2 and lab.shape == img.shape[:2]
        labels.append(lab)
    values = np.unique(np.stack(labels))
    assert values.min() == 0 and values.max() <= len(ADE_CLASSES)  # 0 = unlabeled, ADE style
    assert {1, 2} <= set(values.tolist())  # sky and ground in every scene
    with pytest.raises(ValueError, match="'train'"):
        make_ade_shapes(tmp_path, 'train', 1)


def test_cli(tmp_path, capsys):
    # In-process (a subprocess would spend its time importing the mm stack, not generating).
    cli = runpy.run_path(str(REPO / 'tools' / 'make_demo_data.py'), run_name='make_demo_data')
    cli['main']([str(tmp_path), '--num-train', '2', '--num-val', '1'])
    out = capsys.readouterr().out
    assert 'coco' in out and 'ade' in out
    assert (tmp_path / 'coco' / 'annotations' / 'instances_val.json').is_file()
    assert len(list((tmp_path / 'ade' / 'annotations' / 'training').glob('*.png'))) == 2
