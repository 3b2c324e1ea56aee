"""RoIPool vs a per-bin loop written from mmcv 2.1's kernel rules.

mmcv's compiled build has no CPU kernel for roi_pool (CUDA/MLU/NPU only), so there is no CPU
golden; the loop below is an independent, literal transcription of the documented rules.
"""
import math

import pytest
import torch

from mmcv_parity import assert_close, require_portable_ext
from densekit.ops.mmcv import roi_pool as dk


def _loop_roi_pool(x, rois, ph_n, pw_n, scale):
    """Literal per-bin loop; returns output, argmax and a 'processed' flag per RoI."""
    _, ch, height, width = x.shape
    out = torch.zeros(rois.shape[0], ch, ph_n, pw_n, dtype=x.dtype)
    arg = torch.full(out.shape, -1, dtype=torch.int32)
    processed = []
    for n, roi in enumerate(rois.tolist()):
        b = int(roi[0])
        # float32 arithmetic as in the kernel
        f = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
        x1, y1 = f(roi[1]) * scale, f(roi[2]) * scale
        x2, y2 = (f(roi[3]) + 1) * scale, (f(roi[4]) + 1) * scale
        rw, rh = x2 - x1, y2 - y1
        processed.append(bool(rw > 0 and rh > 0))
        if not processed[-1]:
            continue
        bw, bh = rw / pw_n, rh / ph_n
        for c in range(ch):
            for ph in range(ph_n):
                for pw in range(pw_n):
                    hs = min(max(math.floor(float(ph * bh + y1)), 0), height)
                    ws = min(max(math.floor(float(pw * bw + x1)), 0), width)
                    he = min(max(math.ceil(float((ph + 1) * bh + y1)), 0), height)
                    we = min(max(math.ceil(float((pw + 1) * bw + x1)), 0), width)
                    if he <= hs or we <= ws:
                        continue
                    best, best_i = -3.4028234663852886e38, -1
                    for h in range(hs, he):
                        for w in range(ws, we):
                            v = float(x[b, c, h, w])
                            if v > best:
                                best, best_i = v, h * width + w
                    out[n, c, ph, pw] = best
                    arg[n, c, ph, pw] = best_i
    return out, arg, torch.tensor(processed)


def _inputs():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 9, 11, generator=gen)
    x[0, 0, 2:5, 2:5] = 1.5  # plateau: ties resolved row-major, first wins
    rois = torch.tensor([
        [0, 1.0, 1.0, 9.0, 7.0], [1, -3.0, -2.0, 4.0, 5.0], [0, 15.0, 10.0, 30.0, 25.0],
        [1, 3.0, 3.0, 3.0, 3.0], [0, 2.2, 0.7, 20.7, 15.1], [1, 6.0, 6.0, 4.0, 8.0],
        [0, 3.0, 3.0, 9.0, 9.0],
    ])
    return x, rois


@pytest.mark.parametrize('scale', [1.0, 0.5])
def test_roi_pool_matches_kernel_rules(scale):
    x, rois = _inputs()
    want, want_arg, processed = _loop_roi_pool(x, rois, 3, 2, scale)
    out, arg, valid = dk.roi_pool_forward(x, rois, 3, 2, scale)
    assert valid.tolist() == processed.tolist()
    assert_close(out, want, 'output')
    assert torch.equal(arg, want_arg)
    gout = torch.randn(out.shape)
    grad = dk.roi_pool_backward(gout, rois, arg, x.shape)
    want_grad = torch.zeros(x.numel())
    for n, c, ph, pw in torch.nonzero(want_arg >= 0).tolist():
        b = int(rois[n, 0])
        want_grad[(b * x.shape[1] + c) * x.shape[2] * x.shape[3] + want_arg[n, c, ph, pw]] += \
            gout[n, c, ph, pw]
    assert_close(grad, want_grad.reshape(x.shape), 'grad_input')


def test_mmcv_roi_pool_through_portable_ext():
    require_portable_ext()
    from mmcv.ops import RoIPool
    x, rois = _inputs()
    rois = rois[[0, 1, 2, 4, 6]]  # RoIs of positive size (mmcv leaves others' buffers as is)
    want, _, _ = _loop_roi_pool(x, rois, 3, 2, 0.5)
    xg = x.clone().requires_grad_(True)
    out = RoIPool((3, 2), 0.5)(xg, rois)
    assert_close(out.detach(), want, 'output')
    out.sum().backward()
    xd = x.clone().double().requires_grad_(True)
    dk.roi_pool(xd, rois.double(), (3, 2), 0.5).sum().backward()
    assert_close(xg.grad.double(), xd.grad, 'grad vs float64 path')


def test_gradcheck():
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)  # distinct values
    rois = torch.tensor([[0, 0.5, 1.0, 5.0, 4.0], [0, 2.0, 0.0, 6.0, 5.5]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: dk.roi_pool(t, rois, 2, 1.0), (x,))
