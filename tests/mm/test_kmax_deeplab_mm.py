"""kMaX-DeepLab as an mmdet panoptic model: official checkpoint keys load into the registered
head, the head builds kMaX's targets from mmdet's panoptic data samples and trains on kMaX's
losses, the inference API predicts panoptic segments on a real image, and (``slow`` tier) the
full-size configs predict."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip('mmdet')

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmdet.structures.mask import BitmapMasks  # noqa: E402
from mmengine.structures import InstanceData, PixelData  # noqa: E402

from conftest import REPO, shared_data  # noqa: E402
from densekit.apis import inference, init_model  # noqa: E402
from densekit.models.heads.kmax_deeplab import KMaXPredictor, convert_official_kmax_deeplab  # noqa: E402,E501
from densekit.mm.heads.kmax_deeplab import KMaXDeepLabHead  # noqa: E402
from mmdet.evaluation.functional import INSTANCE_OFFSET  # noqa: E402

R50 = REPO / 'configs/kmax_deeplab/kmax-deeplab_r50_150k_coco-panoptic.py'
CONVNEXT = REPO / 'configs/kmax_deeplab/kmax-deeplab_convnext-t_150k_coco-panoptic.py'
FIXTURE = REPO / 'tests/fixtures/heads/kmax_deeplab_official.pt'
CRITERION_FIXTURE = REPO / 'tests/fixtures/heads/kmax_criterion_official.pt'


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
    """Every key of the official R50 head (``sem_seg_head.*``, with the auxiliary semantic head
    that the official trains with) lands on the R50 config's head after the converter, and none
    is missing."""
    spec = torch.load(FIXTURE, weights_only=False)['spec']
    official = {f'sem_seg_head.{k}': torch.zeros(s, dtype=getattr(torch, d)) for k, s, d, *_ in spec}
    aux = torch.load(CRITERION_FIXTURE, weights_only=False)['r50_semantic_head_keys']
    official.update({f'sem_seg_head.predictor._auxiliary_semantic_predictor.{k}':
                     torch.zeros(s, dtype=getattr(torch, d)) for k, s, d in aux})
    with torch.device('meta'):  # full-size head: keys and shapes only
        model = init_model(R50, device='meta', cfg_options={'model.backbone.init_cfg': None})
    state = convert_official_kmax_deeplab(official, prefix='')
    result = model.panoptic_head.kmax.load_state_dict(state, strict=True, assign=True)
    assert not result.missing_keys and not result.unexpected_keys


def _tiny_head(**kwargs) -> KMaXDeepLabHead:
    return KMaXDeepLabHead([8, 16, 24, 32], num_things_classes=3, num_stuff_classes=2,
                           num_queries=6, pixel_decoder_channels=(16, 16, 8, 8),
                           pixel_decoder_layers=(1, 1, 1, 1), transformer_decoder_layers=(1, 1, 1),
                           embed_dims=32, base_filters=16, num_heads=4, feedforward_channels=32,
                           pixel_head_channels=16, mask_channels=8, aux_semantic_channels=16,
                           aux_semantic_low_level_channels=(8, 8), **kwargs)


def _panoptic_sample(with_seg: bool = True) -> DetDataSample:
    """A 32 x 40 padded image: things 0 and 2 (instances), a crowd region of thing 1 (in
    gt_sem_seg only, as mmdet's LoadPanopticAnnotations leaves crowds), stuff 3 and 4,
    unlabelled and padded pixels 255."""
    sem = np.full((32, 40), 255, dtype=np.int64)
    things = np.zeros((2, 32, 40), dtype=np.uint8)
    things[0, 0:8, 0:12] = 1
    things[1, 8:16, 0:12] = 1
    sem[0:8, 0:12] = 0
    sem[8:16, 0:12] = 2
    sem[0:16, 12:20] = 1  # crowd
    sem[16:24, :] = 3
    sem[24:28, 0:20] = 4
    sample = DetDataSample(metainfo=dict(img_shape=(28, 40), pad_shape=(32, 40),
                                         batch_input_shape=(32, 40)))
    sample.gt_instances = InstanceData(labels=torch.tensor([0, 2]),
                                       masks=BitmapMasks(things, 32, 40))
    if with_seg:
        sample.gt_sem_seg = PixelData(sem_seg=torch.from_numpy(sem)[None])
    return sample


def test_panoptic_targets_follow_the_official_data_mapper():
    """Thing instances, then stuff regions, at every 4th pixel of the padded image; the crowd
    region, unlabelled and padded pixels are void in the semantic target."""
    head = _tiny_head()
    labels, masks, semantic = head.panoptic_targets([_panoptic_sample()], (8, 10))
    assert labels[0].tolist() == [0, 2, 3, 4]
    assert masks[0].shape == (4, 8, 10)
    expected = torch.full((8, 10), 255)
    expected[0:2, 0:3] = 0
    expected[2:4, 0:3] = 2
    expected[4:6, :] = 3
    expected[6:7, 0:5] = 4
    assert torch.equal(semantic[0], expected)
    assert all(torch.equal(m, semantic[0] == lab) for lab, m in zip(labels[0], masks[0]))


def test_head_trains_on_kmax_losses():
    torch.manual_seed(0)
    head = _tiny_head()
    feats = [torch.randn(2, c, 32 // s, 40 // s) for c, s in zip((8, 16, 24, 32), (4, 8, 16, 32))]
    losses = head.loss(feats, [_panoptic_sample(), _panoptic_sample()])
    names = ('loss_ce', 'loss_mask', 'loss_dice', 'loss_pixel_insdis')
    assert sorted(losses) == sorted([*names, 'loss_aux_semantic']
                                    + [f'{n}_{i}' for n in names for i in range(3)])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    aux = head.kmax.transformer_decoder.auxiliary_semantic_predictor
    assert aux.final_conv.conv.weight.grad.abs().sum() > 0


def test_head_bad_inputs_name_the_problem():
    feats = [torch.randn(1, c, 32 // s, 40 // s) for c, s in zip((8, 16, 24, 32), (4, 8, 16, 32))]
    with pytest.raises(ValueError, match='no gt_sem_seg'):
        _tiny_head().loss(feats, [_panoptic_sample(with_seg=False)])
    with pytest.raises(ValueError, match='train_cfg must be empty'):
        _tiny_head(train_cfg=dict(assigner=dict(type='HungarianAssigner')))
    with pytest.raises(ValueError, match='aux_semantic_head=True'):
        _tiny_head(aux_semantic_head=False)
    with pytest.raises(ValueError, match='criterion.num_classes'):
        _tiny_head(criterion=dict(num_classes=9))
    sample = _panoptic_sample()
    sample.gt_instances.labels = torch.tensor([0, 7])
    with pytest.raises(ValueError, match=r'labels must lie in \[0, num_things_classes=3\)'):
        _tiny_head().loss(feats, [sample])
    # without the auxiliary head and its loss, instance-only samples train (things only)
    feats = [torch.cat([f, f]) for f in feats]  # BatchNorm on the 1 x 1 stride-32 map: 2 images
    losses = _tiny_head(aux_semantic_head=False, criterion=dict(aux_semantic_weight=0.0)).loss(
        feats, [_panoptic_sample(with_seg=False)] * 2)
    assert losses['loss_pixel_insdis'] > 0
    assert 'loss_aux_semantic' not in losses and torch.isfinite(losses['loss_ce'])


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
