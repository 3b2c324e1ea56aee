"""ConvNeXt: converter parity with timm (timm and official key layouts), variants, CLI."""
import re

import pytest
import torch
import torch.nn.functional as F

timm = pytest.importorskip('timm')

from densekit.models import build_backbone, convert_checkpoint  # noqa: E402
from densekit.models.backbones.convnext import ConvNeXt  # noqa: E402

ODD = (97, 131)


def _randomize(model: torch.nn.Module, std: float = 0.2) -> None:
    # Random values everywhere (layer scale, norms included): with the default gamma = 1e-6 every
    # block would be close to the identity and a wrong mapping of its weights would go unnoticed.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if p.ndim == 1 and std else 0))


def _timm_features(model, x):
    with torch.no_grad():
        return model.forward_intermediates(x, indices=len(model.stages), intermediates_only=True)


def _timm_to_official(sd):
    """timm -> facebookresearch/ConvNeXt keys: the inverse of timm's ``checkpoint_filter_fn``
    (built here to produce a state dict in the official layout)."""
    out = {}
    for k, v in sd.items():
        k = k.replace('stem.', 'downsample_layers.0.')
        k = re.sub(r'^stages\.(\d+)\.downsample\.', r'downsample_layers.\1.', k)
        k = re.sub(r'^stages\.(\d+)\.blocks\.(\d+)\.', r'stages.\1.\2.', k)
        k = k.replace('.conv_dw.', '.dwconv.').replace('.mlp.fc', '.pwconv')
        k = k.replace('head.fc.', 'head.').replace('head.norm.', 'norm.')
        out[k] = v.flatten(1) if 'pwconv' in k and k.endswith('weight') else v
    return out


@pytest.mark.parametrize('timm_kwargs, conv_mlp', [
    (dict(depths=(1, 1, 2, 1), dims=(16, 24, 32, 48)), False),   # = convnext_test
    (dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), conv_mlp=True), True),  # atto-style 1x1 MLP
])
def test_timm_parity(timm_kwargs, conv_mlp):
    ref = timm.create_model('convnext_tiny', **timm_kwargs).eval()
    _randomize(ref)
    sd = ref.state_dict()
    assert any(v.ndim == 4 for k, v in sd.items() if 'mlp.fc1' in k) == conv_mlp
    ours = ConvNeXt(depths=timm_kwargs['depths'], dims=timm_kwargs['dims'], out_norm=False).eval()
    ours.load_state_dict(convert_checkpoint('convnext', sd), strict=True)
    x = torch.randn(2, 3, *ODD)
    expected = _timm_features(ref, x)
    with torch.no_grad():
        got = ours(x)
    assert len(got) == len(expected) == 4
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=0)


def _official_to_mmpretrain(key):
    """Official -> mmpretrain ``ConvNeXt`` names (the same layout with longer block names)."""
    return key.replace('.dwconv.', '.depthwise_conv.').replace('.pwconv', '.pointwise_conv')


@pytest.mark.parametrize('layout', ['official', 'mmpretrain'])
def test_official_detection_layout_parity(layout):
    """An official mmdet/mmseg ConvNeXt checkpoint (``backbone.`` prefix, ``norm{i}`` output norms,
    head weights beside it), or one of mmpretrain's ConvNeXt (built here by renaming), converts
    and reproduces timm's features followed by those norms."""
    depths, dims = (1, 1, 2, 1), (16, 24, 32, 48)
    ref = timm.create_model('convnext_tiny', depths=depths, dims=dims).eval()
    _randomize(ref)
    rename = _official_to_mmpretrain if layout == 'mmpretrain' else (lambda k: k)
    official = {f'backbone.{rename(k)}': v for k, v in _timm_to_official(ref.state_dict()).items()
                if not k.startswith(('head.', 'norm.'))}
    norms = {i: (torch.randn(d) * 0.3 + 1, torch.randn(d) * 0.3) for i, d in enumerate(dims)}
    for i, (w, b) in norms.items():
        official[f'backbone.norm{i}.weight'], official[f'backbone.norm{i}.bias'] = w, b
    official['decode_head.conv_seg.weight'] = torch.randn(19, 64, 1, 1)
    assert 'backbone.downsample_layers.1.1.weight' in official
    assert f"backbone.stages.2.1.{'pointwise_conv2' if layout == 'mmpretrain' else 'pwconv2'}.weight" in official

    ours = build_backbone('convnext_test', out_indices=(0, 1, 2, 3)).eval()
    ours.load_state_dict(convert_checkpoint('convnext', official), strict=True)
    x = torch.randn(1, 3, *ODD)
    with torch.no_grad():
        got = ours(x)
    for i, (g, e) in enumerate(zip(got, _timm_features(ref, x))):
        w, b = norms[i]
        e = F.layer_norm(e.permute(0, 2, 3, 1), (dims[i],), w, b, 1e-6).permute(0, 3, 1, 2)
        torch.testing.assert_close(g, e, atol=1e-4, rtol=0)


def test_official_classification_layout_parity():
    depths, dims = (1, 1, 2, 1), (16, 24, 32, 48)
    ref = timm.create_model('convnext_tiny', depths=depths, dims=dims).eval()
    _randomize(ref)
    official = _timm_to_official(ref.state_dict())
    assert 'head.weight' in official and 'norm.weight' in official
    ours = build_backbone('convnext_test', out_norm=False, out_indices=(1, 3)).eval()
    ours.load_state_dict(convert_checkpoint('convnext', {'model': official}), strict=True)
    x = torch.randn(1, 3, *ODD)
    with torch.no_grad():
        got = ours(x)
    expected = _timm_features(ref, x)
    torch.testing.assert_close(got[0], expected[1], atol=1e-4, rtol=0)
    torch.testing.assert_close(got[1], expected[3], atol=1e-4, rtol=0)


def test_converter_errors():
    with pytest.raises(ValueError, match='ConvNeXt-V2'):
        convert_checkpoint('convnext', {'stages.0.blocks.0.mlp.grn.weight': torch.zeros(4)})
    with pytest.raises(KeyError, match='unexpected key'):
        convert_checkpoint('convnext', {'stem.0.weight': torch.zeros(1), 'pos_embed': torch.zeros(1)})


@pytest.mark.parametrize('name, timm_name', [
    ('convnext_tiny', 'convnext_tiny'), ('convnext_small', 'convnext_small'),
    ('convnext_base', 'convnext_base'), ('convnext_large', 'convnext_large'),
    ('convnext_xlarge', 'convnext_xlarge'),
])
def test_variants_match_timm_definitions(name, timm_name):
    # Built on the meta device: only shapes, so even XL costs nothing.
    with torch.device('meta'):
        ours = build_backbone(name, out_norm=False)
        ref = timm.create_model(timm_name)
    theirs = {k: v.shape for k, v in ref.state_dict().items() if not k.startswith('head.')}
    assert {k: v.shape for k, v in ours.state_dict().items()} == theirs
    assert [(f['num_chs'], f['reduction']) for f in ours.feature_info] == \
        [(f['num_chs'], f['reduction']) for f in ref.feature_info]


def test_variant_rejects_architecture_overrides():
    with pytest.raises(TypeError, match='dims'):
        build_backbone('convnext_tiny', dims=(1, 2, 3, 4))


def _load_cli():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / 'tools' / 'convert_checkpoint.py'
    spec = importlib.util.spec_from_file_location('densekit_convert_cli', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_roundtrip(tmp_path):
    main = _load_cli().main
    ref = timm.create_model('convnext_tiny', depths=(1, 1, 2, 1), dims=(16, 24, 32, 48))
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    src, dst = tmp_path / 'timm.pth', tmp_path / 'out' / 'dk.pth'
    torch.save({'state_dict': sd}, src)
    assert main(['convnext', str(src), str(dst)]) == 0
    converted = torch.load(dst, weights_only=True)['state_dict']
    expected = convert_checkpoint('convnext', sd)
    assert converted.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(converted[k], expected[k], atol=0, rtol=0)

    from safetensors.torch import save_file
    st = tmp_path / 'timm.safetensors'
    save_file(sd, str(st))
    assert main(['convnext', str(st), str(dst)]) == 0
    assert torch.load(dst, weights_only=True)['state_dict'].keys() == expected.keys()
