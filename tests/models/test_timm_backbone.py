"""TimmBackbone: any timm model through ``features_only``, usable from mmdet and mmseg configs."""
import pytest
import torch

from densekit.models import build_backbone


def test_features_and_feature_info():
    m = build_backbone('TimmBackbone', model_name='resnet18', out_indices=(1, 2, 3, 4))
    outs = m(torch.randn(1, 3, 97, 131))
    assert [o.shape[1] for o in outs] == [i['num_chs'] for i in m.feature_info] == [64, 128, 256, 512]
    assert [i['reduction'] for i in m.feature_info] == [4, 8, 16, 32]


@pytest.mark.parametrize('name,frozen,expect_trainable_first', [
    ('resnet18', -1, ['conv1']),
    ('resnet18', 0, ['layer1']),
    ('resnet18', 2, ['layer3']),
    ('convnext_atto', 1, ['stages_1']),
])
def test_frozen_stages_follow_mmdet_semantics(name, frozen, expect_trainable_first):
    m = build_backbone('TimmBackbone', model_name=name, out_indices=(1, 2, 3), frozen_stages=frozen)
    m.train()
    first = next(n for n, p in m.model.named_parameters() if p.requires_grad)
    assert first.split('.')[0] in expect_trainable_first, first
    for child in m._frozen:
        assert not child.training and all(not p.requires_grad for p in child.parameters())


def test_norm_eval_keeps_bn_in_eval():
    m = build_backbone('TimmBackbone', model_name='resnet18', out_indices=(1,), norm_eval=True)
    m.train()
    assert all(not b.training for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d))


def test_pretrained_local_file_is_loaded(tmp_path):
    import timm
    src = timm.create_model('resnet18', pretrained=False)
    torch.nn.init.constant_(src.conv1.weight, 0.25)
    path = tmp_path / 'resnet18.pth'
    torch.save(src.state_dict(), path)
    m = build_backbone('TimmBackbone', model_name='resnet18', out_indices=(1,), pretrained=str(path))
    torch.testing.assert_close(m.model.conv1.weight, torch.full_like(m.model.conv1.weight, 0.25))


def test_missing_pretrained_file_is_named(tmp_path):
    # timm itself raised FileNotFoundError with an empty message
    missing = tmp_path / 'resnet18_in1k.pth'
    with pytest.raises(FileNotFoundError, match=rf"TimmBackbone\('resnet18'\): pretrained "
                                                rf"checkpoint '{missing}' does not exist"):
        build_backbone('TimmBackbone', model_name='resnet18', pretrained=str(missing))


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises((ValueError, RuntimeError), match='resnet1800'):
        build_backbone('TimmBackbone', model_name='resnet1800')


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_builds_from_mm_registries_with_init_cfg(scope, tmp_path):
    pytest.importorskip(scope)
    import importlib
    import densekit  # noqa: F401
    MODELS = importlib.import_module(f'{scope}.registry').MODELS
    src = build_backbone('TimmBackbone', model_name='resnet18', out_indices=(1, 2))
    torch.nn.init.constant_(src.model.conv1.weight, 0.5)
    path = tmp_path / 'det.pth'
    # an mmdet-style detector checkpoint: take the backbone out with prefix='backbone.'
    torch.save({'meta': {}, 'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}},
               path)
    m = MODELS.build(dict(type='TimmBackbone', model_name='resnet18', out_indices=(1, 2),
                          init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.')))
    m.init_weights()
    torch.testing.assert_close(m.model.conv1.weight, torch.full_like(m.model.conv1.weight, 0.5))
    assert len(m(torch.randn(1, 3, 64, 64))) == 2
