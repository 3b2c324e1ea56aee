"""Bad dataset input: each problem is one clear sentence naming the file / key / value, or (COCO
convention) a counted warning for skipped degenerate boxes."""
import copy
import json
import logging

import cv2
import numpy as np
import pytest

from densekit.datasets import checks


def _coco():
    return dict(
        images=[dict(id=1, file_name='a.jpg', width=40, height=30),
                dict(id=2, file_name='b.jpg', width=40, height=30)],
        annotations=[
            dict(id=1, image_id=1, category_id=1, bbox=[2, 3, 10, 8], area=80, iscrowd=0,
                 segmentation=[[2, 3, 12, 3, 12, 11, 2, 11]]),
            dict(id=2, image_id=2, category_id=2, bbox=[20, 10, 12, 12], area=144, iscrowd=0,
                 segmentation=[[20, 10, 32, 10, 32, 22, 20, 22]])],
        categories=[dict(id=1, name='cat'), dict(id=2, name='dog')])


def _write_dataset(root, coco=None, images=('a.jpg', 'b.jpg')):
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    (root / 'img').mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name in images:
        cv2.imwrite(str(root / 'img' / name), rng.integers(0, 255, (30, 40, 3), dtype=np.uint8))
    ann = root / 'annotations' / 'inst.json'
    ann.write_text(json.dumps(coco if coco is not None else _coco()))
    return ann


# ----------------------------------------------------------------------------- core checks

def test_valid_file_loads_unchanged(tmp_path):
    ann = _write_dataset(tmp_path)
    assert checks.load_coco(ann) == _coco()


def test_missing_paths_named(tmp_path):
    with pytest.raises(checks.DataNotFoundError, match=r"annotation file '.*nope\.json' does not exist"):
        checks.load_json(tmp_path / 'nope.json')
    with pytest.raises(FileNotFoundError, match=r"data root '.*gone' does not exist; run me"):
        checks.require_path(tmp_path / 'gone', 'data root', hint='run me')


def test_malformed_json_names_file_and_position(tmp_path):
    p = tmp_path / 'bad.json'
    p.write_text('{"images": [], "annotations": [,]}')
    with pytest.raises(checks.DataError, match=r"'.*bad\.json' is not valid JSON: .* line 1, column 32"):
        checks.load_json(p)


@pytest.mark.parametrize('where, key', [
    (None, 'annotations'), ('images', 'file_name'), ('annotations', 'bbox'),
    ('annotations', 'area'), ('categories', 'name')])
def test_missing_key_named(where, key):
    coco = _coco()
    if where is None:
        del coco[key]
        expect = rf"the top level is missing key '{key}'"
    else:
        del coco[where][1][key]
        expect = rf"{where}\[1\] is missing key '{key}'"
    with pytest.raises(checks.DataError, match=rf'^f\.json: {expect} \(has keys \['):
        checks.validate_coco(coco, 'f.json')


def test_unknown_category_and_image_named():
    coco = _coco()
    coco['annotations'][1]['category_id'] = 7
    with pytest.raises(checks.DataError,
                       match=r"annotation id 2 has category_id 7, which is not in 'categories' \(ids \[1, 2\]\)"):
        checks.validate_coco(coco, 'f.json')
    coco = _coco()
    coco['annotations'][0]['image_id'] = 99
    with pytest.raises(checks.DataError, match=r"annotation id 1 has image_id 99, which is not in 'images'"):
        checks.validate_coco(coco, 'f.json')


@pytest.mark.parametrize('bbox, expect', [
    ([1, 2, 3], 'expected four finite numbers'),
    ([1, 2, 'x', 4], 'expected four finite numbers'),
    ([1, 2, float('nan'), 4], 'expected four finite numbers'),
    ([10, 10, -4, 5], 'negative bbox size'),
])
def test_malformed_bbox_named(bbox, expect):
    coco = _coco()
    coco['annotations'][0]['bbox'] = bbox
    with pytest.raises(checks.DataError, match=rf'f\.json: annotation id 1 .*{expect}'):
        checks.validate_coco(coco, 'f.json')


def test_duplicate_ids_named():
    coco = _coco()
    coco['annotations'][1]['id'] = 1
    with pytest.raises(checks.DataError, match="annotation id 1 appears twice"):
        checks.validate_coco(coco, 'f.json')


def test_degenerate_boxes_skipped_and_counted(caplog):
    coco = _coco()
    extra = [
        dict(id=10, image_id=1, category_id=1, bbox=[5, 5, 0, 4], area=0),      # zero width
        dict(id=11, image_id=1, category_id=1, bbox=[5, 5, 6, 0.5], area=3),    # h < 1 px
        dict(id=12, image_id=2, category_id=2, bbox=[5, 5, 6, 6], area=0),      # area 0
        dict(id=13, image_id=2, category_id=2, bbox=[45, 5, 6, 6], area=36),    # right of image
        dict(id=14, image_id=2, category_id=2, bbox=[-20, 5, 10, 6], area=60),  # left of image
        dict(id=15, image_id=2, category_id=2, bbox=[35, 25, 10, 10], area=100),  # sticks out: kept
    ]
    coco['annotations'] += extra
    clean, skipped = checks.validate_coco(copy.deepcopy(coco), 'f.json')
    assert [a['id'] for a in clean['annotations']] == [1, 2, 15]
    assert skipped == {'zero-area box': 3, 'box outside its image': 2}
    assert len(coco['annotations']) == 8  # the input is not modified
    with caplog.at_level(logging.WARNING, logger=checks.logger.name):
        checks.log_skipped(skipped, 'f.json')
    msgs = [r.getMessage() for r in caplog.records]
    assert any(m.startswith('skipped 3 annotations with a zero-area box in f.json') for m in msgs)
    assert any(m.startswith('skipped 2 annotations with a box outside its image in f.json')
               for m in msgs)


def test_image_that_does_not_decode_named(tmp_path):
    good = tmp_path / 'good.png'
    cv2.imwrite(str(good), np.zeros((4, 5), np.uint8))
    checks.check_image(good)
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
    with pytest.raises(checks.DataError, match=r"image '.*bad\.jpg' \(22 bytes\) does not decode"):
        checks.check_image(bad)
    with pytest.raises(checks.DataNotFoundError, match=r"image '.*missing\.jpg' does not exist"):
        checks.check_image(tmp_path / 'missing.jpg')


# --------------------------------------------------------------------- through mmdet / mmseg

@pytest.fixture
def mmdet_scope():
    pytest.importorskip('mmdet')
    import densekit  # noqa: F401  (registers the datasets)
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')


def _build(root, **kw):
    from mmdet.registry import DATASETS
    cfg = dict(type='DenseKitCocoDataset', data_root=str(root), ann_file='annotations/inst.json',
               data_prefix=dict(img='img/'), metainfo=dict(classes=('cat', 'dog')),
               pipeline=[dict(type='LoadImageFromFile'),
                         dict(type='LoadAnnotations', with_bbox=True, with_mask=True)])
    cfg.update(kw)
    return DATASETS.build(cfg)


def test_dataset_valid(tmp_path, mmdet_scope):
    _write_dataset(tmp_path)
    ds = _build(tmp_path)
    assert len(ds) == 2
    out = ds[1]
    assert out['img'].shape == (30, 40, 3)
    np.testing.assert_allclose(out['gt_bboxes'].tensor.numpy(), [[20, 10, 32, 22]])


def test_dataset_missing_root_ann_and_images(tmp_path, mmdet_scope):
    with pytest.raises(FileNotFoundError, match=r"data root '.*absent' does not exist$"):
        _build(tmp_path / 'absent')
    (tmp_path / 'img').mkdir()
    with pytest.raises(FileNotFoundError, match=r"annotation file '.*inst\.json' does not exist"):
        _build(tmp_path)
    _write_dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"image folder '.*pics' does not exist"):
        _build(tmp_path, data_prefix=dict(img='pics/'))


def test_dataset_malformed_json(tmp_path, mmdet_scope):
    coco = _coco()
    coco['annotations'][0]['category_id'] = 3
    ann = _write_dataset(tmp_path, coco)
    with pytest.raises(ValueError, match=rf"{ann}: annotation id 1 has category_id 3, which is not"):
        _build(tmp_path)


def test_dataset_degenerate_boxes_warn_with_count(tmp_path, mmdet_scope):
    from mmengine.logging import MMLogger
    coco = _coco()
    coco['annotations'] += [dict(id=7, image_id=1, category_id=1, bbox=[1, 1, 0, 0], area=0),
                            dict(id=8, image_id=1, category_id=1, bbox=[3, 4, 0.2, 9], area=2),
                            dict(id=9, image_id=2, category_id=2, bbox=[1, 40, 5, 5], area=25)]
    ann = _write_dataset(tmp_path, coco)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        ds = _build(tmp_path)
    finally:
        logger.removeHandler(handler)
    msgs = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert any(m.startswith(f'skipped 2 annotations with a zero-area box in {ann}') for m in msgs), msgs
    assert any(m.startswith(f'skipped 1 annotation with a box outside its image in {ann}')
               for m in msgs), msgs
    assert [len(ds.get_data_info(i)['instances']) for i in range(2)] == [1, 1]


def test_dataset_undecodable_image_named(tmp_path, mmdet_scope):
    _write_dataset(tmp_path)
    (tmp_path / 'img' / 'b.jpg').write_bytes(b'GIF89a truncated')
    ds = _build(tmp_path)
    ds[0]
    with pytest.raises(checks.DataError, match=r"image '.*img/b\.jpg' \(16 bytes\) does not decode"):
        ds[1]


def test_synthetic_datasets_absent_say_how_to_generate(tmp_path, mmdet_scope):
    from mmdet.registry import DATASETS
    from mmseg.registry import DATASETS as SEG_DATASETS
    root = tmp_path / 'quickstart'
    with pytest.raises(FileNotFoundError,
                       match=rf"data root '{root}/coco' does not exist; generate the synthetic "
                             rf'quickstart data with `python tools/make_demo_data.py {root}`'):
        DATASETS.build(dict(type='SyntheticShapesDataset', data_root=str(root / 'coco'),
                            ann_file='annotations/instances_val.json',
                            data_prefix=dict(img='val/'), pipeline=[]))
    from mmengine.registry import DefaultScope
    with pytest.raises(FileNotFoundError,
                       match=rf"data root '{root}/ade' does not exist; .*make_demo_data\.py {root}`"), \
            DefaultScope.overwrite_default_scope('mmseg'):
        SEG_DATASETS.build(dict(type='SyntheticADEDataset', data_root=str(root / 'ade'),
                                data_prefix=dict(img_path='images/validation',
                                                 seg_map_path='annotations/validation'),
                                pipeline=[]))


def test_dataset_class_name_not_in_file(tmp_path, mmdet_scope):
    # mmdet drops an unknown name silently (the class never gets an annotation)
    ann = _write_dataset(tmp_path)
    with pytest.raises(checks.DataError,
                       match=rf"{ann}: 1 of the 2 metainfo.classes are not category names of the "
                             r"file: \['dgo'\] \(its categories: \['cat', 'dog'\]\)"):
        _build(tmp_path, metainfo=dict(classes=('cat', 'dgo')))
    # same in test mode, where mmdet would evaluate against images with no ground truth
    with pytest.raises(checks.DataError, match=r"2 of the 2 metainfo.classes .* \['person', 'bus'\]"):
        _build(tmp_path, metainfo=dict(classes=('person', 'bus')), test_mode=True)


def test_dataset_class_order_must_follow_file(tmp_path, mmdet_scope):
    # mmdet numbers labels in the file's category order: 'dog' would name the cats' label
    ann = _write_dataset(tmp_path)
    with pytest.raises(checks.DataError,
                       match=rf"{ann}: metainfo.classes \('dog', 'cat'\) are not in the order of "
                             r"the file's categories; .* list them as \('cat', 'dog'\)"):
        _build(tmp_path, metainfo=dict(classes=('dog', 'cat')))
    ds = _build(tmp_path, metainfo=dict(classes=('dog',)))  # a subset in any order is fine
    assert [x['bbox_label'] for x in ds.get_data_info(1)['instances']] == [0]


def test_dataset_training_set_empty_after_filter(tmp_path, mmdet_scope):
    coco = _coco()
    for ann in coco['annotations']:
        ann['bbox'][2] = 0  # zero-area boxes are skipped: no image keeps an annotation
    ann = _write_dataset(tmp_path, coco)
    with pytest.raises(checks.DataError,
                       match=rf"{ann}: no image of the 2 is left for training after filter_cfg="
                             r"\{'filter_empty_gt': True\}"):
        _build(tmp_path, filter_cfg=dict(filter_empty_gt=True))
    assert len(_build(tmp_path, filter_cfg=dict(filter_empty_gt=True), test_mode=True)) == 2
