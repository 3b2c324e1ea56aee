"""Panoptic inference end to end: a Mask2Former panoptic config with densekit's tiny Swin, random
weights, through ``densekit.apis`` and the panoptic writer."""
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('mmdet')

import cv2  # noqa: E402
from mmengine.config import Config  # noqa: E402

from densekit.apis import inference, init_model  # noqa: E402
from densekit.mm.inference import save_predictions  # noqa: E402
from densekit.models import build_backbone  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CFG = REPO / 'configs/mask2former/mask2former_swin-t_lsj-50e_coco-panoptic.py'


def _narrow(obj):
    """Head widths 256 -> 32, one layer per transformer, 10 queries, BN for SyncBN."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ('feat_channels', 'out_channels', 'embed_dims') and v == 256:
                obj[k] = 32
            elif k == 'feedforward_channels' and isinstance(v, int) and v >= 1024:
                obj[k] = 64
            elif k == 'num_feats' and v == 128:
                obj[k] = 16
            elif k == 'num_heads' and v == 8:
                obj[k] = 2
            elif k == 'num_layers':
                obj[k] = 1
            elif k == 'num_queries':
                obj[k] = 10
            elif k == 'type' and v == 'SyncBN':
                obj[k] = 'BN'
            else:
                _narrow(v)
    elif isinstance(obj, list):
        for v in obj:
            _narrow(v)


def _tiny_config(tmp_path) -> Path:
    cfg = Config.fromfile(str(CFG))
    chans = [f['num_chs'] for f in build_backbone('swin_test').feature_info]
    cfg.model.backbone = dict(type='swin_test', out_indices=(0, 1, 2, 3))
    _narrow(cfg.model)
    cfg.model.panoptic_head.in_channels = chans
    # random weights score low: keep every query's mask so that segments exist
    cfg.model.test_cfg.update(object_mask_thr=0.0, iou_thr=0.0)
    for step in cfg.test_dataloader.dataset.pipeline:
        if step['type'] == 'Resize':
            step['scale'] = (128, 96)
    path = tmp_path / 'tiny_panoptic.py'
    cfg.dump(str(path))
    return path


def test_panoptic_prediction_and_png(tmp_path):
    model = init_model(_tiny_config(tmp_path))
    img = np.zeros((75, 101, 3), np.uint8)
    cv2.circle(img, (40, 30), 15, (20, 200, 60), -1)
    sample = inference(model, img)
    pan = sample.pred_panoptic_seg.sem_seg[0].numpy()
    assert pan.shape == img.shape[:2]
    classes = model.dataset_meta['classes']
    assert len(classes) == 133  # COCO panoptic: 80 things + 53 stuff, from the config's dataset
    info = save_predictions(sample, tmp_path, 'p', 0, classes=classes)
    rgb = cv2.imread(info['files'][0])[..., ::-1].astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]
    assert info['segments_info'], 'no segment: the writer was not exercised'
    assert sum(s['area'] for s in info['segments_info']) == int((ids > 0).sum())
    for seg in info['segments_info']:
        assert 0 <= seg['category_id'] < len(classes) and seg['category'] == classes[seg['category_id']]
