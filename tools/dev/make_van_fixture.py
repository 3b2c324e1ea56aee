"""Freeze the output-parity fixture of the VAN converter from the OFFICIAL dense backbone.

Runs ``van.py`` of https://github.com/Visual-Attention-Network/VAN-Segmentation (imported as is
from a local clone) as the full VAN-B0 architecture, with random weights and random BatchNorm
statistics, in eval mode on an odd-sized input, and saves the four stage outputs and the gradient
of ``sum_i sum(out_i ** 2)`` with respect to the input. ``tests/models/test_van.py`` rebuilds the
same official state dict, converts it with ``convert_checkpoint('van', ...)`` and compares.

The fixture stays small because it stores no weights: every official state-dict entry is drawn
as ``mean + std * randn(shape)`` from one generator seeded with ``seed``, in the stored ``spec``
order (``(key, shape, dtype, mean, std)``; integer buffers are zero). ``mean`` / ``std`` follow the
scale of the official init, but every entry is random (unit BatchNorms, zero biases or the 1e-2
layer scales would hide a wrong key mapping).

Nothing of the official code is copied here. Its mmcv 1.x / mmseg 0.x imports are replaced by
stand-ins: ``build_norm_layer`` gives an ``nn.BatchNorm2d`` for the SyncBN config (the same eval-mode
numerics; see ``_BatchNorm2d`` for the gradient), ``BaseModule`` is ``nn.Module``, the registry and
the init helpers are inert (the weights are set from the spec).

Usage::

    python tools/dev/make_van_fixture.py --official /path/to/VAN-Segmentation \
        --out tests/fixtures/backbones/van_official.pt
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch

from official_fixture import regenerate_state_dict  # tools/dev, beside this script
import torch.nn as nn

# The official VAN-B0 (VAN-Segmentation's configs/upernet/1k_pretrained/upernet_van_b0_*.py).
CONFIG = dict(embed_dims=[32, 64, 160, 256], depths=[3, 3, 5, 2], mlp_ratios=[8, 8, 4, 4])
INPUT_SHAPE = (1, 3, 65, 81)  # stage maps 17x21, 9x11, 5x6, 3x3: smaller than the 19x19 LKA field


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


class _BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` (same parameters, same forward) whose backward receives a contiguous
    gradient. The official blocks return ``x.view(B, C, N).permute(0, 2, 1)``, so with a batch of
    one the gradient that reaches a BatchNorm through them has channels-last strides with a batch
    stride of ``C`` (not ``C * H * W``), and PyTorch's CPU eval-mode ``batch_norm`` backward returns
    a wrong input gradient for such a ``grad_output`` (checked against the closed form
    ``grad * weight / sqrt(running_var + eps)`` with torch 2.14); the forward is unaffected."""

    def forward(self, x):
        return _ContiguousGrad.apply(super().forward(x))


def _install_import_stand_ins() -> None:
    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    class BaseModule(nn.Module):
        def __init__(self, init_cfg=None):
            super().__init__()
            self.init_cfg = init_cfg

    def build_norm_layer(cfg, num_features):
        assert cfg['type'] in ('SyncBN', 'BN'), cfg
        return 'bn', _BatchNorm2d(num_features)

    modules = {
        'mmcv': {}, 'mmcv.cnn': {'build_norm_layer': build_norm_layer}, 'mmcv.cnn.utils': {},
        'mmcv.cnn.utils.weight_init': {'constant_init': None, 'normal_init': None,
                                       'trunc_normal_init': None},
        'mmcv.runner': {'BaseModule': BaseModule},
        'mmseg': {}, 'mmseg.models': {}, 'mmseg.models.builder': {'BACKBONES': _Registry()},
    }
    for name, attrs in modules.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        mod.__path__ = []
        sys.modules[name] = mod


def load_official_van(official: Path):
    _install_import_stand_ins()
    spec = importlib.util.spec_from_file_location('official_van', official / 'van.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VAN


def weight_spec(state_dict) -> list:
    """``(key, shape, dtype, mean, std)`` per entry: the scale of the official init, randomised."""
    spec = []
    for key, t in state_dict.items():
        name = key.rsplit('.', 1)[-1]
        if not t.is_floating_point():
            mean, std = 0.0, 0.0
        elif name == 'running_var':
            mean, std = 1.0, 0.2
        elif name.startswith('layer_scale'):
            mean, std = 0.3, 0.1
        elif t.ndim == 1:  # norm weights (1) and biases (0)
            mean, std = float(t.float().mean()), 0.2
        else:
            mean, std = 0.0, float(t.float().std())
        spec.append((key, tuple(t.shape), str(t.dtype).replace('torch.', ''), mean, std))
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True,
                        help='clone of Visual-Attention-Network/VAN-Segmentation')
    parser.add_argument('--out', type=Path, default=Path('tests/fixtures/backbones/van_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    OfficialVAN = load_official_van(args.official)
    torch.manual_seed(args.seed)
    model = OfficialVAN(drop_path_rate=0.0, norm_cfg=dict(type='SyncBN', requires_grad=True),
                        **CONFIG)
    spec = weight_spec(model.state_dict())
    model.load_state_dict(regenerate_state_dict(spec, args.seed), strict=True)
    model.eval()

    x = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(args.seed + 1))
    x.requires_grad_(True)
    outs = model(x)
    sum(o.square().sum() for o in outs).backward()
    fixture = dict(config=dict(CONFIG), seed=args.seed, spec=spec, input=x.detach().clone(),
                   outputs=[o.detach().clone() for o in outs], input_grad=x.grad.clone())
    print('params', sum(p.numel() for p in model.parameters()),
          'outputs', [tuple(o.shape) for o in outs],
          'output std', [round(float(o.detach().std()), 3) for o in outs],
          'grad std', float(x.grad.std()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print('wrote', args.out, args.out.stat().st_size // 1024, 'KiB')


if __name__ == '__main__':
    main()
