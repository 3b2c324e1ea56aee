"""RoIAlign (aligned T/F, sampling 0/2, avg/max, forward + input grad) vs mmcv 2.1's CPU kernel."""
import pytest
import torch

from mmcv_parity import assert_close, load_golden, require_portable_ext
from densekit.ops.mmcv import roi_align as dk

G = load_golden('roi_align')
OUT_SIZE, SCALE = (3, 4), 0.5


def _case_id(c):
    return f"aligned{c['aligned']}-s{c['sampling_ratio']}-{c['pool_mode']}"


@pytest.mark.parametrize('case', G['cases'], ids=_case_id)
def test_mmcv_roi_align_matches_kernel(case):
    require_portable_ext()
    from mmcv.ops import RoIAlign
    layer = RoIAlign(OUT_SIZE, SCALE, case['sampling_ratio'], case['pool_mode'],
                     case['aligned'])
    x = G['input'].clone().requires_grad_(True)
    out = layer(x, G['rois'])
    out.backward(case['grad_output'])
    assert_close(out.detach(), case['output'], 'output')
    assert_close(x.grad, case['grad_input'], 'grad_input')


@pytest.mark.parametrize('case', G['cases'], ids=_case_id)
def test_reference_matches_kernel(case):
    """The pure-PyTorch reference alone (the fast path may route avg to torchvision)."""
    args = (SCALE, case['sampling_ratio'], case['pool_mode'], case['aligned'])
    out, arg_y, arg_x = dk.reference.roi_align_forward(G['input'], G['rois'], *OUT_SIZE, *args)
    grad = dk.reference.roi_align_backward(case['grad_output'], G['rois'], arg_y, arg_x,
                                           G['input'].shape, *args)
    assert_close(out, case['output'], 'output')
    assert_close(grad, case['grad_input'], 'grad_input')


def test_max_mode_ties_pick_first_sample():
    require_portable_ext()
    from mmcv.ops import roi_align
    t = G['tie']
    x = t['input'].clone().requires_grad_(True)
    out = roi_align(x, t['rois'], 2, 1.0, 2, 'max', True)
    out.backward(torch.ones_like(out))
    assert_close(out.detach(), t['output'], 'output')
    assert_close(x.grad, t['grad_input'], 'grad_input')


def test_empty_rois_and_gradcheck():
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    out = dk.roi_align(x, torch.zeros(0, 5, dtype=torch.float64), 2)
    assert out.shape == (0, 2, 2, 2)
    rois = torch.tensor([[0, 0.3, 0.6, 4.2, 3.9], [0, 2.0, 1.0, 5.5, 4.5]], dtype=torch.float64)
    for mode in ('avg', 'max'):
        assert torch.autograd.gradcheck(
            lambda t: dk.roi_align(t, rois, 2, 1.0, 2, mode, True), (x,))


def test_bad_arguments_raise():
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match='pool_mode'):
        dk.roi_align(x, torch.zeros(1, 5), 2, pool_mode='mean')
    with pytest.raises(ValueError, match='rois'):
        dk.roi_align(x, torch.zeros(1, 4), 2)
