"""VWFormer's decoder (densekit.models.heads.vwformer) against the official ``VWHead``.

The fixture ``tests/fixtures/heads/vwformer_official.pt`` was produced by
``tools/dev/make_vwformer_fixture.py`` from the official head of github.com/yan-hao-tian/VW with
random weights: the ADE20K ConvNeXt-T head in eval mode (2 x 3 pixel query windows) and a
16-head variant in training mode with input gradients. The official state dicts are rebuilt
from the stored spec and converted with ``convert_official_vw_head``; no official code runs here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from densekit.models.heads.vwformer import (VWFormerDecoder, context_windows, convert_official_vw_head,
                                            copy_shift_pad)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools' / 'dev'))
from official_fixture import regenerate_state_dict  # noqa: E402  (tools/dev)
from make_vwformer_fixture import input_maps  # noqa: E402  (tools/dev; imports no official code)

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'heads' / 'vwformer_official.pt'
TOL = 1e-4


@pytest.fixture(scope='module')
def fixture():
    return torch.load(FIXTURE, weights_only=False)


def _decoder_and_classifier(setting: dict, official: dict):
    cfg = setting['head']
    state = convert_official_vw_head(official, prefix='', out_prefix='decoder.')
    conv_seg = (state.pop('conv_seg.weight'), state.pop('conv_seg.bias'))
    decoder = VWFormerDecoder(cfg['in_channels'], cfg['channels'], num_heads=cfg['nheads'])
    decoder.load_state_dict({k[len('decoder.'):]: v for k, v in state.items()}, strict=True)
    return decoder, conv_seg


@pytest.mark.parametrize('name', ['eval', 'train'])
def test_official_vw_head_parity(fixture, name):
    setting = fixture['settings'][name]
    result = fixture['results'][name]
    official = regenerate_state_dict(result['spec'], fixture['seed'])
    decoder, (w, b) = _decoder_and_classifier(setting, official)
    decoder.train(setting['train'])
    inputs = [x.requires_grad_(setting['train']) for x in input_maps(setting, fixture['seed'] + 1)]
    logits = F.conv2d(decoder(inputs), w, b)  # conv_seg; dropout is identity in eval / p=0
    torch.testing.assert_close(logits, result['logits'], atol=TOL, rtol=0)
    if setting['train']:
        logits.square().sum().backward()
        for i, (x, g) in enumerate(zip(inputs, result['input_grads'])):
            scale = g.abs().max()
            torch.testing.assert_close(x.grad / scale, g / scale, atol=TOL, rtol=0,
                                       msg=lambda m: f'input {i}: {m}')


def test_converter_maps_every_official_key(fixture):
    spec = fixture['results']['eval']['spec']
    official = {f'decode_head.{k}': torch.zeros(s) for k, s, *_ in spec}
    official['backbone.stem.weight'] = torch.zeros(1)
    out = convert_official_vw_head(official)
    assert 'backbone.stem.weight' in out and 'decode_head.conv_seg.weight' in out
    decoder = VWFormerDecoder([96, 192, 384, 768], 512)
    ours = {f'decode_head.decoder.{k}' for k in decoder.state_dict()}
    assert ours == {k for k in out if k.startswith('decode_head.decoder.')}


def test_copy_shift_windows_are_centred_on_their_query_window():
    # A map whose value is its column index: the context window of query window j (ratio 2,
    # 4-pixel windows) covers columns 4j - 2 .. 4j + 5, copied from inside the map at the edges.
    n, p, r = 4, 4, 2
    x = torch.arange(n * p, dtype=torch.float32).expand(1, 1, n * p, n * p)
    padded = copy_shift_pad(x, r, p, dim=3)
    assert padded.shape[-1] == n * p + 2 * (r * p - (r + 1) * p // 2)
    assert padded[0, 0, 0, :2].tolist() == [6.0, 7.0]      # columns (r+1)p/2 .. rp
    assert padded[0, 0, 0, -2:].tolist() == [8.0, 9.0]     # columns L - rp .. L - (r+1)p/2
    tokens = context_windows(x, r, n)                    # [n*n, p*p, r*r*C]
    cols = tokens.reshape(n, n, p, p, r, r)[0, 1, 0, :, 0, :]  # window (0, 1), first row
    assert cols.flatten().tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]


@pytest.mark.parametrize('size', [(8, 8), (17, 9)])
def test_any_map_size_runs_and_backpropagates(size):
    torch.manual_seed(0)
    decoder = VWFormerDecoder([8, 16, 32, 64], 64, num_heads=2)
    h, w = size
    feats = [torch.randn(2, c, h * 2 // s, w * 2 // s, requires_grad=True)
             for c, s in zip([8, 16, 32, 64], [1, 2, 4, 8])]
    feats[1] = torch.randn(2, 16, h, w, requires_grad=True)
    out = decoder(feats)
    assert out.shape == (2, 64) + feats[0].shape[-2:]
    out.mean().backward()
    assert all(f.grad is not None and torch.isfinite(f.grad).all() for f in feats)


def test_invalid_arguments_name_the_values():
    with pytest.raises(ValueError, match='num_heads=3'):
        VWFormerDecoder([8, 16, 32, 64], 64, num_heads=3)
    with pytest.raises(ValueError, match=r'\[16\]'):
        VWFormerDecoder([8, 16, 32, 64], 64, ratios=(2, 16))
    with pytest.raises(ValueError, match='in_channels'):
        VWFormerDecoder([8, 16, 32], 64)
