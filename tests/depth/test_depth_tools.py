"""tools/train.py and tools/test.py on a depth config: one training iteration, then evaluation with
--show-dir (labelled ground truth | prediction pngs with a colour bar) and --out (uint16 depth pngs)."""
import glob
import os.path as osp

import cv2
import numpy as np
import pytest

pytest.importorskip('mmseg')

import densekit  # noqa: F401,E402
from densekit.datasets.synthetic_depth import make_synthetic_depth  # noqa: E402

runner_mod = pytest.importorskip('densekit.mm.runner')

@pytest.fixture(autouse=True)
def _mmseg_scope():
    # Scoped, not global: a process-wide default scope would leak into other suites' builds.
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'depth', 'dpt_resnet18_synthetic.py')


def test_train_then_test_with_show_dir_and_out(tmp_path, monkeypatch):
    from mmengine.config import Config
    # The Runner logs and dumps the config through yapf (~1.5 s each here), which is not under test.
    monkeypatch.setattr(Config, 'pretty_text', property(lambda self: repr(self.to_dict())))
    root = make_synthetic_depth(tmp_path / 'data', num_train=2, num_val=2, height=32, width=48)
    opts = []
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{name}.dataset.data_root={root}', f'{name}.num_workers=0',
                 f'{name}.persistent_workers=False']
    opts += ['train_dataloader.batch_size=2', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
             'model.backbone.model_name=resnet10t', 'model.decode_head.channels=16',
             'model.decode_head.head_channels=8', 'default_hooks.checkpoint.save_best=None']
    work = tmp_path / 'work'
    runner_mod.train([CONFIG, '--work-dir', str(work), '--cfg-options', *opts])
    ckpts = glob.glob(str(work / '*.pth'))
    assert ckpts, 'training saved no checkpoint'
    show, out = tmp_path / 'show', tmp_path / 'out'
    _, metrics = runner_mod.test([CONFIG, ckpts[0], '--work-dir', str(work), '--show-dir', str(show),
                                  '--out', str(out), '--cfg-options', *opts])
    assert np.isfinite(metrics['abs_rel']) and 0 <= metrics['a1'] <= 1
    drawn = sorted(glob.glob(str(show / '*.png')))
    assert [osp.basename(p) for p in drawn] == ['scene_00000.png', 'scene_00001.png']
    from densekit.mm.visualization import COLORBAR_HEIGHT, LABEL_HEIGHT, panel_scale
    k = panel_scale(48)  # labels / ground truth | prediction / colour bar
    assert cv2.imread(drawn[0]).shape == (LABEL_HEIGHT + 32 * k + COLORBAR_HEIGHT, 2 * 48 * k, 3)
    pred = cv2.imread(str(out / 'scene_00000.png'), cv2.IMREAD_UNCHANGED)
    assert pred.dtype == np.uint16 and pred.shape == (32, 48) and 0 < int(pred.max()) <= 10000
