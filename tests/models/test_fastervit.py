"""FasterViT: official-code output / input-gradient parity, the converter, variant sizes, options.

The parity fixture ``tests/fixtures/backbones/fastervit_official.pt`` was produced by
``tools/dev/make_fastervit_fixture.py`` from the official dense-prediction ``FasterViT`` class
(``downstream/object_detection/dino/models/dino/fastervit.py``; random weights redrawn here from
the stored seed and spec, tiny configurations with carrier tokens, carrier propagation and the
ImageNet-21k window layout); the contract checks shared with every family live in
``test_backbone_contract.py``.
"""
import sys
from pathlib import Path

import pytest
import torch

from densekit.models import build_backbone, convert_checkpoint
from densekit.models.backbones.fastervit import FasterViT

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools' / 'dev'))
from official_fixture import regenerate_state_dict  # noqa: E402  (tools/dev)

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'backbones' / 'fastervit_official.pt'


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


def _official_state_dict(official, name):
    return regenerate_state_dict(official[name]['spec'], official['seed'])


@pytest.mark.parametrize('name', ['hat', 'propagation', 'window14'])
def test_official_output_and_input_gradient_parity(official, name):
    entry = official[name]
    model = FasterViT(drop_path_rate=0.0, **entry['config']).eval()
    model.load_state_dict(convert_checkpoint('fastervit', _official_state_dict(official, name)), strict=True)
    gen = torch.Generator().manual_seed(official['seed'] + 1)
    x = torch.randn(entry['input_shape'], generator=gen).requires_grad_(True)
    outs = model(x)
    assert len(outs) == len(entry['outputs']) == 4
    for i, (ours, ref) in enumerate(zip(outs, entry['outputs'])):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0, msg=f'{name} stage {i}')
    sum(o.square().sum() for o in outs).backward()
    torch.testing.assert_close(x.grad, entry['input_grad'], atol=1e-4, rtol=0)


def test_converter_layouts_and_unknown_keys(official):
    sd = _official_state_dict(official, 'hat')
    direct = convert_checkpoint('fastervit', sd)
    assert convert_checkpoint('fastervit', direct).keys() == direct.keys()  # idempotent
    # The initializer's conv is saved under two names; the official loader ends with this one.
    alias = 'levels.2.global_tokenizer.to_global_feature.pos.weight'
    assert direct['stages.2.global_tokenizer.pos_embed.weight'] is sd[alias]
    assert 'stages.3.downsample.reduction.0.weight' in direct and 'out_norms.0.running_var' in direct

    # DINO checkpoints: the backbone is 'backbone.0.' of a detector with its own weights.
    wrapped = {f'backbone.0.{k}': v for k, v in sd.items()}
    wrapped['transformer.level_embed'] = torch.zeros(4, 256)
    det = convert_checkpoint('fastervit', {'model': wrapped})
    assert det.keys() == direct.keys() and all(det[k] is direct[k] for k in direct)

    # ImageNet releases: classifier norm and head, the official position-table buffers, and only
    # one of the two initializer names.
    cls = {k: v for k, v in sd.items() if not k.startswith('norm') and '.to_global_feature.' not in k}
    cls.update({'norm.weight': torch.ones(64), 'head.weight': torch.zeros(10, 64), 'head.bias': torch.zeros(10),
                'levels.2.blocks.0.attn.pos_emb_funct.relative_coords_table': torch.zeros(1, 13, 13, 2),
                'levels.2.blocks.0.attn.pos_emb_funct.relative_position_index': torch.zeros(49, 49, dtype=torch.long),
                'levels.2.blocks.0.pos_embed.relative_bias': torch.zeros(1, 49, 8)})
    converted = convert_checkpoint('fastervit', {'state_dict': cls})
    assert converted.keys() == {k for k in direct if not k.startswith('out_norms.')}
    assert converted['stages.2.global_tokenizer.pos_embed.weight'] is sd['levels.2.global_tokenizer.pos_embed.weight']

    with pytest.raises(KeyError, match='unrecognised'):
        convert_checkpoint('fastervit', {'levels.0.blocks.0.conv1.weight': torch.ones(1), 'foo.bar': torch.zeros(1)})


# Parameters of the official dense class (build_fastervit of dino/models/dino/fastervit.py, with
# out_indices=(0, 1, 2, 3): four output BatchNorms), counted from the official code.
@pytest.mark.slow
@pytest.mark.parametrize('name,official_count', [
    ('fastervit_0', 30_892_736), ('fastervit_1', 52_726_816), ('fastervit_2', 75_156_160),
    ('fastervit_3', 158_524_736), ('fastervit_4', 363_989_456), ('fastervit_4_21k_224', 270_377_968),
    ('fastervit_4_21k_384', 270_377_968), ('fastervit_4_21k_512', 270_377_968)])
def test_variant_sizes_match_the_official_definitions(name, official_count):
    with torch.device('meta'):
        model = build_backbone(name)
    assert sum(p.numel() for p in model.parameters()) == official_count


def test_carrier_tokens_follow_the_build_resolution_not_the_input():
    model = build_backbone('fastervit_test')
    assert model.stages[2].num_extra == 4 and model.stages[2].blocks[0].sr_ratio == 2
    assert model.stages[3].num_extra == 0 and model.stages[1].global_tokenizer is None
    # resolution 112: the stage-2 map (7) holds one window, so no carrier tokens at any input size.
    small = build_backbone('fastervit_test', resolution=112)
    assert small.stages[2].global_tokenizer is None and not hasattr(small.stages[2].blocks[0], 'hat_attn')
    x = torch.randn(1, 3, 90, 120)
    with torch.no_grad():
        assert [o.shape for o in small.eval()(x)] == [o.shape for o in model.eval()(x)]


def test_variant_fixes_architecture():
    with pytest.raises(TypeError, match='fixed by the variant'):
        build_backbone('fastervit_test', dim=16)
    with pytest.raises(ValueError, match='num_heads'):
        FasterViT(dim=8, in_dim=8, depths=(1, 1), num_heads=(1,), window_size=(7, 7), hat=(False, False))
