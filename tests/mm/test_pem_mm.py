"""PEM as an mmseg model: official checkpoint keys load into the registered head, the inference
API predicts on a real image, and (``slow`` tier) the full-size configs predict."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip('mmseg')

import cv2  # noqa: E402

from conftest import REPO, shared_data  # noqa: E402
from densekit.apis import inference, init_model  # noqa: E402
from densekit.models.heads.pem import convert_official_pem  # noqa: E402

R50 = REPO / 'configs/pem/pem_r50_160k_ade20k-512x512.py'
CONVNEXT = REPO / 'configs/pem/pem_convnext-t_160k_ade20k-512x512.py'
FIXTURE = REPO / 'tests/fixtures/heads/pem_official.pt'


def _tiny_options() -> dict:
    from densekit.models import build_backbone
    bb = build_backbone('convnext_test', out_indices=(0, 1, 2, 3))
    return {'model.backbone': dict(_delete_=True, type='convnext_test', out_indices=(0, 1, 2, 3)),
            'model.decode_head.in_channels': [f['num_chs'] for f in bb.feature_info],
            'model.decode_head.feedforward_channels': 64, 'model.decode_head.num_layers': 2,
            'test_dataloader.dataset.pipeline': [
                dict(type='LoadImageFromFile'), dict(type='Resize', scale=(256, 64), keep_ratio=True),
                dict(type='PackSegInputs')]}


def test_official_checkpoint_keys_load_into_the_registered_head():
    """Every key of the official R50 head (``sem_seg_head.*``) lands on the R50 config's head
    after the converter, and none is missing."""
    spec = torch.load(FIXTURE, weights_only=False)['spec']
    official = {f'sem_seg_head.{k}': torch.zeros(s, dtype=getattr(torch, d)) for k, s, d, *_ in spec}
    model = init_model(R50, cfg_options={'model.backbone.depth': 18,
                                         'model.backbone.init_cfg': None})
    state = {k[len('decode_head.'):]: v for k, v in convert_official_pem(official).items()}
    result = model.decode_head.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_inference_api_predicts_a_real_image():
    image = cv2.resize(cv2.imread(str(shared_data('demo') / 'demo.png')), (256, 128))
    model = init_model(CONVNEXT, cfg_options=_tiny_options())
    sample = inference(model, image)
    assert tuple(sample.pred_sem_seg.data.shape) == (1,) + image.shape[:2]
    assert sample.seg_logits.data.shape[0] == 150
    assert torch.isfinite(sample.seg_logits.data).all()


@pytest.mark.slow
@pytest.mark.parametrize('config', [R50, CONVNEXT], ids=lambda p: p.stem)
def test_full_size_config_predicts_a_real_image(config):
    image = cv2.imread(str(shared_data('demo') / 'demo.png'))
    model = init_model(config, cfg_options={'model.backbone.init_cfg': None})  # random weights
    sample = inference(model, image)
    assert tuple(sample.pred_sem_seg.data.shape) == (1,) + image.shape[:2]
    assert torch.isfinite(sample.seg_logits.data).all()
