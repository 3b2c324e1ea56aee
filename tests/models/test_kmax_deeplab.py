"""kMaX-DeepLab's head (densekit.models.heads.kmax_deeplab) against the official PyTorch port.

The fixture ``tests/fixtures/heads/kmax_deeplab_official.pt`` was produced by
``tools/dev/make_kmax_deeplab_fixture.py`` from github.com/bytedance/kmax-deeplab's
``kMaXPixelDecoder`` and ``kMaXTransformerDecoder`` (the COCO panoptic R50 head) with random
weights, in eval mode; the official state dict is rebuilt from the stored spec and converted with
``convert_official_kmax_deeplab``. No official code runs here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from densekit.models.heads.kmax_deeplab import (KMaX, KMaXPixelDecoder,
                                                convert_official_kmax_deeplab,
                                                kmeans_cross_attention)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools' / 'dev'))
from official_fixture import regenerate_state_dict  # noqa: E402  (tools/dev)
from make_kmax_deeplab_fixture import input_maps  # noqa: E402  (tools/dev; imports no official code)

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'heads' / 'kmax_deeplab_official.pt'
TOL = 1e-4


@pytest.fixture(scope='module')
def fixture():
    return torch.load(FIXTURE, weights_only=False)


def test_official_kmax_deeplab_head_parity(fixture):
    official = regenerate_state_dict(fixture['spec'], fixture['seed'])
    state = convert_official_kmax_deeplab({f'sem_seg_head.{k}': v for k, v in official.items()},
                                          prefix='')
    with torch.device('meta'):  # the official init of 33M weights is slow and overwritten
        model = KMaX(**fixture['config'])
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    with torch.no_grad():
        classes, masks = model(input_maps(fixture['seed'] + 1))
    assert len(classes) == sum(fixture['config']['transformer_decoder_layers']) + 1
    for i in fixture['kept']:
        # Random BatchNorm statistics grow the logits to a few hundred after seven layers; the
        # official port and this one then differ from a float64 run by the same ~1e-4 of that
        # scale, so both outputs are compared relative to it.
        for ours, ref in ((classes[i], fixture['classes'][i]), (masks[i], fixture['masks'][i])):
            scale = ref.abs().max()
            torch.testing.assert_close(ours / scale, ref / scale, atol=TOL, rtol=0)


def test_kmeans_cross_attention_is_a_hard_assignment():
    """Each pixel's value goes to exactly its arg-max cluster; no gradient reaches the logits."""
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 37, requires_grad=True)
    value = torch.randn(2, 3, 37, requires_grad=True)
    out = kmeans_cross_attention(logits, value)
    owner = logits.argmax(1)
    expected = torch.stack([torch.stack([value[b][:, owner[b] == q].sum(1) for q in range(5)], 1)
                            for b in range(2)])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    out.square().sum().backward()
    assert logits.grad is None
    assert torch.isfinite(value.grad).all() and value.grad.abs().sum() > 0


@pytest.mark.parametrize('size', [(70, 99)])
def test_any_input_size_trains(size):
    """Even-sided and odd-sided maps (the official decoder is built for one fixed size) run and
    backpropagate to the inputs and to the first k-means layer."""
    torch.manual_seed(0)
    chans = [8, 16, 32, 64]
    model = KMaX(chans, num_classes=5, num_queries=6, pixel_decoder_channels=(16, 16, 8, 8),
                 pixel_decoder_layers=(1, 1, 1, 1), transformer_decoder_layers=(1, 1, 1),
                 embed_dims=32, base_filters=16, num_heads=4, feedforward_channels=32,
                 pixel_head_channels=16, mask_channels=8)
    h, w = size
    feats = [torch.randn(2, c, -(-h // s), -(-w // s), requires_grad=True)
             for c, s in zip(chans, (4, 8, 16, 32))]
    classes, masks = model(feats)
    assert len(classes) == 4 and classes[-1].shape == (2, 6, 6)
    assert all(m.shape == (2, 6) + feats[0].shape[-2:] for m in masks)
    (classes[-1].square().mean() + masks[-1].sigmoid().mean()
     + sum(m.sigmoid().mean() for m in masks[:-1])).backward()
    assert all(torch.isfinite(f.grad).all() for f in feats)
    layer = model.transformer_decoder.kmax_transformer_layers[0]
    # the k-means update's last norm starts at zero (a zero-initialised residual branch): its
    # scale is where the gradient of the update arrives first
    assert layer.kmeans_query_conv3_bn.norm.weight.grad.abs().sum() > 0


def test_invalid_arguments_name_the_values():
    with pytest.raises(ValueError, match='in_channels'):
        KMaXPixelDecoder([8, 16, 32])
    with pytest.raises(ValueError, match='block_type'):
        KMaXPixelDecoder([8, 16, 32, 64], (16, 16, 8, 8),
                         layer_types=('axial', 'conv', 'bottleneck', 'bottleneck'))
    with pytest.raises(ValueError, match='num_heads=3'):
        KMaX([8, 16, 32, 64], 5, base_filters=16, num_heads=3)
