"""``tools/infer.py`` run as a user runs it, on a folder of sample images with a checkpoint of
random weights saved from ``init_model``."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

import cv2  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEMO = Path(os.environ.get('DENSEKIT_SHARED_DATA', REPO.parent / 'shared' / 'data')) / 'demo'


@pytest.fixture(scope='module')
def images(tmp_path_factory) -> Path:
    """Two sample images, downscaled (the tool's cost is the model's, not the point here)."""
    found = sorted(p for p in DEMO.glob('*') if p.suffix.lower() in ('.jpg', '.png'))[:2]
    if len(found) < 2:
        pytest.skip(f'sample images not found under {DEMO}')
    d = tmp_path_factory.mktemp('demo')
    (d / 'more').mkdir()
    for src, dst in zip(found, (d / 'one.jpg', d / 'more' / 'two.png')):
        img = cv2.imread(str(src))
        scale = 128 / max(img.shape[:2])
        cv2.imwrite(str(dst), cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    return d


def _checkpoint(config: Path, path: Path) -> Path:
    from densekit.apis import init_model
    model = init_model(config)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=model.dataset_meta)), path)
    return path


def _infer(*args) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, str(REPO / 'tools/infer.py'), *map(str, args)],
                       capture_output=True, text=True, cwd=REPO, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_instance_segmentation_folder(images, tmp_path):
    cfg = REPO / 'configs/quickstart/mask-rcnn_r18_synthetic.py'
    ckpt = _checkpoint(cfg, tmp_path / 'det.pth')
    out = tmp_path / 'out'
    r = _infer(cfg, ckpt, images, '--out-dir', out, '--score-thr', '0.05')
    assert '2/2' in r.stdout, r.stdout  # progress bar on a folder
    assert sorted(p.name for p in (out / 'vis').iterdir()) == ['more__two.jpg', 'one.jpg']
    from pycocotools.coco import COCO
    coco = COCO(str(out / 'detections.json'))
    assert [im['file_name'] for im in coco.dataset['images']] == [  # sorted paths
        str(images / 'more' / 'two.png'), str(images / 'one.jpg')]
    assert [c['name'] for c in coco.dataset['categories']] == [
        'circle', 'square', 'triangle', 'star', 'ellipse']
    anns = coco.dataset['annotations']
    assert anns and all(a['score'] >= 0.05 for a in anns)
    h, w = cv2.imread(str(images / 'one.jpg')).shape[:2]
    for a in coco.loadAnns(coco.getAnnIds(imgIds=[1])):
        mask = coco.annToMask(a)
        assert mask.shape == (h, w) and mask.sum() == a['area']


def test_depth_folder(images, tmp_path):
    cfg = REPO / 'configs/depth/dpt_resnet18_synthetic.py'
    ckpt = _checkpoint(cfg, tmp_path / 'depth.pth')
    out = tmp_path / 'out'
    _infer(cfg, ckpt, images, '--out-dir', out)
    for name, src in (('one', images / 'one.jpg'), ('more__two', images / 'more' / 'two.png')):
        depth = np.load(out / 'pred' / f'{name}_depth.npy')
        png = cv2.imread(str(out / 'pred' / f'{name}_depth.png'), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint16 and png.shape == depth.shape == cv2.imread(str(src)).shape[:2]
        np.testing.assert_array_equal(png, np.clip(np.round(depth * 1000), 0, 65535).astype(np.uint16))
        vis = cv2.imread(str(out / 'vis' / f'{name}.jpg'))
        assert vis.shape[1] == 2 * depth.shape[1]  # image | colour-mapped depth


def test_missing_input_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / 'tools/infer.py'),
                        str(REPO / 'configs/quickstart/fpn_r18_synthetic-ade.py'), 'none',
                        str(tmp_path / 'nothing_here')], capture_output=True, text=True, cwd=REPO,
                       timeout=600, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode != 0 and 'nothing_here is neither an image file nor a folder' in r.stderr
