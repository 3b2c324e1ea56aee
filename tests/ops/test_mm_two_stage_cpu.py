"""mmdet 3.3's two-stage detectors on CPU with densekit's portable mmcv ops.

mmdet's own detector tests of these configs return early without CUDA, so on a CPU machine they
check nothing past construction. These tests check the same things on CPU: the config's detector
(ResNet-18 backbone, no pretrained weights) builds with its parts, ``rpn_head.num_classes`` is
forced to 1, a loss step on two images of different sizes returns a dict of finite losses that
backpropagate, and prediction returns one ``DetDataSample`` per image with boxes (and masks) of
consistent shapes.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmdet')

import densekit  # noqa: E402,F401  (installs the portable mmcv._ext)

BBOX_CONFIGS = [
    'faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    'cascade_rcnn/cascade-rcnn_r50_fpn_1x_coco.py',
    'sparse_rcnn/sparse-rcnn_r50_fpn_1x_coco.py',
]
MASK_CONFIGS = [
    'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    'cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
    'queryinst/queryinst_r50_fpn_1x_coco.py',
]
ALL = [(c, False) for c in BBOX_CONFIGS] + [(c, True) for c in MASK_CONFIGS]
IDS = [c.split('/')[1].replace('_r50_fpn_1x_coco.py', '') for c, _ in ALL]
# A ResNet-18 + FPN loss step takes tens of seconds on one CPU core: the loss steps and the
# prediction of the cascades / query-based detectors run in the slow tier; Faster / Mask R-CNN
# prediction stays in the default one (QueryInst's loss + predict also runs there, smaller, in
# test_mmcv_queryinst_cpu.py).
FAST_PREDICT = {'faster-rcnn', 'mask-rcnn'}
SLOW_ALL = [pytest.param(*a, id=i, marks=pytest.mark.slow) for a, i in zip(ALL, IDS)]
PREDICT = [pytest.param(*a, id=i, marks=[] if i in FAST_PREDICT else [pytest.mark.slow])
           for a, i in zip(ALL, IDS)]


def _small_cfg(cfg_file: str):
    import mmdet
    from mmengine.config import Config
    from mmdet.utils import register_all_modules
    register_all_modules()
    # the installed package keeps its configs under .mim (mmdet.testing looks for a source tree)
    path = Path(mmdet.__file__).parent / '.mim' / 'configs' / cfg_file
    if not path.exists():
        pytest.skip(f'mmdet config {cfg_file} not installed')
    cfg = copy.deepcopy(Config.fromfile(str(path)).model)
    cfg.backbone.depth = 18
    cfg.neck.in_channels = [64, 128, 256, 512]
    cfg.backbone.init_cfg = None
    return cfg


def _build(cfg):
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    return MODELS.build(cfg)


@pytest.mark.parametrize('cfg_file,with_mask', ALL, ids=IDS)
def test_two_stage_builds(cfg_file, with_mask):
    cfg = _small_cfg(cfg_file)
    det = _build(cfg)
    assert det.backbone and det.neck and det.rpn_head and det.roi_head
    if with_mask:
        assert det.roi_head.mask_head
    if hasattr(cfg.rpn_head, 'num_classes'):
        cfg.rpn_head.num_classes = 2
        assert _build(cfg).rpn_head.num_classes == 1


@pytest.mark.parametrize('cfg_file,with_mask', SLOW_ALL)
def test_two_stage_loss_on_cpu(cfg_file, with_mask):
    from mmdet.testing import demo_mm_inputs
    det = _build(_small_cfg(cfg_file))
    packed = demo_mm_inputs(2, [[3, 128, 128], [3, 125, 130]], with_mask=with_mask)
    data = det.data_preprocessor(packed, True)
    losses = det.forward(**data, mode='loss')
    assert isinstance(losses, dict) and losses
    total = 0
    for name, value in losses.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            assert torch.isfinite(v).all(), name
            if 'loss' in name:
                total = total + v.sum()
    if with_mask:
        assert any('mask' in name for name in losses), sorted(losses)
    total.backward()
    grads = [p.grad for p in det.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize('cfg_file,with_mask', PREDICT)
def test_two_stage_predict_on_cpu(cfg_file, with_mask):
    from mmdet.structures import DetDataSample
    from mmdet.testing import demo_mm_inputs
    det = _build(_small_cfg(cfg_file))
    sizes = [[3, 256, 256], [3, 255, 260]] if with_mask else [[3, 128, 128], [3, 125, 130]]
    packed = demo_mm_inputs(2, sizes)
    data = det.data_preprocessor(packed, False)
    det.eval()
    with torch.no_grad():
        results = det.forward(**data, mode='predict')
    assert len(results) == 2
    for res, size in zip(results, sizes):
        assert isinstance(res, DetDataSample)
        inst = res.pred_instances
        n = len(inst)
        assert inst.bboxes.shape == (n, 4) and inst.scores.shape == (n,)
        assert torch.isfinite(inst.bboxes).all() and torch.isfinite(inst.scores).all()
        if with_mask:
            assert inst.masks.shape[0] == n
