"""The quickstart configs run, are deterministic, fail clearly without data, and (``slow`` tier)
learn.

The ``slow`` tests train the shipped quickstart configs unchanged except for the data root and
the work dir (the detection one is the README's main job, about 7 CPU minutes) and
compare with the same model evaluated before training.
"""
import pytest

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

import densekit  # noqa: E402,F401
from conftest import REPO  # noqa: E402
from densekit.datasets.synthetic import make_demo_data  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

DET, SEG = 'mask-rcnn_r18_synthetic.py', 'fpn_r18_synthetic-ade.py'


@pytest.fixture(autouse=True)
def _restore_determinism():
    """The configs turn on torch's deterministic algorithms process-wide: restore the setting."""
    import torch
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def _runner(config, work_dir, data_root, ann_file=None, **overrides):
    cfg = Config.fromfile(REPO / 'configs' / 'quickstart' / config)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = f'{data_root}/'
    if ann_file is not None:
        cfg.val_evaluator.ann_file = cfg.test_evaluator.ann_file = str(data_root / ann_file)
    cfg.work_dir = str(work_dir)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1)
    cfg.merge_from_dict(overrides)
    return Runner.from_cfg(cfg)


@pytest.mark.parametrize('config, kind, sub, ann', [
    (DET, 'coco', 'coco', 'annotations/instances_val.json'), (SEG, 'ade', 'ade', None)])
def test_quickstart_config_runs_two_iterations(tmp_path, config, kind, sub, ann):
    from densekit.datasets.synthetic import make_demo_data as make
    make(tmp_path / 'data', kind=kind, num_train=4, num_val=2)
    overrides = {'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2,
                 'train_dataloader.batch_size': 2}
    if kind == 'coco':  # keep every detection of a barely trained model, so the metric has input
        overrides['model.test_cfg.rcnn.score_thr'] = 0.0
    runner = _runner(config, tmp_path / 'work', tmp_path / 'data' / sub, ann, **overrides)
    runner.train()
    metrics = runner.val()
    keys = ('coco/bbox_mAP', 'coco/segm_mAP') if kind == 'coco' else ('mIoU', 'aAcc')
    for key in keys:
        assert 0 <= metrics[key] <= (1 if kind == 'coco' else 100), (key, metrics)


@pytest.mark.parametrize('config, kind', [(DET, 'coco'),
                                          pytest.param(SEG, 'ade', marks=pytest.mark.slow)])
def test_quickstart_runs_are_identical(tmp_path, monkeypatch, config, kind):
    """Two runs of a shortened quickstart (random flips, shuffled data, a validation with
    prediction pictures) end with bit-identical weights, metrics and pictures."""
    import torch
    # The Runner logs and dumps the config through yapf (~1.5 s each), which is not under test.
    monkeypatch.setattr(Config, 'pretty_text', property(lambda self: repr(self.to_dict())))
    make_demo_data(tmp_path / 'data', kind=kind, num_train=4, num_val=2)
    overrides = {'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2,
                 'train_dataloader.batch_size': 2}
    if kind == 'coco':  # keep every detection of a barely trained model, so the metric has input
        overrides['model.test_cfg.rcnn.score_thr'] = 0.0
    ann = 'annotations/instances_val.json' if kind == 'coco' else None
    runs = []
    for k in range(2):
        runner = _runner(config, tmp_path / f'work{k}', tmp_path / 'data' / kind, ann,
                         **overrides)
        runner.train()
        assert torch.are_deterministic_algorithms_enabled()
        metrics = {key: v.current() for key, v in runner.message_hub.log_scalars.items()
                   if key.startswith('val/') and not key.endswith('time')}
        pictures = sorted((tmp_path / f'work{k}' / 'predictions').glob('*.png'))
        runs.append((runner.model.state_dict(), metrics, [p.read_bytes() for p in pictures],
                     [p.name for p in pictures]))
    (w0, m0, p0, n0), (w1, m1, p1, n1) = runs
    assert w0.keys() == w1.keys()
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    assert m0 and m0 == m1
    assert len(n0) == 2 and n0 == n1 and p0 == p1


@pytest.mark.parametrize('config, sub', [(DET, 'coco'), (SEG, 'ade')])
def test_quickstart_without_data_says_how_to_make_it(tmp_path, config, sub):
    runner = _runner(config, tmp_path / 'work', tmp_path / 'none' / sub)
    with pytest.raises(FileNotFoundError, match=rf"data root '{tmp_path}/none/{sub}' does not "
                       rf'exist; .*`python tools/make_demo_data.py {tmp_path}/none`'):
        runner.train()


@pytest.mark.slow
def test_detection_quickstart_learns(tmp_path):
    make_demo_data(tmp_path / 'data', kind='coco')
    runner = _runner(DET, tmp_path / 'work', tmp_path / 'data' / 'coco',
                     'annotations/instances_val.json')
    untrained = runner.val()
    runner.train()  # ends with the validation pass
    trained = runner.val()
    print(f'untrained: {untrained}\ntrained: {trained}')
    # CocoMetric returns no key when a model predicts nothing at all: that scores 0.
    before = {k: untrained.get(k, 0.0) for k in ('coco/bbox_mAP', 'coco/segm_mAP', 'coco/bbox_mAP_50')}
    # tools/quickstart.sh (single-threaded) reaches 0.112 bbox / 0.119 segm mAP and 0.240 bbox
    # AP50; this test runs with the process's thread count, which rounds differently.
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert trained[key] >= before[key] + 0.065, (key, before[key], trained[key])
    assert trained['coco/bbox_mAP_50'] >= before['coco/bbox_mAP_50'] + 0.12


@pytest.mark.slow
def test_segmentation_quickstart_learns(tmp_path):
    make_demo_data(tmp_path / 'data', kind='ade')
    runner = _runner(SEG, tmp_path / 'work', tmp_path / 'data' / 'ade')
    untrained = runner.val()
    runner.train()
    trained = runner.val()
    print(f'untrained: {untrained}\ntrained: {trained}')
    # tools/quickstart.sh --seg reaches 38.85 mIoU (sky / ground well, shapes partly).
    assert trained['mIoU'] >= untrained['mIoU'] + 20.0, (untrained['mIoU'], trained['mIoU'])


def test_quickstart_script_names_existing_configs():
    """tools/quickstart.sh runs the configs these tests train (`--seg` named a missing file)."""
    import re
    script = (REPO / 'tools' / 'quickstart.sh').read_text()
    named = re.findall(r'configs/quickstart/([\w.-]+\.py)', script)
    assert sorted(named) == sorted([DET, SEG]), named
    for name in named:
        assert (REPO / 'configs' / 'quickstart' / name).is_file(), name
