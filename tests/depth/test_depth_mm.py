"""The mmseg-scope depth pieces: datasets (incl. the real NYUv2 sample), aligned transforms,
estimator, metric and visualisation hook. Tiny shapes; no training."""
import os.path as osp
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip('mmseg')

import densekit  # noqa: F401,E402  (registers the depth module)
from conftest import shared_data  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402
from mmseg.registry import DATASETS, HOOKS, METRICS, MODELS, TRANSFORMS  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

from densekit.mm.depth import DKDepthEstimator, colorize_depth  # noqa: E402


@pytest.fixture(autouse=True)
def _mmseg_scope():
    # Scoped, not global: a process-wide default scope would leak into other suites' builds.
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


PIPE = [dict(type='LoadImageFromFile'), dict(type='LoadDepthMap'), dict(type='PackSegInputs')]


def test_names_do_not_shadow_mmseg():
    assert MODELS.get('DepthEstimator').__module__.startswith('mmseg')
    assert DATASETS.get('NYUDataset').__module__.startswith('mmseg')
    assert METRICS.get('DepthMetric').__module__.startswith('mmseg')
    for reg, name in ((MODELS, 'DKDepthEstimator'), (DATASETS, 'DKNYUv2Dataset'),
                      (DATASETS, 'KITTIEigenDataset'), (DATASETS, 'DepthFolderDataset'),
                      (METRICS, 'DKDepthMetric'), (HOOKS, 'DepthVisualizationHook'),
                      (TRANSFORMS, 'LoadDepthMap'), (MODELS, 'DPTDepthHead')):
        assert reg.get(name).__module__.startswith('densekit'), name


def test_nyu_sample_scale_and_perfect_metric():
    root = shared_data('nyu_sample')
    ds = DATASETS.build(dict(type='DKNYUv2Dataset', data_root=str(root), pipeline=PIPE))
    assert len(ds) == 1
    sample = ds[0]['data_samples']
    depth = sample.gt_depth_map.data
    assert depth.shape == (1, 120, 160)
    assert ds[0]['inputs'].shape == (3, 120, 160)
    valid = depth[depth > 0]
    # README: uint16 millimetres, 1.49-10.0 m -> scale 1000 gives metres
    assert 1.48 <= float(valid.min()) <= 1.50 and float(valid.max()) == pytest.approx(10.0)
    png = sample.metainfo['img_path'].replace('images', 'annotations').replace('.jpg', '.png')
    raw = cv2.imread(png, cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    assert torch.equal(depth[0], torch.from_numpy(raw.astype(np.float32) / 1000.0))

    metric = METRICS.build(dict(type='DKDepthMetric'))
    metric.dataset_meta = ds.metainfo  # eigen crop (nyu), 1e-3..10 m
    d = sample.to_dict()
    d['pred_depth_map'] = dict(data=depth.clone())
    metric.process({}, [d])
    res = metric.compute_metrics(metric.results)
    assert res['a1'] == res['a2'] == res['a3'] == 1.0
    for k in ('abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'log10', 'silog'):
        assert res[k] == 0.0, k


def test_split_file_layout(tmp_path):
    # BTS split-file format with a leading '/', a focal length, a 'None' depth and a missing file.
    for name in ('a', 'b', 'c'):
        (tmp_path / 'sync' / 's').mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / 'sync' / 's' / f'rgb_{name}.jpg'), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(tmp_path / 'sync' / 's' / 'sync_depth_a.png'), np.full((8, 8), 2560, np.uint16))
    (tmp_path / 'split.txt').write_text('/s/rgb_a.jpg /s/sync_depth_a.png 518.8579\n'
                                        's/rgb_b.jpg None 518.8579\n'
                                        's/rgb_c.jpg s/sync_depth_c.png 518.8579\n\n')
    kw = dict(data_root=str(tmp_path), ann_file='split.txt', pipeline=PIPE,
              data_prefix=dict(img_path='sync', depth_map_path='sync'))
    ds = DATASETS.build(dict(type='KITTIEigenDataset', **kw))
    assert len(ds) == 1 and ds.get_data_info(0)['focal'] == pytest.approx(518.8579)
    assert float(ds[0]['data_samples'].gt_depth_map.data.max()) == pytest.approx(10.0)  # 2560/256
    assert ds.metainfo['eval_crop'] == 'garg' and ds.metainfo['max_depth'] == 80.0
    keep = DATASETS.build(dict(type='DKNYUv2Dataset', skip_missing_depth=False, lazy_init=True, **kw))
    keep.full_init()
    assert len(keep) == 3 and 'depth_map_path' not in keep.get_data_info(1)
    with pytest.raises(ValueError, match='eval_crop'):
        DATASETS.build(dict(type='DKNYUv2Dataset', eval_crop='center', **kw))


def _results(h=40, w=60):
    rng = np.random.default_rng(0)
    depth = rng.integers(1, 100, size=(h, w)).astype(np.float32) / 10.0
    img = np.repeat((depth * 10).astype(np.uint8)[:, :, None], 3, axis=2)  # image encodes depth
    return dict(img=img, gt_depth_map=depth, seg_fields=['gt_depth_map'], img_shape=(h, w))


def test_crop_and_flip_keep_depth_aligned():
    np.random.seed(0)
    crop = TRANSFORMS.build(dict(type='DepthRandomCrop', crop_size=(17, 23)))
    flip = TRANSFORMS.build(dict(type='DepthRandomFlip', prob=1.0))
    r = flip(crop(_results()))
    assert r['img'].shape == (17, 23, 3) and r['gt_depth_map'].shape == (17, 23)
    assert r['flip'] is True
    np.testing.assert_array_equal(r['img'][:, :, 0], (r['gt_depth_map'] * 10).astype(np.uint8))


def test_rotation_uses_nearest_and_invalid_fill_for_depth():
    np.random.seed(0)
    src = _results()
    rot = TRANSFORMS.build(dict(type='DepthRandomRotate', degree=2.5, prob=1.0))
    r = rot(dict(src, img=src['img'].copy(), gt_depth_map=src['gt_depth_map'].copy()))
    d = r['gt_depth_map']
    assert d.shape == (40, 60)
    assert not np.array_equal(d, src['gt_depth_map'])  # it did rotate
    assert (d[0, 0] == 0 or d[0, -1] == 0) and (d[-1, 0] == 0 or d[-1, -1] == 0)  # uncovered corners
    assert set(np.unique(d)) <= set(np.unique(src['gt_depth_map'])) | {0.0}  # nearest: no blends


def test_color_jitter_changes_image_only():
    np.random.seed(1)
    src = _results()
    r = TRANSFORMS.build(dict(type='DepthColorJitter', prob=1.0))(
        dict(src, img=src['img'].copy(), gt_depth_map=src['gt_depth_map'].copy()))
    assert not np.allclose(r['img'], src['img'])
    np.testing.assert_array_equal(r['gt_depth_map'], src['gt_depth_map'])


def test_kb_crop_and_fixed_crop():
    kb = TRANSFORMS.build(dict(type='DepthKBCrop', height=8, width=10, crop_depth=False))
    r = kb(_results(12, 20))
    assert r['img'].shape[:2] == (8, 10) and r['gt_depth_map'].shape == (12, 20)
    assert r['kb_crop_box'] == (4, 5) and r['kb_ori_shape'] == (12, 20)
    src = _results(12, 20)
    r = TRANSFORMS.build(dict(type='DepthFixedCrop', box=(2, 3, 12, 9)))(dict(src))
    np.testing.assert_array_equal(r['gt_depth_map'], src['gt_depth_map'][3:9, 2:12])
    with pytest.raises(ValueError, match='exceeds'):
        TRANSFORMS.build(dict(type='DepthFixedCrop', box=(0, 0, 30, 5)))(_results(12, 20))


def _tiny_estimator(**kw):
    return MODELS.build(dict(
        type='DKDepthEstimator',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[255, 255, 255],
                               seg_pad_val=0, size_divisor=32, test_cfg=dict(size_divisor=32)),
        backbone=dict(type='TimmBackbone', model_name='resnet10t', out_indices=(1, 2, 3, 4)),
        decode_head=dict(type='FPNDepthHead', in_channels=[64, 128, 256, 512], channels=8,
                         merge_channels=8, max_depth=10.0),
        losses=[dict(type='DKSILogLoss'), dict(type='DKDepthL1Loss', loss_weight=0.1)],
        **kw))


def test_estimator_loss_and_predict_undo_padding():
    model = _tiny_estimator(flip_test=True)
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(ori_shape=(50, 70), img_shape=(50, 70)))
        s.gt_depth_map = PixelData(data=torch.rand(1, 50, 70) * 9 + 0.5)
        samples.append(s)
    data = dict(inputs=[torch.randint(0, 255, (3, 50, 70), dtype=torch.uint8) for _ in range(2)],
                data_samples=samples)
    losses = model(**model.data_preprocessor(data, True), mode='loss')
    assert set(losses) == {'loss_silog', 'loss_l1'} and all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        batch = model.data_preprocessor(dict(inputs=data['inputs'], data_samples=[
            SegDataSample(metainfo=dict(ori_shape=(50, 70), img_shape=(50, 70))) for _ in range(2)]))
        assert batch['inputs'].shape[-2:] == (64, 96)  # padded to the size divisor
        out = model(**batch, mode='predict')
    assert out[0].pred_depth_map.data.shape == (1, 50, 70)
    p = out[0].pred_depth_map.data
    assert float(p.min()) > 0 and float(p.max()) < 10.0


def test_estimator_rejects_head_bound_below_max_depth():
    with pytest.raises(ValueError, match='decode_head.max_depth=80'):
        _tiny_estimator(max_depth=80.0)  # the head is built with max_depth=10


def test_kb_crop_paste_back():
    depth = torch.arange(6.0).view(1, 1, 2, 3)
    full = DKDepthEstimator._to_original(depth, dict(img_shape=(2, 3), kb_crop_box=(3, 1),
                                                     kb_ori_shape=(5, 6)))
    assert full.shape == (1, 1, 5, 6)
    assert torch.equal(full[0, 0, 3:5, 1:4], depth[0, 0]) and float(full.sum()) == float(depth.sum())


def test_metric_writes_predictions_and_hook_draws(tmp_path):
    img_path = tmp_path / 'frame.png'
    cv2.imwrite(str(img_path), np.full((6, 8, 3), 100, np.uint8))
    s = SegDataSample(metainfo=dict(img_path=str(img_path), ori_shape=(6, 8)))
    s.pred_depth_map = PixelData(data=torch.full((1, 6, 8), 2.5))
    s.gt_depth_map = PixelData(data=torch.full((1, 6, 8), 2.0))

    metric = METRICS.build(dict(type='DKDepthMetric', crop=None, output_dir=str(tmp_path / 'pred')))
    metric.dataset_meta = dict(min_depth=1e-3, max_depth=10.0, depth_scale=1000.0)
    metric.process({}, [s.to_dict()])
    png = cv2.imread(str(tmp_path / 'pred' / 'frame.png'), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and int(png.max()) == 2500 == int(png.min())
    assert metric.compute_metrics(metric.results)['abs_rel'] == pytest.approx(0.25)

    hook = HOOKS.build(dict(type='DepthVisualizationHook', draw=True, interval=1,
                            show_dir=str(tmp_path / 'vis')))
    runner = SimpleNamespace(work_dir=str(tmp_path),
                             test_dataloader=SimpleNamespace(dataset=SimpleNamespace(
                                 metainfo=dict(max_depth=10.0))))
    hook.after_test_iter(runner, 0, None, [s])
    vis = cv2.imread(str(tmp_path / 'vis' / 'frame.png'))
    assert vis.shape == (6, 24, 3)  # input | prediction | ground truth
    np.testing.assert_array_equal(vis[:, :8], 100)
    np.testing.assert_array_equal(vis[:, 8:16, ::-1], colorize_depth(np.full((6, 8), 2.5), 10.0))
