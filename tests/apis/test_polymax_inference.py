"""PolyMaX-style depth configs predict on a real image through ``densekit.apis`` with random
weights: the tiny synthetic config in the default tier, the full-size NYUv2 configs in ``slow``."""
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('mmseg')

import cv2  # noqa: E402

from densekit.apis import inference, init_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
IMAGE = REPO.parent / 'shared' / 'data' / 'demo' / 'classroom__rgb_00283.jpg'  # an NYUv2 frame


def _predict(config: Path) -> tuple:
    if not IMAGE.is_file():
        pytest.skip(f'sample image {IMAGE} not found')
    torch.manual_seed(0)
    model = init_model(config)
    assert type(model.decode_head).__name__ == 'PolyMaXDepthHead'
    img = cv2.imread(str(IMAGE))
    with torch.no_grad():
        sample = inference(model, img)
    return model, img, sample.pred_depth_map.data[0].numpy()


def _check(model, img, depth):
    assert depth.shape == img.shape[:2] and np.isfinite(depth).all()
    # A mixture of sigmoid-bounded bins: strictly inside (0, max_depth).
    assert 0 < depth.min() and depth.max() < model.decode_head.activation.max_depth
    assert model.dataset_meta['depth_scale'] == 1000.0


def test_polymax_synthetic_predicts_real_image():
    _check(*_predict(REPO / 'configs/polymax/polymax_resnet18_synthetic.py'))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['polymax_swin-t_nyuv2', 'polymax_convnext-t_nyuv2'])
def test_polymax_full_size_predicts_real_image(name):
    _check(*_predict(REPO / 'configs/polymax' / f'{name}.py'))
