"""UniRepLKNet: official-code output and input-gradient parity, re-parameterisation, the converter's
key formats, variant sizes.

The parity fixture ``tests/fixtures/backbones/unireplknet_official.pt`` was produced by
``tools/dev/make_unireplknet_fixture.py`` from the official ``UniRepLKNetBackbone`` (the full
UniRepLKNet-T architecture in training mode, with its dilated branches; random weights and
BatchNorm statistics, eval mode). It stores no weights: the official state dict is redrawn here
from its seed and spec. The contract checks shared with every family live in
``test_backbone_contract.py``.
"""
from pathlib import Path

import pytest
import torch

from densekit.models import build_backbone, convert_checkpoint
from densekit.models.backbones.unireplknet import DilatedReparamBlock, UniRepLKNet, UniRepLKNetBlock

from official_fixture import regenerate_state_dict  # noqa: E402  (tools/dev)

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'backbones' / 'unireplknet_official.pt'


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def official_state_dict(official):
    return regenerate_state_dict(official['spec'], official['seed'])


def _official_model(official_state_dict):
    model = build_backbone('unireplknet_t', drop_path_rate=0.0).eval()
    model.load_state_dict(convert_checkpoint('unireplknet', official_state_dict), strict=True)
    return model


def test_official_output_and_input_gradient_parity(official, official_state_dict):
    model = _official_model(official_state_dict)
    assert official['config']['dims'] == list(model.dims)
    assert official['config']['depths'] == [len(s.blocks) for s in model.stages]
    x = official['input'].clone().requires_grad_(True)
    outs = model(x)
    assert len(outs) == len(official['outputs']) == 4
    for i, (ours, ref) in enumerate(zip(outs, official['outputs'])):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0, msg=f'stage {i}')
    sum(o.square().sum() for o in outs).backward()
    torch.testing.assert_close(x.grad, official['input_grad'], atol=1e-4, rtol=0)


def _relative_error(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_reparameterized_model_gives_the_same_outputs(official, official_state_dict):
    """The fused model (every branch, BatchNorm, GRN bias and layer scale folded) keeps the eval-mode
    outputs of the official weights, and its keys are the official deploy-mode keys, converted."""
    model = _official_model(official_state_dict)
    x = official['input']
    with torch.no_grad():
        before = model(x)
        model.reparameterize()
        after = model(x)
    for i, (a, b) in enumerate(zip(after, before)):
        assert _relative_error(a, b) <= 1e-5, f'stage {i}'
    keys = model.state_dict().keys()
    assert not any('dil_' in k or 'origin_bn' in k or 'ffn_norm' in k or k.endswith('.gamma')
                   and 'grn' not in k or 'grn.beta' in k for k in keys)
    assert 'stages.2.blocks.0.dwconv.lk_origin.bias' in keys and 'stages.2.blocks.1.dwconv.bias' in keys
    # An official deploy-mode state dict has the fused layout under the official names.
    deploy = {k.replace('.blocks.', '.').replace('pwconv1.', 'pwconv1.1.').replace('grn.', 'act.1.')
              .replace('pwconv2.', 'pwconv2.0.'): v for k, v in model.state_dict().items()
              if k.startswith('stages.') and '.blocks.' in k}
    converted = convert_checkpoint('unireplknet', deploy)
    assert converted.keys() == {k for k in keys if '.blocks.' in k}


def test_reparameterize_fuses_a_block_with_random_statistics():
    torch.manual_seed(0)
    for kernel_size in (3, 13, 17):
        block = UniRepLKNetBlock(6, kernel_size=kernel_size).eval()
        with torch.no_grad():
            for name, t in block.state_dict().items():
                if name.endswith('running_var'):
                    t.uniform_(0.5, 2.0)
                elif t.is_floating_point():
                    t.normal_(0.0, 0.5)
        x = torch.randn(2, 6, 23, 19)
        with torch.no_grad():
            ref = block(x)
            block.reparameterize()
            out = block(x)
        assert _relative_error(out, ref) <= 1e-5, kernel_size
        assert block.gamma is None and block.grn.beta is None


def test_converter_accepts_detector_and_classifier_checkpoints(official_state_dict):
    sd = official_state_dict
    direct = convert_checkpoint('unireplknet', sd)
    assert 'stem.3.weight' in direct and 'stages.1.downsample.1.bias' in direct
    assert 'stages.2.blocks.0.dwconv.dil_bn_k7_2.running_var' in direct
    assert 'stages.3.blocks.2.ffn_norm.weight' in direct and 'out_norms.3.weight' in direct

    # mmdet / mmseg checkpoints: 'backbone.' prefix next to the heads.
    wrapped = {f'backbone.{k}': v for k, v in sd.items()}
    wrapped['roi_head.bbox_head.0.fc_cls.weight'] = torch.zeros(1)
    det = convert_checkpoint('unireplknet', {'state_dict': wrapped, 'meta': {}})
    assert det.keys() == direct.keys() and all(det[k] is direct[k] for k in direct)

    # ImageNet release: no per-output norms, a final norm and the classifier head.
    cls = {k: v for k, v in sd.items() if not k.startswith('norm')}
    cls.update({'norm.weight': torch.ones(640), 'norm.bias': torch.zeros(640),
                'head.weight': torch.zeros(1000, 640), 'head.bias': torch.zeros(1000)})
    converted = convert_checkpoint('unireplknet', {'model': cls})
    assert converted.keys() == {k for k in direct if not k.startswith('out_norms.')}

    # densekit's own keys pass through (the conversion is idempotent).
    assert convert_checkpoint('unireplknet', direct).keys() == direct.keys()

    with pytest.raises(KeyError, match='unrecognised'):
        convert_checkpoint('unireplknet', {'stages.0.0.norm.weight': torch.zeros(1),
                                           'foo.bar': torch.zeros(1)})


# Parameter counts of the official UniRepLKNetBackbone (training mode, with the four output norms)
# built with the depths / dims of unireplknet_t / _s / _b.
@pytest.mark.parametrize('name,official_count', [
    ('unireplknet_t', 31_053_540), ('unireplknet_s', 55_689_048), ('unireplknet_b', 98_066_208)])
def test_variant_sizes_match_the_official_definitions(name, official_count):
    with torch.device('meta'):
        model = build_backbone(name)
    assert sum(p.numel() for p in model.parameters()) == official_count


def test_dilated_branches_follow_the_official_table():
    block = DilatedReparamBlock(4, kernel_size=13)
    assert (block.kernel_sizes, block.dilates) == ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5))
    for k, r in zip(block.kernel_sizes, block.dilates):
        conv = getattr(block, f'dil_conv_k{k}_{r}')
        assert conv.dilation == (r, r) and conv.padding == ((r * (k - 1) + 1) // 2,) * 2


def test_invalid_configurations_name_the_value():
    with pytest.raises(ValueError, match='kernel_sizes'):
        UniRepLKNet(dims=(8, 16), kernel_sizes=((3,), (13,), (13,)))
    with pytest.raises(ValueError, match='kernel_size=4'):
        UniRepLKNetBlock(8, kernel_size=4)
    with pytest.raises(TypeError, match='dims'):
        build_backbone('unireplknet_t', dims=(8, 16, 24, 32))
