"""RepLKNet: official-code output and input-gradient parity, re-parameterisation, the converter's key
formats, variant size.

The parity fixture ``tests/fixtures/backbones/replknet_official.pt`` was produced by
``tools/dev/make_replknet_fixture.py`` from the official ``RepLKNet`` of RepLKNet-pytorch's
``segmentation/replknet.py`` (the full RepLKNet-31B architecture with its 5x5 re-parameterised
branches; random weights and BatchNorm statistics, eval mode). It stores no weights: the official
state dict is redrawn here from its seed and spec. The contract checks shared with every family
live in ``test_backbone_contract.py``.
"""
from pathlib import Path

import pytest
import torch

from densekit.models import build_backbone, convert_checkpoint
from densekit.models.backbones.replknet import RepLKNet, ReparamLargeKernelConv

from official_fixture import regenerate_state_dict  # noqa: E402  (tools/dev)

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'backbones' / 'replknet_official.pt'


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def official_state_dict(official):
    return regenerate_state_dict(official['spec'], official['seed'])


def _official_model(official_state_dict):
    model = build_backbone('replknet_31b', drop_path_rate=0.0).eval()
    model.load_state_dict(convert_checkpoint('replknet', official_state_dict), strict=True)
    return model


def test_official_output_and_input_gradient_parity(official, official_state_dict):
    model = _official_model(official_state_dict)
    assert official['config']['channels'] == list(model.dims)
    x = official['input'].clone().requires_grad_(True)
    outs = model(x)
    assert len(outs) == len(official['outputs']) == 4
    for i, (ours, ref) in enumerate(zip(outs, official['outputs'])):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0, msg=f'stage {i}')
    sum(o.square().sum() for o in outs).backward()
    torch.testing.assert_close(x.grad, official['input_grad'], atol=1e-4, rtol=0)


def test_reparameterized_model_gives_the_same_outputs(official, official_state_dict):
    """Small kernels folded into the large ones and every conv-BN pair fused: the eval-mode outputs
    of the official weights are kept, and the keys are those of the official merged model."""
    model = _official_model(official_state_dict)
    x = official['input']
    with torch.no_grad():
        before = model(x)
        model.reparameterize()
        after = model(x)
    for i, (a, b) in enumerate(zip(after, before)):
        assert float((a - b).abs().max() / b.abs().max()) <= 1e-5, f'stage {i}'
    keys = model.state_dict().keys()
    assert not any('small_conv' in k or 'lkb_origin' in k or '.bn.' in k for k in keys)
    assert 'stages.2.blocks.0.large_kernel.lkb_reparam.bias' in keys
    assert 'stages.2.downsample.1.conv.bias' in keys and 'stem.0.conv.bias' in keys
    assert convert_checkpoint('replknet', model.state_dict()).keys() == keys


def test_reparameterize_a_large_kernel_conv_with_random_statistics():
    torch.manual_seed(0)
    conv = ReparamLargeKernelConv(6, kernel_size=13, small_kernel=5).eval()
    with torch.no_grad():
        for name, t in conv.state_dict().items():
            if name.endswith('running_var'):
                t.uniform_(0.5, 2.0)
            elif t.is_floating_point():
                t.normal_(0.0, 0.5)
        x = torch.randn(2, 6, 17, 11)
        ref = conv(x)
        conv.reparameterize()
        out = conv(x)
    assert float((out - ref).abs().max() / ref.abs().max()) <= 1e-5
    assert not hasattr(conv, 'small_conv') and conv.lkb_reparam.kernel_size == (13, 13)


def test_converter_accepts_detector_and_classifier_checkpoints(official_state_dict):
    sd = official_state_dict
    direct = convert_checkpoint('replknet', sd)
    assert 'stem.3.bn.running_var' in direct and 'stages.1.downsample.0.conv.weight' in direct
    assert 'stages.3.downsample.1.bn.bias' in direct
    assert 'stages.2.blocks.35.pw2.bn.weight' in direct

    wrapped = {f'backbone.{k}': v for k, v in sd.items()}
    wrapped['decode_head.conv_seg.weight'] = torch.zeros(1)
    seg = convert_checkpoint('replknet', {'state_dict': wrapped, 'meta': {}})
    assert seg.keys() == direct.keys() and all(seg[k] is direct[k] for k in direct)

    # ImageNet release: a final BatchNorm and the classifier head.
    cls = dict(sd, **{'norm.weight': torch.ones(1024), 'norm.running_var': torch.ones(1024),
                      'head.weight': torch.zeros(1000, 1024), 'head.bias': torch.zeros(1000)})
    assert convert_checkpoint('replknet', {'model': cls}).keys() == direct.keys()

    # RepLKNet-XL's dense checkpoints: one BatchNorm per output, 'stages.{i}.norm'.
    xl = convert_checkpoint('replknet', {'stages.0.norm.weight': torch.ones(8)})
    assert list(xl) == ['out_norms.0.weight']

    assert convert_checkpoint('replknet', direct).keys() == direct.keys()
    with pytest.raises(KeyError, match='unrecognised'):
        convert_checkpoint('replknet', {'transitions.0.0.conv.weight': torch.zeros(1),
                                        'foo.bar': torch.zeros(1)})


def test_out_norm_adds_one_batchnorm_per_returned_map():
    model = build_backbone('replknet_test', out_indices=(1, 3), out_norm=True)
    assert sorted(model.out_norms) == ['1', '3']
    assert isinstance(model.out_norms['3'], torch.nn.BatchNorm2d)


def test_variant_size_matches_the_official_definition():
    # The official RepLKNet(out_indices=(0, 1, 2, 3)) with create_RepLKNet31B's arguments.
    with torch.device('meta'):
        model = build_backbone('replknet_31b')
    assert sum(p.numel() for p in model.parameters()) == 78_837_120


def test_invalid_configurations_name_the_value():
    with pytest.raises(ValueError, match='kernel_sizes'):
        RepLKNet(channels=(8, 16), depths=(1, 1), kernel_sizes=(13,))
    with pytest.raises(ValueError, match='small_kernel'):
        ReparamLargeKernelConv(4, kernel_size=3, small_kernel=5)
    with pytest.raises(TypeError, match='channels'):
        build_backbone('replknet_31b', channels=(8, 16, 24, 32))
