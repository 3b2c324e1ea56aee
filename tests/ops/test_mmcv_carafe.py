"""CARAFE (mmcv has only CUDA kernels): against a float64 loop over mmcv's naive kernel formula,
gradcheck, mmcv's CARAFE / CARAFENaive / CARAFEPack, and mmdet's FPN_CARAFE neck."""
import pytest
import torch

from mmcv_parity import assert_close, require_portable_ext
from densekit.ops.mmcv.carafe import carafe

CASES = [(3, 1, 2), (5, 2, 2), (1, 1, 3), (3, 4, 1)]  # kernel_size, group_size, scale_factor


def _loop_reference(feat, masks, k, g, s):
    """mmcv's ``carafe_naive_forward_cuda_kernel`` written as loops."""
    n, c, h, w = feat.shape
    out = feat.new_zeros(n, c, h * s, w * s)
    r = (k - 1) // 2
    for b in range(n):
        for ch in range(c):
            grp = ch // (c // g)
            for y in range(h * s):
                for x in range(w * s):
                    acc = 0.0
                    for iy in range(y // s - r, y // s + r + 1):
                        for ix in range(x // s - r, x // s + r + 1):
                            if iy < 0 or iy >= h or ix < 0 or ix >= w:
                                continue
                            mc = (grp * k + iy - y // s + r) * k + ix - x // s + r
                            acc = acc + feat[b, ch, iy, ix] * masks[b, mc, y, x]
                    out[b, ch, y, x] = acc
    return out


def _inputs(k, g, s, dtype=torch.float64, n=1, c=4, h=3, w=4):
    gen = torch.Generator().manual_seed(k * 100 + g * 10 + s)
    feat = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    masks = torch.rand(n, g * k * k, h * s, w * s, generator=gen, dtype=dtype)
    return feat, masks


@pytest.mark.parametrize('k,g,s', CASES)
def test_carafe_matches_kernel_formula(k, g, s):
    feat, masks = _inputs(k, g, s)
    assert_close(carafe(feat, masks, k, g, s), _loop_reference(feat, masks, k, g, s), 'output')


@pytest.mark.parametrize('k,g,s', CASES[:2])
def test_carafe_gradcheck(k, g, s):
    feat, masks = _inputs(k, g, s)
    assert torch.autograd.gradcheck(lambda f, m: carafe(f, m, k, g, s),
                                    (feat.requires_grad_(True), masks.requires_grad_(True)))


@pytest.mark.parametrize('naive', [False, True])
def test_mmcv_carafe_functions(naive):
    require_portable_ext()
    from mmcv.ops import CARAFE, CARAFENaive
    k, g, s = 5, 2, 2
    feat, masks = _inputs(k, g, s, n=2)
    f = feat.clone().requires_grad_(True)
    m = masks.clone().requires_grad_(True)
    out = (CARAFENaive if naive else CARAFE)(k, g, s)(f, m)
    assert_close(out.detach(), carafe(feat, masks, k, g, s), 'output')
    if naive:
        return  # mmcv's CARAFENaive backward asserts CUDA tensors in Python
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    f2 = feat.clone().requires_grad_(True)
    m2 = masks.clone().requires_grad_(True)
    carafe(f2, m2, k, g, s).backward(grad_out)
    assert_close(f.grad, f2.grad, 'grad_features')
    assert_close(m.grad, m2.grad, 'grad_masks')


def test_mmdet_fpn_carafe_forward_backward():
    require_portable_ext()
    pytest.importorskip('mmdet')
    from mmdet.models.necks import FPN_CARAFE
    torch.manual_seed(0)
    neck = FPN_CARAFE(in_channels=[4, 8, 16], out_channels=8, num_outs=4)
    neck.init_weights()
    feats = [torch.randn(1, c, 32 // 2 ** i, 32 // 2 ** i, requires_grad=True)
             for i, c in enumerate([4, 8, 16])]
    outs = neck(feats)
    assert [o.shape[-1] for o in outs] == [32, 16, 8, 4]
    sum(o.square().sum() for o in outs).backward()
    assert all(torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0 for f in feats)
