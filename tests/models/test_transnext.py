"""TransNeXt: official-code output / input-gradient parity, the converter, variant sizes, options.

The parity fixture ``tests/fixtures/backbones/transnext_official.pt`` was produced by
``tools/dev/make_transnext_fixture.py`` from the official dense-prediction ``TransNeXt`` class
(``segmentation/upernet/transnext_native.py``, pure-PyTorch path; random weights, a tiny
configuration, with and without ``is_extrapolation``); the contract checks shared with every
family live in ``test_backbone_contract.py``.
"""
from pathlib import Path

import pytest
import torch

from densekit.models import build_backbone, convert_checkpoint
from densekit.models.backbones.transnext import TransNeXt

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'backbones' / 'transnext_official.pt'


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


def _model_for(official, name: str) -> TransNeXt:
    return TransNeXt(drop_path_rate=0.0, **official['config'], **official[name]['config']).eval()


@pytest.mark.parametrize('name', ['resized', 'extrapolation'])
def test_official_output_and_input_gradient_parity(official, name):
    entry = official[name]
    model = _model_for(official, name)
    model.load_state_dict(convert_checkpoint('transnext', official['state_dict']), strict=True)
    x = official['input'].clone().requires_grad_(True)
    outs = model(x)
    assert len(outs) == len(entry['outputs']) == 4
    for i, (ours, ref) in enumerate(zip(outs, entry['outputs'])):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0, msg=f'{name} stage {i}')
    sum(o.square().sum() for o in outs).backward()
    torch.testing.assert_close(x.grad, entry['input_grad'], atol=1e-4, rtol=0)


def test_converter_layouts_and_unknown_keys(official):
    sd = official['state_dict']
    direct = convert_checkpoint('transnext', sd)
    assert convert_checkpoint('transnext', direct).keys() == direct.keys()  # idempotent

    # mmdet / mmseg checkpoints: 'backbone.' prefix next to neck / head weights.
    wrapped = {f'backbone.{k}': v for k, v in sd.items()}
    wrapped['decode_head.conv_seg.weight'] = torch.zeros(1)
    det = convert_checkpoint('transnext', {'state_dict': wrapped, 'meta': {}})
    assert det.keys() == direct.keys() and all(det[k] is direct[k] for k in direct)

    # ImageNet releases add the classifier head (and some exports the position tables).
    cls = dict(sd, **{'head.weight': torch.zeros(10, 32), 'head.bias': torch.zeros(10),
                      'relative_pos_index1': torch.zeros(4, dtype=torch.long),
                      'block4.0.attn.seq_length_scale': torch.zeros(())})
    assert convert_checkpoint('transnext', cls).keys() == direct.keys()

    with pytest.raises(KeyError, match='unrecognised'):
        convert_checkpoint('transnext', {'block1.0.norm1.weight': torch.ones(8), 'foo.bar': torch.zeros(1)})


# Parameters of the official dense classes (segmentation/upernet/transnext_native.py, no
# classifier; micro: the dense class with classification/transnext.py's micro arguments).
@pytest.mark.parametrize('name,official_count', [
    ('transnext_micro', 12_424_304), ('transnext_tiny', 27_681_960), ('transnext_small', 49_164_564),
    ('transnext_base', 88_952_496)])
def test_variant_sizes_match_the_official_definitions(name, official_count):
    with torch.device('meta'):
        model = build_backbone(name)
    assert sum(p.numel() for p in model.parameters()) == official_count


def test_position_table_follows_img_size_unless_extrapolating():
    resized = build_backbone('transnext_test', img_size=96, pretrain_size=64)
    assert resized.stages[0].relative_pos_index.numel() == (96 // 4) ** 2 * (96 // 32) ** 2
    extrapolating = build_backbone('transnext_test', is_extrapolation=True)
    assert not hasattr(extrapolating.stages[0], 'relative_pos_index')
    x = torch.randn(1, 3, 45, 70)
    extrapolating.load_state_dict(resized.state_dict())
    with torch.no_grad():
        a, b = resized.eval()(x), extrapolating.eval()(x)
    assert [t.shape for t in a] == [t.shape for t in b]
    assert not torch.allclose(a[0], b[0])  # the pooled-token bias differs between the two modes


def test_variant_fixes_architecture():
    with pytest.raises(TypeError, match='fixed by the variant'):
        build_backbone('transnext_test', embed_dims=(8, 8, 8, 8))
    with pytest.raises(ValueError, match='num_heads'):
        TransNeXt(embed_dims=(8, 16), depths=(1, 1), num_heads=(1,), mlp_ratios=(2, 2), sr_ratios=(2, 1))
