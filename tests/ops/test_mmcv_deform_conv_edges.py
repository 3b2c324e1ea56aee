"""Deform-conv edge cases vs mmcv 2.1's compiled CPU kernels: offset / mask larger than the output
(DyHead), the -1 border rule of the coordinate gradient, mmcv's own DCNv2 test."""
import pytest
import torch

from mmcv_parity import assert_close, load_golden, require_portable_ext
from densekit.ops.mmcv import deform_conv as dk

G = load_golden('deform_conv_edges')
CONV_KW = ('stride', 'padding', 'dilation', 'groups', 'deform_groups')


def _leaves(case):
    names = ('input', 'offset', 'weight') + (('mask', 'bias') if case['modulated'] else ())
    return {k: case[k].clone().requires_grad_(True) for k in names}


def _mmcv_call(lv, case):
    from mmcv.ops import deform_conv2d, modulated_deform_conv2d
    args = tuple(case[k] for k in CONV_KW)
    if case['modulated']:
        return modulated_deform_conv2d(lv['input'], lv['offset'], lv['mask'], lv['weight'],
                                       lv['bias'], *args)
    return deform_conv2d(lv['input'], lv['offset'], lv['weight'], *args)


def _check(out, lv, case):
    out.backward(case['grad_output'])
    assert_close(out.detach(), case['output'], 'output')
    for k, t in lv.items():
        assert_close(t.grad, case[f'grad_{k}'], f'grad_{k}')


@pytest.mark.parametrize('i', range(len(G['oversized'])))
def test_oversized_offset_and_mask_read_by_output_size(i):
    """mmcv's modulated kernels index offset / mask by the output size; the unread tail of
    each sample gets zero gradient. The offset is a channel slice, as in DyHead."""
    require_portable_ext()
    case = G['oversized'][i]
    lv = _leaves(case)
    # Rebuild the non-contiguous slice layout the fixture was made with.
    dg = case['deform_groups']
    parent = torch.cat([lv['offset'], torch.zeros_like(lv['mask'])], 1)
    offset = parent[:, :dg * 18]
    assert offset.is_contiguous() != case['offset_is_slice']
    lv_call = dict(lv, offset=offset)
    out = _mmcv_call(lv_call, case)
    out.backward(case['grad_output'])
    assert_close(out.detach(), case['output'], 'output')
    for k in ('input', 'weight', 'mask', 'bias'):
        assert_close(lv[k].grad, case[f'grad_{k}'], f'grad_{k}')
    assert_close(lv['offset'].grad, case['grad_offset'], 'grad_offset')


def test_mmcv_offset_view_matches_kernel_reading():
    case = G['oversized'][0]
    ho, wo = case['output'].shape[-2:]
    lv = _leaves(case)
    out = dk.deform_conv2d(lv['input'], dk.mmcv_offset_view(lv['offset'], (ho, wo), 18),
                           lv['weight'], lv['bias'], mask=dk.mmcv_offset_view(lv['mask'],
                                                                               (ho, wo), 9),
                           **{k: case[k] for k in CONV_KW})
    _check(out, lv, case)
    with pytest.raises(ValueError, match='fewer than'):
        dk.mmcv_offset_view(torch.zeros(1, 18, 2, 2), (3, 3), 18)


def test_deform_conv_v1_checks_offset_size_like_mmcv():
    """mmcv's DCNv1 (unlike DCNv2) checks the offset's spatial size and raises."""
    require_portable_ext()
    assert 'invalid spatial size of offset' in G['v1_oversized_error']
    from mmcv.ops import deform_conv2d
    case = G['oversized'][0]
    with pytest.raises((RuntimeError, ValueError), match='offset'):
        deform_conv2d(case['input'], case['offset'], case['weight'], 1, 1, 1, 1, 1)


@pytest.mark.parametrize('case', G['border'], ids=lambda c: 'mdcn' if c['modulated'] else 'dcn')
@pytest.mark.parametrize('path', ['mmcv', 'fast', 'reference'])
def test_border_rule_of_coordinate_gradient(case, path):
    """Taps exactly at y == -1 or x == -1 (integer offsets, padding 1) get zero offset gradient."""
    lv = _leaves(case)
    kw = {k: case[k] for k in CONV_KW}
    if path == 'mmcv':
        require_portable_ext()
        out = _mmcv_call(lv, case)
    else:
        fn = dk.deform_conv2d if path == 'fast' else dk.reference.deform_conv2d
        out = fn(lv['input'], lv['offset'], lv['weight'], lv.get('bias'), mask=lv.get('mask'),
                 **kw)
    _check(out, lv, case)


@pytest.mark.parametrize('case', G['first_step'],
                         ids=lambda c: 'mdcn' if c['modulated'] else 'dcn')
def test_first_training_step_offset_conv_gradient(case):
    """A freshly initialised mmcv DCN layer (zero offsets): its offset conv's first gradient."""
    require_portable_ext()
    from mmcv.ops import DeformConv2dPack, ModulatedDeformConv2dPack
    cls = ModulatedDeformConv2dPack if case['modulated'] else DeformConv2dPack
    m = cls(16, 16, 3, padding=1)
    with torch.no_grad():
        m.weight.copy_(case['weight'])
    x = case['input'].clone().requires_grad_(True)
    out = m(x)
    out.backward(case['grad_output'])
    assert_close(out.detach(), case['output'], 'output')
    assert_close(x.grad, case['grad_input'], 'grad_input')
    assert_close(m.weight.grad, case['grad_weight'], 'grad_weight')
    assert_close(m.conv_offset.weight.grad, case['grad_offset_weight'], 'grad_offset_weight')
    assert_close(m.conv_offset.bias.grad, case['grad_offset_bias'], 'grad_offset_bias')


def test_mmcv_modulated_deform_conv_test_body():
    """mmcv's ``test_modulated_deform_conv`` (its expectation: ``[[-7, -4], [0, 0]]`` for the
    first offset-conv kernel, the bottom row being taps at y == -1)."""
    require_portable_ext()
    from mmcv.ops import ModulatedDeformConv2dPack
    t = G['mmcv_test']
    x = t['input'].clone().requires_grad_(True)
    m = ModulatedDeformConv2dPack(1, 1, kernel_size=(2, 2), stride=1, padding=1,
                                  deform_groups=1, bias=False)
    m.weight.data.fill_(1.)
    out = m(x)
    out.sum().backward()
    assert_close(out.detach(), t['output'], 'output')
    assert_close(x.grad, t['grad_input'], 'grad_input')
    assert_close(m.weight.grad, t['grad_weight'], 'grad_weight')
    assert_close(m.conv_offset.weight.grad, t['grad_offset_weight'], 'grad_offset_weight')
    assert_close(m.conv_offset.bias.grad, t['grad_offset_bias'], 'grad_offset_bias')
    assert torch.equal(t['grad_offset_weight'][0, 0, 1], torch.zeros(2))


def test_fast_path_border_rule_without_grad_to_offset():
    """No offset gradient requested: the fast path runs torchvision untouched."""
    case = G['border'][1]
    kw = {k: case[k] for k in CONV_KW}
    with torch.no_grad():
        out = dk.deform_conv2d(case['input'], case['offset'], case['weight'], case['bias'],
                               mask=case['mask'], **kw)
    assert_close(out, case['output'], 'output')
