"""CPU-vs-CUDA parity of the portable mmcv ops through mmcv's Python API (skips without CUDA)."""
import pytest
import torch

from mmcv_parity import ATOL, load_golden, require_portable_ext

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _setup(requires_cuda):
    require_portable_ext()


def _both(fn, *tensors):
    """Runs ``fn`` on CPU and CUDA copies (leaves require grad); returns (cpu, cuda) pairs."""
    runs = []
    for dev in ('cpu', 'cuda'):
        leaves = [t.detach().to(dev).requires_grad_(t.is_floating_point()) for t in tensors]
        out = fn(*leaves)
        runs.append((out, leaves))
    return runs


def _close(a, b, what):
    torch.testing.assert_close(a.cpu(), b.cpu(), rtol=0, atol=ATOL[b.dtype] * 10,
                               msg=lambda m: f'{what}: {m}')


def _grads_close(runs, grad_out, what):
    (o_cpu, l_cpu), (o_gpu, l_gpu) = runs
    o_cpu.backward(grad_out)
    o_gpu.backward(grad_out.cuda())
    _close(o_gpu.detach(), o_cpu.detach(), f'{what} output')
    for i, (a, b) in enumerate(zip(l_gpu, l_cpu)):
        if b.grad is not None:
            _close(a.grad, b.grad, f'{what} grad[{i}]')


def test_nms_family():
    from mmcv.ops import batched_nms, nms
    g = load_golden('nms')
    for c in g['nms']:
        _, inds = nms(g['boxes'].cuda(), g['scores'].cuda(), c['iou_threshold'],
                      offset=c['offset'], score_threshold=c['score_threshold'],
                      max_num=c['max_num'])
        # Exact sequence: equal scores are visited in mmcv's CPU order on every device
        # (densekit.ops.mmcv.nms.reference.score_order); the fixture's tied boxes that suppress each
        # other (identical boxes 64/65) and its IoU margins are checked on CPU in
        # tests/ops/test_nms_tie_order.py.
        assert inds.cpu().tolist() == c['inds'].tolist(), c
    cfg = dict(type='nms', iou_threshold=0.5)
    dets, keep = batched_nms(g['boxes'].cuda(), g['scores'].cuda(), g['idxs'].cuda(), cfg)
    assert keep.cpu().tolist() == g['batched'][0]['keep'].tolist()


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
@pytest.mark.parametrize('pool_mode', ['avg', 'max'])
def test_roi_align(aligned, sampling_ratio, pool_mode):
    from mmcv.ops import roi_align
    g = load_golden('roi_align')
    runs = _both(lambda x: roi_align(x, g['rois'].to(x.device), (3, 4), 0.5, sampling_ratio,
                                     pool_mode, aligned), g['input'])
    _grads_close(runs, torch.randn(runs[0][0].shape), 'roi_align')


def test_roi_pool():
    from mmcv.ops import roi_pool
    x = torch.randn(2, 3, 9, 11)
    rois = torch.tensor([[0, 1.0, 1.0, 9.0, 7.0], [1, -3.0, -2.0, 4.0, 5.0],
                         [0, 2.2, 0.7, 20.7, 15.1]])
    runs = _both(lambda t: roi_pool(t, rois.to(t.device), (3, 2), 0.5), x)
    _grads_close(runs, torch.randn(runs[0][0].shape), 'roi_pool')


def test_focal_losses():
    from mmcv.ops import sigmoid_focal_loss, softmax_focal_loss
    logits = torch.randn(11, 4) * 3
    target = torch.randint(0, 5, (11,))
    runs = _both(lambda x: sigmoid_focal_loss(x, target.to(x.device), 2.0, 0.25, None, 'sum'),
                 logits)
    _grads_close(runs, torch.tensor(1.0), 'sigmoid_focal_loss')
    runs = _both(lambda x: softmax_focal_loss(x, target.clamp_max(3).to(x.device), 2.0, 0.25,
                                              None, 'mean'), logits)
    _grads_close(runs, torch.tensor(1.0), 'softmax_focal_loss')


def test_ms_deform_attn_uses_ext_on_cuda():
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
    shapes = torch.tensor([[7, 9], [4, 5]])
    starts = torch.tensor([0, 63])
    value = torch.randn(2, 83, 2, 4)
    loc = torch.rand(2, 5, 2, 2, 3, 2) * 1.2 - 0.1
    attn = torch.rand(2, 5, 2, 2, 3)
    runs = _both(lambda v, l, a: MultiScaleDeformableAttnFunction.apply(
        v, shapes.to(v.device), starts.to(v.device), l, a, 64), value, loc, attn)
    _grads_close(runs, torch.randn(runs[0][0].shape), 'ms_deform_attn')


@pytest.mark.parametrize('modulated', [False, True])
def test_deform_conv(modulated):
    from mmcv.ops import deform_conv2d, modulated_deform_conv2d
    g = load_golden('deform_conv')
    case = next(c for c in g['cases'] if c['modulated'] == modulated and c['groups'] == 2)
    args = (case['stride'], case['padding'], case['dilation'], case['groups'],
            case['deform_groups'])
    if modulated:
        runs = _both(lambda x, o, m, w, b: modulated_deform_conv2d(x, o, m, w, b, *args),
                     case['input'], case['offset'], case['mask'], case['weight'], case['bias'])
    else:
        runs = _both(lambda x, o, w: deform_conv2d(x, o, w, *args), case['input'],
                     case['offset'], case['weight'])
    _grads_close(runs, case['grad_output'], 'deform_conv')
