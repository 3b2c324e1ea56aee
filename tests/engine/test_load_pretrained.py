"""The one pretrained loader converts official / timm releases of densekit families on the fly."""
import pytest
import torch

from densekit.engine.checkpoint import checkpoint_family, load_pretrained
from densekit.models import build_backbone


def test_timm_convnext_checkpoint_loads_through_converter(tmp_path):
    timm = pytest.importorskip('timm')
    from timm.models.convnext import ConvNeXt
    src = ConvNeXt(depths=(1, 1, 2, 1), dims=(16, 24, 32, 48))  # convnext_test's shape
    dst = build_backbone('convnext_test', out_indices=(0, 1, 2, 3), out_norm=False)
    assert checkpoint_family(dst) == 'convnext'
    ckpt = tmp_path / 'convnext_timm.pth'
    torch.save(src.state_dict(), ckpt)
    direct = dst.load_state_dict(src.state_dict(), strict=False)
    assert direct.missing_keys, 'timm keys should not match densekit keys without conversion'
    missing, _ = load_pretrained(dst, ckpt)
    assert not any(k.startswith('stages') or k.startswith('stem') for k in missing), missing
    x = torch.randn(1, 3, 64, 96)
    torch.testing.assert_close(dst.eval()(x)[-1], src.eval().forward_features(x), atol=1e-4, rtol=0)


def test_densekit_keys_pass_through(tmp_path):
    src = build_backbone('swin_test')
    ckpt = tmp_path / 'swin.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}}, ckpt)
    dst = build_backbone('swin_test')
    missing, unexpected = load_pretrained(dst, ckpt, prefix='backbone.')
    assert not missing and not unexpected
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)
