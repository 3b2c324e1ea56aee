"""Real sample data (``../shared/data``) through our configs' mmdet / mmseg pipelines.

Ground truth fed back as predictions must score perfectly (COCO bbox / segm AP 1.0, mIoU 100):
that checks the whole path from the annotation files through loading, the transforms and the
metric's coordinate conventions. A short train on the balloon set checks the training path on
real images. Every test skips when the shared folder is absent (a fresh clone).
"""
import copy

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

import densekit  # noqa: E402,F401  (portable ops, registries)
from conftest import REPO, shared_data  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import DefaultScope  # noqa: E402

DET_BASE = REPO / 'configs' / '_base_' / 'datasets' / 'coco_instance.py'


def _det_dataset(root, ann_file, img_dir, classes=None, dataset_type=None):
    from mmdet.registry import DATASETS
    cfg = copy.deepcopy(Config.fromfile(DET_BASE).val_dataloader.dataset)
    cfg.update(data_root=f'{root}/', ann_file=ann_file, data_prefix=dict(img=img_dir))
    if classes is not None:
        cfg.update(metainfo=dict(classes=classes))
    if dataset_type is not None:
        cfg.update(type=dataset_type)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DATASETS.build(cfg)


def _coco_gt_as_prediction(ds, ann_file):
    """Feed every image's ground truth to ``CocoMetric`` as its prediction (score 1)."""
    from mmdet.registry import METRICS
    with DefaultScope.overwrite_default_scope('mmdet'):
        metric = METRICS.build(dict(type='CocoMetric', ann_file=str(ann_file),
                                    metric=['bbox', 'segm']))
    metric.dataset_meta = ds.metainfo
    n_instances = 0
    for i in range(len(ds)):
        sample = ds[i]['data_samples']
        gt = sample.gt_instances
        masks = gt.masks.to_ndarray().astype(bool)
        # The test pipeline loads annotations after Resize: they stay in original coordinates.
        assert masks.shape[1:] == tuple(sample.ori_shape)
        n_instances += len(gt)
        pred = dict(bboxes=gt.bboxes.tensor.clone(), scores=torch.ones(len(gt)),
                    labels=gt.labels.clone(), masks=torch.from_numpy(masks))
        metric.process({}, [dict(img_id=sample.img_id, ori_shape=sample.ori_shape,
                                 pred_instances=pred)])
    return metric.evaluate(len(ds)), n_instances


@pytest.mark.parametrize('name, ann, img_dir, classes, n_images, n_instances', [
    ('coco_tiny', 'annotations/instances_val2017.json', 'val2017/', None, 80, 804),
    ('balloon', 'annotations/instances_val_512.json', 'val_512/', ('balloon',), 13, 50),
])
def test_coco_gt_as_prediction_is_perfect(name, ann, img_dir, classes, n_images, n_instances):
    root = shared_data(name)
    ds = _det_dataset(root, ann, img_dir, classes)
    assert len(ds) == n_images
    # A resized image with boxes still in original coordinates is what the metric expects.
    first = ds[0]
    assert first['inputs'].shape[0] == 3 and max(first['inputs'].shape[1:]) <= 1333
    results, n = _coco_gt_as_prediction(ds, root / ann)
    assert n == n_instances  # crowd regions are ignored instances, not predictions
    assert results['coco/bbox_mAP'] == pytest.approx(1.0)
    assert results['coco/segm_mAP'] == pytest.approx(1.0)
    assert results['coco/bbox_mAP_50'] == pytest.approx(1.0)


def test_coco_tiny_through_densekit_dataset_matches_mmdet():
    root = shared_data('coco_tiny')
    args = (root, 'annotations/instances_val2017.json', 'val2017/')
    ours = _det_dataset(*args, dataset_type='DenseKitCocoDataset')
    theirs = _det_dataset(*args, dataset_type='CocoDataset')
    assert len(ours) == len(theirs) == 80
    for i in (0, 41, 79):
        a, b = ours.get_data_info(i), theirs.get_data_info(i)
        assert a['img_path'] == b['img_path']
        assert [x['bbox'] for x in a['instances']] == [x['bbox'] for x in b['instances']]
        assert [x['bbox_label'] for x in a['instances']] == [x['bbox_label'] for x in b['instances']]


def test_config_dataset_names_a_class_mismatch():
    """The COCO configs' dataset checks class names: balloon's json read with the 80 COCO names
    (metainfo not set) is an error; mmdet's CocoDataset gave 13 images with no ground truth."""
    root = shared_data('balloon')
    assert Config.fromfile(DET_BASE).val_dataloader.dataset.type == 'DenseKitCocoDataset'
    from densekit.datasets.checks import DataError
    with pytest.raises(DataError, match=r"instances_val_512\.json: 80 of the 80 metainfo\.classes "
                                        r"are not category names of the file: \['person', .*"
                                        r"\(its categories: \['balloon'\]\)"):
        _det_dataset(root, 'annotations/instances_val_512.json', 'val_512/')
    mmdet_ds = _det_dataset(root, 'annotations/instances_val_512.json', 'val_512/',
                            dataset_type='CocoDataset')
    assert len(mmdet_ds) == 13
    assert all(not mmdet_ds.get_data_info(i)['instances'] for i in range(13))


def test_balloon_short_train(tmp_path):
    """A few Mask R-CNN iterations on the 512 px balloon images: losses finite, weights move."""
    root = shared_data('balloon')
    from mmengine.runner import Runner
    cfg = Config.fromfile(REPO / 'configs' / 'quickstart' / 'mask-rcnn_r18_synthetic.py')
    metainfo = dict(classes=('balloon',))
    cfg.model.roi_head.bbox_head.num_classes = 1
    cfg.model.roi_head.mask_head.num_classes = 1
    cfg.train_dataloader.batch_size = 2
    cfg.train_dataloader.dataset = dict(
        type='DenseKitCocoDataset', data_root=f'{root}/', metainfo=metainfo,
        ann_file='annotations/instances_val_512.json', data_prefix=dict(img='val_512/'),
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                  dict(type='Resize', scale=(256, 256), keep_ratio=True),
                  dict(type='RandomFlip', prob=0.5),
                  dict(type='PackDetInputs')])
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=3, val_interval=1000)
    cfg.param_scheduler = []
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    before = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
    losses = []

    from mmengine.hooks import Hook

    class _Record(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            losses.append({k: float(v.detach()) for k, v in outputs.items()})

    runner.register_hook(_Record(), priority='LOWEST')
    runner.train()
    assert len(losses) == 3
    assert all(np.isfinite(list(step.values())).all() for step in losses)
    assert all(step['loss_mask'] > 0 and step['loss_cls'] > 0 for step in losses)
    after = runner.model.state_dict()
    moved = [k for k in before if before[k].dtype.is_floating_point
             and not torch.equal(before[k], after[k])]
    assert any(k.startswith('backbone.') for k in moved)
    assert any(k.startswith('roi_head.mask_head.') for k in moved)


def _seg_gt_as_prediction(ds):
    from mmseg.registry import METRICS
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    with DefaultScope.overwrite_default_scope('mmseg'):
        metric = METRICS.build(dict(type='IoUMetric', iou_metrics=['mIoU']))
    metric.dataset_meta = ds.metainfo
    present = set()
    for i in range(len(ds)):
        sample = ds[i]['data_samples']
        gt = sample.gt_sem_seg.data
        present |= set(torch.unique(gt).tolist()) - {255}
        pred = SegDataSample(gt_sem_seg=PixelData(data=gt.clone()),
                             pred_sem_seg=PixelData(data=gt.clone()))
        metric.process({}, [pred.to_dict()])
    return metric.evaluate(len(ds)), present


def _seg_dataset(cfg_file, **overrides):
    from mmseg.registry import DATASETS
    cfg = copy.deepcopy(Config.fromfile(cfg_file).val_dataloader.dataset)
    cfg.update(overrides)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return DATASETS.build(cfg)


@pytest.mark.parametrize('dataset_cfg', ['ade20k_512x512.py', 'ade20k_640x640.py'])
def test_ade20k_sample_gt_as_prediction(dataset_cfg):
    root = shared_data('ade20k_sample') / 'ADEChallengeData2016'
    ds = _seg_dataset(REPO / 'configs' / '_base_' / 'datasets' / dataset_cfg,
                      data_root=f'{root}/')
    assert type(ds).__name__ == 'DenseKitADE20KDataset' and len(ds) == 3
    results, present = _seg_gt_as_prediction(ds)
    # reduce_zero_label: stored 0 ("other") becomes 255 and classes shift to 0..149.
    assert len(present) > 3 and max(present) < 150
    assert results['mIoU'] == pytest.approx(100.0)


def test_cityscapes_sample_gt_as_prediction():
    root = shared_data('cityscapes_sample')
    ds = _seg_dataset(REPO / 'configs' / '_base_' / 'datasets' / 'cityscapes_512x1024.py',
                      data_root=f'{root}/')
    assert type(ds).__name__ == 'DenseKitCityscapesDataset' and len(ds) == 1
    sample = ds[0]['data_samples']
    assert tuple(sample.gt_sem_seg.data.shape[1:]) == (128, 256)
    results, present = _seg_gt_as_prediction(ds)
    assert len(present) > 5 and max(present) < 19
    assert results['mIoU'] == pytest.approx(100.0)
