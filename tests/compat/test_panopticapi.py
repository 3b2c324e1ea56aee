"""densekit's stand-in for the COCO panoptic API (``densekit.compat.panopticapi``).

Known-answer PQ on hand-made maps, parity with a real ``panopticapi`` when one is installed, the
id <-> RGB round trip, that a real package is never shadowed, and mmdet's ``CocoPanopticMetric``
running on the stand-in.
"""
import copy
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from densekit.compat.panopticapi import evaluation as ours
from densekit.compat.panopticapi.utils import id2rgb, rgb2id

REPO = Path(__file__).resolve().parents[2]
# category 1 is a thing, 2 and 3 are stuff
CATS = {1: {'id': 1, 'isthing': 1}, 2: {'id': 2, 'isthing': 0}, 3: {'id': 3, 'isthing': 0}}


def _gt(seg_id, cat, pan, crowd=0):
    return {'id': seg_id, 'category_id': cat, 'iscrowd': crowd, 'area': int((pan == seg_id).sum())}


def _stats(stat):
    return {c: (s.tp, s.fp, s.fn, s.iou) for c, s in stat.pq_per_cat.items()
            if s.tp + s.fp + s.fn}


def test_perfect_match():
    gt = np.array([[1, 1, 2, 2]] * 4)
    pred = np.where(gt == 1, 5, 6)
    stat = ours.pq_stat_single_image(gt, pred, [_gt(1, 1, gt), _gt(2, 2, gt)],
                                     [{'id': 5, 'category_id': 1}, {'id': 6, 'category_id': 2}],
                                     CATS)
    # each segment matched with IoU 1: PQ = SQ = RQ = 1 for both categories
    assert _stats(stat) == {1: (1, 0, 0, 1.0), 2: (1, 0, 0, 1.0)}
    avg, per_class = stat.pq_average(CATS, isthing=None)
    assert avg == {'pq': 1.0, 'sq': 1.0, 'rq': 1.0, 'n': 2}
    assert per_class[3] == {'pq': 0.0, 'sq': 0.0, 'rq': 0.0}   # absent: not in n


def test_missed_segment_and_false_positive():
    gt = np.array([[1, 1, 1, 1]] * 2 + [[2, 2, 2, 2]] * 2)
    pred = np.where(gt == 1, 5, 6)
    stat = ours.pq_stat_single_image(gt, pred, [_gt(1, 1, gt), _gt(2, 2, gt)],
                                     [{'id': 5, 'category_id': 1}, {'id': 6, 'category_id': 3}],
                                     CATS)
    # gt 2 (category 2) is predicted as category 3: one FN for 2, one FP for 3.
    # PQ_1 = 1; PQ_2 = 0 / (0 + 0.5) = 0; PQ_3 = 0 / (0 + 0.5) = 0 -> All = 1/3 over n = 3
    assert _stats(stat) == {1: (1, 0, 0, 1.0), 2: (0, 0, 1, 0.0), 3: (0, 1, 0, 0.0)}
    avg, _ = stat.pq_average(CATS, isthing=None)
    assert avg == {'pq': 1 / 3, 'sq': 1 / 3, 'rq': 1 / 3, 'n': 3}
    assert stat.pq_average(CATS, isthing=True)[0] == {'pq': 1.0, 'sq': 1.0, 'rq': 1.0, 'n': 1}
    assert stat.pq_average(CATS, isthing=False)[0] == {'pq': 0.0, 'sq': 0.0, 'rq': 0.0, 'n': 2}


@pytest.mark.parametrize('split', [2, 3])
def test_iou_one_half_is_not_a_match(split):
    gt = np.array([[1, 1, 1, 1, 2, 2, 2, 2]])
    pred = np.array([[5] * split + [6] * (8 - split)])
    stat = ours.pq_stat_single_image(gt, pred, [_gt(1, 1, gt), _gt(2, 2, gt)],
                                     [{'id': 5, 'category_id': 1}, {'id': 6, 'category_id': 2}],
                                     CATS)
    if split == 2:
        # gt 1 (4 px) vs pred 5 (2 px): IoU = 2 / 4 = 0.5, not > 0.5 -> FN and FP for category 1.
        # gt 2 (4 px) vs pred 6 (6 px): IoU = 4 / 6 -> TP. PQ_1 = 0, PQ_2 = SQ_2 = 2/3, RQ_2 = 1.
        assert _stats(stat) == {1: (0, 1, 1, 0.0), 2: (1, 0, 0, 4 / 6)}
        assert stat.pq_average(CATS, None)[0] == pytest.approx(
            {'pq': 1 / 3, 'sq': 1 / 3, 'rq': 1 / 2, 'n': 2}, rel=1e-15)
    else:
        # IoU 3 / 4 and 4 / 5: both matched
        assert _stats(stat) == {1: (1, 0, 0, 3 / 4), 2: (1, 0, 0, 4 / 5)}


@pytest.mark.parametrize('fp_category', [1, 2])
def test_prediction_on_crowd_region(fp_category):
    gt = np.array([[1, 1, 1, 1, 2, 2, 2, 2]])
    pred = np.array([[5, 5, 5, 6, 6, 6, 6, 6]])
    gt_segs = [_gt(1, 1, gt, crowd=1), _gt(2, 2, gt)]
    stat = ours.pq_stat_single_image(
        gt, pred, gt_segs, [{'id': 5, 'category_id': fp_category}, {'id': 6, 'category_id': 2}],
        CATS)
    # pred 6 (5 px, 1 on the crowd region) vs gt 2 (4 px): IoU = 4 / 5 -> TP of category 2.
    # The crowd gt itself is never a FN.
    if fp_category == 1:
        # pred 5 lies 3/3 on the crowd region of its own category: not a FP.
        # Only category 2 occurs: PQ = SQ = 0.8, RQ = 1.
        assert _stats(stat) == {2: (1, 0, 0, 4 / 5)}
        assert stat.pq_average(CATS, None)[0] == {'pq': 0.8, 'sq': 0.8, 'rq': 1.0, 'n': 1}
    else:
        # The crowd region is of another category: pred 5 is a FP of category 2.
        # PQ_2 = 0.8 / (1 + 0.5) = 8/15, SQ_2 = 0.8, RQ_2 = 1 / 1.5 = 2/3.
        assert _stats(stat) == {2: (1, 1, 0, 4 / 5)}
        assert stat.pq_average(CATS, None)[0] == pytest.approx(
            {'pq': 8 / 15, 'sq': 0.8, 'rq': 2 / 3, 'n': 1}, rel=1e-15)


def test_void_pixels_are_left_out():
    gt = np.array([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1]])
    pred = np.array([[6, 6, 5, 5, 5, 5, 5, 5, 5, 5]])
    stat = ours.pq_stat_single_image(
        gt, pred, [_gt(1, 1, gt)], [{'id': 5, 'category_id': 1}, {'id': 6, 'category_id': 1}],
        CATS)
    # pred 5 (8 px, 2 on VOID) vs gt 1 (6 px): union = 8 + 6 - 6 - 2 = 6 -> IoU 1 (0.75 if
    # VOID counted). pred 6 lies entirely on VOID: not a FP. PQ = SQ = RQ = 1.
    assert _stats(stat) == {1: (1, 0, 0, 1.0)}


def test_inconsistent_prediction_raises():
    gt = np.array([[1, 1, 2, 2]])
    pred = np.array([[5, 5, 7, 7]])
    with pytest.raises(KeyError, match=r'\[7\]'):
        ours.pq_stat_single_image(gt, pred, [_gt(1, 1, gt), _gt(2, 2, gt)],
                                  [{'id': 5, 'category_id': 1}], CATS)


def test_rgb_id_round_trip():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256 ** 3, size=(7, 9), dtype=np.int64)
    ids[0, :3] = [0, 1, 256 ** 3 - 1]
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (7, 9, 3)
    np.testing.assert_array_equal(rgb2id(rgb), ids)
    assert id2rgb(70000) == [112, 17, 1] and rgb2id([112, 17, 1]) == 70000


def _random_image(rng, h=23, w=31):
    """Random rectangles as ground truth; a jittered, partly relabelled copy as prediction."""
    gt = np.zeros((h, w), np.int64)
    pred = np.zeros((h, w), np.int64)
    boxes = []
    for k in range(1, 9):
        y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
        bh, bw = rng.integers(3, h // 2), rng.integers(3, w // 2)
        gt[y:y + bh, x:x + bw] = k
        boxes.append((k, y, x, bh, bw))
    gt[rng.random((h, w)) < 0.05] = 0                       # scattered VOID pixels
    gt_segs, crowd_cats = [], set()
    for k in np.unique(gt[gt > 0]):
        cat = int(rng.integers(1, 4))
        crowd = int(cat not in crowd_cats and rng.random() < 0.25)  # <= one crowd per category
        if crowd:
            crowd_cats.add(cat)
        gt_segs.append(_gt(int(k), cat, gt, crowd))
    gt_cat = {s['id']: s['category_id'] for s in gt_segs}
    for k, y, x, bh, bw in boxes + [(9, *rng.integers(0, 10, 2), 6, 6)]:
        dy, dx = rng.integers(-2, 3, 2)
        pred[max(0, y + dy):y + dy + bh, max(0, x + dx):x + dx + bw] = 70000 + 11 * k  # 3 bytes
    pred_segs = []
    for p in np.unique(pred[pred > 0]):
        k = (int(p) - 70000) // 11
        cat = gt_cat.get(k, 1) if rng.random() < 0.8 else int(rng.integers(1, 4))
        pred_segs.append({'id': int(p), 'category_id': cat})
    return gt, pred, gt_segs, pred_segs


def test_parity_with_real_panopticapi(tmp_path):
    real = pytest.importorskip('panopticapi.evaluation')
    if Path(real.__file__).resolve().is_relative_to(REPO):
        pytest.skip('no real panopticapi installed (the import resolved to densekit)')
    from PIL import Image
    rng = np.random.default_rng(0)
    (tmp_path / 'gt').mkdir()
    (tmp_path / 'pred').mkdir()
    pairs = []
    for i in range(12):
        gt, pred, gt_segs, pred_segs = _random_image(rng)
        Image.fromarray(id2rgb(gt)).save(tmp_path / 'gt' / f'{i}.png')
        Image.fromarray(id2rgb(pred)).save(tmp_path / 'pred' / f'{i}.png')
        pairs.append(({'image_id': i, 'file_name': f'{i}.png', 'segments_info': gt_segs},
                      {'image_id': i, 'file_name': f'{i}.png', 'segments_info': pred_segs}))
    args = (str(tmp_path / 'gt'), str(tmp_path / 'pred'), CATS)
    # the reference writes each predicted segment's area into the dicts: give it copies
    theirs = real.pq_compute_single_core(0, copy.deepcopy(pairs), *args)
    mine = ours.pq_compute_single_core(0, pairs, *args)
    assert _stats(mine) == _stats(theirs)
    assert sum(s.tp for s in mine.pq_per_cat.values()) > 10     # the case is not degenerate
    assert sum(s.fp + s.fn for s in mine.pq_per_cat.values()) > 10
    for isthing in (None, True, False):
        assert mine.pq_average(CATS, isthing) == theirs.pq_average(CATS, isthing)


def _site_without_panopticapi(tmp_path: Path) -> Path:
    """A copy (by symlinks) of the site-packages directories, without any ``panopticapi*``."""
    filtered = tmp_path / 'site'
    filtered.mkdir()
    for d in site.getsitepackages() + [site.getusersitepackages()]:
        if not os.path.isdir(d):
            continue
        for entry in Path(d).iterdir():
            target = filtered / entry.name
            if not entry.name.lower().startswith('panopticapi') and not target.exists():
                target.symlink_to(entry)
    return filtered


def _run_without_real_panopticapi(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a Python that cannot see an installed ``panopticapi``.

    ``-S`` skips the site-packages directories; ``site.addsitedir`` then adds a symlinked copy of
    them without ``panopticapi*`` (and processes its ``.pth`` files), so the interpreter looks
    exactly like one on a machine where panopticapi was never installed (as in CI).
    """
    script = tmp_path / 'run.py'
    script.write_text(f'import site; site.addsitedir({str(_site_without_panopticapi(tmp_path))!r})\n'
                      f'import sys; sys.path.insert(0, {str(REPO)!r})\n' + textwrap.dedent(code))
    return subprocess.run([sys.executable, '-S', str(script)], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))


def test_real_panopticapi_is_not_shadowed(tmp_path):
    fake = tmp_path / 'fake' / 'panopticapi'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text('REAL_MARKER = True\n')
    (fake / 'evaluation.py').write_text('VOID = "real"\n')
    code = f'''
        sys.path.insert(0, {str(fake.parent)!r})
        import densekit, panopticapi, panopticapi.evaluation
        assert getattr(panopticapi, 'REAL_MARKER', False), panopticapi
        assert panopticapi.evaluation.VOID == 'real', panopticapi.evaluation
        try:
            import panopticapi.utils   # the real package lacks it: densekit must not fill it in
        except ModuleNotFoundError:
            print('ok')
    '''
    r = _run_without_real_panopticapi(tmp_path, code)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-3000:]


def test_mmdet_coco_panoptic_metric_on_the_shim(tmp_path):
    """mmdet's ``CocoPanopticMetric`` with the ground truth fed back as the prediction: PQ 100.

    Also a dropped thing instance: one FN in ``person`` gives PQ_person = 1 / (1 + 0.5) = 2/3,
    so PQ over the 4 classes = (2/3 + 3) / 4 and RQ likewise, while SQ stays 100.
    """
    pytest.importorskip('mmdet')
    code = f'''
        import densekit, mmcv, numpy as np, torch, sys, os
        import panopticapi.evaluation, panopticapi.utils
        from densekit.compat import panopticapi as shim
        assert sys.modules['panopticapi'] is shim, sys.modules['panopticapi']
        assert panopticapi.evaluation is shim.evaluation and panopticapi.utils is shim.utils
        from mmdet.evaluation import CocoPanopticMetric, INSTANCE_OFFSET
        from panopticapi.utils import id2rgb
        classes = ('person', 'car', 'sky', 'grass')
        # things: (instance + 1) * INSTANCE_OFFSET + label; stuff: its label
        pan = np.full((20, 30), 2, np.int64)                 # sky
        pan[12:] = 3                                         # grass
        pan[2:9, 3:10] = 1 * INSTANCE_OFFSET + 0             # person 1
        pan[10:18, 14:22] = 2 * INSTANCE_OFFSET + 0          # person 2
        pan[4:10, 20:28] = 3 * INSTANCE_OFFSET + 1           # car
        seg_dir = {str(tmp_path / 'gt')!r}
        os.makedirs(seg_dir)
        mmcv.imwrite(id2rgb(pan)[:, :, ::-1], os.path.join(seg_dir, 'img.png'))
        segments = [dict(id=int(i), category=int(i % INSTANCE_OFFSET),
                         is_thing=bool(i >= INSTANCE_OFFSET)) for i in np.unique(pan)]

        def evaluate(pred):
            metric = CocoPanopticMetric(seg_prefix=seg_dir, nproc=1)
            metric.dataset_meta = dict(classes=classes, thing_classes=classes[:2],
                                       stuff_classes=classes[2:])
            sample = dict(img_id=0, img_path='img.jpg', ori_shape=pan.shape,
                          segments_info=segments,
                          pred_panoptic_seg=dict(sem_seg=torch.from_numpy(pred)[None]))
            metric.process(dict(), [sample])
            return metric.compute_metrics(metric.results)

        res = evaluate(pan.copy())
        assert res['PQ'] == res['SQ'] == res['RQ'] == 100.0, res
        assert res['PQ_th'] == res['PQ_st'] == 100.0, res
        dropped = pan.copy()
        dropped[dropped == 2 * INSTANCE_OFFSET] = len(classes)   # person 2 -> VOID
        res = evaluate(dropped)
        expected = 100 * (2 / 3 + 3) / 4
        assert abs(res['PQ'] - expected) < 1e-9 and abs(res['RQ'] - expected) < 1e-9, res
        assert res['SQ'] == 100.0, res
        print('ok')
    '''
    r = _run_without_real_panopticapi(tmp_path, code)
    assert r.returncode == 0 and r.stdout.strip().endswith('ok'), (r.stdout[-2000:],
                                                                  r.stderr[-3000:])
