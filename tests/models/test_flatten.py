"""FLatten: official-code output and input-gradient parity, the converter's key formats, sizes,
and the dense adaptations (interpolated position encodings, per-forward windows).

The parity fixture ``tests/fixtures/backbones/flatten_official.pt`` was produced by
``tools/dev/make_flatten_fixture.py`` from the official ``FLattenSwinTransformer`` and
``PyramidVisionTransformer`` of LeapLabTHU/FLatten-Transformer with the architectures of
``flatten_swin_test`` / ``flatten_pvt_test``, random weights (position encodings and focusing
scales included), eval mode, on one 224x224 image (the official models accept no other size). It
stores neither weights nor input: both are redrawn here from their seeds. The contract checks
shared with every family (97x131 input) live in ``test_backbone_contract.py``.
"""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from densekit.models import build_backbone, convert_checkpoint
from densekit.models.backbones.flatten import FLattenSwin, FocusedLinearAttention

from official_fixture import regenerate_state_dict  # noqa: E402  (tools/dev)

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'backbones' / 'flatten_official.pt'
VARIANT = {'swin': ('flatten_swin_test', dict(out_norm=False)), 'pvt': ('flatten_pvt_test', {})}


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


def _official_state_dict(official, which):
    return regenerate_state_dict(official[which]['spec'], official[which]['seed'])


@pytest.mark.parametrize('which', ['swin', 'pvt'])
def test_official_output_and_input_gradient_parity_at_224(official, which):
    name, kwargs = VARIANT[which]
    ref = official[which]
    model = build_backbone(name, drop_path_rate=0.0, **kwargs).eval()
    model.load_state_dict(convert_checkpoint('flatten', _official_state_dict(official, which)), strict=True)
    x = torch.randn(official['input_shape'], generator=torch.Generator().manual_seed(official['input_seed']))
    x.requires_grad_(True)
    outs = model(x)
    assert len(outs) == len(ref['outputs']) == 4
    for i, (ours, theirs) in enumerate(zip(outs, ref['outputs'])):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0, msg=f'{which} stage {i}')
    sum(o.square().sum() for o in outs).backward()
    torch.testing.assert_close(x.grad, ref['input_grad'], atol=1e-4, rtol=0)


def test_converter_accepts_detector_and_classifier_checkpoints(official):
    swin = _official_state_dict(official, 'swin')
    direct = convert_checkpoint('flatten', swin)
    # patch merging moves to the start of the next stage; buffers and the classifier are dropped
    assert 'layers.1.downsample.reduction.weight' in direct
    assert not any('layers.0.downsample' in k for k in direct)
    assert not any(k.endswith(('relative_position_index', 'attn_mask')) for k in direct)
    assert 'layers.0.blocks.1.attn.positional_encoding' in direct and 'norm.weight' not in direct
    # densekit's own keys pass through (idempotent)
    again = convert_checkpoint('flatten', direct)
    assert again.keys() == direct.keys() and all(again[k] is direct[k] for k in direct)

    # a detector checkpoint: 'backbone.' prefix, one norm per output, neck keys beside it
    wrapped = {f'backbone.{k}': v for k, v in swin.items()}
    wrapped.update({f'backbone.norm{i}.weight': torch.ones(16 * 2 ** i) for i in range(4)})
    wrapped.update({f'backbone.norm{i}.bias': torch.zeros(16 * 2 ** i) for i in range(4)})
    wrapped['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    det = convert_checkpoint('flatten', {'state_dict': wrapped, 'meta': {}})
    assert det.keys() == direct.keys() | {f'out_norms.{i}.{p}' for i in range(4) for p in ('weight', 'bias')}
    build_backbone('flatten_swin_test').load_state_dict(det, strict=True)

    pvt = _official_state_dict(official, 'pvt')
    converted = convert_checkpoint('flatten', {'model': pvt})
    assert {'stem.proj.weight', 'stem.pos_embed', 'stages.3.downsample.pos_embed',
            'stages.1.blocks.1.attn.kv.weight'} <= converted.keys()
    assert not any(k.startswith(('head.', 'norm.')) for k in converted)
    assert convert_checkpoint('flatten', converted).keys() == converted.keys()

    with pytest.raises(KeyError, match='unrecognised'):
        convert_checkpoint('flatten', {'patch_embed.proj.weight': torch.zeros(1), 'foo.bar': torch.zeros(1)})


# Parameter counts of the official models (models/flatten_swin.py with the cfgs/flatten_swin_*.yaml
# settings, models/flatten_pvt.py's flatten_pvt_{tiny,small,medium,large} with la_sr_ratios '1111')
# without the classifier head and final norm: 29.19M / 50.51M / 88.97M and 12.15M / 21.67M /
# 37.24M / 50.65M with them.
@pytest.mark.parametrize('name,official_count', [
    ('flatten_swin_t', 28_421_848), ('flatten_swin_s', 49_739_752), ('flatten_swin_b', 87_945_440),
    ('flatten_pvt_t', 11_636_480), ('flatten_pvt_s', 21_156_224), ('flatten_pvt_m', 36_728_192),
    ('flatten_pvt_b', 50_135_168)])
def test_variant_sizes_match_the_official_definitions(name, official_count):
    with torch.device('meta'):
        model = build_backbone(name, **({'out_norm': False} if 'swin' in name else {}))
    assert sum(p.numel() for p in model.parameters()) == official_count


def test_released_swin_layout_global_linear_then_softmax_windows():
    with torch.device('meta'):
        model = build_backbone('flatten_swin_t')
    layout = [[(b.attn_type, b.window_size, b.shift) for b in layer.blocks] for layer in model.layers]
    assert layout[0] == [('L', 0, 0)] * 2 and layout[1] == [('L', 0, 0)] * 2  # global (window 56)
    assert layout[2] == [('S', 7, 0), ('S', 7, 3)] * 3
    assert layout[3] == [('S', 7, 0)] * 2  # the 7x7 map at 224: never shifted, as the official model
    assert model.layers[0].blocks[0].attn.positional_encoding.shape == (1, 56 * 56, 96)


def test_global_attention_interpolates_its_position_encoding():
    torch.manual_seed(0)
    attn = FocusedLinearAttention(16, num_heads=2, grid=(7, 7))
    with torch.no_grad():
        attn.positional_encoding.normal_()
        attn.scale.normal_()
    x = torch.randn(2, 5, 9, 16)
    resized = F.interpolate(attn.positional_encoding.reshape(1, 7, 7, 16).permute(0, 3, 1, 2), size=(5, 9),
                            mode='bilinear', align_corners=False)
    same = FocusedLinearAttention(16, num_heads=2, grid=(5, 9))
    same.load_state_dict({**attn.state_dict(), 'positional_encoding': resized.flatten(2).transpose(1, 2)})
    torch.testing.assert_close(attn(x), same(x), atol=1e-6, rtol=0)
    # at the grid size the encoding is used as it is
    assert attn(torch.randn(1, 7, 7, 16)).shape == (1, 7, 7, 16)


def test_dense_inputs_of_any_size():
    swin = build_backbone('flatten_swin_test').eval()
    pvt = build_backbone('flatten_pvt_test').eval()
    with torch.no_grad():
        assert [o.shape[-2:] for o in swin(torch.randn(1, 3, 90, 150))] == [(23, 38), (12, 19), (6, 10), (3, 5)]
        assert [o.shape[-2:] for o in pvt(torch.randn(1, 3, 90, 150))] == [(22, 37), (11, 18), (5, 9), (2, 4)]


def test_invalid_configurations_name_the_value():
    with pytest.raises(ValueError, match='attn_type'):
        FLattenSwin(attn_type='LLMS')
    with pytest.raises(ValueError, match='attn_type'):
        FLattenSwin(depths=(2, 2), num_heads=(1, 2), attn_type='LLS')
    with pytest.raises(ValueError, match='num_heads'):
        FocusedLinearAttention(10, num_heads=3, grid=(2, 2))
    with pytest.raises(TypeError, match='window_size'):
        build_backbone('flatten_swin_t', window_size=7)
    with pytest.raises(TypeError, match='depths'):
        build_backbone('flatten_pvt_t', depths=(1, 1, 1, 1))
