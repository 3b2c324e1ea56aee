"""Freeze the output-parity fixture of the LITv2 converter from the OFFICIAL dense backbone.

Runs ``LITv2`` of https://github.com/ziplab/LITv2 (``detection/mmdet/models/backbones/litv2.py``,
the detection backbone; the segmentation one is the same model), imported as is from a local
clone, with the ``litv2_test`` architecture and the dense settings of the official configs
(``alpha=0.9``, ``local_ws=[0, 0, 2, 1]``), random weights and random BatchNorm statistics, in eval
mode, on a batch of two 61x87 images, and saves the four outputs and the gradient of
``sum_i sum(out_i ** 2)`` with respect to the input. ``tests/models/test_litv2.py`` rebuilds the
same official state dict, converts it with ``convert_checkpoint('litv2', ...)`` and compares.

61x87 is odd in both sides (the official code pads the input to a multiple of 4 and floors every
merging); its stage maps 16x22, 8x11, 4x5, 2x2 give HiLo an odd side to pad (stage 2, 2x2 windows
and pooling).

The fixture stores no weights: every official state-dict entry is drawn as
``mean + std * randn(shape)`` from one generator seeded with ``seed``, in the stored ``spec``
order. The DTM offset convolutions are random too (not the official zero init), so the
deformable sampling is exercised.

Nothing of the official code is copied here. Its imports are replaced by stand-ins: mmdet's
registry and mmengine's loaders are inert, and the CUDA extension ``DeformConv2dPack``
(``mm_modules/DCN``, DCNv1 with the ``(dy, dx)``-per-tap offset layout and zero-padded bilinear
sampling of its ``deform_2d_im2col_cuda.cuh``) is served by ``torchvision.ops.deform_conv2d``,
which implements the same sampling on CPU, with the module's parameter names.

Usage::

    python tools/dev/make_litv2_fixture.py --official /path/to/LITv2 \
        --out tests/fixtures/backbones/litv2_official.pt
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from official_fixture import regenerate_state_dict  # tools/dev, beside this script

# litv2_test's architecture with the official dense settings (mask_rcnn_litv2_s_fpn_1x_coco.py).
CONFIG = dict(embed_dim=16, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], alpha=0.9,
              local_ws=[0, 0, 2, 1])
INPUT_SHAPE = (2, 3, 61, 87)
OFFICIAL_FILE = Path('detection/mmdet/models/backbones/litv2.py')


class DeformConv2dPack(nn.Module):
    """The parameters of mm_modules/DCN's ``DeformConv2dPack`` (``weight``, ``bias``,
    ``conv_offset``), computed by ``torchvision.ops.deform_conv2d``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, **kwargs):
        super().__init__()
        assert not kwargs, kwargs
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.conv_offset = nn.Conv2d(in_channels, 2 * kernel_size * kernel_size, kernel_size,
                                     stride=stride, padding=padding)

    def forward(self, x):
        return torchvision.ops.deform_conv2d(x, self.conv_offset(x), self.weight, self.bias,
                                             stride=self.stride, padding=self.padding)


def _install_import_stand_ins() -> None:
    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    def _unused(*args, **kwargs):
        raise AssertionError('not used by the fixture')

    modules = {
        'mm_modules': {}, 'mm_modules.DCN': {}, 'mm_modules.DCN.modules': {},
        'mm_modules.DCN.modules.deform_conv2d': {'DeformConv2dPack': DeformConv2dPack},
        'mmdet': {}, 'mmdet.registry': {'MODELS': _Registry()},
        'mmengine': {}, 'mmengine.runner': {},
        'mmengine.runner.checkpoint': {'load_state_dict': _unused, 'CheckpointLoader': None},
        'mmengine.logging': {'MMLogger': None},
    }
    for name, attrs in modules.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        mod.__path__ = []
        sys.modules[name] = mod


def load_official_litv2(official: Path):
    _install_import_stand_ins()
    spec = importlib.util.spec_from_file_location('official_litv2', official / OFFICIAL_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LITv2


def weight_spec(state_dict) -> list:
    """``(key, shape, dtype, mean, std)`` per entry: the scale of the official init, randomised
    (norm weights around 1, biases around 0, running variances around 1, DTM offsets of about a
    pixel)."""
    spec = []
    for key, t in state_dict.items():
        name = key.rsplit('.', 1)[-1]
        if not t.is_floating_point():
            mean, std = 0.0, 0.0
        elif name == 'running_var':
            mean, std = 1.0, 0.2
        elif 'conv_offset' in key:
            mean, std = 0.0, 0.3
        elif t.ndim == 1:
            mean, std = (1.0 if name == 'weight' else 0.0), 0.2
        else:
            mean, std = 0.0, max(float(t.float().std()), 0.02)
        spec.append((key, tuple(t.shape), str(t.dtype).replace('torch.', ''), mean, std))
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True, help='clone of ziplab/LITv2')
    parser.add_argument('--out', type=Path, default=Path('tests/fixtures/backbones/litv2_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    OfficialLITv2 = load_official_litv2(args.official)
    torch.manual_seed(args.seed)
    model = OfficialLITv2(drop_path_rate=0.0, **CONFIG)
    for m in model.modules():  # the official init, so that the spec follows its scales
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
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
