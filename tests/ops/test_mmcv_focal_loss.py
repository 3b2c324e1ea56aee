"""Sigmoid / softmax focal loss through mmcv's API vs mmdet's Python focal loss and autograd.

mmcv's compiled build has no CPU focal-loss kernel, so the references are mmdet's own
``py_sigmoid_focal_loss`` (what mmdet runs on CPU) and the paper's formula through autograd.
"""
import pytest
import torch
import torch.nn.functional as F

from mmcv_parity import ATOL, require_portable_ext
from densekit.ops.mmcv import focal_loss as dk

N, C = 13, 5


@pytest.fixture(autouse=True)
def _portable():
    require_portable_ext()


def _inputs(dtype=torch.float32):
    gen = torch.Generator().manual_seed(11)
    logits = (torch.randn(N, C, generator=gen) * 3).to(dtype)
    target = torch.randint(0, C + 1, (N,), generator=gen)  # C = background
    target[:2] = torch.tensor([C, 0])
    weight = (torch.rand(C, generator=gen) + 0.5).to(dtype)
    return logits, target, weight


def _close(a, b):
    scale = max(1.0, float(b.detach().abs().max()))  # losses reach O(10) for confident logits
    torch.testing.assert_close(a, b, rtol=0, atol=ATOL[a.dtype] * scale)


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('gamma,alpha', [(2.0, 0.25), (1.5, 0.6), (0.0, 0.5)])
def test_sigmoid_focal_loss_matches_mmdet_python(reduction, gamma, alpha):
    from mmcv.ops import sigmoid_focal_loss
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
    logits, target, _ = _inputs()
    x1 = logits.clone().requires_grad_(True)
    x2 = logits.clone().requires_grad_(True)
    ours = sigmoid_focal_loss(x1, target, gamma, alpha, None, reduction)
    onehot = F.one_hot(target, C + 1)[:, :C]
    theirs = py_sigmoid_focal_loss(x2, onehot, None, gamma, alpha, 'none')
    theirs = {'none': theirs, 'sum': theirs.sum(), 'mean': theirs.sum() / N}[reduction]
    _close(ours, theirs)
    g = torch.randn(ours.shape) if reduction == 'none' else torch.tensor(1.7)
    ours.backward(g)
    theirs.backward(g)
    _close(x1.grad, x2.grad)


def test_sigmoid_focal_loss_class_weight_and_mmdet_module():
    """Per-class ``weight[target]`` on foreground rows; mmdet's FocalLoss module on CPU."""
    from mmcv.ops import sigmoid_focal_loss
    from mmdet.models.losses import FocalLoss
    logits, target, weight = _inputs()
    fg = target < C
    ours = sigmoid_focal_loss(logits[fg], target[fg], 2.0, 0.25, weight, 'none')
    plain = sigmoid_focal_loss(logits[fg], target[fg], 2.0, 0.25, None, 'none')
    _close(ours, plain * weight[target[fg]][:, None])
    # mmdet's FocalLoss calls mmcv's op only on CUDA; its CPU path must agree with ours.
    loss = FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)
    _close(loss(logits, target), sigmoid_focal_loss(logits, target, 2.0, 0.25, None, 'mean')
           * N / (N * C))


# mmcv's own SoftmaxFocalLossFunction cannot backpropagate reduction='none' (it multiplies an
# [N, C] gradient by an [N] grad_output), with or without densekit; densekit's function can.
@pytest.mark.parametrize('reduction,api', [('none', 'densekit'), ('mean', 'mmcv'),
                                           ('sum', 'mmcv'), ('mean', 'densekit')])
def test_softmax_focal_loss_matches_formula(reduction, api):
    from mmcv.ops import softmax_focal_loss as mmcv_softmax_focal_loss
    softmax_focal_loss = mmcv_softmax_focal_loss if api == 'mmcv' else dk.softmax_focal_loss
    logits, target, weight = _inputs()
    target = target.clamp_max(C - 1)
    target[3] = -1  # ignored row
    for w in (None, weight):
        x1 = logits.clone().requires_grad_(True)
        x2 = logits.clone().requires_grad_(True)
        ours = softmax_focal_loss(x1, target, 2.0, 0.25, w, reduction)
        logp = F.log_softmax(x2, 1).gather(1, target.clamp_min(0)[:, None])[:, 0]
        ref = -0.25 * (1 - logp.exp()).pow(2.0) * logp
        if w is not None:
            ref = ref * w[target.clamp_min(0)]
        ref = torch.where(target >= 0, ref, torch.zeros_like(ref))
        ref = {'none': ref, 'sum': ref.sum(), 'mean': ref.sum() / N}[reduction]
        _close(ours, ref)
        g = torch.randn(ours.shape) if reduction == 'none' else torch.tensor(0.7)
        ours.backward(g)
        ref.backward(g)
        _close(x1.grad, x2.grad)


def test_gradcheck_float64():
    from mmcv.ops import sigmoid_focal_loss, softmax_focal_loss
    logits, target, weight = _inputs(torch.float64)
    x = logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda t: sigmoid_focal_loss(t, target, 2.0, 0.25, None, 'none'), (x,))
    st = target.clamp_max(C - 1)
    assert torch.autograd.gradcheck(
        lambda t: softmax_focal_loss(t, st, 1.5, 0.25, weight, 'sum'), (x,))
    assert torch.autograd.gradcheck(
        lambda t: dk.softmax_focal_loss(t, st, 1.5, 0.25, weight, 'none'), (x,))
    assert torch.autograd.gradcheck(
        lambda t: dk.sigmoid_focal_loss(t, target, 2.0, 0.25, None, 'sum'), (x,))


def test_bad_target_raises():
    logits, target, _ = _inputs()
    with pytest.raises(ValueError, match='num_classes'):
        dk.sigmoid_focal_loss(logits, target.clamp_min(C) + 1)
    with pytest.raises(ValueError, match='num_classes'):
        dk.softmax_focal_loss(logits, torch.full_like(target, C))
