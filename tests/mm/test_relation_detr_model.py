"""Relation DETR as an mmdet detector: losses of every branch, gradients through the relation
bias and the hybrid branch, the loss's mmdet reduction, and prediction through the inference API.

The Swin-T config trains one step and evaluates in tests/configs/test_configs.py; the R50 config
(mmdet's ResNet, not a densekit backbone family) is exercised here on a narrow copy (ResNet-18
layout at 16 base channels, 64-wide transformer, two decoder layers so the relation bias takes
part). Full-size configs build and predict with random weights in the slow tier.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip('mmdet')

import densekit  # noqa: E402,F401
from mmengine.config import Config, ConfigDict  # noqa: E402

from tiny_configs import narrow_heads, shrink_images  # noqa: E402  (tools/dev)

REPO = Path(__file__).resolve().parents[2]
R50 = REPO / 'configs/relation_detr/relation-detr_r50_12e_coco.py'
SWIN_T = REPO / 'configs/relation_detr/relation-detr_swin-t_12e_coco.py'
DEMO = REPO.parent / 'shared' / 'data' / 'demo' / 'demo.png'


def _narrow_r50() -> Config:
    cfg = Config.fromfile(str(R50))
    backbone = ConfigDict(type='ResNet', depth=18, base_channels=16, num_stages=4,
                          out_indices=(1, 2, 3), frozen_stages=1,
                          norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True,
                          style='pytorch', init_cfg=None)
    cfg.model.pop('backbone')
    narrow_heads(cfg.model)
    cfg.model.backbone = backbone
    cfg.model.neck.in_channels = [32, 64, 128]
    cfg.model.decoder.num_layers = 2
    cfg.test_dataloader = shrink_images(cfg.test_dataloader)
    return cfg


@pytest.fixture(scope='module')
def model():
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    torch.manual_seed(0)
    m = MODELS.build(_narrow_r50().model)
    m.init_weights()
    return m


def test_losses_and_gradients_of_every_branch(model):
    from mmdet.testing import demo_mm_inputs
    torch.manual_seed(0)
    data = demo_mm_inputs(2, [(3, 64, 80), (3, 48, 64)], num_items=[3, 2], num_classes=80)
    data = model.data_preprocessor(data, True)
    model.train()
    model.zero_grad()
    losses = model.loss(data['inputs'], data['data_samples'])
    for prefix in ('', 'd0.', 'enc_', 'dn_', 'hybrid.', 'hybrid.d0.', 'hybrid.enc_'):
        for name in ('loss_cls', 'loss_bbox', 'loss_iou'):
            assert f'{prefix}{name}' in losses, (prefix + name, sorted(losses))
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    for name in ('decoder.position_relation_embedding.pos_proj.weight',
                 'hybrid_query_embedding.weight', 'bbox_head.hybrid_cls_branch.weight',
                 'bbox_head.hybrid_reg_branch.4.weight', 'encoder.memory_fusion.0.weight',
                 'decoder.query_scale.layers.0.weight'):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_varifocal_loss_reduction(model):
    from densekit.models.heads.relation_detr import varifocal_loss
    loss_cls = model.bbox_head.loss_cls
    logits = torch.randn(12, 80)
    labels = torch.tensor([3, 80, 80, 7, 80, 80, 0, 80, 80, 80, 79, 80])
    iou = torch.rand(12) * (labels < 80)
    got = loss_cls(logits, (labels, iou), torch.ones(12), avg_factor=4.0)
    torch.testing.assert_close(got, varifocal_loss(logits, labels, iou).sum() / 4.0)


@pytest.mark.skipif(not DEMO.is_file(), reason='shared sample data not present')
def test_inference_api_on_a_real_image_narrow_r50():
    from densekit.apis import inference, init_model
    cfg = _narrow_r50()
    m = init_model(cfg)
    torch.manual_seed(0)
    m.init_weights()
    _check_prediction(inference(m, str(DEMO)), cfg.model.test_cfg.max_per_img)


def _check_prediction(sample, max_per_img: int) -> None:
    h, w = sample.ori_shape
    inst = sample.pred_instances
    assert inst.bboxes.shape == (max_per_img, 4) and torch.isfinite(inst.bboxes).all()
    assert (inst.bboxes[:, 2] <= w + 1e-3).all() and (inst.bboxes[:, 3] <= h + 1e-3).all()
    assert (inst.scores[:-1] >= inst.scores[1:]).all()


@pytest.mark.slow
@pytest.mark.skipif(not DEMO.is_file(), reason='shared sample data not present')
@pytest.mark.parametrize('config', [R50, SWIN_T], ids=['r50', 'swin-t'])
def test_full_size_config_predicts_a_real_image(config):
    from densekit.apis import inference, init_model
    m = init_model(config)
    assert type(m).__name__ == 'RelationDETR'
    assert m.decoder.num_layers == 6 and m.num_queries == 900 and m.hybrid_num_queries == 1500
    with torch.no_grad():
        sample = inference(m, str(DEMO))
    _check_prediction(sample, 300)
