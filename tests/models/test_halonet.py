"""HaloNet family: output parity with timm's definitions (the only public ones), odd sizes at the
attention level, variant shapes, converter."""
import pytest
import torch
import torch.nn.functional as F

timm = pytest.importorskip('timm')

from densekit.models import build_backbone, convert_checkpoint  # noqa: E402
from densekit.models.backbones.halonet import HaloAttention  # noqa: E402

VARIANTS = ['halonet_h1', 'halonet26t', 'sehalonet33ts', 'halonet50ts', 'eca_halonext26ts', 'haloregnetz_b']


def _randomize(model):
    # Every parameter and BatchNorm statistic random (the default init zeroes the last BatchNorm of
    # each residual branch, which would hide a wrong mapping of the branch). Weights are scaled by
    # fan-in so that activations stay O(1) through deep stages.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if n.endswith('weight') else 0.0))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * p[0].numel() ** -0.5)
        for n, b in model.named_buffers():
            if n.endswith('running_var'):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif n.endswith('running_mean'):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)


def _timm_test_net():
    """timm ByobNet with the architecture of densekit's ``halonet_test``."""
    from timm.models.byobnet import ByobNet, ByoBlockCfg, ByoModelCfg
    attn = dict(halo_size=1, num_heads=2)
    cfg = ByoModelCfg(
        blocks=(
            ByoBlockCfg('bottle', d=1, c=16, s=1, br=0.5),
            (ByoBlockCfg('bottle', d=1, c=24, s=2, br=0.5),
             ByoBlockCfg('self_attn', d=1, c=24, s=2, br=0.5, self_attn_kwargs=dict(block_size=4, **attn))),
            ByoBlockCfg('self_attn', d=1, c=32, s=2, br=0.5,
                        self_attn_kwargs=dict(block_size=3, qk_ratio=0.5, **attn)),
            ByoBlockCfg('self_attn', d=1, c=48, s=2, br=0.5, self_attn_kwargs=dict(block_size=4, **attn)),
        ),
        stem_chs=16, stem_type='tiered', stem_pool='maxpool', act_layer='silu', attn_layer='se',
        self_attn_layer='halo')
    return ByobNet(cfg).eval()


def _timm_stage_features(model, x):
    with torch.no_grad():
        return model.forward_intermediates(x, indices=[1, 2, 3, 4], exclude_final_conv=True,
                                           intermediates_only=True)


def test_test_variant_parity_with_timm():
    """Covers both block types, SE, a strided-query attention block (stage 3) and an
    average-pooled one (odd block size, stage 2) in fp32."""
    ref = _timm_test_net()
    _randomize(ref)
    ours = build_backbone('halonet_test').eval()
    ours.load_state_dict(convert_checkpoint('halonet', ref.state_dict()), strict=True)
    # the smallest size timm accepts: every attention input a multiple of its block size
    x = torch.randn(2, 3, 192, 384)
    with torch.no_grad():
        got = ours(x)
    expected = _timm_stage_features(ref, x)
    assert len(got) == len(expected) == 4
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=0)


@pytest.mark.parametrize('stride, block, kwargs', [
    (1, 4, dict(halo_size=2)),
    (2, 4, dict(halo_size=1)),                 # strided queries
    (2, 3, dict(halo_size=1)),                 # odd block: full-resolution attention, then avg pool
    (1, 4, dict(halo_size=1, qk_ratio=0.5)),   # narrower query / key heads than value heads
    (1, 4, dict(halo_size=1, dim_head=12)),    # wider query / key heads than value heads
])
def test_attention_odd_sizes(stride, block, kwargs):
    """At sizes timm rejects, densekit pads the projected maps with zeros. Without projection bias
    that equals zero-padding the input, which timm runs: compare with timm's ``HaloAttn`` there."""
    from timm.layers.halo_attn import HaloAttn
    torch.manual_seed(0)
    ref = HaloAttn(16, 16, stride=stride, num_heads=2, block_size=block, **kwargs).eval()
    ours = HaloAttention(16, 16, stride=stride, num_heads=2, block_size=block, **kwargs).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    H, W = 13, 10
    x = torch.randn(2, 16, H, W)
    Hp, Wp = -(-H // block) * block, -(-W // block) * block
    with torch.no_grad():
        got = ours(x)
        expected = ref(F.pad(x, (0, Wp - W, 0, Hp - H)))
    Ho, Wo = -(-H // stride), -(-W // stride)
    assert got.shape == (2, 16, Ho, Wo)
    if stride == 2 and block % 2:
        # timm pools the padded full-resolution map; ours pools the cropped one (ceil mode), so
        # compare the windows that see no padding.
        got, expected = got[..., :H // 2, :W // 2], expected[..., :H // 2, :W // 2]
    else:
        expected = expected[..., :Ho, :Wo]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize('name', VARIANTS)
def test_variants_match_timm_definitions(name):
    with torch.device('meta'):
        ours = build_backbone(name)
        ref = timm.create_model(name)
    theirs = {k: v.shape for k, v in convert_checkpoint('halonet', ref.state_dict()).items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == theirs
    # timm's last entry is its classification final_conv where the model has one: compare its
    # stride, and the channels of the stage outputs before it.
    timm_stages = ref.feature_info[-4:]
    assert [f['reduction'] for f in ours.feature_info] == [f['reduction'] for f in timm_stages]
    assert [f['num_chs'] for f in ours.feature_info[:3]] == [f['num_chs'] for f in timm_stages[:3]]
    assert ours.feature_info[3]['num_chs'] == ours.stages[3][-1].conv3_1x1.conv.out_channels


@pytest.mark.slow
@pytest.mark.parametrize('name', VARIANTS)
def test_variant_parity_with_timm(name):
    """Full-size variants with random weights at the smallest sizes timm accepts."""
    ref = timm.create_model(name).eval()
    _randomize(ref)
    ours = build_backbone(name).eval()
    ours.load_state_dict(convert_checkpoint('halonet', ref.state_dict()), strict=True)
    size = (448, 224) if name == 'haloregnetz_b' else (256, 512)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        got = ours(x)
    for g, e in zip(got, _timm_stage_features(ref, x)):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=0)


def test_converter():
    with pytest.raises(KeyError, match='not a halo-attention'):
        convert_checkpoint('halonet', {'stages.3.1.self_attn.qkv.weight': torch.zeros(1)})
    with pytest.raises(KeyError, match='unexpected key'):
        convert_checkpoint('halonet', {'stem.conv1.conv.weight': torch.zeros(1), 'pos_embed': torch.zeros(1)})
    out = convert_checkpoint('halonet', {'backbone.stem.conv.weight': torch.zeros(1),
                                         'backbone.final_conv.conv.weight': torch.zeros(1),
                                         'decode_head.conv_seg.weight': torch.zeros(1)})
    assert list(out) == ['stem.conv1.conv.weight']
