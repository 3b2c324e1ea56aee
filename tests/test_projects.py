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
