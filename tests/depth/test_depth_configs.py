"""Every config in configs/depth builds, and runs one training iteration plus one validation pass
on CPU through mmengine's Runner, with the config's own datasets, pipelines, metric and hooks.

Tiny overrides only: the backbone becomes its family's ``*_test`` variant (or a timm ResNet-10t),
the decoder is narrowed, random crops shrink to 64x96, and the data are a few synthetic frames
written in each dataset's real file layout at its native frame size (NYUv2 480x640 with BTS split
files, KITTI 375x1242 with the Eigen split-file layout, the synthetic folder set). The full-size
model of each config is also constructed on the meta device (not run) to check its arguments.
"""
import copy
import glob
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip('mmseg')

import densekit  # noqa: F401,E402
from densekit.datasets.synthetic_depth import make_synthetic_depth, render_scene  # noqa: E402
from densekit.models import build_backbone, list_backbones  # noqa: E402

@pytest.fixture(autouse=True)
def _mmseg_scope():
    # Scoped, not global: a process-wide default scope would leak into other suites' builds.
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'depth', '*.py')))
CONFIGS += sorted(glob.glob(osp.join(REPO, 'configs', 'polymax', '*.py')))


def _frame(seed, h, w):
    # Render small and upscale: the content does not matter here, the geometry does.
    img, depth = render_scene(np.random.default_rng(seed), 48, 64)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
    return img[:, :, ::-1], depth


@pytest.fixture(scope='module')
def data_roots(tmp_path_factory):
    root = tmp_path_factory.mktemp('depth_data')
    # NYUv2, BTS layout.
    nyu = root / 'nyu'
    lines = []
    for i in range(2):
        img, depth = _frame(i, 480, 640)
        d = nyu / 'sync' / 'kitchen_0001'
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f'rgb_{i:05d}.jpg'), img)
        cv2.imwrite(str(d / f'sync_depth_{i:05d}.png'), (depth * 1000).astype(np.uint16))
        lines.append(f'/kitchen_0001/rgb_{i:05d}.jpg /kitchen_0001/sync_depth_{i:05d}.png 518.8579')
    (nyu / 'nyudepthv2_train_files_with_gt.txt').write_text('\n'.join(lines) + '\n')
    img, depth = _frame(7, 480, 640)
    d = nyu / 'official_splits' / 'test' / 'bathroom'
    d.mkdir(parents=True)
    cv2.imwrite(str(d / 'rgb_00045.jpg'), img)
    cv2.imwrite(str(d / 'sync_depth_00045.png'), (depth * 1000).astype(np.uint16))
    (nyu / 'nyudepthv2_test_files_with_gt.txt').write_text(
        'bathroom/rgb_00045.jpg bathroom/sync_depth_00045.png 518.8579\n')
    # KITTI Eigen split, BTS layout; depth scaled by 256 (80 m does not fit otherwise).
    kitti = root / 'kitti'
    lines = []
    for i in range(3):
        img, depth = _frame(10 + i, 375, 1242)
        drive = '2011_09_26_drive_0002_sync'
        di = kitti / 'raw' / '2011_09_26' / drive / 'image_02' / 'data'
        dd = kitti / 'data_depth_annotated' / drive / 'proj_depth' / 'groundtruth' / 'image_02'
        di.mkdir(parents=True, exist_ok=True)
        dd.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(di / f'{i:010d}.png'), img)
        cv2.imwrite(str(dd / f'{i:010d}.png'), (depth * 256).astype(np.uint16))
        lines.append(f'2011_09_26/{drive}/image_02/data/{i:010d}.png '
                     f'{drive}/proj_depth/groundtruth/image_02/{i:010d}.png 721.5377')
    (kitti / 'eigen_train_files_with_gt.txt').write_text('\n'.join(lines[:2]) + '\n')
    (kitti / 'eigen_test_files_with_gt.txt').write_text(lines[2] + '\n')
    synth = make_synthetic_depth(root / 'synthetic_depth', num_train=2, num_val=1, height=64, width=96)
    return dict(NYUv2Dataset=nyu, KITTIEigenDataset=kitti, DepthFolderDataset=synth)


def _tiny_backbone(cfg_backbone):
    name = cfg_backbone['type']
    family = name.split('_')[0]
    if name != 'TimmBackbone' and f'{family}_test' in list_backbones():
        return dict(type=f'{family}_test', out_indices=(0, 1, 2, 3))
    return dict(type='TimmBackbone', model_name='resnet10t', out_indices=(1, 2, 3, 4))


def _out_channels(bb, out_indices):
    if type(bb).__name__ == 'TimmBackbone':  # timm describes only the requested levels
        return [f['num_chs'] for f in bb.feature_info]
    return [bb.feature_info[i]['num_chs'] for i in out_indices]


def _channels(bb_cfg):
    kw = {k: v for k, v in bb_cfg.items() if k != 'type'}
    return _out_channels(build_backbone(bb_cfg['type'], **kw), bb_cfg['out_indices'])


def _shrink(cfg, data_root, work_dir):
    cfg.work_dir = str(work_dir)
    bb = _tiny_backbone(cfg.model.backbone)
    cfg.model.backbone = bb
    head = cfg.model.decode_head
    head.in_channels = _channels(bb)
    head.channels = 16
    if head.type == 'DPTDepthHead':
        head.head_channels = 8
    elif head.type == 'PolyMaXDepthHead':
        head.update(num_queries=4, decoder_blocks=(1, 1), num_heads=2, ffn_channels=16)
    else:
        head.merge_channels = 8
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg[name]
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset.data_root = str(data_root)
        for t in loader.dataset.pipeline:
            if t['type'] == 'DepthRandomCrop':
                t['crop_size'] = (64, 96)
    cfg.train_dataloader.batch_size = 2
    cfg.model.flip_test = False  # flip averaging is covered in test_depth_mm.py; halves val time
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.visualization.draw = True
    cfg.default_hooks.visualization.interval = 1
    cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]
    # Visualizers are named singletons: a fresh name per run so it writes into this work_dir.
    cfg.visualizer.name = f'depth_vis_{osp.basename(str(work_dir))}'
    return cfg


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.basename(p)[:-3] for p in CONFIGS])
def test_config_builds_and_runs_one_step(path, data_roots, tmp_path, monkeypatch):
    from mmengine.config import Config
    from mmengine.runner import Runner
    from mmseg.registry import MODELS

    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmseg'
    # The real model of the config is constructible (full-size backbone on the meta device: the
    # arguments are checked, no memory is allocated and nothing runs).
    with torch.device('meta'):
        full = MODELS.build(copy.deepcopy(cfg.model))
    assert type(full).__name__ == 'DenseKitDepthEstimator'
    assert tuple(full.decode_head.in_channels) == tuple(
        _out_channels(full.backbone, cfg.model.backbone.out_indices))
    del full

    data_root = data_roots[cfg.train_dataloader.dataset.type]
    cfg = _shrink(cfg, data_root, tmp_path)
    # The Runner logs and dumps the config through yapf (~1.5 s each here), which is not under test.
    monkeypatch.setattr(Config, 'pretty_text', property(lambda self: repr(self.to_dict())))
    runner = Runner.from_cfg(cfg)
    runner.train()
    logs = runner.message_hub.log_scalars
    losses = [k for k in logs if k.startswith('train/loss')]
    assert losses and all(np.isfinite(logs[k].current()) for k in losses)
    for k in ('a1', 'abs_rel', 'rmse', 'silog'):
        assert np.isfinite(logs[f'val/{k}'].current()), k
    # The visualisation hook drew the validation sample through the visualizer.
    assert glob.glob(osp.join(str(tmp_path), '**', 'vis_image', '*.png'), recursive=True)
