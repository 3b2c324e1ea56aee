"""VWFormer as an mmseg model: official checkpoints load, the inference API predicts on a real
image, and (``slow`` tier) the head learns the synthetic ADE20K-layout set."""
from __future__ import annotations


import pytest
import torch

pytest.importorskip('mmseg')

import cv2  # noqa: E402

from conftest import REPO, shared_data  # noqa: E402
from densekit.apis import inference, init_model  # noqa: E402
from densekit.models.heads.vwformer import convert_official_vw_head  # noqa: E402

CONFIG = REPO / 'configs/vwformer/vwformer_convnext-t_160k_ade20k-512x512.py'
FIXTURE = REPO / 'tests/fixtures/heads/vwformer_official.pt'
# The ConvNeXt-T config with the tiny backbone, a 64-channel head and the test resize / 8.
TINY = {'model.backbone': dict(_delete_=True, type='convnext_test', out_indices=(0, 1, 2, 3)),
        'model.decode_head.in_channels': None, 'model.decode_head.channels': 64,
        'test_dataloader.dataset.pipeline': [
            dict(type='LoadImageFromFile'), dict(type='Resize', scale=(256, 64), keep_ratio=True),
            dict(type='ResizeToMultiple', size_divisor=64), dict(type='PackSegInputs')]}


def _tiny_options() -> dict:
    from densekit.models import build_backbone
    bb = build_backbone('convnext_test', out_indices=(0, 1, 2, 3))
    return dict(TINY, **{'model.decode_head.in_channels': [f['num_chs'] for f in bb.feature_info]})


def test_official_checkpoint_keys_load_into_the_registered_head():
    """Every key of an official VWHead segmentor checkpoint lands on a parameter / buffer of the
    ConvNeXt-T config's head after the converter, and none is missing."""
    spec = torch.load(FIXTURE, weights_only=False)['results']['eval']['spec']
    official = {f'decode_head.{k}': torch.zeros(s, dtype=getattr(torch, d)) for k, s, d, *_ in spec}
    model = init_model(CONFIG, cfg_options={'model.backbone': dict(
        _delete_=True, type='convnext_test', out_indices=(0, 1, 2, 3))})
    head = model.decode_head
    state = {k[len('decode_head.'):]: v for k, v in convert_official_vw_head(official).items()}
    result = head.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_inference_api_predicts_a_real_image():
    # a quarter-size copy: the 150-class logits are resized back to the image before the argmax
    image = cv2.resize(cv2.imread(str(shared_data('demo') / 'demo.png')), (256, 128))
    model = init_model(CONFIG, cfg_options=_tiny_options())
    sample = inference(model, image)
    assert tuple(sample.pred_sem_seg.data.shape) == (1,) + image.shape[:2]
    assert sample.seg_logits.data.shape[0] == 150
    assert 0 <= int(sample.pred_sem_seg.data.min()) and int(sample.pred_sem_seg.data.max()) < 150


@pytest.mark.slow
@pytest.mark.parametrize('config', sorted((REPO / 'configs/vwformer').glob('*.py')),
                         ids=lambda p: p.stem)
def test_full_size_config_predicts_a_real_image(config):
    image = cv2.imread(str(shared_data('demo') / 'demo.png'))
    model = init_model(config)  # random weights; no pretrained backbone is fetched
    sample = inference(model, image)
    assert tuple(sample.pred_sem_seg.data.shape) == (1,) + image.shape[:2]
    assert torch.isfinite(sample.seg_logits.data).all()


@pytest.mark.slow
def test_vwformer_learns_the_synthetic_ade_set(tmp_path):
    """The quickstart segmentation recipe (half-width ResNet-18, synthetic ADE20K layout) with
    VWFormer in place of the FPN neck and head, trained for half its schedule, against itself
    untrained."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    from densekit.datasets.synthetic import make_demo_data
    make_demo_data(tmp_path / 'data', kind='ade', num_train=200, num_val=50)
    cfg = Config.fromfile(REPO / 'configs/quickstart/fpn_r18_synthetic-ade.py')
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = f'{tmp_path}/data/ade/'
    cfg.model.pop('neck')
    cfg.model.decode_head = dict(
        type='VWFormerHead', in_channels=[32, 64, 128, 256], channels=64, num_heads=1,
        dropout_ratio=0.1, num_classes=cfg.num_classes, norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))
    iters = 150  # half the quickstart schedule
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = iters
    cfg.param_scheduler[1].end = iters
    cfg.work_dir = str(tmp_path / 'work')
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1)
    runner = Runner.from_cfg(cfg)
    untrained = runner.val()
    runner.train()
    trained = runner.val()
    print(f'untrained: {untrained}\ntrained: {trained}')
    # Observed: 0.37 -> 27.75 mIoU (CPU, seed 0); demand most of that gain.
    assert trained['mIoU'] >= untrained['mIoU'] + 20.0, (untrained['mIoU'], trained['mIoU'])
