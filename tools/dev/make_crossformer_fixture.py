"""Freeze the output-parity fixture of the CrossFormer converter from the OFFICIAL dense backbone.

Runs ``CrossFormer`` of https://github.com/cheerss/CrossFormer (``models/crossformer_backbone_det.py``,
the detection backbone; the segmentation one is the same code), imported as is from a local clone,
with the ``crossformer_test`` architecture (groups of 4x4, intervals (4, 2, 2, 1)) and the dense
settings of ``detection/crossformer_factory.py`` (cross-scale kernels (4, 8, 16, 32)
and (2, 4), ``use_acl=False``), random weights, in eval mode, on a batch of two 67x99 images, and
saves the four stage outputs and the gradient of ``sum_i sum(out_i ** 2)`` with respect to the
input. ``tests/models/test_crossformer.py`` rebuilds the same official state dict, converts it with
``convert_checkpoint('crossformer', ...)`` and compares.

67x99 is odd in both sides and satisfies the official assertion that every downsampled map has even
sides (``H mod 32 < 4``); its stage maps 16x24, 8x12, 4x6, 2x3 take every path: SDA without
padding, LDA with padding and the padded-key mask, and maps whose shorter side is at most the group
(one group over the padded square).

The fixture stores no weights: every official state-dict entry is drawn as
``mean + std * randn(shape)`` from one generator seeded with ``seed``, in the stored ``spec`` order.

Nothing of the official code is copied here. Its mmcv 1.x / mmdet 2.x imports are replaced by
inert stand-ins (``BaseModule`` is ``nn.Module``, a logger, unused init and loading helpers).

Usage::

    python tools/dev/make_crossformer_fixture.py --official /path/to/CrossFormer \
        --out tests/fixtures/backbones/crossformer_official.pt
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn

from official_fixture import regenerate_state_dict  # tools/dev, beside this script

# crossformer_test's architecture with the official dense settings (CrossFormer_S's factory call).
CONFIG = dict(embed_dim=40, depths=[2, 2, 1, 1], num_heads=[1, 2, 2, 4], group_size=[4, 4, 4, 4],
              crs_interval=[4, 2, 2, 1], mlp_ratio=2)
DENSE = dict(img_size=[224, 224], patch_size=[4, 8, 16, 32], merge_size=[[2, 4], [2, 4], [2, 4]],
             qkv_bias=True, use_acl=False, drop_rate=0.0, drop_path_rate=0.0)
INPUT_SHAPE = (2, 3, 67, 99)
OFFICIAL_FILE = Path('models/crossformer_backbone_det.py')


def _install_import_stand_ins() -> None:
    def _unused(*args, **kwargs):
        raise AssertionError('not used by the fixture')

    modules = {
        'mmcv': {}, 'mmcv.runner': {'BaseModule': nn.Module, 'ModuleList': nn.ModuleList,
                                    'load_checkpoint': _unused, '_load_checkpoint': _unused},
        'mmcv.cnn': {'build_norm_layer': _unused, 'constant_init': _unused,
                     'trunc_normal_init': _unused},
        'mmcv.cnn.bricks': {}, 'mmcv.cnn.bricks.transformer': {'FFN': _unused, 'build_dropout': _unused},
        'mmcv.cnn.utils': {}, 'mmcv.cnn.utils.weight_init': {'trunc_normal_': _unused},
        'mmdet': {}, 'mmdet.utils': {'get_root_logger': lambda: logging.getLogger('crossformer')},
    }
    for name, attrs in modules.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        mod.__path__ = []
        sys.modules[name] = mod


def load_official_crossformer(official: Path):
    _install_import_stand_ins()
    spec = importlib.util.spec_from_file_location('official_crossformer', official / OFFICIAL_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CrossFormer


def weight_spec(state_dict) -> list:
    """``(key, shape, dtype, mean, std)`` per entry: the scale of the official init, randomised
    (LayerNorm weights around 1, biases around 0, matrices at the scale of their init)."""
    spec = []
    for key, t in state_dict.items():
        if not t.is_floating_point():
            mean, std = 0.0, 0.0
        elif t.ndim == 1:
            mean, std = float(t.float().mean()), 0.2
        else:
            mean, std = 0.0, max(float(t.float().std()), 0.02)
        spec.append((key, tuple(t.shape), str(t.dtype).replace('torch.', ''), mean, std))
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True, help='clone of cheerss/CrossFormer')
    parser.add_argument('--out', type=Path,
                        default=Path('tests/fixtures/backbones/crossformer_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    OfficialCrossFormer = load_official_crossformer(args.official)
    torch.manual_seed(args.seed)
    model = OfficialCrossFormer(**CONFIG, **DENSE)
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
