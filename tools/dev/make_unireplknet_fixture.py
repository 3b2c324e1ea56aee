"""Freeze the output-parity fixture of the UniRepLKNet converter from the OFFICIAL dense backbone.

Runs ``UniRepLKNetBackbone`` of https://github.com/AILab-CVC/UniRepLKNet
(``detection/mmdet_custom/models/backbones/unireplknet.py``, imported as is from a local clone) as
the full UniRepLKNet-T architecture in training (not deploy) mode, with random weights and random
BatchNorm statistics, in eval mode on an odd-sized input, and saves the four outputs and the
gradient of ``sum_i sum(out_i ** 2)`` with respect to the input. ``tests/models/test_unireplknet.py``
rebuilds the same official state dict, converts it with ``convert_checkpoint('unireplknet', ...)``
and compares.

The fixture stays small because it stores no weights: every official state-dict entry is drawn
as ``mean + std * randn(shape)`` from one generator seeded with ``seed``, in the stored ``spec``
order (``(key, shape, dtype, mean, std)``; integer buffers are zero). ``mean`` / ``std`` follow the
scale of the official init, but every entry is random (the zero GRN parameters, unit norms or the
1e-6 layer scales of the official init would hide a wrong key mapping).

Nothing of the official code is copied here. Its mmcv 1.x / mmdet 2.x imports are replaced by
stand-ins: the registry is inert, ``get_root_logger`` / ``_load_checkpoint`` are never reached
(``init_cfg`` names no checkpoint), and the module's ``get_bn`` gives ``nn.BatchNorm2d`` for the
SyncBN of the backbone wrapper (the same eval-mode numerics).

Usage::

    python tools/dev/make_unireplknet_fixture.py --official /path/to/UniRepLKNet \
        --out tests/fixtures/backbones/unireplknet_official.pt
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

# The official UniRepLKNet-T (detection/configs/coco/casc_mask_rcnn_unireplknet_t_in1k_fpn_3x_coco.py).
CONFIG = dict(depths=[3, 3, 18, 3], dims=[80, 160, 320, 640])
INPUT_SHAPE = (1, 3, 65, 81)  # stage maps 17x21, 9x11, 5x6, 3x3: smaller than the 13x13 kernels
OFFICIAL_FILE = Path('detection/mmdet_custom/models/backbones/unireplknet.py')


def _install_import_stand_ins() -> None:
    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    def _unreachable(*args, **kwargs):
        raise RuntimeError('the fixture loads no checkpoint through mmcv')

    modules = {
        'mmcv': {}, 'mmcv.runner': {'_load_checkpoint': _unreachable},
        'mmdet': {}, 'mmdet.models': {}, 'mmdet.models.builder': {'BACKBONES': _Registry()},
        'mmdet.utils': {'get_root_logger': lambda: None},
    }
    for name, attrs in modules.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        mod.__path__ = []
        sys.modules[name] = mod


def load_official_backbone(official: Path):
    _install_import_stand_ins()
    spec = importlib.util.spec_from_file_location('official_unireplknet', official / OFFICIAL_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # timm's register_model looks the module up
    spec.loader.exec_module(module)
    module.get_bn = lambda dim, use_sync_bn=False: nn.BatchNorm2d(dim)
    return module.UniRepLKNetBackbone


def weight_spec(state_dict) -> list:
    """``(key, shape, dtype, mean, std)`` per entry: the scale of the official init, randomised."""
    spec = []
    for key, t in state_dict.items():
        name = key.rsplit('.', 1)[-1]
        if not t.is_floating_point():
            mean, std = 0.0, 0.0
        elif name == 'running_var':
            mean, std = 1.0, 0.2
        elif name in ('gamma', 'beta'):  # layer scale, GRN
            mean, std = 0.3, 0.2
        elif t.ndim == 1:  # norm weights (1) and biases (0)
            mean, std = float(t.float().mean()), 0.2
        else:
            mean, std = 0.0, max(float(t.float().std()), 0.02)
        spec.append((key, tuple(t.shape), str(t.dtype).replace('torch.', ''), mean, std))
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True, help='clone of AILab-CVC/UniRepLKNet')
    parser.add_argument('--out', type=Path,
                        default=Path('tests/fixtures/backbones/unireplknet_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    Official = load_official_backbone(args.official)
    torch.manual_seed(args.seed)
    model = Official(drop_path_rate=0.0, kernel_sizes=None, deploy=False, with_cp=False,
                     init_cfg=dict(type='Pretrained', checkpoint=None), attempt_use_lk_impl=False,
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
