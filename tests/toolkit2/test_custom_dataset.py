"""configs/custom/ templates and the own-data flags of tools/train.py / tools/test.py, run as a
user runs them (docs/custom_dataset.md)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, run_tool, tiny_instance_config  # noqa: E402

pytest.importorskip('mmdet')
TEMPLATES = sorted((REPO / 'configs' / 'custom').glob('*.py'))
SHARED = REPO.parent / 'shared' / 'data'


@pytest.mark.parametrize('path', TEMPLATES, ids=lambda p: p.name)
def test_templates_take_num_classes_from_classes(path):
    """Every head's num_classes and every dataset's metainfo follow ``classes``, also when
    ``classes`` is overridden after parsing (``--cfg-options classes=...``)."""
    import densekit  # noqa: F401
    from densekit.mm.runner import _class_heads_cfg, apply_classes, load_config
    cfg = load_config(str(path))
    if 'classes' not in cfg:
        assert 'depth' in path.name  # depth has no classes
        return
    heads = _class_heads_cfg(cfg.model)
    assert heads and all(n == len(cfg.classes) for _, n in heads), heads
    cfg = load_config(str(path), {'classes': ('a', 'b', 'c')})
    assert apply_classes(cfg) == 3
    assert all(n == 3 for _, n in _class_heads_cfg(cfg.model))
    for split in ('train', 'val', 'test'):
        assert cfg[f'{split}_dataloader'].dataset.metainfo['classes'] == ('a', 'b', 'c')


@pytest.mark.timeout(900)
def test_train_and_test_instance_template_on_balloon(tmp_path):
    """The walk-through of docs/custom_dataset.md on the balloon sample: tools/train.py with
    --data-root and --max-epochs, then tools/test.py on the checkpoint."""
    root = SHARED / 'balloon'
    if not (root / 'annotations' / 'instances_val_512.json').is_file():
        pytest.skip(f'balloon sample {root} not present')
    # the sample has a validation split only: train and validate on it
    cfg = tiny_instance_config(tmp_path, pretrained=None, train_ann_file='annotations/instances_val_512.json',
                               train_img_dir='val_512/',
                               val_ann_file='annotations/instances_val_512.json',
                               val_img_dir='val_512/')
    wd = tmp_path / 'work'
    r = run_tool('tools/train.py', cfg, '--work-dir', wd, '--data-root', f'{root}/',
                 '--max-epochs', 1, cwd=tmp_path)
    log = r.stdout + r.stderr
    assert 'Epoch(train) [1][7/7]' in log  # 13 images, batch 2
    assert 'coco/segm_mAP' in log and 'coco/bbox_mAP' in log
    assert (wd / 'curves.png').is_file()  # drawn at the validation
    ckpt = wd / 'epoch_1.pth'
    assert ckpt.is_file()
    out = tmp_path / 'results.pkl'
    r = run_tool('tools/test.py', cfg, ckpt, '--work-dir', tmp_path / 'test',
                 '--data-root', root, '--out', out, cwd=tmp_path, check=False)
    log = r.stdout + r.stderr
    # a model trained for 7 iterations may predict nothing above the score threshold; then
    # tools/test.py refuses to report a metric: both outcomes prove the evaluation ran on balloon
    assert r.returncode == 0 and 'coco/segm_mAP' in log or 'returned no metric' in log, log[-3000:]
    if out.is_file():  # predictions were dumped: their confusion matrix
        png = tmp_path / 'cm.png'
        r = run_tool('tools/analysis/confusion_matrix.py', cfg, out, '--out', png, '--data-root',
                     root, '--score-thr', 0.0, cwd=tmp_path)
        rows = (tmp_path / 'cm.csv').read_text().splitlines()
        assert rows[0].split(',')[1:] == ['balloon', 'background']
        counts = [[int(v) for v in row.split(',')[1:]] for row in rows[1:]]
        assert counts[0][0] + counts[0][1] == 50  # every balloon: found or missed


def test_data_root_rewrites_dataloaders_and_evaluators(tmp_path):
    import densekit  # noqa: F401
    from densekit.mm.runner import load_config, set_data_root
    path = REPO / 'configs' / 'custom' / 'mask-rcnn_convnext-t_fpn_custom-coco.py'
    cfg = load_config(str(path))
    set_data_root(cfg, '/data/my_balloons')
    for split in ('train', 'val', 'test'):
        assert cfg[f'{split}_dataloader'].dataset.data_root == '/data/my_balloons'
    for key in ('val_evaluator', 'test_evaluator'):
        assert cfg[key].ann_file == '/data/my_balloons/annotations/instances_val.json'
    # the same through the semantic segmentation template (no evaluator path)
    cfg = load_config(str(REPO / 'configs' / 'custom' / 'upernet_convnext-t_custom-folders.py'))
    set_data_root(cfg, 'elsewhere')
    assert cfg.val_dataloader.dataset.data_root == 'elsewhere'


def test_cfg_options_data_root_is_refused_with_the_flag_to_use(tmp_path):
    path = REPO / 'configs' / 'custom' / 'mask-rcnn_convnext-t_fpn_custom-coco.py'
    r = run_tool('tools/train.py', path, '--work-dir', tmp_path, '--cfg-options',
                 'data_root=/somewhere/', cwd=tmp_path, check=False)
    assert r.returncode != 0
    assert 'use --data-root DIR' in r.stderr, r.stderr[-2000:]


def test_max_iters_rescales_schedulers():
    import densekit  # noqa: F401
    from densekit.mm.runner import load_config, set_schedule_length
    cfg = load_config(str(REPO / 'configs' / 'custom' / 'upernet_convnext-t_custom-folders.py'))
    assert set_schedule_length(cfg, max_iters=800) == pytest.approx(0.1)
    assert cfg.train_cfg.max_iters == 800 and cfg.train_cfg.val_interval == 800
    warmup, poly = cfg.param_scheduler
    assert (warmup.begin, warmup.end) == (0, 15)
    assert (poly.begin, poly.end) == (15, 800)
    assert cfg.default_hooks.checkpoint.interval == 800
    # epoch-based: milestones move with the length
    cfg = load_config(str(REPO / 'configs' / 'custom' / 'mask-rcnn_convnext-t_fpn_custom-coco.py'))
    with pytest.raises(ValueError, match='epoch-based; use --max-epochs'):
        set_schedule_length(cfg, max_iters=10)
    old = [dict(s) for s in cfg.param_scheduler]
    set_schedule_length(cfg, max_epochs=6)
    step = next(s for s in cfg.param_scheduler if 'milestones' in s)
    old_step = next(s for s in old if 'milestones' in s)
    assert old_step["milestones"] == [8, 11] and step.milestones == [4, 6]
    assert cfg.train_cfg.max_epochs == 6


def test_balloon_annotation_classes_match_template():
    """The template's example names the balloon sample's one category."""
    ann = SHARED / 'balloon' / 'annotations' / 'instances_val.json'
    if not ann.is_file():
        pytest.skip('balloon sample not present')
    names = tuple(c['name'] for c in json.loads(ann.read_text())['categories'])
    import densekit  # noqa: F401
    from densekit.mm.runner import load_config
    cfg = load_config(str(REPO / 'configs' / 'custom' / 'mask-rcnn_convnext-t_fpn_custom-coco.py'))
    assert tuple(cfg.classes) == names


def _folders(root: Path, kind: str) -> None:
    """Two train / val pairs in the folder layout the segmentation / depth template expects."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for i in range(2):
            img = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
            if kind == 'seg':
                (root / 'images' / split).mkdir(parents=True, exist_ok=True)
                (root / 'labels' / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / 'images' / split / f'{i}.jpg')
                Image.fromarray((rng.random((40, 48)) > 0.5).astype(np.uint8)).save(
                    root / 'labels' / split / f'{i}.png')
            else:
                (root / 'images' / split).mkdir(parents=True, exist_ok=True)
                (root / 'depth' / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / 'images' / split / f'{i}.png')
                depth = rng.integers(500, 5000, (40, 48)).astype(np.uint16)
                Image.fromarray(depth).save(root / 'depth' / split / f'{i}.png')


@pytest.mark.parametrize('name, kind', [('upernet_convnext-t_custom-folders.py', 'seg'),
                                        ('fpn_convnext-t_custom-depth.py', 'depth')])
def test_folder_templates_build_model_and_read_their_layout(tmp_path, name, kind):
    """The semantic segmentation and depth templates as written: the model builds, and their
    datasets read the documented folder layout through --data-root."""
    pytest.importorskip('mmseg')
    from mmengine.registry import DATASETS, MODELS, init_default_scope

    import densekit  # noqa: F401
    from densekit.mm.runner import apply_classes, load_config, set_data_root
    _folders(tmp_path, kind)
    cfg = load_config(str(REPO / 'configs' / 'custom' / name))
    apply_classes(cfg)
    set_data_root(cfg, str(tmp_path))
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None  # no download in a test
    model = MODELS.build(cfg.model)
    if kind == 'seg':
        assert model.decode_head.num_classes == len(cfg.classes) == 2
    for split in ('train', 'val'):
        ds = DATASETS.build(cfg[f'{split}_dataloader'].dataset)
        assert len(ds) == 2
        item = ds[0]
        assert item['inputs'].shape[0] == 3
        assert ('gt_sem_seg' if kind == 'seg' else 'gt_depth_map') in item['data_samples']


@pytest.mark.parametrize('name', ['mask-rcnn_convnext-t_fpn_custom-coco.py',
                                  'dino-4scale_convnext-t_custom-coco.py'])
def test_coco_templates_build_with_their_class_count(name):
    from mmengine.registry import MODELS, init_default_scope

    import densekit  # noqa: F401
    from densekit.mm.runner import load_config
    cfg = load_config(str(REPO / 'configs' / 'custom' / name), {'classes': ('a', 'b', 'c')})
    from densekit.mm.runner import apply_classes
    apply_classes(cfg)
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None  # no download in a test
    model = MODELS.build(cfg.model)
    heads = [m for m in model.modules() if isinstance(getattr(m, 'num_classes', None), int)
             and type(m).__name__ != 'RPNHead']
    assert heads and all(m.num_classes == 3 for m in heads)
