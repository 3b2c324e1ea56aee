"""``tensorboard = True`` in a config: the TensorBoard backend when the extra is installed, a
message naming the extra when it is not."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO  # noqa: E402

pytest.importorskip('mmdet')
TEMPLATE = REPO / 'configs' / 'custom' / 'mask-rcnn_convnext-t_fpn_custom-coco.py'
HAVE_TB = importlib.util.find_spec('tensorboard') is not None


@pytest.mark.skipif(HAVE_TB, reason='TensorBoard is installed')
def test_tensorboard_switch_without_the_extra_names_it():
    import densekit  # noqa: F401
    from densekit.mm.runner import enable_tensorboard, load_config
    cfg = load_config(str(TEMPLATE))
    assert not enable_tensorboard(cfg)  # off by default
    cfg.tensorboard = True
    with pytest.raises(ImportError, match=r'pip install -e "\.\[tensorboard\]"'):
        enable_tensorboard(cfg)


@pytest.mark.skipif(not HAVE_TB, reason='TensorBoard (the [tensorboard] extra) is not installed')
def test_tensorboard_switch_adds_the_backend():
    import densekit  # noqa: F401
    from densekit.mm.runner import enable_tensorboard, load_config
    cfg = load_config(str(TEMPLATE))
    cfg.tensorboard = True
    assert enable_tensorboard(cfg)
    types = [b['type'] for b in cfg.visualizer.vis_backends]
    assert types == ['LocalVisBackend', 'TensorboardVisBackend']
