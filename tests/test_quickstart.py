"""The quickstart learns: trained on the synthetic data, it beats the untrained model clearly.

``slow`` tier: the detection quickstart is the README's main job (about 10 minutes on 2 CPU
cores), the segmentation one a few minutes. Both run the shipped configs unchanged except for
the data root and the work dir; the untrained score is the same model evaluated before training.
"""
import pytest

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

import densekit  # noqa: E402,F401
from conftest import REPO  # noqa: E402
from densekit.datasets.synthetic import make_demo_data  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

pytestmark = pytest.mark.slow


def _runner(config, work_dir, data_root, ann_file=None):
    cfg = Config.fromfile(REPO / 'configs' / 'quickstart' / config)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = f'{data_root}/'
    if ann_file is not None:
        cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = str(data_root / ann_file)
    cfg.work_dir = str(work_dir)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1)
    return Runner.from_cfg(cfg)


def test_detection_quickstart_learns(tmp_path):
    make_demo_data(tmp_path / 'data', kind='coco')
    runner = _runner('mask-rcnn_r18_synthetic.py', tmp_path / 'work', tmp_path / 'data' / 'coco',
                     'annotations/instances_val.json')
    untrained = runner.val()
    runner.train()  # ends with the validation pass
    trained = runner.val()
    print(f'untrained: {untrained}\ntrained: {trained}')
    # CocoMetric returns no key when a model predicts nothing at all: that scores 0.
    before = {k: untrained.get(k, 0.0) for k in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50')}
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert trained[key] >= before[key] + 0.15, (key, before[key], trained[key])
    assert trained['coco/bbox_mAP_50'] >= before['coco/bbox_mAP_50'] + 0.3


def test_segmentation_quickstart_learns(tmp_path):
    make_demo_data(tmp_path / 'data', kind='ade')
    runner = _runner('fcn_r18_synthetic-ade.py', tmp_path / 'work', tmp_path / 'data' / 'ade')
    untrained = runner.val()
    runner.train()
    trained = runner.val()
    print(f'untrained: {untrained}\ntrained: {trained}')
    assert trained['mIoU'] >= untrained['mIoU'] + 25.0, (untrained['mIoU'], trained['mIoU'])
