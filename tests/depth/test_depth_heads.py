"""Depth decoders and losses of the core: shapes on odd sizes, output range, known-answer losses."""
import math

import pytest
import torch

from densekit.models.depth import (DepthActivation, DPTDepthHead, FPNDepthHead, L1DepthLoss,
                                   SILogLoss, l1_depth_loss, silog_loss, valid_depth_mask)

CHANNELS = (8, 16, 24, 32)


def _pyramid(h=97, w=131, n=2):
    # Sizes a stride-4..32 backbone produces on an odd input (ceil division).
    return [torch.randn(n, c, -(-h // s), -(-w // s), requires_grad=True)
            for c, s in zip(CHANNELS, (4, 8, 16, 32))]


@pytest.mark.parametrize('norm', ['none', 'gn'])
def test_dpt_head_shape_range_backward(norm):
    head = DPTDepthHead(CHANNELS, channels=16, head_channels=8, max_depth=10.0, norm=norm)
    feats = _pyramid()
    out = head(feats)
    out_ = out.detach()
    assert out.shape == (2, 1, 4 * feats[0].shape[2], 4 * feats[0].shape[3])
    assert float(out_.min()) > 0 and float(out_.max()) < 10.0
    out.mean().backward()
    assert all(f.grad is not None and torch.isfinite(f.grad).all() for f in feats)
    assert all(p.grad is not None for p in head.parameters())


def test_fpn_head_shape_and_relu_activation():
    head = FPNDepthHead(CHANNELS, channels=16, merge_channels=8, activation='relu', min_depth=0.5)
    feats = _pyramid(n=1)
    out = head(feats)
    assert out.shape == (1, 1) + tuple(feats[0].shape[2:])
    assert float(out.detach().min()) >= 0.5
    out.sum().backward()
    assert all(torch.isfinite(f.grad).all() for f in feats)


def test_head_rejects_wrong_inputs():
    head = DPTDepthHead(CHANNELS, channels=16)
    with pytest.raises(ValueError, match='expects 4 maps'):
        head(_pyramid()[:3])
    with pytest.raises(ValueError, match='activation'):
        DepthActivation('softplus')
    with pytest.raises(ValueError, match='norm'):
        FPNDepthHead(CHANNELS, norm='ln')


@pytest.mark.parametrize('head_cls', [DPTDepthHead, FPNDepthHead])
def test_head_names_channel_mismatch(head_cls):
    # A backbone swapped (e.g. convnext_test for convnext_tiny) without decode_head.in_channels:
    # a clear error naming the field and both channel lists, not a conv2d shape error.
    head = head_cls((96, 192, 384, 768), channels=16)
    with pytest.raises(ValueError, match=r'decode_head\.in_channels.*\[8, 16, 24, 32\]'):
        head(_pyramid(n=1))


def test_activation_values():
    x = torch.tensor([0.0, -1.0, 2.0])
    assert torch.allclose(DepthActivation('sigmoid', max_depth=80.0)(x), 80.0 * torch.sigmoid(x))
    assert torch.equal(DepthActivation('relu', min_depth=0.1)(x), torch.tensor([0.1, 0.1, 2.1]))


def test_silog_known_answer():
    gt = torch.tensor([[1.0, 2.0], [4.0, 0.0]])
    mask = valid_depth_mask(gt, 1e-3, 10.0)
    assert mask.tolist() == [[True, True], [True, False]]
    # pred = 2 gt on valid pixels: d = ln 2 everywhere -> sqrt(ln2^2 - 0.85 ln2^2) = ln2 sqrt(0.15)
    pred = torch.tensor([[2.0, 4.0], [8.0, 123.0]])
    expected = 10 * math.log(2) * math.sqrt(0.15)
    assert float(silog_loss(pred, gt, mask)) == pytest.approx(expected, rel=1e-6)
    # variance_focus=0: plain log-RMSE = ln 2 (times scale 10)
    plain = float(silog_loss(pred, gt, mask, variance_focus=0.0))
    assert plain == pytest.approx(10 * math.log(2), rel=1e-6)
    # d = 0, ln 2, -ln 2 (pred 1, 4, 2): mean 0, mean d^2 = 2 ln2^2 / 3
    pred2 = torch.tensor([[1.0, 4.0], [2.0, 5.0]])
    expected = 10 * math.sqrt(2 * math.log(2) ** 2 / 3)
    assert float(SILogLoss(loss_weight=2.0)(pred2, gt, mask)) == pytest.approx(2 * expected, rel=1e-6)


def test_l1_known_answer_and_empty_mask():
    gt = torch.tensor([1.0, 2.0, 0.0])
    pred = torch.tensor([1.5, 1.0, 7.0], requires_grad=True)
    mask = gt > 0
    # |0.5| and |1.0| over 2 valid pixels
    assert float(l1_depth_loss(pred, gt, mask)) == pytest.approx(0.75)
    assert float(L1DepthLoss(loss_weight=4.0)(pred, gt, mask)) == pytest.approx(3.0)
    none = torch.zeros_like(mask)
    for fn in (l1_depth_loss, silog_loss):
        loss = fn(pred, gt, none)
        assert float(loss) == 0.0
        loss.backward()  # still part of the graph
    with pytest.raises(ValueError, match='one shape'):
        l1_depth_loss(pred, gt[:2], mask[:2])
