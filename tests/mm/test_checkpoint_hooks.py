"""BackboneCheckpointHook: ``load_from`` (and ``tools/test.py CKPT``) checkpoints whose backbone is
in an official / timm / mmdet-zoo layout are converted to densekit keys before mmengine loads them
(mmengine's strict=False load used to skip every backbone weight, logging the key names only)."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

timm = pytest.importorskip('timm')
pytest.importorskip('mmdet')

from densekit.mm.hooks import BackboneCheckpointHook  # noqa: E402
from densekit.models import build_backbone  # noqa: E402
from mmengine.runner.checkpoint import _load_checkpoint_to_model  # noqa: E402

TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))  # = swin_test


def _randomize(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.ndim == 1 else 0.0))
    model.eval()  # mmdet's SwinTransformer.train returns None
    return model


def _segmentor(out_norm=False):
    m = nn.Module()
    m.backbone = build_backbone('swin_test', out_indices=(0, 1, 2, 3), out_norm=out_norm).eval()
    m.decode_head = nn.Linear(4, 2)
    return m


def _load(model, checkpoint, resume=False):
    """What mmengine's ``Runner.load_checkpoint`` does: the hook, then a strict=False load."""
    BackboneCheckpointHook().after_load_checkpoint(
        SimpleNamespace(model=model, _resume=resume), checkpoint)
    _load_checkpoint_to_model(model, checkpoint, strict=False)


def test_mmdet_zoo_detector_checkpoint():
    from mmdet.models.backbones.swin import SwinTransformer as MMDetSwin
    mm = _randomize(MMDetSwin(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                              window_size=7, drop_path_rate=0.0))
    head = nn.Linear(4, 2)
    sd = {f'backbone.{k}': v for k, v in mm.state_dict().items()}
    sd.update({f'decode_head.{k}': v for k, v in head.state_dict().items()})
    model = _segmentor(out_norm=True)  # mmdet's norm{i} output norms
    _load(model, {'meta': {}, 'state_dict': sd})
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        for got, expected in zip(model.backbone(x), mm(x)):
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(model.decode_head.weight, head.weight, atol=0, rtol=0)


def test_bare_timm_backbone_checkpoint():
    ref = _randomize(timm.create_model('swin_tiny_patch4_window7_224', window_size=7, **TINY,
                                       always_partition=True, strict_img_size=False))
    model = _segmentor()
    _load(model, dict(ref.state_dict()))  # a plain state dict, timm keys, no prefix
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        got = model.backbone(x)
        expected = ref.forward_intermediates(x, indices=4, intermediates_only=True)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=0)


def test_own_checkpoint_and_resume_untouched():
    src = _segmentor()
    _randomize(src)
    sd = dict(src.state_dict())
    ckpt = {'meta': {}, 'state_dict': sd}
    BackboneCheckpointHook().after_load_checkpoint(SimpleNamespace(model=_segmentor(), _resume=False),
                                                   ckpt)
    assert ckpt['state_dict'].keys() == sd.keys()
    assert all(torch.equal(ckpt['state_dict'][k], sd[k]) for k in sd)
    timm_sd = dict(timm.create_model('swin_tiny_patch4_window7_224', **TINY).state_dict())
    resumed = {'state_dict': dict(timm_sd)}
    BackboneCheckpointHook().after_load_checkpoint(SimpleNamespace(model=_segmentor(), _resume=True),
                                                   resumed)
    assert resumed['state_dict'].keys() == timm_sd.keys()
