"""SLAB-Swin: official-code output and input-gradient parity (eval and one training forward), the
converter's key formats, sizes, the progressive norm schedule and ``reparameterize()``.

The parity fixture ``tests/fixtures/backbones/slab_official.pt`` was produced by
``tools/dev/make_slab_fixture.py`` from the official dense ``SwinTransformer_SLAB``
(``detection/mmdet_custom/swin_transformer_slab.py`` of xinghaochen/SLAB) with ``slab_test``'s
architecture, random weights and BatchNorm statistics, every PRepBN at 3/4 of its schedule, on a
batch of two 61x87 inputs. It stores no float weights: the official state dict is redrawn here
from its seed and spec. The contract checks shared with every family live in
``test_backbone_contract.py``.
"""
from pathlib import Path

import pytest
import torch

from densekit.models import build_backbone, convert_checkpoint
from densekit.models.backbones.slab import FusedNorm, LinearNorm, SLABSwin

from official_fixture import regenerate_state_dict  # noqa: E402  (tools/dev)

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'backbones' / 'slab_official.pt'


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def official_state_dict(official):
    return {**regenerate_state_dict(official['spec'], official['seed']), **official['ints']}


def _converted_model(official_state_dict):
    # norm_eval: the official dense backbone keeps every BatchNorm in eval mode
    model = build_backbone('slab_test', drop_path_rate=0.0, norm_eval=True)
    model.load_state_dict(convert_checkpoint('slab', official_state_dict), strict=True)
    return model


@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_official_output_and_input_gradient_parity(official, official_state_dict, mode):
    assert official['config']['attn_type'] == 'LLSL'
    model = _converted_model(official_state_dict).train(mode == 'train')
    x = official['input'].clone().requires_grad_(True)
    outs = model(x)
    ref = official[mode]
    assert len(outs) == len(ref['outputs']) == 4
    for i, (ours, theirs) in enumerate(zip(outs, ref['outputs'])):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0, msg=f'{mode} stage {i}')
    sum(o.square().sum() for o in outs).backward()
    torch.testing.assert_close(x.grad, ref['input_grad'], atol=1e-4, rtol=0)


def test_reparameterized_model_gives_the_same_outputs(official, official_state_dict):
    model = _converted_model(official_state_dict).eval()
    x = official['input']
    with torch.no_grad():
        before = model(x)
        model.reparameterize()
        after = model(x)
    assert not any(isinstance(m, LinearNorm) for m in model.modules())
    assert sum(isinstance(m, FusedNorm) for m in model.modules()) == 1 + 3 + 2 * 8
    for i, (a, b) in enumerate(zip(before, after)):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0, msg=f'stage {i}')


def test_progressive_norm_schedule_steps_once_per_training_forward():
    model = build_backbone('slab_test', drop_path_rate=0.0, with_cp=True, norm_eval=True).train()
    norm = model.layers[0].blocks[0].norm1
    total = int(norm.total_step)
    x = torch.randn(1, 3, 33, 41)
    sum(o.sum() for o in model(x)).backward()  # the checkpointed recomputation does not step again
    assert int(norm.iter) == total - 1 and float(norm._lamda) == 1.0
    model.eval()
    with torch.no_grad():
        model(x)
    assert int(norm.iter) == total - 1


def test_converter_accepts_detector_and_classifier_checkpoints(official_state_dict):
    sd = official_state_dict
    direct = convert_checkpoint('slab', sd)
    assert 'layers.1.downsample.norm.norm2.bn.running_var' in direct and 'out_norms.3.weight' in direct
    assert not any('layers.0.downsample' in k or k.endswith('relative_position_index') for k in direct)
    assert convert_checkpoint('slab', direct).keys() == direct.keys()  # idempotent

    wrapped = {f'backbone.{k}': v for k, v in sd.items()}
    wrapped['rpn_head.rpn_conv.weight'] = torch.zeros(1)
    det = convert_checkpoint('slab', {'state_dict': wrapped, 'meta': {}})
    assert det.keys() == direct.keys() and all(det[k] is direct[k] for k in direct)

    # ImageNet release: no output norms, a final norm and the classifier head.
    cls = {k: v for k, v in sd.items() if not k.startswith(('norm0.', 'norm1.', 'norm2.', 'norm3.'))}
    cls.update({'norm.norm1.weight': torch.zeros(128), 'head.weight': torch.zeros(1000, 128)})
    converted = convert_checkpoint('slab', {'model': cls})
    assert converted.keys() == {k for k in direct if not k.startswith('out_norms.')}

    with pytest.raises(KeyError, match='unrecognised'):
        convert_checkpoint('slab', {'patch_embed.proj.weight': torch.zeros(1), 'foo.bar': torch.zeros(1)})


# Parameter counts of the official dense SwinTransformer_SLAB (with its output norms) built with the
# backbone arguments of detection/configs/swin/mask_rcnn_slab_swin_{tiny,small}_..._1x_coco.py.
@pytest.mark.parametrize('name,official_count', [('slab_swin_t', 28_447_412), ('slab_swin_s', 49_783_772)])
def test_variant_sizes_match_the_official_definitions(name, official_count):
    with torch.device('meta'):
        model = build_backbone(name)
    assert sum(p.numel() for p in model.parameters()) == official_count


def test_invalid_configurations_name_the_value():
    with pytest.raises(ValueError, match='attn_type'):
        SLABSwin(attn_type='LLMS')
    with pytest.raises(ValueError, match='window_sizes'):
        SLABSwin(window_sizes=(56, 28, 7))
    with pytest.raises(TypeError, match='depths'):
        build_backbone('slab_swin_t', depths=(1, 1, 1, 1))
