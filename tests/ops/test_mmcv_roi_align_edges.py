"""RoIAlign with empty / inverted RoIs: 0 output and no gradient on every path (mmcv's CUDA rule;
torchvision's CPU kernel fails on a RoI inverted by more than one bin)."""
import pytest
import torch

from mmcv_parity import assert_close, require_portable_ext
from densekit.ops.mmcv import roi_align as dk

# (batch, x1, y1, x2, y2): ordinary, inverted by several bins on x / y / both, inverted by less
# than a bin, zero size, and an ordinary one after them (its output must be unaffected).
ROIS = torch.tensor([
    [0, 2.0, 3.0, 15.0, 18.0],
    [0, 20.0, 3.0, 4.0, 18.0],
    [1, 2.0, 19.0, 15.0, 1.0],
    [1, 21.0, 17.0, 3.0, 2.0],
    [0, 6.0, 6.0, 5.8, 9.0],
    [1, 5.0, 5.0, 5.0, 5.0],
    [1, 0.0, 0.0, 25.9, 21.9],
])
ORDINARY = [0, 6]


def _feat(dtype=torch.float32):
    return torch.randn(2, 3, 11, 13, generator=torch.Generator().manual_seed(0), dtype=dtype)


@pytest.mark.parametrize('path', ['fast', 'reference'])
def test_inverted_rois_give_zero_and_no_gradient(path):
    x = _feat().requires_grad_(True)
    if path == 'fast':
        out = dk.roi_align(x, ROIS, (3, 4), 0.5, 0, 'avg', True)
    else:
        out = dk.reference.roi_align_forward(x.detach(), ROIS, 3, 4, 0.5, 0, 'avg', True)[0]
    empty = [i for i in range(len(ROIS)) if i not in ORDINARY]
    assert torch.equal(out[empty], torch.zeros_like(out[empty]))
    assert out[ORDINARY].abs().sum() > 0
    if path == 'fast':
        grad_out = torch.zeros_like(out)
        grad_out[empty] = 1.0  # only the empty RoIs: they must send no gradient
        out.backward(grad_out)
        assert torch.equal(x.grad, torch.zeros_like(x.grad))


def test_fast_path_matches_reference_with_inverted_rois():
    x = _feat(torch.float64).requires_grad_(True)
    grad_out = torch.randn(len(ROIS), 3, 3, 4, dtype=torch.float64,
                           generator=torch.Generator().manual_seed(1))
    out = dk.roi_align(x, ROIS.double(), (3, 4), 0.5, 0, 'avg', True)
    out.backward(grad_out)
    ref, ay, ax = dk.reference.roi_align_forward(x.detach(), ROIS.double(), 3, 4, 0.5, 0, 'avg',
                                                 True)
    ref_grad = dk.reference.roi_align_backward(grad_out, ROIS.double(), ay, ax, x.shape, 0.5, 0,
                                               'avg', True)
    assert_close(out.detach(), ref, 'output')
    assert_close(x.grad, ref_grad, 'grad_input')


def test_mmcv_roi_align_inverted_rois_on_cpu():
    require_portable_ext()
    from mmcv.ops import RoIAlign
    x = _feat().requires_grad_(True)
    out = RoIAlign((3, 4), 0.5, 0, 'avg', True)(x, ROIS)
    out.sum().backward()
    empty = [i for i in range(len(ROIS)) if i not in ORDINARY]
    assert torch.equal(out[empty], torch.zeros_like(out[empty]))
    assert_close(out[ORDINARY].detach(), dk.reference.roi_align_forward(
        x.detach(), ROIS[ORDINARY], 3, 4, 0.5, 0, 'avg', True)[0], 'output')


def test_mmdet_mask_targets_from_inverted_proposals():
    """mmdet crops mask targets with RoIAlign (aligned, adaptive grid) at the proposals; an
    inverted proposal gives an all-zero target on CPU, as on GPU."""
    require_portable_ext()
    pytest.importorskip('mmdet')
    import numpy as np
    from mmdet.structures.mask import BitmapMasks
    masks = np.zeros((2, 40, 50), dtype=np.uint8)
    masks[:, 5:30, 8:40] = 1
    gt = BitmapMasks(masks, 40, 50)
    boxes = np.array([[10.0, 8.0, 30.0, 25.0], [35.0, 28.0, 12.0, 6.0]], dtype=np.float32)
    out = gt.crop_and_resize(boxes, (14, 14), np.array([0, 1]), device='cpu').to_ndarray()
    assert out[0].sum() > 0 and out[1].sum() == 0
