"""mmdet's DyHead on densekit's portable mmcv ops: forward + backward, and the ATSS-DyHead config
training one step and predicting on generated COCO data (CPU).

DyHead's scale-aware block runs the deformable conv of level ``l + 1`` with the offset / mask
computed on the 2x larger level ``l``; mmcv's kernels read them by the output size (golden parity
in ``test_mmcv_deform_conv_edges.py``).
"""
from __future__ import annotations

import copy
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmcv_parity import require_portable_ext

pytest.importorskip('mmdet')

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'configs' / 'dyhead' / 'atss_swin-t_fpn_dyhead_1x_coco.py'


def test_dyhead_forward_backward():
    require_portable_ext()
    from mmdet.models.necks import DyHead
    torch.manual_seed(0)
    neck = DyHead(in_channels=8, out_channels=16, num_blocks=2, zero_init_offset=False)
    feats = [torch.rand(2, 8, 16, 16, requires_grad=True),
             torch.rand(2, 8, 8, 8, requires_grad=True),
             torch.rand(2, 8, 4, 4, requires_grad=True)]
    outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [(2, 16, 16, 16), (2, 16, 8, 8), (2, 16, 4, 4)]
    sum((o * torch.randn_like(o)).sum() for o in outs).backward()
    for f in feats:
        assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    offset_conv = neck.dyhead_blocks[0].spatial_conv_offset
    assert offset_conv.weight.grad.abs().sum() > 0
    for name, p in neck.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_dyhead_four_levels_three_blocks_keep_shapes():
    """What mmdet's own neck test checks (four levels 64..8, three blocks): one output per level,
    ``out_channels`` channels at the input's size; a bare tensor (not a list) is refused."""
    require_portable_ext()
    from mmdet.models.necks import DyHead
    sizes = [64 >> i for i in range(4)]
    feats = [torch.rand(1, 8, s, s) for s in sizes]
    neck = DyHead(in_channels=8, out_channels=16, num_blocks=3)
    outs = neck(feats)
    assert len(outs) == len(feats)
    for out, s in zip(outs, sizes):
        assert tuple(out.shape) == (1, 16, s, s)
        assert torch.isfinite(out).all()
    with pytest.raises(AssertionError):
        neck(torch.rand(1, 8, 4, 4))


def test_dyhead_oversized_offset_gradient_tail_is_zero():
    """The offset of the larger level reaches ``spatial_conv_high`` of the smaller one: the
    elements past ``out_h * out_w`` per channel block are never read, so get no gradient."""
    require_portable_ext()
    from mmcv.ops import ModulatedDeformConv2d
    conv = ModulatedDeformConv2d(4, 4, 3, padding=1)
    x = torch.randn(2, 4, 5, 6)
    offset = torch.randn(2, 18, 10, 12, requires_grad=True)
    mask = torch.rand(2, 9, 10, 12, requires_grad=True)
    conv(x, offset, mask).sum().backward()
    assert offset.grad.flatten(1)[:, 18 * 30:].abs().max() == 0
    assert mask.grad.flatten(1)[:, 9 * 30:].abs().max() == 0
    assert offset.grad.flatten(1)[:, :18 * 30].abs().sum() > 0


def _tiny_atss_dyhead(cfg, root: Path):
    from densekit.models import build_backbone
    cfg = copy.deepcopy(cfg)
    bb = dict(type='swin_test', out_indices=tuple(cfg.model.backbone.out_indices))
    kwargs = {k: v for k, v in bb.items() if k != 'type'}
    chans = [build_backbone(bb['type'], **kwargs).feature_info[i]['num_chs']
             for i in bb['out_indices']]
    cfg.model.backbone = bb
    fpn, dyhead = cfg.model.neck
    fpn.in_channels, fpn.out_channels = chans, 32
    dyhead.in_channels = dyhead.out_channels = 32
    dyhead.num_blocks = 2
    head = cfg.model.bbox_head
    head.in_channels = head.feat_channels = 32
    head.num_classes = 80
    cfg.model.test_cfg.score_thr = 0.0
    cfg.model.test_cfg.nms_pre = 50
    for loader in ('train_dataloader', 'val_dataloader'):
        ds = cfg[loader].dataset
        ds.data_root = str(root / 'coco') + '/'
        for t in ds.pipeline:
            if t.type == 'Resize':
                t.scale = (128, 96)
        ds.filter_cfg = None if loader == 'val_dataloader' else dict(filter_empty_gt=True,
                                                                   min_size=0)
    return cfg


def test_atss_dyhead_config_trains_one_step_and_predicts(tmp_path):
    require_portable_ext()
    sys.path.insert(0, str(REPO / 'tests' / 'configs'))
    try:
        from config_demo_data import make_coco
    finally:
        sys.path.pop(0)
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    import densekit  # noqa: F401

    make_coco(tmp_path)
    cfg = _tiny_atss_dyhead(Config.fromfile(str(CONFIG)), tmp_path)
    init_default_scope('mmdet')
    from mmdet.registry import DATASETS, MODELS
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    train_set = DATASETS.build(dict(cfg.train_dataloader.dataset, serialize_data=False))
    batch = pseudo_collate([train_set[0], train_set[1]])
    before = [p.detach().clone() for p in model.neck[1].parameters()]
    model.train()
    log_vars = model.train_step(batch, optim_wrapper)
    assert {'loss_cls', 'loss_bbox', 'loss_centerness'} <= set(log_vars)
    for k, v in log_vars.items():
        assert math.isfinite(float(torch.as_tensor(v).detach())), (k, v)
    changed = [not torch.equal(a, b) for a, b in zip(before, model.neck[1].parameters())]
    assert all(changed), 'a DyHead parameter did not change in the step'
    for n, p in model.named_parameters():
        assert torch.isfinite(p).all(), n

    val_set = DATASETS.build(dict(cfg.val_dataloader.dataset, serialize_data=False))
    model.eval()
    with torch.no_grad():
        out = model.val_step(pseudo_collate([val_set[0]]))
    pred = out[0].pred_instances
    assert pred.bboxes.shape[1] == 4 and len(pred.bboxes) > 0
    assert torch.isfinite(pred.bboxes).all()


@pytest.mark.slow  # Swin-T + FPN + six DyHead blocks at 800x1333 on the CPU
def test_full_size_atss_dyhead_predicts_a_real_image_through_the_inference_api():
    """The shipped config, random weights, through densekit.apis (as the other seed heads)."""
    require_portable_ext()
    import cv2
    from conftest import shared_data
    from densekit.apis import inference, init_model
    image = cv2.imread(str(shared_data('demo') / 'demo.png'))
    model = init_model(CONFIG, cfg_options={'model.backbone.init_cfg': None})
    sample = inference(model, image)
    boxes = sample.pred_instances.bboxes
    assert boxes.dim() == 2 and boxes.shape[1] == 4 and torch.isfinite(boxes).all()
    assert len(sample.pred_instances.scores) == len(boxes)
