"""DeformConv2d / ModulatedDeformConv2d (forward + all grads) vs mmcv 2.1's CPU kernels."""
import pytest
import torch

from mmcv_parity import assert_close, load_golden, require_portable_ext
from densekit.ops.mmcv import deform_conv as dk

G = load_golden('deform_conv')
GRADS = ('input', 'offset', 'weight', 'mask', 'bias')


def _case_id(c):
    return (f"{'mdcn' if c['modulated'] else 'dcn'}-s{c['stride']}-p{c['padding']}"
            f"-d{c['dilation']}-g{c['groups']}-dg{c['deform_groups']}")


def _leaves(case):
    names = GRADS if case['modulated'] else GRADS[:3]
    return {k: case[k].clone().requires_grad_(True) for k in names}


def _conv_kw(case):
    return {k: case[k] for k in ('stride', 'padding', 'dilation', 'groups', 'deform_groups')}


def _check(out, leaves, case):
    out.backward(case['grad_output'])
    assert_close(out.detach(), case['output'], 'output')
    for k, t in leaves.items():
        assert_close(t.grad, case[f'grad_{k}'], f'grad_{k}')


@pytest.mark.parametrize('case', G['cases'], ids=_case_id)
def test_mmcv_functional_matches_kernel(case):
    require_portable_ext()
    from mmcv.ops import deform_conv2d, modulated_deform_conv2d
    lv = _leaves(case)
    kw = _conv_kw(case)
    args = (kw['stride'], kw['padding'], kw['dilation'], kw['groups'], kw['deform_groups'])
    if case['modulated']:
        out = modulated_deform_conv2d(lv['input'], lv['offset'], lv['mask'], lv['weight'],
                                      lv['bias'], *args)
    else:
        out = deform_conv2d(lv['input'], lv['offset'], lv['weight'], *args)
    _check(out, lv, case)


@pytest.mark.parametrize('case', G['cases'], ids=_case_id)
def test_reference_matches_kernel(case):
    lv = _leaves(case)
    out = dk.reference.deform_conv2d(lv['input'], lv['offset'], lv['weight'], lv.get('bias'),
                                     mask=lv.get('mask'), **_conv_kw(case))
    _check(out, lv, case)


def test_mmcv_modules_build_and_run():
    require_portable_ext()
    from mmcv.ops import DeformConv2dPack, ModulatedDeformConv2dPack
    x = torch.randn(2, 4, 9, 10, requires_grad=True)
    for cls in (DeformConv2dPack, ModulatedDeformConv2dPack):
        m = cls(4, 6, 3, stride=2, padding=1, deform_groups=2)
        # Non-zero offsets so that the deformable path (not a plain conv) is exercised.
        torch.nn.init.normal_(m.conv_offset.weight, std=0.1)
        out = m(x)
        out.sum().backward()
        assert out.shape == (2, 6, 5, 5) and torch.isfinite(x.grad).all()
        assert m.weight.grad is not None and m.conv_offset.weight.grad.abs().sum() > 0


def test_bad_offset_channels_raise():
    x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 4, 3, 3)
    with pytest.raises(ValueError, match='offset'):
        dk.deform_conv2d(x, torch.zeros(1, 17, 4, 4), w)


def test_weight_grad_alone_matches_kernel():
    """Only the weight needs a gradient: mmcv skips backward_input, so the weight gradient is
    computed on its own (no value carried over from the input pass)."""
    require_portable_ext()
    from mmcv.ops import deform_conv2d
    case = next(c for c in G['cases'] if not c['modulated'] and c['groups'] == 2)
    w = case['weight'].clone().requires_grad_(True)
    kw = _conv_kw(case)
    out = deform_conv2d(case['input'], case['offset'], w, kw['stride'], kw['padding'],
                        kw['dilation'], kw['groups'], kw['deform_groups'])
    out.backward(case['grad_output'])
    assert_close(w.grad, case['grad_weight'], 'grad_weight')
