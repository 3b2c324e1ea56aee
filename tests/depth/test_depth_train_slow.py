"""Slow: a short CPU training run of the quickstart depth configs (DPT, PolyMaX-style) on the
synthetic set improves every metric over the untrained model (the numbers are printed; nothing
about speed is asserted)."""
import os.path as osp

import pytest

pytest.importorskip('mmseg')

import densekit  # noqa: F401,E402
from densekit.datasets.synthetic_depth import make_synthetic_depth  # noqa: E402

@pytest.fixture(autouse=True)
def _mmseg_scope():
    # Scoped, not global: a process-wide default scope would leak into other suites' builds.
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {'dpt': osp.join(REPO, 'configs', 'depth', 'dpt_resnet18_synthetic.py'),
           'polymax': osp.join(REPO, 'configs', 'polymax', 'polymax_resnet18_synthetic.py')}


@pytest.mark.slow
@pytest.mark.parametrize('head', sorted(CONFIGS))
def test_short_training_improves_metrics(head, tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner

    root = make_synthetic_depth(tmp_path / 'data', num_train=64, num_val=16, height=64, width=96,
                                seed=0)
    cfg = Config.fromfile(CONFIGS[head])
    cfg.work_dir = str(tmp_path / 'work')
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[name].dataset.data_root = str(root)
        cfg[name].num_workers = 0
        cfg[name].persistent_workers = False
    epochs = 12
    cfg.train_dataloader.batch_size = 8
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs, val_interval=epochs)
    warm = epochs // 4
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=1 / 25, begin=0, end=warm, by_epoch=True,
             convert_to_iter_based=True),
        dict(type='CosineAnnealingLR', eta_min=1e-3 / 2500, begin=warm, end=epochs,
             T_max=epochs - warm, by_epoch=True, convert_to_iter_based=True)]
    cfg.default_hooks.checkpoint = None
    cfg.randomness = dict(seed=0)
    runner = Runner.from_cfg(cfg)
    before = dict(runner.val())
    runner.train()
    hub = runner.message_hub.log_scalars
    after = {k: float(hub[f'val/{k}'].current()) for k in before}
    print('\nuntrained:', {k: round(float(v), 4) for k, v in before.items()})
    print('trained:  ', {k: round(v, 4) for k, v in after.items()})
    for k in ('abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'log10', 'silog'):
        assert after[k] < before[k], (k, before[k], after[k])
    for k in ('a1', 'a2'):
        assert after[k] > before[k], (k, before[k], after[k])
