"""The one pretrained loader converts official / timm releases of densekit families on the fly."""
import pytest
import torch

from densekit.engine.checkpoint import checkpoint_family, load_pretrained
from densekit.models import build_backbone


def test_mmdet_swin_checkpoint_loads_through_converter(tmp_path):
    """An mmdet model-zoo Swin detector checkpoint (other key names, other patch-merging channel
    order) loads into densekit's Swin as it is, and reproduces mmdet's features."""
    pytest.importorskip('mmdet')
    from mmdet.models.backbones.swin import SwinTransformer as MMDetSwin
    src = MMDetSwin(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7)
    for p in src.parameters():  # non-trivial norms / biases
        torch.nn.init.normal_(p, std=0.2)
    ckpt = tmp_path / 'mask_rcnn_swin.pth'
    torch.save({'meta': {}, 'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}},
               ckpt)
    dst = build_backbone('swin_test')  # embed 16, depths (2, 2, 2, 2), heads (1, 2, 2, 4), window 7
    assert checkpoint_family(dst) == 'swin'
    direct = dst.load_state_dict(src.state_dict(), strict=False)
    assert direct.unexpected_keys, 'mmdet keys should not match densekit keys without conversion'
    missing, unexpected = load_pretrained(dst, ckpt, prefix='backbone.')
    assert not unexpected and not [k for k in missing if 'relative_position_index' not in k]
    x = torch.randn(1, 3, 97, 131)
    dst.eval()
    src.eval()  # mmdet's Swin.train() returns None, so no chaining
    with torch.no_grad():
        for a, b in zip(dst(x), src(x)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_densekit_keys_pass_through(tmp_path):
    src = build_backbone('swin_test')
    ckpt = tmp_path / 'swin.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}}, ckpt)
    dst = build_backbone('swin_test')
    missing, unexpected = load_pretrained(dst, ckpt, prefix='backbone.')
    assert not missing and not unexpected
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)
