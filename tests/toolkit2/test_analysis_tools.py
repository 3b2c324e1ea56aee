"""tools/analysis/{plot_curves,print_config,benchmark,browse_dataset,confusion_matrix}.py and the
curves PNG of a training run, as a user runs them (subprocesses, tiny segmentation setup)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'engine'))  # tiny_seg, tiny_hooks
from _common import REPO, run_tool  # noqa: E402

pytest.importorskip('mmseg')


def _run(script, *args, cwd, check=True):
    from tiny_seg import env_with_hooks
    os.environ['PYTHONPATH'] = env_with_hooks()['PYTHONPATH']
    return run_tool(script, *args, cwd=cwd, check=check)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A tiny segmentation run of 4 iterations validated at 2 and 4, and its checkpoint."""
    from tiny_seg import make_tiny_ade, write_config
    tmp = tmp_path_factory.mktemp('tiny')
    tiny = write_config(tmp, make_tiny_ade(tmp / 'ade', n=4))
    cfg = tmp / 'user.py'
    cfg.write_text(f"_base_ = '{tiny}'\ncustom_hooks = []\n"
                   "train_cfg = dict(max_iters=4, val_interval=2)\n")
    wd = tmp / 'work'
    _run('tools/train.py', cfg, '--work-dir', wd, cwd=tmp)
    return cfg, wd, tmp


def test_training_writes_curves_and_plot_curves_redraws_them(trained, tmp_path):
    from PIL import Image
    cfg, wd, _ = trained
    assert (wd / 'curves.png').is_file()  # CurvesHook at each validation
    out = tmp_path / 'loss.png'
    r = _run('tools/analysis/plot_curves.py', wd, '--out', out, '--keys', 'loss', 'mIoU',
             cwd=tmp_path)
    assert 'loss, mIoU' in r.stdout
    w, h = Image.open(out).size
    assert w > 2 * h  # two panels side by side: loss, validation metric


def test_plot_curves_opt_out(trained, tmp_path):
    cfg, _, tmp = trained
    user = tmp_path / 'no_curves.py'
    user.write_text(f"_base_ = '{cfg}'\nplot_curves = False\n")
    wd = tmp_path / 'work'
    _run('tools/train.py', user, '--work-dir', wd, '--max-iters', 2, cwd=tmp)
    assert list(wd.glob('*/vis_data/scalars.json'))  # the run logged and validated
    assert not (wd / 'curves.png').exists()


def test_print_config_applies_the_tool_arguments(tmp_path):
    path = REPO / 'configs' / 'custom' / 'mask-rcnn_convnext-t_fpn_custom-coco.py'
    saved = tmp_path / 'full.py'
    r = _run('tools/analysis/print_config.py', path, '--data-root', '/data/x/', '--max-epochs', 6,
             '--cfg-options', "classes=('a','b')", '--save-path', saved, cwd=tmp_path)
    from mmengine.config import Config
    cfg = Config.fromfile(str(saved))
    assert cfg.train_dataloader.dataset.data_root == '/data/x/'
    assert cfg.val_evaluator.ann_file == '/data/x/annotations/instances_val.json'
    assert cfg.model.roi_head.bbox_head.num_classes == 2 and cfg.train_cfg.max_epochs == 6
    assert "max_epochs=6" in r.stdout


def test_benchmark_reports_images_per_second_and_memory(trained, tmp_path):
    cfg, _, tmp = trained
    r = _run('tools/analysis/benchmark.py', cfg, '--device', 'cpu', '--iters', 2, '--warmup', 1,
             cwd=tmp)
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()
            if line.startswith(('train ', 'infer '))}
    assert set(rows) == {'train', 'infer'}
    assert rows['train'][1] == '4' and rows['infer'][1] == '2'  # 2 batches of 2 / of 1 image
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows.values())


def test_confusion_matrix_of_segmentation_predictions(trained, tmp_path):
    cfg, wd, tmp = trained
    preds = tmp_path / 'preds'
    _run('tools/test.py', cfg, wd / 'iter_4.pth', '--work-dir', tmp_path / 'test', '--out', preds,
         cwd=tmp)
    out = tmp_path / 'cm.png'
    r = _run('tools/analysis/confusion_matrix.py', cfg, preds, '--out', out, cwd=tmp)
    assert out.is_file()
    rows = (tmp_path / 'cm.csv').read_text().splitlines()
    assert rows[0].split(',')[1:] == ['a', 'b', 'c', 'd']
    counts = np.array([[int(v) for v in row.split(',')[1:]] for row in rows[1:]])
    # every labelled pixel of the 4 validation images (32 x 32, all labelled) is counted once
    assert counts.sum() == 4 * 32 * 32
    assert '4 x 4' in r.stdout


def test_browse_dataset_draws_pipeline_output(trained, tmp_path):
    from PIL import Image
    cfg, _, tmp = trained
    out = tmp_path / 'browse'
    r = _run('tools/analysis/browse_dataset.py', cfg, '--num', 2, '--out-dir', out, cwd=tmp)
    assert '2 images written' in r.stdout
    files = sorted(out.glob('*.png'))
    assert [f.name for f in files] == ['000.png', '001.png']
    assert Image.open(files[0]).size[0] >= 32
