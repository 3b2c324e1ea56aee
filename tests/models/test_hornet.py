"""HorNet: official-code output and input-gradient parity (7x7 and FFT-filter gnConv), the
converter's key formats, the filter resizing on load, variant sizes.

The parity fixture ``tests/fixtures/backbones/hornet_official.pt`` was produced by
``tools/dev/make_hornet_fixture.py`` from raoyongming/HorNet's own dense ``HorNet`` (the full
HorNet-T (GF) and a small configuration, random weights, eval mode). It stores no weights: the
official state dicts are redrawn here from the seed and spec. The contract checks shared with
every family live in ``test_backbone_contract.py``.
"""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from densekit.models import build_backbone, convert_checkpoint
from densekit.models.backbones.hornet import GlobalLocalFilter, HorNet

from official_fixture import regenerate_state_dict  # noqa: E402  (tools/dev)

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'backbones' / 'hornet_official.pt'


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


def _model_for(entry) -> HorNet:
    cfg = entry['config']
    return HorNet(base_dim=cfg['base_dim'], depths=cfg['depths'],
                  gf_sizes=[None if s is None else tuple(s) for s in cfg['gf_sizes']],
                  drop_path_rate=0.0).eval()


@pytest.mark.parametrize('name', ['hornet_tiny_gf', 'tiny'])
def test_official_output_and_input_gradient_parity(official, name):
    entry = official[name]
    if name == 'hornet_tiny_gf':  # the registered variant is the official architecture
        model = build_backbone('hornet_tiny_gf', drop_path_rate=0.0).eval()
    else:
        model = _model_for(entry)
    sd = regenerate_state_dict(entry['spec'], official['seed'])
    model.load_state_dict(convert_checkpoint('hornet', sd), strict=True)
    x = official['input'].clone().requires_grad_(True)
    outs = model(x)
    assert len(outs) == len(entry['outputs']) == 4
    for i, (ours, ref) in enumerate(zip(outs, entry['outputs'])):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0, msg=f'{name} stage {i}')
    sum(o.square().sum() for o in outs).backward()
    torch.testing.assert_close(x.grad, entry['input_grad'], atol=1e-4, rtol=0)


def test_converter_accepts_detector_and_classifier_checkpoints(official):
    sd = regenerate_state_dict(official['tiny']['spec'], official['seed'])
    direct = convert_checkpoint('hornet', sd)
    assert 'stem.0.weight' in direct and 'stages.1.downsample.1.weight' in direct
    assert 'stages.3.blocks.0.mlp.fc2.weight' in direct and 'out_norms.2.bias' in direct
    assert 'stages.2.blocks.1.gnconv.dwconv.complex_weight' in direct

    # mmdet / mmseg checkpoints: 'backbone.' prefix next to neck / head weights.
    wrapped = {f'backbone.{k}': v for k, v in sd.items()}
    wrapped['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    det = convert_checkpoint('hornet', {'state_dict': wrapped, 'meta': {}})
    assert det.keys() == direct.keys() and all(det[k] is direct[k] for k in direct)

    # ImageNet releases: no per-output norms, a final 'norm' and a 'head' that a backbone drops.
    cls = {k: v for k, v in sd.items() if not k.startswith('norm')}
    cls.update({'norm.weight': torch.ones(128), 'norm.bias': torch.zeros(128),
                'head.weight': torch.zeros(10, 128), 'head.bias': torch.zeros(10)})
    model = _model_for(official['tiny'])
    missing, unexpected = model.load_state_dict(convert_checkpoint('hornet', {'model': cls}),
                                                strict=False)
    assert not unexpected and missing and all(k.startswith('out_norms.') for k in missing)

    # densekit's own keys pass through (the conversion is idempotent).
    assert convert_checkpoint('hornet', direct).keys() == direct.keys()

    with pytest.raises(KeyError, match='unrecognised'):
        convert_checkpoint('hornet', {'stages.0.0.gamma1': torch.zeros(1), 'foo.bar': torch.zeros(1)})


def test_loading_resizes_the_fft_filter_like_the_official_loader():
    # A 224-pretrained filter (14x8) loaded into the 512-crop ADE20K model (24x13): bilinear,
    # aligned corners, on the (real, imaginary) planes, as HorNet's mmcv_custom/checkpoint.py.
    torch.manual_seed(0)
    src = GlobalLocalFilter(16, size=(14, 8))
    dst = GlobalLocalFilter(16, size=(24, 13))
    dst.load_state_dict(src.state_dict())
    ref = F.interpolate(src.complex_weight.detach().permute(3, 0, 1, 2), size=(24, 13),
                        mode='bilinear', align_corners=True).permute(1, 2, 3, 0)
    torch.testing.assert_close(dst.complex_weight.detach(), ref)
    assert dst.complex_weight.shape == (8, 24, 13, 2)
    # The corners are the source's corners (align_corners=True).
    torch.testing.assert_close(dst.complex_weight[:, -1, -1], src.complex_weight[:, -1, -1])

    model = build_backbone('hornet_test', gf_sizes=(None, None, (6, 5), (3, 3)))
    sd = build_backbone('hornet_test').state_dict()  # filters (4, 3) and (2, 2)
    model.load_state_dict(sd, strict=True)
    assert model.stages[3].blocks[0].gnconv.dwconv.complex_weight.shape[1:3] == (3, 3)


# Parameter counts of the official dense HorNet (object_detection/models/hornet.py, with its four
# output norms and no head) built as the official configs build each size.
@pytest.mark.parametrize('name,official_count', [
    ('hornet_tiny_7x7', 21_897_408), ('hornet_tiny_gf', 22_479_744),
    ('hornet_small_7x7', 48_760_608), ('hornet_small_gf', 49_634_112),
    ('hornet_base_7x7', 86_233_472), ('hornet_base_gf', 87_398_144),
    ('hornet_large_7x7', 193_008_192), ('hornet_large_gf', 194_755_200)])
def test_variant_sizes_match_the_official_definitions(name, official_count):
    with torch.device('meta'):
        model = build_backbone(name)
    assert sum(p.numel() for p in model.parameters()) == official_count


def test_gf_sizes():
    # The ADE20K configs' filters (24x13, 12x7): same parameters but for the filter sizes.
    with torch.device('meta'):
        ade = build_backbone('hornet_tiny_gf', gf_sizes=(None, None, (24, 13), (12, 7)))
    assert ade.stages[2].blocks[0].gnconv.dwconv.complex_weight.shape == (240, 24, 13, 2)
    with pytest.raises(TypeError, match='gf_sizes'):
        build_backbone('hornet_tiny_7x7', gf_sizes=(None, None, (14, 8), (7, 4)))
    with pytest.raises(ValueError, match='gf_sizes'):
        build_backbone('hornet_tiny_gf', gf_sizes=(None, None, None, (7, 4)))


def test_invalid_configurations_name_the_value():
    with pytest.raises(ValueError, match='orders'):
        HorNet(base_dim=16, depths=(1, 1), orders=(2, 3, 4))
    with pytest.raises(ValueError, match='dim=24'):
        HorNet(base_dim=6, depths=(1, 1, 1), orders=(2, 3, 5), gf_sizes=(None,) * 3,
               out_indices=(0, 1, 2))
    with pytest.raises(TypeError, match='depths'):
        build_backbone('hornet_tiny_gf', depths=(1, 1, 1, 1))
