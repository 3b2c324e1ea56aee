"""nms / soft_nms / nms_match / batched_nms / bbox_overlaps vs mmcv 2.1's compiled CPU kernels."""
import pytest
import torch

from mmcv_parity import assert_close, load_golden, require_portable_ext
from densekit.ops.mmcv import nms as dk_nms

G = load_golden('nms')


@pytest.fixture(autouse=True)
def _portable():
    require_portable_ext()


def _case_id(c):
    return (f"thr{c['iou_threshold']:.3f}-off{c['offset']}-st{c['score_threshold']}"
            f"-max{c['max_num']}")


@pytest.mark.parametrize('case', G['nms'], ids=_case_id)
def test_nms_matches_mmcv_kernel(case):
    from mmcv.ops import nms
    dets, inds = nms(G['boxes'], G['scores'], case['iou_threshold'], offset=case['offset'],
                     score_threshold=case['score_threshold'], max_num=case['max_num'])
    assert inds.tolist() == case['inds'].tolist()
    assert torch.equal(dets, case['dets'])


@pytest.mark.parametrize('case', [c for c in G['nms'] if c['score_threshold'] == 0],
                         ids=_case_id)
def test_nms_reference_and_fast_path_agree_with_kernel(case):
    """The pure-PyTorch reference and the torchvision-backed path each match mmcv."""
    ref = dk_nms.reference.nms(G['boxes'], G['scores'], case['iou_threshold'], case['offset'])
    assert ref.tolist() == case['inds'].tolist()
    fast = dk_nms.nms(G['boxes'], G['scores'], case['iou_threshold'], case['offset'])
    assert fast.tolist() == case['inds'].tolist()


def test_nms_threshold_equality_is_not_suppressed():
    """IoU exactly 1/3 in float32 survives ``thr=1/3`` (mmcv compares in float32, '>')."""
    boxes = torch.tensor([[10., 10., 12., 12.], [10., 10., 16., 12.]])
    scores = torch.tensor([0.7, 0.7])
    for fn in (dk_nms.nms, dk_nms.reference.nms):
        assert sorted(fn(boxes, scores, 1 / 3).tolist()) == [0, 1]
        assert len(fn(boxes, scores, 0.3)) == 1


def test_nms_empty():
    from mmcv.ops import nms
    dets, inds = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert inds.shape == (0,) and dets.shape == (0, 5) and G['empty'].shape == (0,)


@pytest.mark.parametrize('case', G['soft'],
                         ids=lambda c: f"{c['method']}-off{c['offset']}-min{c['min_score']}")
def test_soft_nms_matches_mmcv_kernel(case):
    from mmcv.ops import soft_nms
    dets, inds = soft_nms(G['boxes'], G['scores'], case['iou_threshold'], case['sigma'],
                          case['min_score'], case['method'], case['offset'])
    assert inds.tolist() == case['inds'].tolist()
    assert_close(dets, case['dets'], 'soft_nms dets')


def test_soft_nms_empty_and_numpy():
    from mmcv.ops import soft_nms
    dets, inds = soft_nms(torch.zeros(0, 4), torch.zeros(0), 0.3)
    assert dets.shape == (0, 5) and inds.shape == (0,)
    dets_np, inds_np = soft_nms(G['boxes'].numpy(), G['scores'].numpy(), 0.3, 0.5, 1e-3,
                                'linear')
    ref = next(c for c in G['soft'] if c['method'] == 'linear' and c['offset'] == 0
               and c['min_score'] == 1e-3)
    assert inds_np.tolist() == ref['inds'].tolist()


@pytest.mark.parametrize('case', G['match'], ids=lambda c: f"thr{c['iou_threshold']:.3f}")
def test_nms_match_matches_mmcv_kernel(case):
    from mmcv.ops import nms_match
    dets = torch.cat([G['boxes'], G['scores'][:, None]], 1)
    groups = nms_match(dets, case['iou_threshold'])
    assert [g.tolist() for g in groups] == case['groups']
    assert [g.tolist() for g in nms_match(dets.numpy(), case['iou_threshold'])] == case['groups']


@pytest.mark.parametrize('case', G['batched'],
                         ids=lambda c: f"agnostic{c['class_agnostic']}-split{c['split_thr']}")
def test_batched_nms_matches_mmcv_kernel(case):
    from mmcv.ops import batched_nms
    cfg = dict(type='nms', iou_threshold=0.5, class_agnostic=case['class_agnostic'],
               split_thr=case['split_thr'])
    dets, keep = batched_nms(G['boxes'], G['scores'], G['idxs'], cfg)
    assert keep.tolist() == case['keep'].tolist()
    assert torch.equal(dets, case['dets'])


@pytest.mark.parametrize('mode', ['iou', 'iof'])
@pytest.mark.parametrize('aligned', [False, True])
@pytest.mark.parametrize('offset', [0, 1])
def test_bbox_overlaps_against_direct_formula(mode, aligned, offset):
    from mmcv.ops import bbox_overlaps
    b1, b2 = G['boxes'][:20], G['boxes'][20:40]
    got = bbox_overlaps(b1, b2, mode=mode, aligned=aligned, offset=offset)
    # Written out per pair with plain Python floats (double) from the documented definition.
    pairs = [(i, i) for i in range(20)] if aligned else [(i, j) for i in range(20)
                                                        for j in range(20)]
    want = []
    for i, j in pairs:
        a, b = b1[i].tolist(), b2[j].tolist()
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + offset)
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + offset)
        area_a = (a[2] - a[0] + offset) * (a[3] - a[1] + offset)
        area_b = (b[2] - b[0] + offset) * (b[3] - b[1] + offset)
        want.append(iw * ih / (area_a if mode == 'iof' else area_a + area_b - iw * ih))
    want = torch.tensor(want).reshape(got.shape)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
