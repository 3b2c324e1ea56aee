"""NAT / DiNAT: official-code output parity, the converter's key formats, variants and schedules.

The parity fixture ``tests/fixtures/backbones/nat_official.pt`` was produced by
``tools/dev/make_nat_fixture.py`` from SHI-Labs' own dense-prediction ``NAT`` class (random
weights, tiny configurations); the contract checks shared with every family live in
``test_backbone_contract.py``.
"""
from pathlib import Path

import pytest
import torch

from densekit.models import build_backbone, convert_checkpoint
from densekit.models.backbones.nat import NAT, dinat_dilations

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'backbones' / 'nat_official.pt'


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


def _model_for(fixture_entry) -> NAT:
    return NAT(drop_path_rate=0.0, **fixture_entry['config']).eval()


@pytest.mark.parametrize('family', ['nat', 'dinat'])
def test_official_output_parity(official, family):
    entry = official[family]
    model = _model_for(entry)
    model.load_state_dict(convert_checkpoint(family, entry['state_dict']), strict=True)
    with torch.no_grad():
        outs = model(official['input'])
    assert len(outs) == len(entry['outputs']) == 4
    for i, (ours, ref) in enumerate(zip(outs, entry['outputs'])):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0, msg=f'{family} stage {i}')


def test_converter_accepts_detector_and_classifier_checkpoints(official):
    sd = official['dinat']['state_dict']
    direct = convert_checkpoint('dinat', sd)

    # mmdet / mmseg checkpoints: 'backbone.' prefix next to neck / head weights.
    wrapped = {f'backbone.{k}': v for k, v in sd.items()}
    wrapped['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    det = convert_checkpoint('dinat', {'state_dict': wrapped, 'meta': {}})
    assert det.keys() == direct.keys()
    assert all(det[k] is direct[k] for k in direct)

    # ImageNet releases: no per-output norms, a final 'norm' and a 'head' that a backbone drops.
    cls = {k: v for k, v in sd.items() if not k.startswith('norm')}
    cls.update({'norm.weight': torch.ones(32), 'norm.bias': torch.zeros(32),
                'head.weight': torch.zeros(10, 32), 'head.bias': torch.zeros(10)})
    model = _model_for(official['dinat'])
    missing, unexpected = model.load_state_dict(convert_checkpoint('dinat', cls), strict=False)
    assert not unexpected and missing and all(k.startswith('out_norms.') for k in missing)

    # densekit's own keys pass through (the conversion is idempotent).
    assert convert_checkpoint('nat', direct).keys() == direct.keys()

    with pytest.raises(KeyError, match='unrecognised'):
        convert_checkpoint('nat', {'levels.0.blocks.0.attn.rpb': sd['levels.0.blocks.0.attn.rpb'],
                                   'foo.bar': torch.zeros(1)})


# Parameter counts of the official ImageNet definitions (classification/nat.py, dinat.py of
# SHI-Labs/Neighborhood-Attention-Transformer, instantiated with their defaults).
@pytest.mark.parametrize('name,official_count', [
    ('nat_mini', 19_984_174), ('nat_tiny', 27_901_582), ('nat_small', 50_743_297),
    ('nat_base', 89_769_652), ('dinat_mini', 19_984_174), ('dinat_tiny', 27_901_582),
    ('dinat_small', 50_719_681), ('dinat_base', 89_769_652), ('dinat_large', 200_943_514)])
def test_variant_sizes_match_the_official_definitions(name, official_count):
    with torch.device('meta'):
        model = build_backbone(name)
    d = model.dims
    # The classifier has a 1000-way head and one final norm instead of our four output norms.
    n = (sum(p.numel() for p in model.parameters()) + d[-1] * 1000 + 1000 + 2 * d[-1]
         - sum(2 * c for c in d))
    assert n == official_count, (name, n)


def test_dilation_schedules_match_the_official_configs():
    deep = (3, 4, 18, 5)
    # detection/configs/dinat/*_tiny_3x_coco.py and segmentation/configs/dinat/*_tiny_512x512*.py
    assert dinat_dilations('coco', deep) == [
        [1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7] * 3, [1, 3, 1, 3, 1]]
    assert dinat_dilations('ade20k', (3, 4, 6, 5)) == [
        [1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4], [1, 2, 1, 2, 1]]
    # segmentation/configs/dinat/upernet_dinat_large_640x640_160k_ade20k.py
    assert dinat_dilations('ade20k_640', deep)[2] == [1, 2, 1, 3, 1, 4, 1, 5, 1, 2, 1, 3, 1, 4, 1, 5,
                                                      1, 5]
    # classification/dinat.py (224²)
    assert dinat_dilations('imagenet', deep) == [[1, 8, 1], [1, 4, 1, 4], [1, 2] * 9, [1] * 5]
    with pytest.raises(ValueError, match='unknown schedule'):
        dinat_dilations('cityscapes', deep)

    model = build_backbone('dinat_mini', dilations='ade20k')
    got = [[blk.attn.dilation for blk in stage.blocks] for stage in model.stages]
    assert got == dinat_dilations('ade20k', (3, 4, 6, 5))


def test_small_inputs_are_padded_to_the_dilated_window():
    # The coco schedule has a 7 x 28 window at stride 4: a 64² image is far smaller.
    model = build_backbone('dinat_test', dilations=dinat_dilations('coco', (1, 1, 2, 1))).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 37, 50))
    assert [tuple(o.shape[2:]) for o in outs] == [(10, 13), (5, 7), (3, 4), (2, 2)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_invalid_configurations_name_the_value():
    with pytest.raises(ValueError, match='dilations'):
        NAT(depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), dilations=[[1], [1], [1, 2], [1]])
    with pytest.raises(ValueError, match='kernel_size=6'):
        NAT(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), kernel_size=6)
