"""Why sorting the scores on CUDA makes ``nms`` keep box 64 where mmcv's CPU kernel (the golden
fixture) keeps box 65, checked on CPU: the fixture holds tied boxes that suppress each other, so the visiting order of
equal scores decides the result, and nothing in it sits at a threshold within floating-point
rounding. ``densekit.ops.mmcv.nms.reference.score_order`` therefore sorts on CPU on every device."""
import torch

from mmcv_parity import load_golden
from densekit.ops.mmcv.nms import reference


def _greedy(boxes, order, thr, offset):
    """Greedy NMS visiting ``boxes`` in ``order`` (distinct ranks given as scores)."""
    rank = torch.empty(len(order))
    rank[order] = torch.arange(len(order), 0, -1, dtype=torch.float32)
    return reference.nms(boxes, rank, thr, offset)


def test_tie_order_decides_the_kept_box():
    g = load_golden('nms')
    boxes, scores = g['boxes'], g['scores']
    case = g['nms'][0]
    assert (case['iou_threshold'], case['offset'], case['score_threshold'], case['max_num']) == (0.5, 0, 0.0, -1)
    # Boxes 64 and 65: the same box with the same score, IoU 1.
    assert torch.equal(boxes[64], boxes[65]) and scores[64] == scores[65]
    cpu_order = reference.score_order(scores)
    assert _greedy(boxes, cpu_order, 0.5, 0).tolist() == case['inds'].tolist()
    # A stable sort (equal scores by index, the order a CUDA sort visits) keeps 64 instead of 65
    # and changes nothing else: the mismatch a device-side sort gives ('At index 59 diff: 64 != 65').
    stable = torch.sort(scores, descending=True, stable=True).indices
    assert not torch.equal(stable, cpu_order)
    kept = set(_greedy(boxes, stable, 0.5, 0).tolist())
    golden = set(case['inds'].tolist())
    assert kept - golden == {64} and golden - kept == {65}


def test_no_floating_point_knife_edge_in_the_fixture():
    """Pairs whose IoU is within 1e-4 (about 1700 float32 ulps at 0.5) of a threshold used by the
    fixture are the constructed ones, with integer intersections and unions: their float32 IoU is
    one correctly rounded division, the same on any device. So a CUDA/CPU difference on this
    fixture cannot come from IoU rounding."""
    g = load_golden('nms')
    b = g['boxes'].double()  # float32 coordinates are exact in float64
    n = b.shape[0]
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    near_pairs = {}
    for offset in (0, 1):
        lt = torch.maximum(b[:, None, :2], b[None, :, :2])
        rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
        wh = (rb - lt + offset).clamp_min(0)
        inter = wh[..., 0] * wh[..., 1]
        area = (b[:, 2] - b[:, 0] + offset) * (b[:, 3] - b[:, 1] + offset)
        union = area[:, None] + area[None, :] - inter
        iou = inter / union
        for thr in sorted({c['iou_threshold'] for c in g['nms']}):
            near = ((iou - thr).abs() < 1e-4) & upper
            for i, j in near.nonzero().tolist():
                assert inter[i, j] == inter[i, j].round() and union[i, j] == union[i, j].round(), (i, j)
                assert union[i, j] < 2 ** 24
            near_pairs[(offset, round(thr, 4))] = sorted(map(tuple, near.nonzero().tolist()))
    # The pairs tools/dev/make_mmcv_golden.py builds with IoU exactly 0.5 and 1/3 (offset 0).
    assert near_pairs == {
        (0, 0.3333): [(66, 67)], (0, 0.5): [(60, 61), (62, 63)], (0, 0.7): [],
        (1, 0.3333): [], (1, 0.5): [], (1, 0.7): [],
    }
