"""Swin: converter parity with timm (timm / official classification layouts) and with mmdet's port of
the official detection code (official detection layout, odd input sizes), variants."""
import re

import pytest
import torch

timm = pytest.importorskip('timm')

from densekit.models import build_backbone, convert_checkpoint  # noqa: E402
from densekit.models.backbones.swin import SwinTransformer  # noqa: E402

TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))  # = swin_test (window 7)


def _randomize(model, std=0.2):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if p.ndim == 1 else 0.0))


def _timm_swin(window, **extra):
    # always_partition + dynamic mask: shift every odd block whatever the map size, as the official
    # detection code does (timm's default stops shifting once a map fits in one window).
    model = timm.create_model('swin_tiny_patch4_window7_224', window_size=window, **TINY,
                              always_partition=True, strict_img_size=False, **extra).eval()
    _randomize(model)
    return model


def _timm_to_official(sd):
    """timm -> microsoft/Swin-Transformer keys: the inverse of timm's ``checkpoint_filter_fn``
    (official checkpoints merge patches at the end of a stage, timm at the start of the next)."""
    out = {}
    for k, v in sd.items():
        if k.endswith('relative_position_index'):
            continue
        k = re.sub(r'^layers\.(\d+)\.downsample\.', lambda m: f'layers.{int(m.group(1)) - 1}.downsample.', k)
        out[k.replace('head.fc.', 'head.')] = v
    return out


def _timm_features(model, x):
    with torch.no_grad():
        return model.forward_intermediates(x, indices=4, intermediates_only=True)


@pytest.mark.parametrize('window, size', [(7, (224, 448)), (12, (384, 384))])
def test_timm_parity(window, size):
    """Window-multiple sizes at every stage: there timm's padding (after the shift) and the
    official detection padding (before it) coincide."""
    ref = _timm_swin(window)
    ours = SwinTransformer(window_size=window, out_norm=False, **TINY).eval()
    ours.load_state_dict(convert_checkpoint('swin', ref.state_dict()), strict=True)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        got = ours(x)
    for g, e in zip(got, _timm_features(ref, x)):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=0)


def test_official_classification_layout_parity():
    ref = _timm_swin(7)
    official = _timm_to_official(ref.state_dict())
    assert 'layers.0.downsample.reduction.weight' in official and 'head.weight' in official
    ours = build_backbone('swin_test', out_norm=False, out_indices=(0, 3)).eval()
    ours.load_state_dict(convert_checkpoint('swin', {'model': official}), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got = ours(x)
    expected = _timm_features(ref, x)
    torch.testing.assert_close(got[0], expected[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(got[1], expected[3], atol=1e-4, rtol=0)


@pytest.mark.parametrize('window', [7, 12])
@pytest.mark.parametrize('size', [(97, 131), (61, 45)])
def test_official_detection_layout_parity_odd_sizes(window, size):
    """Odd sizes: compare with mmdet's ``SwinTransformer`` (a port of the official detection code:
    pad to patch / window multiples, then shift), loaded from the same official-layout checkpoint
    through mmdet's own ``swin_converter``."""
    pytest.importorskip('mmdet')
    from mmdet.models.backbones.swin import SwinTransformer as MMDetSwin
    from mmdet.models.backbones.swin import swin_converter

    ref = _timm_swin(window)
    official = {k: v for k, v in _timm_to_official(ref.state_dict()).items()
                if not k.startswith(('head.', 'norm.'))}
    g = torch.Generator().manual_seed(2)
    for i in range(4):
        c = TINY['embed_dim'] * 2 ** i
        official[f'norm{i}.weight'] = torch.randn(c, generator=g) * 0.2 + 1
        official[f'norm{i}.bias'] = torch.randn(c, generator=g) * 0.2

    mm = MMDetSwin(embed_dims=TINY['embed_dim'], depths=TINY['depths'], num_heads=TINY['num_heads'],
                   window_size=window, drop_path_rate=0.0)
    mm.eval()
    mm_sd = {k[len('backbone.'):]: v for k, v in swin_converter(official).items()}
    missing, unexpected = mm.load_state_dict(mm_sd, strict=False)
    assert not unexpected and all(k.endswith('relative_position_index') for k in missing)

    ours = SwinTransformer(window_size=window, **TINY).eval()
    detector_ckpt = {f'backbone.{k}': v for k, v in official.items()}
    detector_ckpt['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    ours.load_state_dict(convert_checkpoint('swin', {'state_dict': detector_ckpt}), strict=True)

    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected, got = mm(x), ours(x)
    for g_, e in zip(got, expected):
        torch.testing.assert_close(g_, e, atol=1e-4, rtol=0)


def test_openmmlab_layout_parity():
    """A checkpoint of mmdet's / mmseg's own ``SwinTransformer`` (their model zoo layout, with the
    ``nn.Unfold`` channel order of patch merging) converts and reproduces its features."""
    pytest.importorskip('mmdet')
    from mmdet.models.backbones.swin import SwinTransformer as MMDetSwin
    mm = MMDetSwin(embed_dims=TINY['embed_dim'], depths=TINY['depths'], num_heads=TINY['num_heads'],
                   window_size=7, drop_path_rate=0.0)
    _randomize(mm)
    mm.eval()
    ckpt = {f'backbone.{k}': v for k, v in mm.state_dict().items()}
    assert 'backbone.stages.0.blocks.1.attn.w_msa.qkv.weight' in ckpt
    ours = build_backbone('swin_test').eval()
    ours.load_state_dict(convert_checkpoint('swin', {'state_dict': ckpt}), strict=True)
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        expected, got = mm(x), ours(x)
    for g_, e in zip(got, expected):
        torch.testing.assert_close(g_, e, atol=1e-4, rtol=0)


def test_batch_one_odd_size():
    """Batch 1 with a padded map one window high (7x14): a layout corner case of the window op."""
    model = build_backbone('swin_test').eval()
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        outs = model(x[:1])  # stage 2: 7x9 -> padded 7x14
        batched = model(x)
    assert [o.shape[-2:] for o in outs] == [(25, 33), (13, 17), (7, 9), (4, 5)]
    for o, b in zip(outs, batched):
        torch.testing.assert_close(o, b[:1], atol=1e-5, rtol=0)


def test_converter_errors():
    with pytest.raises(ValueError, match='absolute position'):
        convert_checkpoint('swin', {'absolute_pos_embed': torch.zeros(1, 3136, 96)})
    with pytest.raises(ValueError, match='SwinV2'):
        convert_checkpoint('swin', {'layers.0.blocks.0.attn.logit_scale': torch.zeros(3, 1, 1)})
    with pytest.raises(KeyError, match='unexpected key'):
        convert_checkpoint('swin', {'patch_embed.proj.weight': torch.zeros(1), 'cls_token': torch.zeros(1)})


@pytest.mark.parametrize('name, timm_name', [
    ('swin_tiny', 'swin_tiny_patch4_window7_224'), ('swin_small', 'swin_small_patch4_window7_224'),
    ('swin_base', 'swin_base_patch4_window7_224'), ('swin_large', 'swin_large_patch4_window7_224'),
    ('swin_base_w12', 'swin_base_patch4_window12_384'), ('swin_large_w12', 'swin_large_patch4_window12_384'),
])
def test_variants_match_timm_definitions(name, timm_name):
    with torch.device('meta'):
        ours = build_backbone(name, out_norm=False)
        ref = timm.create_model(timm_name)
    theirs = {k: v.shape for k, v in ref.state_dict().items()
              if not k.startswith(('head.', 'norm.')) and not k.endswith('relative_position_index')}
    assert {k: v.shape for k, v in ours.state_dict().items()} == theirs
    assert [(f['num_chs'], f['reduction']) for f in ours.feature_info] == \
        [(f['num_chs'], f['reduction']) for f in ref.feature_info]
