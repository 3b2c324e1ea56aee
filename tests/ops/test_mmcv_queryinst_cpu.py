"""A freshly initialised QueryInst trains a step and predicts on CPU.

A random QueryInst refines boxes into inverted ones (x2 < x1): its mask targets then need RoIAlign
on inverted RoIs, and its CPU mask pasting (mmdet's ``_do_paste_mask(skip_empty=True)``) an
inverted pixel range; densekit makes both behave as mmcv's / mmdet's GPU paths do.
"""
from __future__ import annotations

import copy
import math
import os

import pytest
import torch

from mmcv_parity import require_portable_ext

mmdet = pytest.importorskip('mmdet')


def test_paste_mask_inverted_box_takes_the_gpu_path():
    import densekit  # noqa: F401  (installs the patch)
    from mmdet.models.roi_heads.mask_heads import fcn_mask_head
    paste = fcn_mask_head._do_paste_mask
    assert getattr(paste, '__densekit__', False)
    masks = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    inverted = torch.tensor([[40.0, 30.0, 12.0, 8.0]])
    with pytest.raises(RuntimeError):
        paste.__wrapped__(masks, inverted, 50, 60, skip_empty=True)
    got, where = paste(masks, inverted, 50, 60, skip_empty=True)
    gpu, _ = paste.__wrapped__(masks, inverted, 50, 60, skip_empty=False)
    assert where == () and torch.equal(got, gpu)
    assert got.abs().sum() > 0  # grid_sample reads the (mirrored) mask between the corners
    # Ordinary boxes keep mmdet's CPU path (a tight region).
    box = torch.tensor([[10.0, 8.0, 30.5, 22.0]])
    got, where = paste(masks, box, 50, 60, skip_empty=True)
    ref, ref_where = paste.__wrapped__(masks, box, 50, 60, skip_empty=True)
    assert where == ref_where and torch.equal(got, ref)


def _small_queryinst():
    from mmengine.config import Config
    cfg_path = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs', 'queryinst',
                            'queryinst_r50_fpn_1x_coco.py')
    if not os.path.exists(cfg_path):
        pytest.skip('mmdet was installed without its configs (.mim/configs)')
    cfg = copy.deepcopy(Config.fromfile(cfg_path).model)
    cfg.backbone.update(depth=18, init_cfg=None)
    cfg.neck.in_channels = [64, 128, 256, 512]
    cfg.rpn_head.num_proposals = 20
    stages = 2
    roi = cfg.roi_head
    roi.num_stages = stages
    roi.stage_loss_weights = roi.stage_loss_weights[:stages]
    roi.bbox_head = roi.bbox_head[:stages]
    roi.mask_head = roi.mask_head[:stages]
    cfg.train_cfg.rcnn = cfg.train_cfg.rcnn[:stages]
    cfg.test_cfg.rcnn.max_per_img = 20
    return cfg


def test_queryinst_trains_and_predicts_on_cpu(monkeypatch):
    require_portable_ext()
    from densekit.compat import mmdet_cpu
    inverted = []

    def spy(boxes, img_h, img_w):
        inverted.append(mmdet_cpu._tight_region_inverted.__wrapped__(boxes, img_h, img_w))
        return inverted[-1]
    spy.__wrapped__ = mmdet_cpu._tight_region_inverted
    monkeypatch.setattr(mmdet_cpu, '_tight_region_inverted', spy)
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    from mmengine.optim import build_optim_wrapper
    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(_small_queryinst())
    model.init_weights()
    packed = demo_mm_inputs(2, [[3, 128, 128], [3, 125, 130]], with_mask=True)
    optim_wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4)))
    model.train()
    log_vars = model.train_step(packed, optim_wrapper)
    assert 's0.loss_mask' in log_vars and 's1.loss_mask' in log_vars
    for k, v in log_vars.items():
        assert math.isfinite(float(torch.as_tensor(v).detach())), (k, v)
    model.eval()
    with torch.no_grad():
        results = model.val_step(packed)
    for res, shape in zip(results, ((128, 128), (125, 130))):
        pred = res.pred_instances
        assert len(pred) == 20
        assert tuple(pred.masks.shape[1:]) == shape
    assert any(inverted), 'a fresh QueryInst predicts inverted boxes; none was pasted'
