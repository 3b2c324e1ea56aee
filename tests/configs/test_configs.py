"""Every detection / segmentation config builds, trains one step and evaluates one pass on CPU.

For each config under the ``CONFIG_DIRS`` folders of ``configs/`` (the detection, instance,
panoptic and semantic segmentation families and the seed heads' folders):

1. the config loads and its *full-size* backbone is constructed on the ``meta`` device with the
   config's own kwargs: the kwargs are accepted and the head's ``in_channels`` equal the
   backbone's ``feature_info`` channels;
2. a tiny copy (the family's ``*_test`` backbone, heads narrowed to 64 channels, one
   encoder / decoder layer, 10 queries, image sizes / 8) builds, and its optimizer wrapper builds
   from the config's ``optim_wrapper`` (layer decay, lr multipliers ...);
3. for each family's recipe config (the one a size variant inherits from): one training step
   on generated demo data with the config's own training pipeline, then one evaluation pass over
   the generated validation split with the config's own metric (COCO AP, PQ, mIoU).

Size variants (which only change backbone size, drop path and optimizer numbers) stop after
step 2: their tiny model is the recipe's tiny model. Test-time augmentation runs through the
real ``tools/test.py --tta`` entry point (``densekit.mm.runner.test``) for one instance
segmentation and one semantic segmentation config. A config whose backbone is not registered
yet (a family still being written) is skipped with the name in the reason.
"""
from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

import densekit  # noqa: E402,F401
from mmengine.config import Config  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from mmengine.evaluator import Evaluator  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402


from config_demo_data import make_ade, make_cityscapes, make_coco  # noqa: E402
from tiny_configs import backbone_channels as _backbone_channels  # noqa: E402
from tiny_configs import build_model as _build_model, dataset as _dataset  # noqa: E402
from tiny_configs import head_channels as _head_channels, require_backbone, tiny  # noqa: E402


def _require_backbone(name: str) -> None:
    """A densekit backbone must be registered; OpenMMLab's own (mmdet's / mmseg's ``ResNet``)
    has no densekit ``*_test`` variant to shrink to, so its configs are skipped here, by name,
    and built at full size by their heads' tests."""
    from densekit.models import list_backbones
    if name not in list_backbones() and not name[:1].islower():
        pytest.skip(f"'{name}' is OpenMMLab's own backbone, not a densekit family: no tiny "
                    'variant (the full-size config is built by its head tests)')
    require_backbone(name)


def _tiny(cfg: Config, root: Path) -> Config:
    _require_backbone(cfg.model.backbone.type)
    return tiny(cfg, root)

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIRS = ('mask_rcnn', 'cascade_mask_rcnn', 'dino', 'deformable_detr', 'mask2former',
               'upernet')
CONFIG_DIRS += ('relation_detr',)
CONFIG_DIRS += ('vwformer', 'pem')
CONFIG_DIRS += ('kmax_deeplab',)
CONFIG_DIRS += ('dyhead',)
CONFIGS = sorted(p for d in CONFIG_DIRS for p in (REPO / 'configs' / d).glob('*.py'))


def _is_recipe_config(path: Path) -> bool:
    """Family configs inherit a recipe; size variants inherit a sibling family config."""
    return '_base_/recipes/' in path.read_text()


@pytest.fixture(scope='session')
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('densekit_demo')
    make_coco(root)
    make_ade(root)
    make_cityscapes(root)
    return root


def _finite_losses(log_vars: dict) -> None:
    assert 'loss' in log_vars, f'no total loss in {sorted(log_vars)}'
    for k, v in log_vars.items():
        v = float(v)
        assert math.isfinite(v), f'{k} = {v}'


def _metric_keys(cfg: Config) -> list[str]:
    evs = cfg.val_evaluator if isinstance(cfg.val_evaluator, list) else [cfg.val_evaluator]
    keys = []
    for ev in evs:
        if ev.type == 'CocoMetric':
            metrics = ev.metric if isinstance(ev.metric, list) else [ev.metric]
            keys += [f'coco/{m}_mAP' for m in metrics]
        elif ev.type == 'CocoPanopticMetric':
            keys.append('coco_panoptic/PQ')
        elif ev.type == 'IoUMetric':
            keys.append('mIoU')
        else:
            raise AssertionError(f'unexpected evaluator {ev.type}')
    return keys


def _evaluate(cfg: Config, model, dataset, outfile_prefix: Path) -> dict:
    evs = cfg.val_evaluator if isinstance(cfg.val_evaluator, list) else [cfg.val_evaluator]
    evs = [dict(ev) for ev in evs]
    for ev in evs:
        if ev['type'] in ('CocoMetric', 'CocoPanopticMetric'):
            ev['outfile_prefix'] = str(outfile_prefix / ev['type'])
    evaluator = Evaluator(evs)
    evaluator.dataset_meta = dataset.metainfo
    model.eval()
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = pseudo_collate([dataset[i]])
            outputs = model.val_step(batch)
            evaluator.process(data_samples=outputs, data_batch=batch)
    return evaluator.evaluate(len(dataset))


def _needs_panopticapi(cfg: Config) -> None:
    evs = cfg.val_evaluator if isinstance(cfg.val_evaluator, list) else [cfg.val_evaluator]
    if any(ev.type == 'CocoPanopticMetric' for ev in evs):
        # densekit provides panopticapi (densekit/compat/panopticapi); this import must work
        import panopticapi  # noqa: F401


# ----------------------------------------------------------------------------- the tests

@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: f'{p.parent.name}/{p.stem}')
def test_config_builds_and_steps(path: Path, demo_root: Path, tmp_path: Path):
    random.seed(0)  # the training pipelines draw from `random` and numpy
    np.random.seed(0)
    cfg = Config.fromfile(str(path))
    full_bb = cfg.model.backbone
    _require_backbone(full_bb.type)

    # 1. The full-size backbone accepts the config's kwargs and matches the head's channels.
    chans = _backbone_channels(full_bb, 'meta')
    for where, expected in _head_channels(cfg.model):
        assert expected == chans, f'{".".join(where)}={expected} but {full_bb.type} gives {chans}'
    if 'auxiliary_head' in cfg.model and cfg.model.auxiliary_head is not None:
        aux = cfg.model.auxiliary_head
        assert aux.in_channels == chans[aux.in_index], (aux.in_channels, chans)

    # 2. Tiny copy: model and optimizer wrapper build.
    tiny = _tiny(cfg, demo_root)
    torch.manual_seed(0)
    model = _build_model(tiny)
    optim_wrapper = build_optim_wrapper(model, copy.deepcopy(tiny.optim_wrapper))
    groups = optim_wrapper.optimizer.param_groups
    assert sum(len(g['params']) for g in groups) == \
        sum(1 for p in model.parameters() if p.requires_grad)
    if not _is_recipe_config(path):
        return

    # 3. One training step with the config's own pipeline, one evaluation pass.
    _needs_panopticapi(tiny)
    train_set = _dataset(tiny, 'train_dataloader')
    batch = pseudo_collate([train_set[0], train_set[1]])
    model.train()
    log_vars = model.train_step(batch, optim_wrapper)
    _finite_losses(log_vars)
    if tiny.model.get('panoptic_head', {}).get('type') == 'KMaXDeepLabHead':  # kMaX's own losses
        assert {'loss_ce', 'loss_mask', 'loss_dice', 'loss_pixel_insdis',
                'loss_aux_semantic'} <= set(log_vars), sorted(log_vars)
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    assert not bad, f'non-finite parameters after one step: {bad[:5]}'

    val_set = _dataset(tiny, 'val_dataloader')
    metrics = _evaluate(tiny, model, val_set, tmp_path)
    for key in _metric_keys(tiny):
        assert key in metrics, f'{key} missing from {sorted(metrics)}'
        assert math.isfinite(float(metrics[key])), (key, metrics[key])


def _tta_cli(path: Path, demo_root: Path, tmp_path: Path) -> tuple[object, dict]:
    """`tools/test.py CONFIG CKPT --tta` on the tiny copy of ``path`` (random weights)."""
    from densekit.mm.runner import test as test_cli

    cfg = Config.fromfile(str(path))
    _require_backbone(cfg.model.backbone.type)
    tiny = _tiny(cfg, demo_root)
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        tiny[name].num_workers = 0
        tiny[name].persistent_workers = False
    torch.manual_seed(0)
    model = _build_model(tiny)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, tmp_path / 'tiny.pth')
    tiny.dump(str(tmp_path / 'tiny_config.py'))
    runner, metrics = test_cli([str(tmp_path / 'tiny_config.py'), str(tmp_path / 'tiny.pth'),
                                '--tta', '--work-dir', str(tmp_path / 'work')])
    return runner, metrics


def test_tta_detection_instance(demo_root: Path, tmp_path: Path):
    runner, metrics = _tta_cli(REPO / 'configs/mask_rcnn/mask-rcnn_convnext-t_fpn_1x_coco.py',
                               demo_root, tmp_path)
    assert type(runner.model).__name__ == 'InstanceTTAModel'
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert math.isfinite(float(metrics[key])), (key, metrics)


@pytest.mark.slow  # TTA through tools/test.py stays in the default tier for instance segmentation
def test_tta_segmentation(demo_root: Path, tmp_path: Path):
    runner, metrics = _tta_cli(REPO / 'configs/upernet/upernet_convnext-t_160k_ade20k-512x512.py',
                               demo_root, tmp_path)
    assert type(runner.model).__name__ == 'SegTTAModel'
    assert math.isfinite(float(metrics['mIoU'])), metrics
