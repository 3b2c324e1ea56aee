"""DenseKitLayerDecayOptimizerConstructor: layer ids, lr scales, composition with mmengine rules."""
import pytest
import torch.nn as nn

pytest.importorskip('mmdet')

import densekit  # noqa: F401,E402  (registers the constructor)
from densekit.mm.optim import backbone_layer_ids  # noqa: E402


class _Stage(nn.Module):
    def __init__(self, depth: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = nn.Linear(2, 2) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[nn.Linear(2, 2) for _ in range(depth)])


class _Backbone(nn.Module):
    """The densekit layout: stem, stages[i].{downsample, blocks[j]}, output norms."""

    def __init__(self, depths=(3, 3, 9, 3)) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 2, 1)
        self.stages = nn.ModuleList(_Stage(d, i > 0) for i, d in enumerate(depths))
        self.out_norms = nn.ModuleDict({'3': nn.LayerNorm(2)})


class _Detector(nn.Module):
    def __init__(self, depths=(3, 3, 9, 3)) -> None:
        super().__init__()
        self.backbone = _Backbone(depths)
        self.head = nn.Linear(2, 2)
        self.head_norm = nn.LayerNorm(2)


def _official_convnext_layer_id(stage, block, is_downsample, n):
    """The grouping of the official ConvNeXt detection code, written out as a table."""
    if is_downsample:
        return {1: 2, 2: 3, 3: n}[stage]
    return {0: 1, 1: 2, 2: 3 + block // 3, 3: n}[stage]


@pytest.mark.parametrize('depths,num_layers', [((3, 3, 9, 3), 6), ((3, 3, 27, 3), 12)])
def test_layer_wise_ids_match_official_convnext_grouping(depths, num_layers):
    ids = backbone_layer_ids(_Backbone(depths), num_layers, 'layer_wise')
    assert ids['stem.weight'] == 0 and ids['stem.bias'] == 0
    assert ids['out_norms.3.weight'] == num_layers + 1
    for s, d in enumerate(depths):
        for j in range(d):
            assert ids[f'stages.{s}.blocks.{j}.weight'] == \
                _official_convnext_layer_id(s, j, False, num_layers), (s, j)
        if s > 0:
            assert ids[f'stages.{s}.downsample.weight'] == \
                _official_convnext_layer_id(s, None, True, num_layers), s


def test_stage_wise_ids():
    ids = backbone_layer_ids(_Backbone(), 6, 'stage_wise')
    assert ids['stem.weight'] == 0
    assert [ids[f'stages.{s}.blocks.0.weight'] for s in range(4)] == [1, 2, 3, 4]
    assert ids['stages.2.downsample.weight'] == 3
    assert ids['out_norms.3.weight'] == 7


def test_unknown_decay_type_and_missing_stages_raise():
    with pytest.raises(ValueError, match='decay_type'):
        backbone_layer_ids(_Backbone(), 6, 'block_wise')
    with pytest.raises(ValueError, match='no .stages'):
        backbone_layer_ids(nn.Linear(2, 2), 6)


def _groups(paramwise_cfg, model):
    from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS
    ctor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type='DenseKitLayerDecayOptimizerConstructor',
        optim_wrapper_cfg=dict(type='OptimWrapper',
                               optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)),
        paramwise_cfg=paramwise_cfg))
    wrapper = ctor(model)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(g['params'][0])]: g for g in wrapper.optimizer.param_groups}


def test_constructor_lr_scales_and_weight_decay_rules():
    model = _Detector()
    groups = _groups(dict(decay_rate=0.7, decay_type='layer_wise', num_layers=6,
                          norm_decay_mult=0.0, bias_decay_mult=0.0), model)
    # lr = base * rate ** (N + 1 - id), N = 6.
    assert groups['backbone.stem.weight']['lr'] == pytest.approx(1e-4 * 0.7 ** 7)
    assert groups['backbone.stages.2.blocks.8.weight']['lr'] == pytest.approx(1e-4 * 0.7 ** 2)
    assert groups['backbone.stages.3.blocks.0.weight']['lr'] == pytest.approx(1e-4 * 0.7)
    assert groups['backbone.out_norms.3.weight']['lr'] == pytest.approx(1e-4)
    assert groups['head.weight']['lr'] == pytest.approx(1e-4)
    # mmengine's norm / bias rules still apply, inside and outside the backbone.
    assert groups['backbone.out_norms.3.weight']['weight_decay'] == 0.0
    assert groups['backbone.stem.bias']['weight_decay'] == 0.0
    assert groups['head_norm.weight']['weight_decay'] == 0.0
    assert groups['backbone.stem.weight']['weight_decay'] == pytest.approx(0.05)
    assert groups['head.weight']['weight_decay'] == pytest.approx(0.05)


def test_backbone_lr_mult_composes_with_custom_keys():
    model = _Detector()
    groups = _groups(dict(backbone_lr_mult=0.1, norm_decay_mult=0.0,
                          custom_keys={'head.': dict(lr_mult=2.0)}), model)
    assert groups['backbone.stages.1.blocks.0.weight']['lr'] == pytest.approx(1e-5)
    # Unlike custom_keys={'backbone': ...}, the norm rule still reaches backbone norms.
    assert groups['backbone.out_norms.3.weight']['weight_decay'] == 0.0
    assert groups['backbone.out_norms.3.weight']['lr'] == pytest.approx(1e-5)
    assert groups['head.weight']['lr'] == pytest.approx(2e-4)


def test_constructor_on_timm_backbone_layout():
    from densekit.models import build_backbone
    model = _Detector()
    model.backbone = build_backbone('TimmBackbone', model_name='convnext_atto',
                                    out_indices=(0, 1, 2, 3))
    ids = backbone_layer_ids(model.backbone, 6)
    stem = [n for n in ids if '.stem' in n]
    assert stem and all(ids[n] == 0 for n in stem)
    # convnext_atto: depths (2, 2, 6, 2) -> stage 2 in 3 groups of 2 blocks.
    assert ids['model.stages_2.blocks.5.conv_dw.weight'] == 5
    assert ids['model.stages_3.blocks.1.conv_dw.weight'] == 6
    groups = _groups(dict(decay_rate=0.9, num_layers=6), model)
    assert groups['backbone.model.stages_0.blocks.0.conv_dw.weight']['lr'] == \
        pytest.approx(1e-4 * 0.9 ** 6)
