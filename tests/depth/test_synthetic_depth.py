"""The synthetic depth set: deterministic, depth in range with holes, png round trip (core only)."""
import cv2
import numpy as np

from densekit.datasets.synthetic_depth import MAX_DEPTH, make_synthetic_depth, render_scene


def test_render_is_deterministic_and_plausible():
    a_img, a_depth = render_scene(np.random.default_rng(3), 24, 32)
    b_img, b_depth = render_scene(np.random.default_rng(3), 24, 32)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_depth, b_depth)
    assert a_img.shape == (24, 32, 3) and a_img.dtype == np.uint8
    assert a_depth.shape == (24, 32) and a_depth.dtype == np.float32
    valid = a_depth[a_depth > 0]
    assert (a_depth == 0).any()  # the sensor hole
    assert 0.3 < valid.min() and valid.max() <= MAX_DEPTH
    assert valid.std() > 0.1  # a scene, not a constant
    c_img, _ = render_scene(np.random.default_rng(4), 24, 32)
    assert not np.array_equal(a_img, c_img)


def test_written_set_round_trips(tmp_path):
    make_synthetic_depth(tmp_path / 'a', num_train=2, num_val=1, height=20, width=24, seed=5)
    make_synthetic_depth(tmp_path / 'b', num_train=2, num_val=1, height=20, width=24, seed=5)
    for rel in ('images/train/scene_00001.png', 'depth/train/scene_00001.png',
                'depth/val/scene_00000.png'):
        assert (tmp_path / 'a' / rel).read_bytes() == (tmp_path / 'b' / rel).read_bytes(), rel
    png = cv2.imread(str(tmp_path / 'a' / 'depth/val/scene_00000.png'), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16 and png.shape == (20, 24)
    # millimetres: the largest value is at most 10 m
    assert 0 < png.max() <= 10000
    # train scene 0 and val scene 0 differ (split offset in the seed)
    assert (tmp_path / 'a' / 'images/train/scene_00000.png').read_bytes() != \
        (tmp_path / 'a' / 'images/val/scene_00000.png').read_bytes()
