"""BiFormer: official-code output / input-gradient parity, the converter's key formats, variants.

The parity fixture ``tests/fixtures/backbones/biformer_official.pt`` was produced by
``tools/dev/make_biformer_fixture.py`` from the official dense-prediction ``BiFormer_mm`` (BiFormer-T
architecture, ``n_win=16``, ``auto_pad=True``, 197x261 input: every stage's map is padded). It
stores the seed, the official keys and shapes, the input, the four outputs and the input gradient;
the official weights are regenerated here from the seed. The contract checks shared with every
family live in ``test_backbone_contract.py``.
"""
from pathlib import Path

import pytest
import torch

from densekit.models import build_backbone, convert_checkpoint
from densekit.models.backbones.biformer import BiFormer
from make_biformer_fixture import official_random_state, output_grads

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'backbones' / 'biformer_official.pt'


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def official_state(official):
    return official_random_state(official['shapes'], official['seed'])


def test_official_output_and_input_gradient_parity(official, official_state):
    model = BiFormer(**official['config']).eval()
    model.load_state_dict(convert_checkpoint('biformer', official_state), strict=True)
    x = official['input'].clone().requires_grad_(True)
    outs = model(x)
    assert len(outs) == len(official['outputs']) == 4
    for i, (ours, ref) in enumerate(zip(outs, official['outputs'])):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0, msg=lambda m, i=i: f'stage {i}: {m}')
    torch.autograd.backward(outs, output_grads(outs, official['seed']))
    torch.testing.assert_close(x.grad, official['input_grad'], atol=1e-4, rtol=0)


def test_converter_accepts_detector_and_classifier_checkpoints(official_state):
    direct = convert_checkpoint('biformer', official_state)
    assert any(k.startswith('stages.1.downsample.') for k in direct) and 'stem.3.weight' in direct

    # mmdet / mmseg checkpoints: 'backbone.' prefix next to neck / head weights.
    wrapped = {f'backbone.{k}': v for k, v in official_state.items()}
    wrapped['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    det = convert_checkpoint('biformer', {'state_dict': wrapped, 'meta': {}})
    assert det.keys() == direct.keys() and all(det[k] is direct[k] for k in direct)

    # ImageNet releases: no per-output norms, a final BatchNorm 'norm' and a 'head'.
    cls = {k: v for k, v in official_state.items() if not k.startswith('extra_norms')}
    cls.update({'norm.weight': torch.ones(512), 'norm.running_var': torch.ones(512),
                'head.weight': torch.zeros(1000, 512), 'head.bias': torch.zeros(1000)})
    model = build_backbone('biformer_tiny')
    missing, unexpected = model.load_state_dict(convert_checkpoint('biformer', {'model': cls}), strict=False)
    assert not unexpected and missing and all(k.startswith('out_norms.') for k in missing)

    # densekit's own keys pass through (the conversion is idempotent).
    assert convert_checkpoint('biformer', direct).keys() == direct.keys()
    with pytest.raises(KeyError, match='unrecognised'):
        convert_checkpoint('biformer', {'foo.bar': torch.zeros(1)})


# Parameter counts of the official ImageNet definitions (models/biformer.py: biformer_tiny / small /
# base, instantiated with their defaults, 1000-way head and final BatchNorm).
@pytest.mark.parametrize('name,official_count', [
    ('biformer_tiny', 13_142_760), ('biformer_small', 25_536_232), ('biformer_base', 56_804_968)])
def test_variant_sizes_match_the_official_definitions(name, official_count):
    with torch.device('meta'):
        model = build_backbone(name)
    d = model.dims
    # The classifier has a 1000-way head and one final BatchNorm instead of our four output norms.
    n = sum(p.numel() for p in model.parameters()) + d[-1] * 1000 + 1000 + 2 * d[-1] - sum(2 * c for c in d)
    assert n == official_count, (name, n)


def test_n_win_changes_outputs_not_parameters():
    torch.manual_seed(0)
    a = build_backbone('biformer_test', n_win=4).eval()
    b = build_backbone('biformer_test', n_win=3).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(a(x)[0], b(x)[0])


def test_invalid_configurations_name_the_value():
    with pytest.raises(ValueError, match=r'topks=\(1, 4, 17, -2\)'):
        BiFormer(n_win=4, topks=(1, 4, 17, -2))
    with pytest.raises(ValueError, match='topk=0'):
        BiFormer(embed_dims=(32, 32, 32, 32), depths=(1, 1, 1, 1), topks=(1, 1, 0, -2))
    with pytest.raises(TypeError, match="'depths' is fixed"):
        build_backbone('biformer_small', depths=(1, 1, 1, 1))
