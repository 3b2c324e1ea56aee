"""CSWin: official-code output parity, the converter's key formats, variants, stripe padding.

The parity fixture ``tests/fixtures/backbones/cswin_official.pt`` was produced by
``tools/dev/make_cswin_fixture.py`` from microsoft/CSWin-Transformer's own segmentation backbone
(random weights, a tiny configuration, an input whose stage maps need stripe padding); the
contract checks shared with every family live in ``test_backbone_contract.py``.
"""
from pathlib import Path

import pytest
import torch

from densekit.models import build_backbone, convert_checkpoint
from densekit.models.backbones.cswin import CSWin

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'backbones' / 'cswin_official.pt'


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


def _model_for(official) -> CSWin:
    cfg = dict(official['config'])
    cfg['depths'] = cfg.pop('depth')  # the official argument name
    return CSWin(drop_path_rate=0.0, **cfg).eval()


def test_official_output_parity(official):
    model = _model_for(official)
    model.load_state_dict(convert_checkpoint('cswin', official['state_dict']), strict=True)
    with torch.no_grad():
        outs = model(official['input'])
    assert len(outs) == len(official['outputs']) == 4
    for i, (ours, ref) in enumerate(zip(outs, official['outputs'])):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0, msg=f'stage {i}')


def test_converter_accepts_segmentor_and_classifier_checkpoints(official):
    sd = official['state_dict']
    direct = convert_checkpoint('cswin', sd)

    wrapped = {f'backbone.{k}': v for k, v in sd.items()}
    wrapped['decode_head.conv_seg.weight'] = torch.zeros(1)
    seg = convert_checkpoint('cswin', {'state_dict': wrapped})
    assert seg.keys() == direct.keys() and all(seg[k] is direct[k] for k in direct)

    # ImageNet releases: a final 'norm' and a 'head' instead of the per-output norm1..norm4.
    cls = {k: v for k, v in sd.items() if not k.startswith('norm')}
    cls.update({'norm.weight': torch.ones(32), 'norm.bias': torch.zeros(32),
                'head.weight': torch.zeros(10, 32), 'head.bias': torch.zeros(10)})
    missing, unexpected = _model_for(official).load_state_dict(
        convert_checkpoint('cswin', cls), strict=False)
    assert not unexpected and missing and all(k.startswith('out_norms.') for k in missing)

    assert convert_checkpoint('cswin', direct).keys() == direct.keys()
    with pytest.raises(KeyError, match='unrecognised'):
        convert_checkpoint('cswin', {'stage1.0.bogus.weight': torch.zeros(1)})


# Parameter counts of the official ImageNet definitions (models/cswin.py of
# microsoft/CSWin-Transformer, instantiated with their defaults).
@pytest.mark.parametrize('name,official_count', [
    ('cswin_tiny', 22_320_552), ('cswin_small', 34_643_304), ('cswin_base', 77_382_184),
    ('cswin_large', 173_262_664)])
def test_variant_sizes_match_the_official_definitions(name, official_count):
    with torch.device('meta'):
        model = build_backbone(name)
    d = model.dims
    # The classifier has a 1000-way head and one final norm instead of our four output norms.
    n = (sum(p.numel() for p in model.parameters()) + d[-1] * 1000 + 1000 + 2 * d[-1]
         - sum(2 * c for c in d))
    assert n == official_count, (name, n)


def test_stripe_padding_is_local():
    """Maps narrower than a stripe (and odd sizes) are padded per branch and cropped back."""
    model = build_backbone('cswin_test', split_size=(3, 5, 7, 7)).eval()
    x = torch.randn(1, 3, 23, 45)
    with torch.no_grad():
        outs = model(x)
    assert [tuple(o.shape[2:]) for o in outs] == [(6, 11), (3, 6), (2, 3), (1, 2)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_invalid_configurations_name_the_value():
    with pytest.raises(ValueError, match='num_heads=3'):
        CSWin(embed_dim=12, depths=(1, 1, 1, 1), num_heads=(3, 4, 8, 8))
    with pytest.raises(ValueError, match='split_size'):
        CSWin(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2), split_size=(1, 2, 7))
