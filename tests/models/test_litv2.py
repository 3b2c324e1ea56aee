"""LITv2: official-code output and input-gradient parity, the converter's key formats, sizes.

The parity fixture ``tests/fixtures/backbones/litv2_official.pt`` was produced by
``tools/dev/make_litv2_fixture.py`` from the official dense ``LITv2``
(``detection/mmdet/models/backbones/litv2.py``; its CUDA deformable convolution served by
torchvision's) with ``litv2_test``'s architecture, random weights (random DTM offsets included)
and BatchNorm statistics, eval mode, on a batch of two 61x87 inputs. It stores no weights: the
official state dict is redrawn here from its seed and spec. The contract checks shared with every
family live in ``test_backbone_contract.py``.
"""
from pathlib import Path

import pytest
import torch

from densekit.models import build_backbone, convert_checkpoint
from densekit.models.backbones.litv2 import HiLoAttention, LITv2

from official_fixture import regenerate_state_dict  # noqa: E402  (tools/dev)

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'backbones' / 'litv2_official.pt'


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def official_state_dict(official):
    return regenerate_state_dict(official['spec'], official['seed'])


def test_official_output_and_input_gradient_parity(official, official_state_dict):
    model = build_backbone('litv2_test', drop_path_rate=0.0).eval()
    cfg = official['config']
    assert (cfg['embed_dim'], cfg['alpha'], cfg['local_ws']) == (16, 0.9, [0, 0, 2, 1])
    model.load_state_dict(convert_checkpoint('litv2', official_state_dict), strict=True)
    x = official['input'].clone().requires_grad_(True)
    outs = model(x)
    assert len(outs) == len(official['outputs']) == 4
    for i, (ours, ref) in enumerate(zip(outs, official['outputs'])):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0, msg=f'stage {i}')
    sum(o.square().sum() for o in outs).backward()
    torch.testing.assert_close(x.grad, official['input_grad'], atol=1e-4, rtol=0)


def test_converter_accepts_detector_and_classifier_checkpoints(official_state_dict):
    sd = official_state_dict
    direct = convert_checkpoint('litv2', sd)
    assert 'stem.proj.weight' in direct and 'out_norms.3.bias' in direct
    assert 'stages.1.downsample.weight' in direct and 'stages.1.downsample.conv_offset.bias' in direct
    assert 'stages.3.downsample.norm.running_var' in direct
    assert 'stages.2.blocks.1.mlp.dwconv.weight' in direct and 'stages.2.blocks.0.attn.h_qkv.weight' in direct

    # mmdet / mmseg checkpoints: 'backbone.' prefix next to the heads.
    wrapped = {f'backbone.{k}': v for k, v in sd.items()}
    wrapped['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    det = convert_checkpoint('litv2', {'state_dict': wrapped, 'meta': {}})
    assert det.keys() == direct.keys() and all(det[k] is direct[k] for k in direct)

    # ImageNet release: no output norms, a final norm and the classifier head.
    cls = {k: v for k, v in sd.items() if not k.startswith(('norm1.', 'norm2.', 'norm3.'))}
    cls.update({'norm.weight': torch.zeros(128), 'norm.bias': torch.zeros(128),
                'head.weight': torch.zeros(1000, 128), 'head.bias': torch.zeros(1000)})
    converted = convert_checkpoint('litv2', {'model': cls})
    assert converted.keys() == {k for k in direct if not k.startswith('out_norms.')}

    # densekit's own keys pass through (the conversion is idempotent).
    assert convert_checkpoint('litv2', direct).keys() == direct.keys()

    with pytest.raises(KeyError, match='unrecognised'):
        convert_checkpoint('litv2', {'patch_embed.proj.weight': torch.zeros(1), 'foo.bar': torch.zeros(1)})


# Parameter counts of the official dense LITv2 (detection/mmdet/models/backbones/litv2.py, with its
# output norms, no head) built with the arguments of detection/configs/litv2/
# mask_rcnn_litv2_{s,m,b}_fpn_1x_coco.py.
@pytest.mark.slow
@pytest.mark.parametrize('name,official_count', [
    ('litv2_s', 27_076_152), ('litv2_m', 48_062_520), ('litv2_b', 85_497_240)])
def test_variant_sizes_match_the_official_definitions(name, official_count):
    with torch.device('meta'):
        model = build_backbone(name)
    assert sum(p.numel() for p in model.parameters()) == official_count


def test_hilo_splits_heads_and_full_attention_at_window_one():
    hilo = HiLoAttention(64, num_heads=4, window_size=2, alpha=0.9)
    assert (hilo.l_heads, hilo.h_heads) == (3, 1)
    full = HiLoAttention(64, num_heads=4, window_size=1, alpha=0.9)
    assert (full.l_heads, full.h_heads) == (4, 0) and not hasattr(full, 'h_qkv')
    # window 1 is plain multi-head attention over the whole map
    x = torch.randn(1, 3, 5, 64)
    with torch.no_grad():
        q = full.l_q(x).reshape(1, 15, 4, 16).transpose(1, 2)
        k, v = full.l_kv(x).reshape(1, 15, 2, 4, 16).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * 16 ** -0.5).softmax(-1) @ v
        expected = full.l_proj(attn.transpose(1, 2).reshape(1, 3, 5, 64))
        torch.testing.assert_close(full(x), expected, atol=1e-5, rtol=0)


def test_stage_zero_output_has_no_norm():
    model = build_backbone('litv2_test')
    assert sorted(model.out_norms) == ['1', '2', '3']
    assert model.stages[0].blocks[0].attn is None and model.stages[2].blocks[0].attn is not None


def test_invalid_configurations_name_the_value():
    with pytest.raises(ValueError, match='num_heads'):
        LITv2(depths=(1, 1), num_heads=(1, 2, 4), local_ws=(0, 1))
    with pytest.raises(ValueError, match='alpha'):
        LITv2(alpha=1.5)
    with pytest.raises(TypeError, match='depths'):
        build_backbone('litv2_s', depths=(1, 1, 1, 1))
