"""DAT++: official-code output / input-gradient parity, the converter's key formats, variants.

The parity fixture ``tests/fixtures/backbones/dat_pp_official.pt`` was produced by
``tools/dev/make_dat_pp_fixture.py`` from the official DAT-Detection ``DAT`` backbone (dat_pp_test's
architecture with DAT++'s options; 197x261 and 45x70 inputs, the second with neighborhood
attention on maps smaller than its window). It stores the seeds, the official keys and weight
scales, the four outputs and the input gradient of each input, and the official backbones'
parameter counts; the weights and inputs are redrawn here from the seeds. The contract checks
shared with every family live in ``test_backbone_contract.py``.
"""
from pathlib import Path

import pytest
import torch

from densekit.models import build_backbone, convert_checkpoint
from densekit.models.backbones.dat_pp import DATPlusPlus
from make_dat_pp_fixture import fixture_input, output_grads
from official_fixture import regenerate_state_dict

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'backbones' / 'dat_pp_official.pt'


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def official_state(official):
    return regenerate_state_dict(official['spec'], official['seed'])


@pytest.mark.parametrize('case', [pytest.param(0, marks=pytest.mark.slow), 1])  # 197x261 (slow on CPU), 45x70
def test_official_output_and_input_gradient_parity(official, official_state, case):
    model = DATPlusPlus(**official['config']).eval()
    model.load_state_dict(convert_checkpoint('dat_pp', official_state), strict=True)
    ref = official['cases'][case]
    x = fixture_input(ref['input_shape'], ref['input_seed']).requires_grad_(True)
    outs = model(x)
    assert len(outs) == len(ref['outputs']) == 4
    for i, (ours, exp) in enumerate(zip(outs, ref['outputs'])):
        torch.testing.assert_close(ours, exp, atol=1e-4, rtol=0, msg=lambda m, i=i: f'stage {i}: {m}')
    torch.autograd.backward(outs, output_grads(outs, ref['input_seed']))
    torch.testing.assert_close(x.grad, ref['input_grad'], atol=1e-4, rtol=0)


def test_converter_accepts_detector_and_classifier_checkpoints(official_state):
    direct = convert_checkpoint('dat_pp', official_state)
    assert 'stages.1.downsample.0.weight' in direct and 'stem.4.weight' in direct
    assert 'stages.0.blocks.1.attn.conv_offset.1.weight' in direct and 'stages.0.blocks.1.norm2.bias' in direct
    assert convert_checkpoint('dat_pp', direct).keys() == direct.keys()  # idempotent

    # mmdet checkpoints: 'backbone.' prefix next to neck / head weights.
    wrapped = {f'backbone.{k}': v for k, v in official_state.items()}
    wrapped['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    det = convert_checkpoint('dat_pp', {'state_dict': wrapped, 'meta': {}})
    assert det.keys() == direct.keys() and all(det[k] is direct[k] for k in direct)

    # ImageNet releases: no per-output norms, a final 'cls_norm' and a 'cls_head'.
    cls = {k: v for k, v in official_state.items() if not k.startswith('norms.')}
    cls.update({'cls_norm.norm.weight': torch.ones(128), 'cls_norm.norm.bias': torch.zeros(128),
                'cls_head.weight': torch.zeros(1000, 128), 'cls_head.bias': torch.zeros(1000)})
    model = build_backbone('dat_pp_test')
    missing, unexpected = model.load_state_dict(convert_checkpoint('dat_pp', {'model': cls}), strict=False)
    assert not unexpected and missing and all(k.startswith('out_norms.') for k in missing)


def test_converter_rejects_unknown_keys(official_state):
    with pytest.raises(KeyError, match='unrecognised keys.*stages.0.offset_net'):
        convert_checkpoint('dat_pp', {**official_state, 'stages.0.offset_net.weight': torch.zeros(1)})


def test_variant_fixes_architecture():
    with pytest.raises(TypeError, match='groups'):
        build_backbone('dat_pp_test', groups=(1, 1, 1, 1))


def test_table_size_follows_img_size():
    model = build_backbone('dat_pp_test', img_size=256)
    assert model.stages[0].blocks[1].attn.rpe_table.shape == (1, 2 * 64 - 1, 2 * 64 - 1)
    assert model.stages[3].blocks[1].attn.rpe_table.shape == (4, 2 * 8 - 1, 2 * 8 - 1)


def test_errors():
    with pytest.raises(ValueError, match='differ in length'):
        DATPlusPlus(dims=(16, 32), stage_specs=('ND',), num_heads=(1,), groups=(1,), strides=(8,), ksizes=(9,))
    with pytest.raises(ValueError, match="kind='L'"):
        DATPlusPlus(dims=(16,), stage_specs=('L',), num_heads=(1,), groups=(1,), strides=(8,), ksizes=(9,), out_indices=(0,))
    with pytest.raises(ValueError, match='must divide'):
        DATPlusPlus(dims=(16,), stage_specs=('D',), num_heads=(2,), groups=(3,), strides=(8,), ksizes=(9,), out_indices=(0,))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['tiny', 'small', 'base'])
def test_param_counts_match_official(official, name):
    with torch.device('meta'):
        model = build_backbone(f'dat_pp_{name}')
    assert sum(p.numel() for p in model.parameters()) == official['param_counts'][name]
