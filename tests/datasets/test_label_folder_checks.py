"""Folder-layout datasets (Cityscapes, ADE20K, NYUv2 / KITTI depth) check their label folder when
they are built: a wrong ``seg_map_path`` / ``depth_map_path`` or label suffix, a partial label
folder and an image folder without images are one clear error naming the field, the folder, the
image count and an expected label path (mmseg derives label paths without looking, so these failed
later inside a data-loader worker, or never)."""
import copy
import logging
import re

import cv2
import numpy as np
import pytest

pytest.importorskip('mmseg')

import densekit  # noqa: E402,F401  (registers the datasets)
from conftest import REPO, shared_data  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402
from mmseg.registry import DATASETS  # noqa: E402

from densekit.datasets.checks import DataError  # noqa: E402

BASE = REPO / 'configs' / '_base_' / 'datasets'
SEG_PIPE = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='PackSegInputs')]
DEPTH_PIPE = [dict(type='LoadImageFromFile'), dict(type='LoadDepthMap'),
              dict(type='PackSegInputs')]


@pytest.fixture(autouse=True)
def _mmseg_scope():
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


def _build(cfg_file: str, which: str = 'train_dataloader', **overrides):
    """The dataset of one of our base configs, with ``overrides`` (e.g. ``data_root``)."""
    cfg = copy.deepcopy(Config.fromfile(BASE / cfg_file)[which].dataset).to_dict()
    cfg.update(overrides, pipeline=SEG_PIPE)  # a plain dict: data_prefix is replaced, not merged
    return DATASETS.build(cfg)


def _img(path, dtype=np.uint8):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (6, 8) if dtype == np.uint16 else (6, 8, 3)
    cv2.imwrite(str(path), np.ones(shape, dtype))


def _cityscapes(root, n=3, labels=None, label_suffix='_gtFine_labelTrainIds.png'):
    """``n`` Cityscapes frames of city 'aachen' (train split); labels for the ``labels`` indices."""
    for k in range(n):
        stem = f'aachen_{k:06d}_000019'
        _img(root / 'leftImg8bit' / 'train' / 'aachen' / f'{stem}_leftImg8bit.png')
        if labels is None or k in labels:
            _img(root / 'gtFine' / 'train' / 'aachen' / f'{stem}{label_suffix}')


def _ade(root, n=3, labels=None):
    for k in range(n):
        name = f'ADE_train_{k:08d}'
        _img(root / 'images' / 'training' / f'{name}.jpg')
        if labels is None or k in labels:
            _img(root / 'annotations' / 'training' / f'{name}.png')


# ---------------------------------------------------------------------------------- Cityscapes

def test_cityscapes_misspelt_gtfine_folder(tmp_path):
    _cityscapes(tmp_path)
    assert len(_build('cityscapes_512x1024.py', data_root=str(tmp_path))) == 3
    prefix = dict(img_path='leftImg8bit/train', seg_map_path='gtFine/trian')
    with pytest.raises(FileNotFoundError) as e:
        _build('cityscapes_512x1024.py', data_root=str(tmp_path), data_prefix=prefix)
    msg = str(e.value)
    assert isinstance(e.value, DataError)
    assert msg.startswith('DenseKitCityscapesDataset: none of the 3 images of '
                          f"data_prefix.img_path='{tmp_path}/leftImg8bit/train' has its label "
                          f"file under data_prefix.seg_map_path='{tmp_path}/gtFine/trian' (which "
                          'does not exist)'), msg
    assert (f"needs '{tmp_path}/gtFine/trian/aachen/aachen_000000_000019_gtFine_labelTrainIds.png'"
            in msg), msg


def test_cityscapes_folder_without_label_train_ids(tmp_path):
    # gtFine as downloaded: *_labelIds.png only, the *_labelTrainIds.png were never generated
    _cityscapes(tmp_path, label_suffix='_gtFine_labelIds.png')
    with pytest.raises(DataError, match=re.escape(
            f"whose folder '{tmp_path}/gtFine/train/aachen' holds "
            "'aachen_000000_000019_gtFine_labelIds.png', 'aachen_000001_000019_gtFine_labelIds.png'"
            ", 'aachen_000002_000019_gtFine_labelIds.png')")) as e:
        _build('cityscapes_512x1024.py', data_root=str(tmp_path))
    assert "(seg_map_suffix='_gtFine_labelTrainIds.png')" in str(e.value)
    # the label folder one level too high: the city sub-folder is not there
    prefix = dict(img_path='leftImg8bit/train', seg_map_path='gtFine')
    with pytest.raises(DataError, match="which exists but has no sub-folder 'aachen'"):
        _build('cityscapes_512x1024.py', data_root=str(tmp_path), data_prefix=prefix)


def test_cityscapes_partial_labels_is_an_error(tmp_path):
    _cityscapes(tmp_path, n=3, labels={0, 2})
    with pytest.raises(DataError) as e:
        _build('cityscapes_512x1024.py', data_root=str(tmp_path))
    assert str(e.value) == (
        'DenseKitCityscapesDataset: 1 of the 3 images of '
        f"data_prefix.img_path='{tmp_path}/leftImg8bit/train' have no label file under "
        f"data_prefix.seg_map_path='{tmp_path}/gtFine/train': missing "
        f"'{tmp_path}/gtFine/train/aachen/aachen_000001_000019_gtFine_labelTrainIds.png' "
        "(seg_map_suffix='_gtFine_labelTrainIds.png'); training on the others would silently "
        'drop them: add the label files or remove the images')
    # an unlabelled set (no seg_map_path) asks nothing of labels
    ds = _build('cityscapes_512x1024.py', data_root=str(tmp_path),
                data_prefix=dict(img_path='leftImg8bit/train'))
    assert len(ds) == 3 and 'seg_map_path' not in ds.get_data_info(0)


# ------------------------------------------------------------------------------------- ADE20K

def test_ade20k_wrong_annotation_folder_and_suffix(tmp_path):
    _ade(tmp_path)
    assert len(_build('ade20k_512x512.py', data_root=str(tmp_path))) == 3
    prefix = dict(img_path='images/training', seg_map_path='annotation/training')
    with pytest.raises(DataError, match=re.escape(
            'DenseKitADE20KDataset: none of the 3 images of '
            f"data_prefix.img_path='{tmp_path}/images/training' has its label file under "
            f"data_prefix.seg_map_path='{tmp_path}/annotation/training' (which does not exist); "
            f"e.g. image '{tmp_path}/images/training/ADE_train_00000000.jpg' needs "
            f"'{tmp_path}/annotation/training/ADE_train_00000000.png' (seg_map_suffix='.png'); "
            'check data_prefix.seg_map_path and seg_map_suffix')):
        _build('ade20k_512x512.py', data_root=str(tmp_path), data_prefix=prefix)
    with pytest.raises(DataError, match=re.escape(
            f"needs '{tmp_path}/annotations/training/ADE_train_00000000_seg.png' "
            "(seg_map_suffix='_seg.png')")):
        _build('ade20k_640x640.py', data_root=str(tmp_path), seg_map_suffix='_seg.png')


def test_ade20k_partial_labels_lists_the_first_few(tmp_path):
    _ade(tmp_path, n=6, labels={0})
    with pytest.raises(DataError, match=re.escape(
            f"5 of the 6 images of data_prefix.img_path='{tmp_path}/images/training' have no "
            f"label file under data_prefix.seg_map_path='{tmp_path}/annotations/training': "
            f"missing '{tmp_path}/annotations/training/ADE_train_00000001.png', "
            f"'{tmp_path}/annotations/training/ADE_train_00000002.png', "
            f"'{tmp_path}/annotations/training/ADE_train_00000003.png' and 2 more")):
        _build('ade20k_512x512.py', data_root=str(tmp_path))


def test_ade20k_split_file_with_missing_labels(tmp_path):
    _ade(tmp_path, n=2, labels={0})
    (tmp_path / 'train.txt').write_text('ADE_train_00000000\nADE_train_00000001\n')
    with pytest.raises(DataError, match=re.escape(
            f"1 of the 2 images of ann_file '{tmp_path}/train.txt' have no label file")):
        _build('ade20k_512x512.py', data_root=str(tmp_path), ann_file='train.txt')


def test_split_file_images_must_exist(tmp_path):
    # a split file lists names; mmseg joins them to data_prefix.img_path without looking
    _ade(tmp_path, n=2)
    (tmp_path / 'train.txt').write_text('ADE_train_00000000\nADE_train_00000001\n')
    assert len(_build('ade20k_512x512.py', data_root=str(tmp_path), ann_file='train.txt')) == 2
    with pytest.raises(DataError, match=re.escape(
            f"DenseKitADE20KDataset: 2 of the 2 images listed by ann_file '{tmp_path}/train.txt' do not "
            f"exist under data_prefix.img_path='{tmp_path}/images/train': "
            f"'{tmp_path}/images/train/ADE_train_00000000.jpg', ")):
        _build('ade20k_512x512.py', data_root=str(tmp_path), ann_file='train.txt',
               data_prefix=dict(img_path='images/train', seg_map_path='annotations/training'))


def test_empty_split_file(tmp_path):
    (tmp_path / 'images' / 'training').mkdir(parents=True)
    (tmp_path / 'train.txt').write_text('')
    with pytest.raises(DataError, match=re.escape(
            f"DenseKitADE20KDataset: ann_file '{tmp_path}/train.txt' lists no image (it is empty)")):
        _build('ade20k_512x512.py', data_root=str(tmp_path), ann_file='train.txt')


def test_empty_image_folder(tmp_path):
    (tmp_path / 'images' / 'training').mkdir(parents=True)
    (tmp_path / 'annotations' / 'training').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=re.escape(
            "DenseKitADE20KDataset: no image found in "
            f"data_prefix.img_path='{tmp_path}/images/training' (img_suffix='.jpg')")):
        _build('ade20k_512x512.py', data_root=str(tmp_path))
    # images with another suffix are no images either
    _img(tmp_path / 'images' / 'training' / 'a.png')
    with pytest.raises(DataError, match="no image found in .* \\(img_suffix='.jpg'\\)"):
        _build('ade20k_512x512.py', data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=re.escape(
            "DenseKitCityscapesDataset: image folder data_prefix.img_path "
            f"'{tmp_path}/leftImg8bit/train' does not exist")):
        _build('cityscapes_512x1024.py', data_root=str(tmp_path))


def test_object_storage_is_left_to_mmseg():
    """A data_root on object storage (a URL prefix, no ``backend_args``) is not checked with
    os.path: the build lists the images through mmengine's backend, as mmseg's own class does."""
    from mmengine.fileio import BaseStorageBackend, register_backend

    class _Remote(BaseStorageBackend):  # one image, no label read at build time
        def get(self, filepath):
            raise AssertionError('nothing is read at build time')

        def get_text(self, filepath, encoding='utf-8'):
            raise AssertionError('nothing is read at build time')

        def list_dir_or_file(self, dir_path, list_dir=True, list_file=True, suffix=None, recursive=False):
            yield 'ADE_train_00000000.jpg'

        def join_path(self, filepath, *filepaths):
            return '/'.join([filepath.rstrip('/'), *filepaths])

    register_backend('densekit_test_remote', _Remote, force=True, prefixes='dkremote')
    ds = _build('ade20k_512x512.py', data_root='dkremote://bucket/ade')
    assert len(ds) == 1
    assert ds.get_data_info(0)['seg_map_path'] == 'dkremote://bucket/ade/annotations/training/ADE_train_00000000.png'


# -------------------------------------------------------------------------------------- depth

def _nyu(root, n=3, depths=None):
    for k in range(n):
        _img(root / 'images' / f'scene_{k:05d}.jpg')
        if depths is None or k in depths:
            _img(root / 'annotations' / f'scene_{k:05d}.png', np.uint16)


def _depth(type_, **kw):
    return DATASETS.build(dict(type=type_, pipeline=DEPTH_PIPE, **kw))


def test_nyu_wrong_depth_folder(tmp_path):
    _nyu(tmp_path)
    assert len(_depth('DKNYUv2Dataset', data_root=str(tmp_path))) == 3
    prefix = dict(img_path='images', depth_map_path='depth')
    msg = (f"DKNYUv2Dataset: none of the 3 images of data_prefix.img_path='{tmp_path}/images' has "
           f"its depth file under data_prefix.depth_map_path='{tmp_path}/depth' (which does not "
           f"exist); e.g. image '{tmp_path}/images/scene_00000.jpg' needs "
           f"'{tmp_path}/depth/scene_00000.png' (depth_suffix='.png')")
    with pytest.raises(DataError, match=re.escape(msg)):
        _depth('DKNYUv2Dataset', data_root=str(tmp_path), data_prefix=prefix)
    # keeping frames without depth is for a few frames without ground truth, not a wrong folder
    with pytest.raises(DataError, match=re.escape(msg)):
        _depth('DKNYUv2Dataset', data_root=str(tmp_path), data_prefix=prefix,
               skip_missing_depth=False)


def _capture_warnings():
    from mmengine.logging import MMLogger
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    return records, lambda: logger.removeHandler(handler)


def test_nyu_partial_depth_is_a_counted_skip(tmp_path):
    _nyu(tmp_path, n=3, depths={0, 2})
    records, done = _capture_warnings()
    try:
        ds = _depth('DKNYUv2Dataset', data_root=str(tmp_path))
    finally:
        done()
    assert len(ds) == 2
    msgs = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    expected = (f"DKNYUv2Dataset: skipped 1 of the 3 frames of data_prefix.img_path="
                f"'{tmp_path}/images' whose depth file under data_prefix.depth_map_path="
                f"'{tmp_path}/annotations' does not exist: '{tmp_path}/annotations/scene_00001.png' "
                '(skip_missing_depth=True)')
    assert expected in msgs, msgs


def test_kitti_split_file_wrong_depth_folder(tmp_path):
    lines = []
    for k in range(3):
        _img(tmp_path / 'raw' / 'drive' / 'image_02' / f'{k:010d}.png')
        _img(tmp_path / 'data_depth_annotated' / 'drive' / 'gt' / f'{k:010d}.png', np.uint16)
        lines.append(f'drive/image_02/{k:010d}.png drive/gt/{k:010d}.png 721.5377')
    lines.append('drive/image_02/0000000009.png None 721.5377')  # BTS: a frame without ground truth
    (tmp_path / 'eigen_test.txt').write_text('\n'.join(lines) + '\n')
    kw = dict(data_root=str(tmp_path), ann_file='eigen_test.txt')
    assert len(_depth('KITTIEigenDataset', **kw)) == 3
    with pytest.raises(DataError, match=re.escape(  # images under another folder than the split's
            f"KITTIEigenDataset: 3 of the 3 images listed by ann_file '{tmp_path}/eigen_test.txt' do not "
            f"exist under data_prefix.img_path='{tmp_path}/rgb': '{tmp_path}/rgb/drive/image_02/0000000000.png'")):
        _depth('KITTIEigenDataset', **kw, data_prefix=dict(img_path='rgb', depth_map_path='data_depth_annotated'))
    with pytest.raises(DataError, match=re.escape(
            f"KITTIEigenDataset: none of the 3 images of ann_file '{tmp_path}/eigen_test.txt' has "
            f"its depth file under data_prefix.depth_map_path='{tmp_path}/depth_annotated' (which "
            f"does not exist); e.g. image '{tmp_path}/raw/drive/image_02/0000000000.png' needs "
            f"'{tmp_path}/depth_annotated/drive/gt/0000000000.png'; check "
            'data_prefix.depth_map_path')):
        _depth('KITTIEigenDataset', **kw,
               data_prefix=dict(img_path='raw', depth_map_path='depth_annotated'))


# --------------------------------------------------------------------------- real sample data

@pytest.mark.parametrize('cfg_file, sample, sub, n', [
    ('cityscapes_512x1024.py', 'cityscapes_sample', '', 1),
    ('ade20k_512x512.py', 'ade20k_sample', 'ADEChallengeData2016', 3),
])
def test_real_samples_build_with_the_checked_classes(cfg_file, sample, sub, n):
    root = shared_data(sample) / sub
    ds = _build(cfg_file, 'val_dataloader', data_root=f'{root}/')
    assert type(ds).__name__.startswith('DenseKit') and len(ds) == n
    assert ds[0]['data_samples'].gt_sem_seg is not None
    val_prefix = Config.fromfile(BASE / cfg_file).val_dataloader.dataset.data_prefix
    with pytest.raises(DataError, match=rf'none of the {n} images|the one image'):
        _build(cfg_file, 'val_dataloader', data_root=f'{root}/',
               data_prefix=dict(val_prefix, seg_map_path=val_prefix['seg_map_path'] + '_typo'))


def test_real_nyu_sample_builds_and_names_a_wrong_depth_folder():
    root = shared_data('nyu_sample')
    assert len(_depth('DKNYUv2Dataset', data_root=str(root))) == 1
    with pytest.raises(DataError, match=re.escape(
            f"under data_prefix.depth_map_path='{root}/depth' (which does not exist)")):
        _depth('DKNYUv2Dataset', data_root=str(root),
               data_prefix=dict(img_path='images', depth_map_path='depth'))
