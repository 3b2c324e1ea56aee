"""The synthetic quickstart datasets: determinism, COCO / ADE20K / COCO panoptic layout,
visible-mask geometry, and (panoptic) mmdet's dataset and PQ metric reading the files."""
import json
import runpy

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from densekit.datasets.synthetic import (ADE_CLASSES, COCO_CLASSES, PANOPTIC_CATEGORY_IDS,
                                         PANOPTIC_CLASSES, PANOPTIC_THINGS, make_ade_shapes,
                                         make_coco_panoptic_shapes, make_coco_shapes)
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
    cli['main']([str(tmp_path), '--kind', 'coco_panoptic', '--num-train', '1', '--num-val', '1'])
    assert 'coco_panoptic' in capsys.readouterr().out
    assert (tmp_path / 'coco_panoptic' / 'annotations' / 'panoptic_val.json').is_file()
    assert not (tmp_path / 'coco' / 'annotations' / 'panoptic_val.json').exists()


def _pan_ids(path):
    rgb = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1].astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]


def test_panoptic_same_seed_identical_bytes_and_seeding(tmp_path):
    a = make_coco_panoptic_shapes(tmp_path / 'a', 'train', 6, seed=3, image_size=(48, 64))
    make_coco_panoptic_shapes(tmp_path / 'b', 'train', 6, seed=3, image_size=(48, 64))
    fa, fb = _files(tmp_path / 'a'), _files(tmp_path / 'b')
    assert len(fa) == 13 and fa == fb  # 6 jpg + 6 png + json, byte for byte
    pa = json.loads(a.read_text())['annotations']
    pc = json.loads(make_coco_panoptic_shapes(tmp_path / 'c', 'train', 6, seed=4,
                                              image_size=(48, 64)).read_text())['annotations']
    pv = json.loads(make_coco_panoptic_shapes(tmp_path / 'a', 'val', 6, seed=3,
                                              image_size=(48, 64)).read_text())['annotations']
    assert pa != pc and pa != pv
    # Image i does not depend on how many images are requested.
    pd = json.loads(make_coco_panoptic_shapes(tmp_path / 'd', 'train', 2, seed=3,
                                              image_size=(48, 64)).read_text())['annotations']
    assert pd == pa[:2]
    with pytest.raises(ValueError, match="split must be 'train' or 'val', got 'training'"):
        make_coco_panoptic_shapes(tmp_path, 'training', 1)
    with pytest.raises(ValueError, match='clutter .* got 1.5'):
        make_coco_panoptic_shapes(tmp_path, 'train', 1, clutter=1.5)


def test_panoptic_segments_agree_with_the_png(tmp_path):
    n = 12
    ann_file = make_coco_panoptic_shapes(tmp_path, 'val', n, seed=0, image_size=(64, 80))
    pan = json.loads(ann_file.read_text())
    assert [c['name'] for c in pan['categories']] == list(PANOPTIC_CLASSES)
    assert [c['id'] for c in pan['categories']] == [PANOPTIC_CATEGORY_IDS[c]
                                                    for c in PANOPTIC_CLASSES]
    isthing = {c['id']: c['isthing'] for c in pan['categories']}
    assert {c['name'] for c in pan['categories'] if c['isthing']} == set(PANOPTIC_THINGS)
    assert len(pan['images']) == len(pan['annotations']) == n
    seen, void_images = set(), 0
    for img, ann in zip(pan['images'], pan['annotations']):
        assert ann['image_id'] == img['id'] and ann['file_name'] == img['file_name'][:-4] + '.png'
        assert cv2.imread(str(tmp_path / 'val' / img['file_name'])).shape == (64, 80, 3)
        ids = _pan_ids(tmp_path / 'annotations' / 'panoptic_val' / ann['file_name'])
        assert ids.shape == (img['height'], img['width']) == (64, 80)
        segs = ann['segments_info']
        # Every non-void pixel belongs to exactly one listed segment, and every segment has pixels.
        assert set(np.unique(ids).tolist()) - {0} == {s['id'] for s in segs}
        assert len({s['id'] for s in segs}) == len(segs)
        void_images += bool((ids == 0).any())
        stuff = [s['category_id'] for s in segs if not isthing[s['category_id']]]
        assert len(stuff) == len(set(stuff))  # one segment per stuff class
        for s in segs:
            m = ids == s['id']
            ys, xs = np.nonzero(m)
            assert s['area'] == int(m.sum()) > 0, s
            assert s['bbox'] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                 ys.max() - ys.min() + 1], s
            assert s['iscrowd'] == 0 and s['id'] % 256 == s['category_id']
            seen.add(s['category_id'])
    assert seen == set(PANOPTIC_CATEGORY_IDS.values())
    assert void_images > 0  # clutter is void


def test_panoptic_set_loads_in_mmdet_and_scores_pq_100_against_itself(tmp_path):
    pytest.importorskip('mmdet')
    import torch
    import densekit  # noqa: F401  (registers SyntheticPanopticDataset)
    from mmdet.datasets import CocoPanopticDataset
    from mmdet.evaluation import CocoPanopticMetric
    from mmdet.evaluation.functional import INSTANCE_OFFSET
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope

    root = tmp_path / 'pan'
    ann_file = make_coco_panoptic_shapes(root, 'val', 4, seed=0, image_size=(48, 64))
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadPanopticAnnotations')]
    with DefaultScope.overwrite_default_scope('mmdet'):
        ds = DATASETS.build(dict(
            type='SyntheticPanopticDataset', data_root=str(root),
            ann_file='annotations/panoptic_val.json',
            data_prefix=dict(img='val/', seg='annotations/panoptic_val/'), test_mode=True,
            pipeline=pipeline))
        # mmdet's own class reads the same files given the same metainfo.
        plain = CocoPanopticDataset(
            data_root=str(root), ann_file='annotations/panoptic_val.json', metainfo=ds.metainfo,
            data_prefix=dict(img='val/', seg='annotations/panoptic_val/'), test_mode=True)
    assert len(ds) == len(plain) == 4
    assert ds.metainfo['classes'] == PANOPTIC_CLASSES
    assert [d['segments_info'] for d in ds.data_list] == [d['segments_info']
                                                          for d in plain.data_list]
    metric = CocoPanopticMetric(ann_file=str(ann_file),
                                seg_prefix=str(root / 'annotations' / 'panoptic_val'))
    metric.dataset_meta = ds.metainfo
    num_classes = len(PANOPTIC_CLASSES)
    n_things = 0
    for i in range(len(ds)):
        sample = ds[i]
        ids = _pan_ids(sample['seg_map_path'])
        # mmdet's panoptic prediction layout: label + instance * INSTANCE_OFFSET, void = classes
        pred = np.full(ids.shape, num_classes, np.int64)
        for k, s in enumerate(sample['segments_info']):
            pred[ids == s['id']] = s['category'] + (k + 1) * INSTANCE_OFFSET
        n_things += len(sample['gt_masks'])
        assert len(sample['gt_masks']) == sum(s['is_thing'] for s in sample['segments_info'])
        assert sample['gt_seg_map'].shape == ids.shape
        assert ((sample['gt_seg_map'] == 255) == (ids == 0)).all()
        metric.process({}, [dict(img_id=sample['img_id'], img_path=sample['img_path'],
                                 ori_shape=ids.shape,
                                 pred_panoptic_seg=dict(sem_seg=torch.from_numpy(pred)[None]))])
    assert n_things > 0
    results = metric.evaluate(len(ds))
    assert results['coco_panoptic/PQ'] == pytest.approx(100.0)
    assert results['coco_panoptic/PQ_th'] == pytest.approx(100.0)
    assert results['coco_panoptic/PQ_st'] == pytest.approx(100.0)


def test_panoptic_dataset_without_data_says_how_to_make_it(tmp_path):
    pytest.importorskip('mmdet')
    import densekit  # noqa: F401
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'), pytest.raises(
            FileNotFoundError, match=r"data root .* does not exist; .*--kind coco_panoptic"):
        DATASETS.build(dict(type='SyntheticPanopticDataset', data_root=str(tmp_path / 'none'),
                            ann_file='annotations/panoptic_val.json',
                            data_prefix=dict(img='val/', seg='annotations/panoptic_val/')))
