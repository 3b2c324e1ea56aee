"""VAN: official-code output and input-gradient parity, the converter's key formats, variant sizes.

The parity fixture ``tests/fixtures/backbones/van_official.pt`` was produced by
``tools/dev/make_van_fixture.py`` from VAN-Segmentation's own ``VAN`` (the full VAN-B0 architecture,
random weights and BatchNorm statistics, eval mode). It stores no weights: the official state dict
is redrawn here from its seed and spec. The contract checks shared with every family live in
``test_backbone_contract.py``.
"""
from pathlib import Path

import pytest
import torch

from densekit.models import build_backbone, convert_checkpoint
from densekit.models.backbones.van import VAN

from official_fixture import regenerate_state_dict  # noqa: E402  (tools/dev)

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'backbones' / 'van_official.pt'


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def official_state_dict(official):
    return regenerate_state_dict(official['spec'], official['seed'])


def test_official_output_and_input_gradient_parity(official, official_state_dict):
    model = build_backbone('van_b0', drop_path_rate=0.0).eval()
    assert official['config']['embed_dims'] == list(model.dims)
    model.load_state_dict(convert_checkpoint('van', official_state_dict), strict=True)
    x = official['input'].clone().requires_grad_(True)
    outs = model(x)
    assert len(outs) == len(official['outputs']) == 4
    for i, (ours, ref) in enumerate(zip(outs, official['outputs'])):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0, msg=f'stage {i}')
    sum(o.square().sum() for o in outs).backward()
    torch.testing.assert_close(x.grad, official['input_grad'], atol=1e-4, rtol=0)


def test_converter_accepts_segmentor_and_classifier_checkpoints(official_state_dict):
    sd = official_state_dict
    direct = convert_checkpoint('van', sd)
    assert 'stem.proj.weight' in direct and 'stages.1.downsample.norm.running_var' in direct
    assert 'stages.3.blocks.1.mlp.dwconv.weight' in direct and 'stages.2.norm.bias' in direct

    # mmseg checkpoints: 'backbone.' prefix next to the decode heads.
    wrapped = {f'backbone.{k}': v for k, v in sd.items()}
    wrapped['decode_head.conv_seg.weight'] = torch.zeros(1)
    seg = convert_checkpoint('van', {'state_dict': wrapped, 'meta': {}})
    assert seg.keys() == direct.keys() and all(seg[k] is direct[k] for k in direct)

    # ImageNet release: the same keys plus the classifier head.
    cls = dict(sd, **{'head.weight': torch.zeros(1000, 256), 'head.bias': torch.zeros(1000)})
    assert convert_checkpoint('van', {'model': cls}).keys() == direct.keys()

    # densekit's own keys pass through (the conversion is idempotent).
    assert convert_checkpoint('van', direct).keys() == direct.keys()

    with pytest.raises(KeyError, match='unrecognised'):
        convert_checkpoint('van', {'block1.0.norm1.weight': torch.zeros(1), 'foo.bar': torch.zeros(1)})


# Parameter counts of VAN-Segmentation's VAN (van.py, the backbone without a head) built with the
# embed_dims / depths of its configs/upernet/1k_pretrained/upernet_van_b{0..3}_*.py; with the
# ImageNet head they are VAN-Classification's 4.1M / 13.9M / 26.6M / 44.8M.
@pytest.mark.parametrize('name,official_count', [
    ('van_b0', 3_848_800), ('van_b1', 13_348_800), ('van_b2', 26_065_472), ('van_b3', 44_252_608)])
def test_variant_sizes_match_the_official_definitions(name, official_count):
    with torch.device('meta'):
        model = build_backbone(name)
    assert sum(p.numel() for p in model.parameters()) == official_count


def test_stage_norm_feeds_the_next_stage_and_is_the_output():
    model = build_backbone('van_test', out_indices=(0,)).eval()
    x = torch.randn(1, 3, 33, 47)
    with torch.no_grad():
        (out,) = model(x)
        ref = model.stages[0](model.stem(x))
        assert model.stages[0].norm.eps == 1e-5
    torch.testing.assert_close(out, ref)
    assert len(model.out_norms) == 0


def test_invalid_configurations_name_the_value():
    with pytest.raises(ValueError, match='mlp_ratios'):
        VAN(embed_dims=(8, 16), depths=(1, 1), mlp_ratios=(2, 2, 2))
    with pytest.raises(TypeError, match='depths'):
        build_backbone('van_b0', depths=(1, 1, 1, 1))
