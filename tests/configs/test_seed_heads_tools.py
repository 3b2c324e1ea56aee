"""Slow tier: the seed heads' tiny configs (densekit's ``*_test`` backbones, narrowed heads,
generated demo data) train through ``tools/train.py`` (two iterations / one short epoch, a
checkpoint) and evaluate that checkpoint through ``tools/test.py`` with their configs' own
metric, as a user runs them. The PolyMaX-style depth head runs the same way in
``tests/depth/test_depth_tools.py``'s depth configs and its learning test."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from config_demo_data import make_ade, make_coco  # noqa: E402
from mmengine.config import Config  # noqa: E402
from tiny_configs import tiny  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    'relation_detr': ('relation_detr/relation-detr_swin-t_12e_coco.py', 'coco/bbox_mAP'),
    'dyhead': ('dyhead/atss_swin-t_fpn_dyhead_1x_coco.py', 'coco/bbox_mAP'),
    'kmax_deeplab': ('kmax_deeplab/kmax-deeplab_convnext-t_150k_coco-panoptic.py',
                     'coco_panoptic/PQ'),
    'vwformer': ('vwformer/vwformer_convnext-t_160k_ade20k-512x512.py', 'mIoU'),
    'pem': ('pem/pem_convnext-t_160k_ade20k-512x512.py', 'mIoU'),
}


def _tool(name: str, *args: str, cwd: Path) -> str:
    r = subprocess.run([sys.executable, str(REPO / 'tools' / name), *args], cwd=cwd,
                       capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f'tools/{name} {" ".join(args)} failed ({r.returncode}):\n{out[-4000:]}'
    return out


@pytest.mark.slow
@pytest.mark.parametrize('head', sorted(CONFIGS))
def test_tiny_config_trains_and_tests_through_the_tools(head: str, tmp_path: Path):
    import densekit  # noqa: F401  (registers the densekit classes for the config surgery)
    path, metric = CONFIGS[head]
    data = tmp_path / 'data'
    make_coco(data)
    make_ade(data)
    cfg = tiny(Config.fromfile(str(REPO / 'configs' / path)), data)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].num_workers = 0
        cfg[name].persistent_workers = False
    if cfg.train_cfg.type == 'IterBasedTrainLoop':
        cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = 2
        cfg.default_hooks.checkpoint.interval = 2
        ckpt = 'iter_2.pth'
    else:
        cfg.train_cfg.max_epochs = cfg.train_cfg.val_interval = 1
        cfg.default_hooks.checkpoint.interval = 1
        ckpt = 'epoch_1.pth'
    cfg.param_scheduler = []  # the recipes' warm-up spans more iterations than this run has
    cfg.dump(str(tmp_path / 'tiny.py'))

    out = _tool('train.py', str(tmp_path / 'tiny.py'), '--work-dir', str(tmp_path / 'train'),
                cwd=tmp_path)
    assert (tmp_path / 'train' / ckpt).is_file(), out[-2000:]
    out = _tool('test.py', str(tmp_path / 'tiny.py'), str(tmp_path / 'train' / ckpt),
                '--work-dir', str(tmp_path / 'test'), cwd=tmp_path)
    found = re.search(rf'{re.escape(metric)}: (-?[0-9.]+|nan)', out)
    assert found, f'{metric} not in the tools/test.py output:\n{out[-3000:]}'
    assert found.group(1) != 'nan', found.group(0)
