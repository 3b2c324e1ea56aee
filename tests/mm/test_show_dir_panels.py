"""One picture layout for every task: labelled ``ground truth | prediction`` panels, drawn by
:func:`densekit.mm.visualization.render_panels` and written by ``tools/test.py --show-dir``."""
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

import densekit  # noqa: E402,F401
from conftest import REPO  # noqa: E402
from densekit.mm.visualization import (COLORBAR_HEIGHT, GT_LABEL, LABEL_HEIGHT,  # noqa: E402
                                       PRED_LABEL, label_strip, panel_scale, render_panels)

sys.path.insert(0, str(REPO / 'tests' / 'engine'))  # tiny_seg
from tiny_seg import env_with_hooks  # noqa: E402


def assert_labelled(drawing, width):
    """The caption row must be the two labels, each centred over its panel."""
    expected = np.concatenate([label_strip(width, GT_LABEL), label_strip(width, PRED_LABEL)], 1)
    np.testing.assert_array_equal(drawing[:LABEL_HEIGHT], expected)
    for half in (expected[:, :width], expected[:, width:]):
        assert half.min() < 64 < 192 < half.max()  # text on the dark strip, not a blank strip


def test_instances_gt_left_prediction_right_below_the_threshold_not_drawn():
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    img = np.full((40, 60, 3), 100, np.uint8)
    s = DetDataSample(metainfo=dict(ori_shape=(40, 60), img_shape=(40, 60)))
    gt_mask = np.zeros((1, 40, 60), np.uint8)
    gt_mask[0, 10:30, 5:25] = 1
    s.gt_instances = InstanceData(bboxes=torch.tensor([[5., 10., 25., 30.]]),
                                  labels=torch.tensor([1]), masks=BitmapMasks(gt_mask, 40, 60))
    pred_mask = torch.zeros(2, 40, 60, dtype=torch.bool)
    pred_mask[0, 12:28, 30:50] = True
    pred_mask[1, 30:40, 40:60] = True
    boxes = torch.tensor([[30., 12., 50., 28.], [40., 30., 60., 40.]])
    s.pred_instances = InstanceData(bboxes=boxes,
                                    labels=torch.tensor([0, 2]), scores=torch.tensor([0.9, 0.1]),
                                    masks=pred_mask)
    out = render_panels(img, s, dict(classes=('a', 'b', 'c')), score_thr=0.3)
    k = panel_scale(60)
    assert k == 3 and out.shape == (LABEL_HEIGHT + 40 * k, 2 * 60 * k, 3)
    assert_labelled(out, 60 * k)
    gt, pred = out[LABEL_HEIGHT:, :60 * k], out[LABEL_HEIGHT:, 60 * k:]
    # masks filled where the instance is, the image untouched elsewhere
    assert np.abs(gt[15 * k:25 * k, 10 * k:20 * k].astype(int) - 100).max(-1).min() > 30
    np.testing.assert_array_equal(gt[:, 30 * k:], 100)  # the prediction is not on the GT side
    assert np.abs(pred[16 * k:24 * k, 35 * k:45 * k].astype(int) - 100).max(-1).min() > 30
    np.testing.assert_array_equal(pred[:, 1:25 * k], 100)  # nor the GT on the prediction side
    np.testing.assert_array_equal(pred[31 * k:, 41 * k:], 100)  # score 0.1 < 0.3: not drawn
    np.testing.assert_array_equal(pred[:, 0], 255)  # the line between the panels


def test_depth_panels_share_one_scale_with_a_colour_bar():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from densekit.mm.depth import colorize_depth
    s = SegDataSample(metainfo=dict(ori_shape=(32, 48)))
    gt = torch.linspace(0.5, 9.5, 32 * 48).reshape(1, 32, 48)
    s.gt_depth_map = PixelData(data=gt)
    s.pred_depth_map = PixelData(data=gt.flip(-1))
    out = render_panels(None, s, dict(max_depth=10.0))
    k = panel_scale(48)
    assert out.shape == (LABEL_HEIGHT + 32 * k + COLORBAR_HEIGHT, 2 * 48 * k, 3)
    assert_labelled(out, 48 * k)
    expected = colorize_depth(gt[0].numpy(), 10.0)
    np.testing.assert_array_equal(out[LABEL_HEIGHT:LABEL_HEIGHT + 32 * k:k, :48 * k:k], expected)
    bar = out[LABEL_HEIGHT + 32 * k:]
    # the bar runs over the same 0..10 m scale, near (left) to far (right)
    np.testing.assert_array_equal(bar[0, -1], colorize_depth(np.array([[10.0]]), 10.0)[0, 0])
    assert not np.array_equal(bar[0, 0], bar[0, -1])
    assert bar[-12:].max() > 192  # the scale's values are written under it


def test_semantic_labels_coloured_ignored_pixels_left_alone():
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    img = np.full((40, 40, 3), 100, np.uint8)
    lab = torch.zeros(1, 40, 40, dtype=torch.long)
    lab[:, 20:] = 1
    lab[:, :, :10] = 255
    s = SegDataSample(metainfo=dict(ori_shape=(40, 40)))
    s.gt_sem_seg, s.pred_sem_seg = PixelData(data=lab), PixelData(data=torch.ones_like(lab))
    out = render_panels(img, s, dict(classes=('x', 'y'), palette=[[255, 0, 0], [0, 0, 255]]))
    k = panel_scale(40)
    gt, pred = out[LABEL_HEIGHT:, :40 * k], out[LABEL_HEIGHT:, 40 * k:]
    np.testing.assert_array_equal(gt[:, :9 * k], 100)  # ignore index 255
    np.testing.assert_array_equal(gt[2 * k, 15 * k], [193, 40, 40])  # 0.4 * 100 + 0.6 * red
    np.testing.assert_array_equal(gt[30 * k, 15 * k], [40, 40, 193])
    np.testing.assert_array_equal(pred[2 * k, 15 * k], [40, 40, 193])


def _checkpoint(config, path, **cfg_options):
    from densekit.apis import init_model
    model = init_model(str(config), cfg_options=cfg_options or None)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return path


def _test_tool(config, ckpt, show, cwd, *options):
    r = subprocess.run([sys.executable, str(REPO / 'tools' / 'test.py'), str(config), str(ckpt),
                        '--work-dir', str(cwd / 'work'), '--show-dir', str(show),
                        '--cfg-options', *options],
                       cwd=cwd, env=env_with_hooks(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_show_dir_detection(tmp_path):
    from densekit.datasets.synthetic import make_coco_shapes
    root = tmp_path / 'coco'
    make_coco_shapes(root, 'val', num_images=2)
    config = REPO / 'configs' / 'quickstart' / 'mask-rcnn_r18_synthetic.py'
    ckpt = _checkpoint(config, tmp_path / 'model.pth')
    ann = root / 'annotations' / 'instances_val.json'
    # an untrained model: keep every detection so that the metric has input
    _test_tool(config, ckpt, tmp_path / 'show', tmp_path,
               f'test_dataloader.dataset.data_root={root}/', f'test_evaluator.ann_file={ann}',
               'model.test_cfg.rcnn.score_thr=0.0')
    drawn = sorted(p.name for p in (tmp_path / 'show').iterdir())
    assert drawn == ['000001.png', '000002.png']  # flat: <show-dir>/<image name>.png
    out = cv2.imread(str(tmp_path / 'show' / drawn[0]))[..., ::-1]
    assert panel_scale(160) == 1 and out.shape == (LABEL_HEIGHT + 160, 320, 3)
    assert_labelled(out, 160)
    image = cv2.imread(str(root / 'val' / '000001.jpg'))[..., ::-1]
    gt = out[LABEL_HEIGHT:, :160].astype(int)
    assert (np.abs(gt - image).max(-1) > 30).mean() > 0.02  # the shapes' masks and boxes


# Segmentation through tools/test.py --show-dir (subprocess): the same layout is asserted by
# tests/engine/test_tools.py::test_test_tool_evaluates_and_dumps on its tiny mmseg config.
