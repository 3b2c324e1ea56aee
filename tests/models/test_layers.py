"""Shared layers (``densekit.layers``): drop path, its schedule, norms, conv blocks, gates, init."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from densekit.layers import (BatchNormAct2d, ConvBnAct, DropPath, EfficientChannelAttention, LayerNorm2d,
                             SqueezeExcite, create_act, create_channel_attn, drop_path, drop_path_schedule,
                             init_conv_bn_, init_trunc_normal_, make_divisible)


@pytest.mark.parametrize('shape', [(4, 8, 5, 3), (4, 5, 3, 8), (6, 7)])
def test_drop_path_draws_as_timm_and_torchvision(shape):
    """Same seed, same dropped samples and scale as timm's ``drop_path`` and torchvision's
    ``stochastic_depth(mode='row')``: swapping either for ours changes no training run."""
    timm_drop = pytest.importorskip('timm.layers').drop_path
    from torchvision.ops import stochastic_depth
    x = torch.randn(shape)
    results = []
    for fn in (lambda t: drop_path(t, 0.4, True), lambda t: timm_drop(t, 0.4, True),
               lambda t: stochastic_depth(t, 0.4, 'row', True)):
        torch.manual_seed(3)
        results.append(fn(x))
    torch.testing.assert_close(results[0], results[1], atol=0, rtol=0)
    torch.testing.assert_close(results[0], results[2], atol=0, rtol=0)
    kept = results[0].flatten(1).ne(0).any(1)
    assert 0 < kept.sum() < shape[0] or shape[0] < 4  # some samples dropped, not all
    torch.testing.assert_close(results[0][kept], x[kept] / 0.6)


def test_drop_path_module_is_stateless_and_identity_in_eval():
    m = DropPath(0.5)
    assert not list(m.state_dict())
    x = torch.randn(3, 4)
    assert m.eval()(x) is x
    assert DropPath(0.0).train()(x) is x
    with pytest.raises(ValueError, match='p=1.5'):
        DropPath(1.5)


def test_drop_path_schedule_is_linear():
    assert drop_path_schedule(0.3, 4) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert drop_path_schedule(0.3, 1) == [0.0]
    assert drop_path_schedule(0.3, 0) == []
    torch.testing.assert_close(torch.tensor(drop_path_schedule(0.2, 7)), torch.linspace(0, 0.2, 7))


def test_layer_norm_2d_matches_layer_norm_over_channels():
    norm = LayerNorm2d(6, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 6, 5, 7)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), ref, atol=1e-6, rtol=0)


def test_conv_bn_act_keys_and_forward():
    m = ConvBnAct(4, 8, 3, stride=2, act='silu').eval()
    assert set(m.state_dict()) == {'conv.weight', 'bn.weight', 'bn.bias', 'bn.running_mean', 'bn.running_var',
                                   'bn.num_batches_tracked'}
    x = torch.randn(1, 4, 9, 7)
    ref = F.silu(F.batch_norm(F.conv2d(x, m.conv.weight, stride=2, padding=1), m.bn.running_mean,
                              m.bn.running_var, m.bn.weight, m.bn.bias, False, 0.0, m.bn.eps))
    torch.testing.assert_close(m(x), ref)
    assert isinstance(BatchNormAct2d(3, apply_act=False).act, nn.Identity)
    with pytest.raises(ValueError, match="'tanh'"):
        create_act('tanh')


def test_channel_gates():
    x = torch.randn(2, 32, 5, 4)
    se = SqueezeExcite(32, rd_ratio=1 / 4)
    assert se.fc1.out_channels == 8
    gate = torch.sigmoid(se.fc2(F.relu(se.fc1(x.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(se(x), x * gate)
    eca = EfficientChannelAttention(32)
    assert eca.conv.kernel_size == (3,)
    assert EfficientChannelAttention(1024).conv.kernel_size == (5,)
    assert isinstance(create_channel_attn('', 8), nn.Identity)
    with pytest.raises(ValueError, match="'cbam'"):
        create_channel_attn('cbam', 8)


def test_make_divisible():
    assert make_divisible(64 * 0.25) == 16
    assert make_divisible(10) == 16  # 8 would be below 0.9 * 10
    assert make_divisible(3, 8) == 8


def test_init_schemes():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(64, 64, 3), nn.BatchNorm2d(64), nn.Linear(64, 64), nn.LayerNorm(64))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(5.0)
    init_trunc_normal_(net)
    assert net[0].weight.eq(5).all()  # convolutions keep theirs unless conv=True
    assert 0.018 < net[2].weight.std().item() < 0.022 and net[2].bias.eq(0).all()
    assert net[3].weight.eq(1).all() and net[3].bias.eq(0).all()
    init_trunc_normal_(net, conv=True)
    assert 0.018 < net[0].weight.std().item() < 0.022 and net[0].bias.eq(0).all()

    init_conv_bn_(net, zero_last_bn=[net[1]])
    assert net[0].bias.eq(0).all() and net[1].weight.eq(0).all() and net[1].bias.eq(0).all()
    before = net[0].weight.clone()
    init_conv_bn_(net, skip=('0',))
    torch.testing.assert_close(net[0].weight, before, atol=0, rtol=0)
    assert net[1].weight.eq(1).all()


def test_layers_import_no_model_op_or_openmmlab_module():
    """``densekit.layers`` sits below ``densekit.ops`` and ``densekit.models``."""
    import subprocess
    import sys
    from pathlib import Path
    package_dir = str(Path(__file__).resolve().parents[2] / 'densekit')
    # A bare ``densekit`` package object: ``densekit/__init__`` itself registers into OpenMMLab.
    code = '\n'.join([
        'import sys, types',
        'pkg = types.ModuleType("densekit")',
        f'pkg.__path__ = [{package_dir!r}]',
        'sys.modules["densekit"] = pkg',
        'import densekit.layers',
        'prefixes = ("densekit.ops", "densekit.models", "densekit.mm", "mmengine", "mmdet", "mmseg", "mmcv")',
        'bad = sorted(m for m in sys.modules if m.startswith(prefixes))',
        'assert not bad, bad',
    ])
    subprocess.run([sys.executable, '-c', code], check=True)
