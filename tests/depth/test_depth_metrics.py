"""Known-answer tests of densekit.evaluation.depth_metrics: every expected value is derived by hand
in the comments from the tiny arrays below (no reference implementation is called)."""
import math

import numpy as np
import pytest
import torch

from densekit.evaluation import aggregate_depth_metrics, depth_metrics, eval_crop_mask


def test_known_answer_2x2():
    # Valid pixels (gt in (1e-3, 10)): (gt, pred) = (1, 1), (2, 1), (4, 5); gt = 0 is missing.
    gt = np.array([[1.0, 2.0], [4.0, 0.0]])
    pred = np.array([[1.0, 1.0], [5.0, 3.0]])
    m = depth_metrics(pred, gt, 1e-3, 10.0)
    # ratios max(g/p, p/g) = 1, 2, 1.25 -> <1.25: {1}; <1.5625: {1, 1.25}; <1.953125: {1, 1.25}
    assert m['a1'] == pytest.approx(1 / 3, abs=1e-12)
    assert m['a2'] == pytest.approx(2 / 3, abs=1e-12)
    assert m['a3'] == pytest.approx(2 / 3, abs=1e-12)
    # |g-p|/g = 0, 1/2, 1/4 ; (g-p)^2/g = 0, 1/2, 1/4 ; (g-p)^2 = 0, 1, 1
    assert m['abs_rel'] == pytest.approx(0.25, abs=1e-12)
    assert m['sq_rel'] == pytest.approx(0.25, abs=1e-12)
    assert m['rmse'] == pytest.approx(math.sqrt(2 / 3), abs=1e-12)
    # e = ln p - ln g = 0, -ln 2, ln 1.25
    e = [0.0, -math.log(2.0), math.log(1.25)]
    assert m['rmse_log'] == pytest.approx(math.sqrt(sum(x * x for x in e) / 3), abs=1e-12)
    # |log10 g - log10 p| = 0, log10 2, log10 1.25 -> their sum is log10 2.5
    assert m['log10'] == pytest.approx(math.log10(2.5) / 3, abs=1e-12)
    mean_e = (math.log(1.25) - math.log(2.0)) / 3  # = ln(0.625) / 3
    mean_e2 = (math.log(2.0) ** 2 + math.log(1.25) ** 2) / 3
    assert m['silog'] == pytest.approx(100 * math.sqrt(mean_e2 - mean_e ** 2), abs=1e-10)
    assert set(m) == {'a1', 'a2', 'a3', 'abs_rel', 'sq_rel', 'rmse', 'rmse_log', 'log10', 'silog'}


def test_constant_scale_error_has_zero_silog():
    # pred = 2 * gt everywhere: e = ln 2 is constant, so silog = 100*sqrt(ln2^2 - ln2^2) = 0,
    # while abs_rel = |g - 2g|/g = 1, rmse_log = ln 2, log10 = log10 2 and a1 = a2 = a3 = 0.
    gt = torch.tensor([[1.0, 2.0, 3.0]])
    m = depth_metrics(2 * gt, gt, 1e-3, 10.0)
    assert m['silog'] == pytest.approx(0.0, abs=1e-6)
    assert m['abs_rel'] == pytest.approx(1.0, abs=1e-12)
    assert m['rmse_log'] == pytest.approx(math.log(2.0), abs=1e-12)
    assert m['log10'] == pytest.approx(math.log10(2.0), abs=1e-12)
    assert (m['a1'], m['a2'], m['a3']) == (0.0, 0.0, 0.0)  # 2 >= 1.25**3 = 1.953125
    # rmse = sqrt(mean(g^2)) = sqrt((1 + 4 + 9) / 3)
    assert m['rmse'] == pytest.approx(math.sqrt(14 / 3), abs=1e-12)


def test_prediction_is_clamped_and_gt_bounds_are_exclusive():
    # min_depth=0.25, max_depth=10. gt 10 (== max) is excluded; gt 0.5 and 2 are valid.
    # pred 0 is clamped to 0.25 (ratio 2), pred inf becomes 10 (ratio 5).
    gt = np.array([[10.0, 0.5, 2.0]])
    pred = np.array([[3.0, 0.0, np.inf]])
    m = depth_metrics(pred, gt, 0.25, 10.0)
    # valid pairs (0.5, 0.25), (2, 10): abs_rel = (0.25/0.5 + 8/2)/2 = (0.5 + 4)/2
    assert m['abs_rel'] == pytest.approx(2.25, abs=1e-12)
    assert m['a3'] == 0.0
    # rmse = sqrt((0.25^2 + 8^2)/2)
    assert m['rmse'] == pytest.approx(math.sqrt((0.0625 + 64) / 2), abs=1e-12)


def test_nyu_eigen_crop_bounds_and_exclusion():
    mask = eval_crop_mask(480, 640, 'eigen', dataset='nyu')
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (45, 471, 41, 601)
    assert mask.sum() == (471 - 45) * (601 - 41)
    # 'auto' picks NYU for a 4:3 frame
    assert np.array_equal(eval_crop_mask(480, 640, 'eigen'), mask)
    gt = np.full((480, 640), 2.0)
    pred = gt.copy()
    pred[0, 0] = 8.0  # outside the crop: ignored with crop='eigen', counted without
    assert depth_metrics(pred, gt, 1e-3, 10.0, crop='eigen')['abs_rel'] == 0.0
    assert depth_metrics(pred, gt, 1e-3, 10.0)['abs_rel'] == pytest.approx(3.0 / (480 * 640))


def test_kitti_crops():
    h, w = 375, 1242
    # garg: int(0.40810811*375)=153, int(0.99189189*375)=371, int(0.03594771*1242)=44,
    # int(0.96405229*1242)=1197
    garg = eval_crop_mask(h, w, 'garg')
    rows, cols = np.nonzero(garg)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (153, 371, 44, 1197)
    # eigen (KITTI picked automatically for the wide frame): int(0.3324324*375)=124,
    # int(0.91351351*375)=342, int(0.0359477*1242)=44, int(0.96405229*1242)=1197
    eig = eval_crop_mask(h, w, 'eigen')
    rows, cols = np.nonzero(eig)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (124, 342, 44, 1197)
    assert np.array_equal(eig, eval_crop_mask(h, w, 'eigen', dataset='kitti'))


def test_aggregate_is_per_image_mean():
    gt = np.array([[1.0, 1.0]])
    m1 = depth_metrics(np.array([[1.0, 1.0]]), gt, 1e-3, 80.0)  # abs_rel 0, a1 1
    m2 = depth_metrics(np.array([[1.5, 1.5]]), gt, 1e-3, 80.0)  # abs_rel 0.5, a1 0 (1.5 >= 1.25)
    agg = aggregate_depth_metrics([m1, m2])
    assert agg['abs_rel'] == pytest.approx(0.25)
    assert agg['a1'] == pytest.approx(0.5)
    # a2: 1.5 < 1.5625 -> both images 1.0
    assert agg['a2'] == pytest.approx(1.0)


def test_errors_name_the_offending_values():
    with pytest.raises(ValueError, match='crop'):
        depth_metrics(np.ones((2, 2)), np.ones((2, 2)), 1e-3, 10, crop='nyu')
    with pytest.raises(ValueError, match=r'\(2, 3\)'):
        depth_metrics(np.ones((2, 3)), np.ones((2, 2)), 1e-3, 10)
    with pytest.raises(ValueError, match='no valid'):
        depth_metrics(np.ones((2, 2)), np.zeros((2, 2)), 1e-3, 10)
    with pytest.raises(ValueError, match='min_depth'):
        depth_metrics(np.ones((2, 2)), np.ones((2, 2)), 10, 1)
