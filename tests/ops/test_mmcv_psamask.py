"""PSAMask (collect / distribute, forward + input grad) vs mmcv 2.1's compiled CPU kernel, and
mmseg's PSANet head on it."""
import pytest
import torch

from mmcv_parity import assert_close, load_golden, require_portable_ext
from densekit.ops.mmcv import psamask as dk

G = load_golden('psamask')


def _case_id(c):
    return f"{c['psa_type']}-m{c['mask_size'][0]}x{c['mask_size'][1]}-{c['input'].shape[2]}x" \
           f"{c['input'].shape[3]}"


@pytest.mark.parametrize('case', G['cases'], ids=_case_id)
def test_mmcv_psamask_matches_kernel(case):
    require_portable_ext()
    from mmcv.ops import PSAMask
    x = case['input'].clone().requires_grad_(True)
    out = PSAMask(case['psa_type'], tuple(case['mask_size']))(x)
    out.backward(case['grad_output'])
    assert_close(out.detach(), case['output'], 'output')
    assert_close(x.grad, case['grad_input'], 'grad_input')


@pytest.mark.parametrize('case', G['cases'], ids=_case_id)
def test_psamask_matches_kernel(case):
    x = case['input'].clone().requires_grad_(True)
    out = dk.psamask(x, case['psa_type'], tuple(case['mask_size']))
    out.backward(case['grad_output'])
    assert_close(out.detach(), case['output'], 'output')
    assert_close(x.grad, case['grad_input'], 'grad_input')
    grad = dk.psamask_backward(case['grad_output'], case['psa_type'], *case['mask_size'])
    assert_close(grad, case['grad_input'], 'psamask_backward')


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match='channels'):
        dk.psamask(torch.zeros(1, 8, 4, 4), 'collect', 3)
    with pytest.raises(ValueError, match='psa_type'):
        dk.psamask(torch.zeros(1, 9, 4, 4), 'gather', 3)


@pytest.mark.parametrize('psa_type', ['bi-direction', 'collect', 'distribute'])
@pytest.mark.parametrize('compact', [False, True])
def test_mmseg_psa_head_forward_backward(psa_type, compact):
    require_portable_ext()
    pytest.importorskip('mmseg')
    from mmseg.models.decode_heads import PSAHead
    torch.manual_seed(0)
    head = PSAHead(in_channels=8, channels=8, num_classes=3, mask_size=(5, 5),
                   psa_type=psa_type, compact=compact, shrink_factor=1)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    out = head([x])
    assert out.shape == (2, 3, 5, 5)
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
