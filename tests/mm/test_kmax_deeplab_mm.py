"""kMaX-DeepLab as an mmdet panoptic model: official checkpoint keys load into the registered
head, the inference API predicts panoptic segments on a real image, and (``slow`` tier) the
full-size configs predict."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip('mmdet')

import cv2  # noqa: E402

from conftest import REPO, shared_data  # noqa: E402
from densekit.apis import inference, init_model  # noqa: E402
from densekit.models.heads.kmax_deeplab import KMaXPredictor, convert_official_kmax_deeplab  # noqa: E402,E501
from mmdet.evaluation.functional import INSTANCE_OFFSET  # noqa: E402

R50 = REPO / 'configs/kmax_deeplab/kmax-deeplab_r50_150k_coco-panoptic.py'
CONVNEXT = REPO / 'configs/kmax_deeplab/kmax-deeplab_convnext-t_150k_coco-panoptic.py'
FIXTURE = REPO / 'tests/fixtures/heads/kmax_deeplab_official.pt'


def _tiny_options() -> dict:
    from densekit.models import build_backbone
    bb = build_backbone('convnext_test', out_indices=(0, 1, 2, 3))
    head = 'model.panoptic_head.'
    return {'model.backbone': dict(_delete_=True, type='convnext_test', out_indices=(0, 1, 2, 3)),
            head + 'in_channels': [f['num_chs'] for f in bb.feature_info],
            head + 'pixel_decoder_channels': [32, 16, 8, 8],
            head + 'pixel_decoder_layers': [1, 1, 1, 1],
            head + 'transformer_decoder_layers': [1, 1, 1],
            head + 'num_queries': 16, head + 'embed_dims': 32, head + 'base_filters': 16,
            head + 'feedforward_channels': 32, head + 'pixel_head_channels': 16,
            head + 'mask_channels': 16,
            # random weights score low: keep every query's mask so that segments exist
            'model.test_cfg.iou_thr': 0.0, 'model.test_cfg.object_mask_thr': 0.0,
            'test_dataloader.dataset.pipeline': [
                dict(type='LoadImageFromFile'), dict(type='Resize', scale=(161, 161), keep_ratio=True),
                dict(type='PackDetInputs',
                     meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]}


def test_official_checkpoint_keys_load_into_the_registered_head():
    """Every key of the official R50 head (``sem_seg_head.*``) lands on the R50 config's head
    after the converter, and none is missing."""
    spec = torch.load(FIXTURE, weights_only=False)['spec']
    official = {f'sem_seg_head.{k}': torch.zeros(s, dtype=getattr(torch, d)) for k, s, d, *_ in spec}
    with torch.device('meta'):  # full-size head: keys and shapes only
        model = init_model(R50, device='meta', cfg_options={'model.backbone.init_cfg': None})
    state = convert_official_kmax_deeplab(official, prefix='')
    result = model.panoptic_head.kmax.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_inference_api_predicts_a_real_image():
    image = cv2.resize(cv2.imread(str(shared_data('demo') / 'demo.png')), (256, 128))
    torch.manual_seed(0)
    model = init_model(CONVNEXT, cfg_options=_tiny_options())
    assert len(model.dataset_meta['classes']) == 133
    # an untrained kMaX gives every query 0.9 on void (the official class-logit prior): all void
    pan = inference(model, image).pred_panoptic_seg.sem_seg[0]
    assert tuple(pan.shape) == image.shape[:2]
    assert (pan == 133).all()
    # without the prior, random queries win the pixels: segments of real classes come out
    for module in model.modules():
        if isinstance(module, KMaXPredictor):
            module.void_prior = 0.0
    pan = inference(model, image).pred_panoptic_seg.sem_seg[0]
    labels = (pan % INSTANCE_OFFSET).unique()  # mmdet's ids: class + instance * INSTANCE_OFFSET
    assert ((labels >= 0) & (labels <= 133)).all()
    assert (labels < 133).any(), 'no segment predicted'


@pytest.mark.slow
@pytest.mark.parametrize('config', [R50, CONVNEXT], ids=lambda p: p.stem)
def test_full_size_config_predicts_a_real_image(config):
    image = cv2.imread(str(shared_data('demo') / 'demo.png'))
    model = init_model(config, cfg_options={'model.backbone.init_cfg': None})  # random weights
    sample = inference(model, image)
    assert tuple(sample.pred_panoptic_seg.sem_seg.shape[-2:]) == image.shape[:2]
