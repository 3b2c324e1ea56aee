"""kMaX-DeepLab as an mmdet panoptic model: official checkpoint keys load into the registered
head, the head builds kMaX's targets from mmdet's panoptic data samples and trains on kMaX's
losses, the head's predict and ``KMaXFusionHead`` give the official port's inference results in
mmdet's formats, the inference API predicts panoptic segments on a real image, and (``slow``
tier) the full-size configs predict."""
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
from mmdet.registry import MODELS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmdet.structures.mask import mask2bbox  # noqa: E402

R50 = REPO / 'configs/kmax_deeplab/kmax-deeplab_r50_150k_coco-panoptic.py'
CONVNEXT = REPO / 'configs/kmax_deeplab/kmax-deeplab_convnext-t_150k_coco-panoptic.py'
FIXTURE = REPO / 'tests/fixtures/heads/kmax_deeplab_official.pt'
POSTPROCESS_FIXTURE = REPO / 'tests/fixtures/heads/kmax_postprocess_official.pt'
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
            # random weights give masks near uniform over the 16 queries: a threshold of 1 / 16
            # puts every pixel in the mask of its most likely query
            'model.test_cfg.pixel_confidence_threshold': 1 / 16,
            # the official pads test images to the crop size: 161 for the tiny copy
            'model.data_preprocessor.test_batch_augments': [
                dict(type='BatchFixedSizePad', size=(161, 161), img_pad_value=0, pad_mask=False,
                     pad_seg=False)],
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


class _FixedLogits:
    """Stands in for the network in ``KMaXDeepLabHead.predict``: the fixture's stride-4 logits
    as the final prediction."""

    def __init__(self, classes, masks):
        self.out = [classes[None]], [masks[None]]

    def __call__(self, x, batch_data_samples):
        return self.out


def _mmdet_panoptic(ids: torch.Tensor, segments: list, num_classes: int) -> torch.Tensor:
    """The official ``(ids, segments_info)`` in mmdet's encoding (things numbered from 1)."""
    pan = torch.full_like(ids, num_classes)
    things = 0
    for seg in segments:
        things += seg['isthing']
        offset = things * INSTANCE_OFFSET if seg['isthing'] else 0
        pan[ids == seg['id']] = seg['category_id'] + offset
    return pan


@pytest.mark.parametrize('case', ['odd', 'even'])
def test_head_and_fusion_head_give_the_official_results(case):
    """Stride-4 logits through ``KMaXDeepLabHead.predict`` (upsampling to the padded input) and
    ``KMaXFusionHead.predict`` (crop, rescale, inference) equal the official eval forward's
    panoptic, semantic and instance results (fixture of tools/dev/make_kmax_postprocess_fixture.py;
    padded width odd: align_corners, even: not)."""
    fx = torch.load(POSTPROCESS_FIXTURE, weights_only=False)
    f = fx['forward'][case]
    sample = DetDataSample(metainfo=dict(batch_input_shape=f['padded'], img_shape=f['resized'],
                                         ori_shape=f['original']))
    cls, masks = KMaXDeepLabHead.predict(_FixedLogits(f['classes'], f['masks']), None, [sample])
    assert tuple(masks.shape[-2:]) == f['padded']
    things, stuff = fx['num_things_classes'], fx['num_stuff_classes']
    fusion = MODELS.build(dict(
        type='KMaXFusionHead', num_things_classes=things, num_stuff_classes=stuff,
        test_cfg=dict(panoptic_on=True, semantic_on=True, instance_on=True,
                      max_per_image=fx['topk'], **fx['settings']['coco'])))
    result, = fusion.predict(cls, masks, [sample], rescale=True)
    expected = _mmdet_panoptic(f['panoptic'], f['segments_info'], things + stuff)
    assert torch.equal(result['pan_results'].sem_seg[0], expected)
    assert (expected >= INSTANCE_OFFSET).sum() > 0 and (expected < things + stuff).sum() > 0
    assert torch.equal(sample.pred_sem_seg.sem_seg[0], f['semantic'].argmax(0))
    ours, theirs = result['ins_results'], f['instances']
    key = lambda labels, scores: torch.argsort(labels.double() * 10 - scores.double())  # noqa: E731
    o, t = key(ours.labels, ours.scores), key(theirs['labels'], theirs['scores'])
    assert len(o) == len(t) > 0
    assert torch.equal(ours.labels[o], theirs['labels'][t])
    assert torch.equal(ours.masks[o], theirs['masks'][t])
    torch.testing.assert_close(ours.scores[o], theirs['scores'][t], atol=1e-6, rtol=0)
    assert torch.equal(ours.bboxes, mask2bbox(ours.masks))


def test_fusion_head_refuses_maskformer_settings():
    with pytest.raises(ValueError, match="iou_thr"):
        MODELS.build(dict(type='KMaXFusionHead', test_cfg=dict(iou_thr=0.8)))
    with pytest.raises(ValueError, match='class_threshold_stuff'):
        MODELS.build(dict(type='KMaXFusionHead', test_cfg=dict(class_threshold_stuff=2.0)))


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
    # an untrained kMaX gives every query 0.9 on void (the official class-logit prior): no real
    # class passes the class thresholds, all void
    pan = inference(model, image).pred_panoptic_seg.sem_seg[0]
    assert tuple(pan.shape) == image.shape[:2]
    assert (pan == 133).all()
    # without the prior and with no class / overlap threshold, random queries win the pixels:
    # segments of real classes come out
    for module in model.modules():
        if isinstance(module, KMaXPredictor):
            module.void_prior = 0.0
    model.panoptic_fusion_head.inference_cfg.update(
        class_threshold_thing=0.0, class_threshold_stuff=0.0, overlap_threshold=0.0)
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


@pytest.mark.slow
def test_show_dir_draws_kmax_panoptic_panels(tmp_path):
    """``tools/test.py --show-dir`` on the ConvNeXt-T recipe's tiny copy (random weights, generated
    COCO panoptic data): one ``ground truth | prediction`` picture per image, segments drawn."""
    import subprocess
    import sys

    from mmengine.config import Config

    from config_demo_data import make_coco  # tools/dev
    from densekit.mm.visualization import LABEL_HEIGHT
    from tiny_configs import build_model, tiny  # tools/dev
    sys.path.insert(0, str(REPO / 'tests' / 'engine'))
    from tiny_seg import env_with_hooks

    make_coco(tmp_path)
    cfg = tiny(Config.fromfile(str(CONVNEXT)), tmp_path)
    for name in ('val_dataloader', 'test_dataloader'):
        cfg[name].num_workers, cfg[name].persistent_workers = 0, False
    torch.manual_seed(0)
    torch.save({'state_dict': build_model(cfg).state_dict(), 'meta': {}}, tmp_path / 'tiny.pth')
    cfg.dump(str(tmp_path / 'tiny.py'))
    queries = cfg.model.panoptic_head.num_queries
    # random weights: every pixel in its most likely query's mask, no query rejected
    options = [f'model.test_cfg.pixel_confidence_threshold={1 / queries}',
               'model.test_cfg.class_threshold_thing=0.0',
               'model.test_cfg.class_threshold_stuff=0.0', 'model.test_cfg.overlap_threshold=0.0']
    r = subprocess.run([sys.executable, str(REPO / 'tools' / 'test.py'), str(tmp_path / 'tiny.py'),
                        str(tmp_path / 'tiny.pth'), '--work-dir', str(tmp_path / 'work'),
                        '--show-dir', str(tmp_path / 'show'), '--cfg-options', *options],
                       cwd=tmp_path, env=env_with_hooks(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    drawn = sorted((tmp_path / 'show').iterdir())
    assert [p.name for p in drawn] == ['000000000001.png', '000000000002.png']
    out = cv2.imread(str(drawn[0]))[..., ::-1]
    width = out.shape[1] // 2
    image = cv2.imread(str(tmp_path / 'coco' / 'val2017' / '000000000001.jpg'))[..., ::-1]
    pred = cv2.resize(out[LABEL_HEIGHT:, width:], image.shape[1::-1],
                      interpolation=cv2.INTER_NEAREST).astype(int)
    assert (abs(pred - image).max(-1) > 30).mean() > 0.5  # segments coloured over the image
