"""A user backbone plugged in through ``custom_imports`` (projects/example_backbone)."""
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'projects/example_backbone/configs/mask-rcnn_example-convnet_synthetic.py'

pytest.importorskip('mmdet')


def test_custom_backbone_trains_one_step(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))  # as tools/train.py does for a source checkout
    import densekit  # noqa: F401
    from densekit.datasets.synthetic import make_demo_data
    from mmengine.config import Config
    from mmengine.runner import Runner

    root = tmp_path / 'quickstart'
    make_demo_data(root, 'coco', 4, 2, 0)
    cfg = Config.fromfile(str(CONFIG))
    assert 'projects.example_backbone.example_backbone' in sys.modules
    data_root = str(root / 'coco') + '/'
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[split].dataset.data_root = data_root
        cfg[split].batch_size = 2
    cfg.train_cfg.max_iters = 1
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None  # evaluation is tested elsewhere
    cfg.work_dir = str(tmp_path / 'wd')
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1000)
    runner = Runner.from_cfg(cfg)
    assert type(runner.model.backbone).__name__ == 'ExampleConvNet'
    before = {k: v.clone() for k, v in runner.model.backbone.state_dict().items()}
    runner.train()
    after = runner.model.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if 'weight' in k)


def test_custom_backbone_builds_through_mmseg(tmp_path, monkeypatch):
    """The same user backbone in a segmentation config: ``custom_imports`` registers it into
    mmseg's MODELS too (an mmseg EncoderDecoder with mmseg's FPN head on top)."""
    pytest.importorskip('mmseg')
    monkeypatch.syspath_prepend(str(REPO))
    import densekit  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    cfg_file = tmp_path / 'seg.py'
    cfg_file.write_text(
        "custom_imports = dict(imports=['projects.example_backbone.example_backbone'], "
        "allow_failed_imports=False)\n"
        "model = dict(type='EncoderDecoder', data_preprocessor=dict(type='SegDataPreProcessor', "
        "size=(64, 64)), backbone=dict(type='ExampleConvNet', widths=(8, 16, 32, 64)), "
        "decode_head=dict(type='FPNHead', in_channels=[8, 16, 32, 64], in_index=[0, 1, 2, 3], "
        "feature_strides=[4, 8, 16, 32], channels=16, num_classes=3, "
        "loss_decode=dict(type='CrossEntropyLoss')))\n")
    cfg = Config.fromfile(str(cfg_file))
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == 'ExampleConvNet'
    logits = model(torch.randn(2, 3, 64, 64), mode='tensor')
    assert logits.shape == (2, 3, 16, 16)
