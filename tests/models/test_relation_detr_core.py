"""OpenMMLab-free parts of Relation DETR: the biased attention, the in-place ReLU + mask of the
relation bias, the relation embedding (its official parity is in test_relation_detr_parity.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from densekit.models.heads.relation_detr import (BiasedMultiheadAttention,
                                                  PositionRelationEmbedding,
                                                  box_relation_encoding, relu_mask_fill_)


def _mask(q: int) -> torch.Tensor:
    m = torch.rand(q, q, generator=torch.Generator().manual_seed(3)) < 0.3
    m.fill_diagonal_(False)  # every query sees itself: no fully blocked row
    return m


@pytest.fixture
def attn_pair():
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(16, 4, batch_first=True)
    nn.init.normal_(ref.in_proj_bias, std=0.1)
    ours = BiasedMultiheadAttention(16, 4)
    ours.load_state_dict(ref.state_dict())
    return ref.eval(), ours.eval()


def test_biased_attention_matches_multihead_attention_float_bias(attn_pair):
    ref, ours = attn_pair
    b, q, h = 2, 7, 4
    x, kx = torch.randn(b, q, 16), torch.randn(b, q, 16)
    bias = torch.randn(b, h, q, q)
    bias.masked_fill_(_mask(q), float('-inf'))
    expected = ref(x, kx, x, attn_mask=bias.flatten(0, 1), need_weights=False)[0]
    torch.testing.assert_close(ours(x, kx, x, bias), expected, atol=1e-5, rtol=0)


def test_biased_attention_matches_multihead_attention_bool_mask(attn_pair):
    ref, ours = attn_pair
    x = torch.randn(2, 7, 16)
    mask = _mask(7)
    expected = ref(x, x, x, attn_mask=mask, need_weights=False)[0]
    torch.testing.assert_close(ours(x, x, x, mask), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours(x, x, x), ref(x, x, x, need_weights=False)[0],
                               atol=1e-5, rtol=0)


def test_relu_mask_fill_is_in_place_with_the_reference_gradient():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 4, 1)
    x = torch.randn(2, 8, 5, 5)
    mask = _mask(5)
    grad = torch.randn(2, 4, 5, 5)

    y_ref = torch.relu(conv(x)).clone().masked_fill(mask, float('-inf'))
    keep = torch.isfinite(y_ref)
    (y_ref[keep] * grad[keep]).sum().backward()
    g_ref = conv.weight.grad.clone()
    conv.weight.grad = None

    out = conv(x)
    ptr = out.data_ptr()
    y = relu_mask_fill_(out, mask)
    assert y.data_ptr() == ptr  # written into the convolution's output, no copy
    assert torch.equal(y, y_ref)
    (y[keep] * grad[keep]).sum().backward()
    torch.testing.assert_close(conv.weight.grad, g_ref, atol=1e-6, rtol=0)


def test_relation_embedding_shape_mask_and_no_box_gradient():
    torch.manual_seed(0)
    emb = PositionRelationEmbedding(16, 8)
    boxes = torch.cat([torch.rand(2, 6, 2), 0.05 + 0.3 * torch.rand(2, 6, 2)], -1)
    boxes.requires_grad_(True)
    mask = _mask(6)
    bias = emb(boxes, mask=mask)
    assert bias.shape == (2, 8, 6, 6)
    assert bias.is_contiguous()  # keys innermost: fused attention takes it without a copy
    assert torch.isneginf(bias[:, :, mask]).all()
    assert (bias[:, :, ~mask] >= 0).all()
    bias[:, :, ~mask].sum().backward()
    assert boxes.grad is None and emb.pos_proj.weight.grad is not None


def test_box_relation_encoding_values():
    src = torch.tensor([[[0.5, 0.5, 0.2, 0.4]]])
    tgt = torch.tensor([[[0.7, 0.1, 0.1, 0.4]]])
    rel = box_relation_encoding(src, tgt, eps=0.0)[0, 0, 0]  # [B, N1, N2, 4]
    expected = torch.log(torch.tensor([1 + 0.2 / 0.2, 1 + 0.4 / 0.4, 0.2 / 0.1, 1.0]))
    torch.testing.assert_close(rel, expected)


def test_channels_first_sine_encoding_matches_sine_encoding():
    from densekit.models.heads.relation_detr import _sine_encoding_channels_first, sine_encoding
    x = torch.randn(2, 5, 7, 4)
    ref = sine_encoding(x, 16, 10000.0, 100.0).permute(0, 3, 1, 2)
    got = _sine_encoding_channels_first(x.permute(0, 3, 1, 2), 16, 10000.0, 100.0)
    assert got.is_contiguous() and torch.equal(got, ref)
