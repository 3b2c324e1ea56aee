"""PEM's head (densekit.models.heads.pem) against the official pixel and transformer decoders.

The fixture ``tests/fixtures/heads/pem_official.pt`` was produced by
``tools/dev/make_pem_fixture.py`` from github.com/NiccoloCavagnero/PEM's ``PEM_Pixel_Decoder`` and
``MultiScaleMaskedTransformerDecoder`` (the ADE20K R50 head) with random weights, in eval mode;
the official state dict is rebuilt from the stored spec and converted with
``convert_official_pem``. No official code runs here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from densekit.models.heads.pem import PEM, PEMPixelDecoder, convert_official_pem

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools' / 'dev'))
from official_fixture import regenerate_state_dict  # noqa: E402  (tools/dev)
from make_pem_fixture import input_maps  # noqa: E402  (tools/dev; imports no official code)

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'heads' / 'pem_official.pt'
TOL = 1e-4


@pytest.fixture(scope='module')
def fixture():
    return torch.load(FIXTURE, weights_only=False)


def _model(cfg: dict) -> PEM:
    return PEM(cfg['in_channels'], cfg['num_classes'], cfg['conv_dim'], cfg['mask_dim'],
               cfg['hidden_dim'], cfg['num_queries'], cfg['nheads'], cfg['dim_feedforward'],
               cfg['dec_layers'])


def test_official_pem_head_parity(fixture):
    official = regenerate_state_dict(fixture['spec'], fixture['seed'])
    state = convert_official_pem({f'sem_seg_head.{k}': v for k, v in official.items()})
    model = _model(fixture['config'])
    model.load_state_dict({k[len('decode_head.pem.'):]: v for k, v in state.items()}, strict=True)
    model.eval()
    with torch.no_grad():
        classes, masks = model(input_maps(fixture['seed'] + 1))
    assert len(classes) == fixture['config']['dec_layers'] + 1
    for i in fixture['kept']:
        torch.testing.assert_close(classes[i], fixture['classes'][i], atol=TOL, rtol=0)
        scale = fixture['masks'][i].abs().max()
        torch.testing.assert_close(masks[i] / scale, fixture['masks'][i] / scale, atol=TOL, rtol=0)


@pytest.mark.parametrize('size', [(70, 99)])
def test_any_input_size_trains(size):
    """Sides that are not multiples of 32 (the official decoder needs them) run and backpropagate."""
    torch.manual_seed(0)
    model = PEM([8, 16, 32, 64], num_classes=5, conv_dim=16, mask_dim=16, hidden_dim=32,
                num_queries=6, nheads=4, dim_feedforward=32, dec_layers=3)
    h, w = size
    feats = [torch.randn(2, c, -(-h // s), -(-w // s), requires_grad=True)
             for c, s in zip([8, 16, 32, 64], (4, 8, 16, 32))]
    classes, masks = model(feats)
    assert len(classes) == 4 and classes[-1].shape == (2, 6, 6)
    assert masks[-1].shape == (2, 6) + feats[0].shape[-2:]
    (classes[-1].square().mean() + masks[-1].sigmoid().mean()).backward()
    assert all(torch.isfinite(f.grad).all() for f in feats)
    assert model.pixel_decoder.dcn[0].dcn.weight.grad.abs().sum() > 0


def test_invalid_arguments_name_the_values():
    with pytest.raises(ValueError, match='in_channels'):
        PEMPixelDecoder([8, 16, 32])
    with pytest.raises(ValueError, match='nheads=3'):
        PEM([8, 16, 32, 64], 5, hidden_dim=32, nheads=3)
