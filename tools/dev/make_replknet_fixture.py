"""Freeze the output-parity fixture of the RepLKNet converter from the OFFICIAL dense backbone.

Runs ``RepLKNet`` of https://github.com/DingXiaoH/RepLKNet-pytorch (``segmentation/replknet.py``,
imported as is from a local clone) as the full RepLKNet-31B architecture in training (not merged)
mode, with random weights and random BatchNorm statistics, in eval mode on an odd-sized input, and
saves the four outputs and the gradient of ``sum_i sum(out_i ** 2)`` with respect to the input.
``tests/models/test_replknet.py`` rebuilds the same official state dict, converts it with
``convert_checkpoint('replknet', ...)`` and compares.

The fixture stores no weights: every official state-dict entry is drawn as
``mean + std * randn(shape)`` from one generator seeded with ``seed``, in the stored ``spec`` order
(``(key, shape, dtype, mean, std)``; integer buffers are zero).

Nothing of the official code is copied here. Its relative ``from ..builder import BACKBONES``
(mmseg 0.x) is served by an inert stand-in package, and ``use_sync_bn=False`` gives plain
``nn.BatchNorm2d`` (the eval-mode numerics of the SyncBN it trains with).

Usage::

    python tools/dev/make_replknet_fixture.py --official /path/to/RepLKNet-pytorch \
        --out tests/fixtures/backbones/replknet_official.pt
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch

from official_fixture import regenerate_state_dict  # tools/dev, beside this script

# The official RepLKNet-31B (create_RepLKNet31B; segmentation/configs/RepLKNet_upernet.py).
CONFIG = dict(large_kernel_sizes=[31, 29, 27, 13], layers=[2, 2, 18, 2],
              channels=[128, 256, 512, 1024], small_kernel=5)
INPUT_SHAPE = (1, 3, 37, 45)  # stage maps 10x12, 5x6, 3x3, 2x2: smaller than every large kernel
OFFICIAL_FILE = Path('segmentation/replknet.py')


def load_official_replknet(official: Path):
    class _Registry:
        def register_module(self, cls=None, **kwargs):
            return cls if cls is not None else (lambda c: c)

    package = types.ModuleType('official_replknet_pkg')
    package.__path__ = []
    builder = types.ModuleType('official_replknet_pkg.builder')
    builder.BACKBONES = _Registry()
    sys.modules[package.__name__] = package
    sys.modules[builder.__name__] = builder
    sys.modules.setdefault('official_replknet_pkg.sub', types.ModuleType('official_replknet_pkg.sub'))
    sys.modules['official_replknet_pkg.sub'].__path__ = []
    spec = importlib.util.spec_from_file_location('official_replknet_pkg.sub.replknet',
                                                  official / OFFICIAL_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.RepLKNet


def weight_spec(state_dict) -> list:
    """``(key, shape, dtype, mean, std)`` per entry: the scale of PyTorch's init, randomised."""
    spec = []
    for key, t in state_dict.items():
        name = key.rsplit('.', 1)[-1]
        if not t.is_floating_point():
            mean, std = 0.0, 0.0
        elif name == 'running_var':
            mean, std = 1.0, 0.2
        elif t.ndim == 1:  # norm weights (1) and biases (0)
            mean, std = float(t.float().mean()), 0.2
        else:
            mean, std = 0.0, float(t.float().std())
        spec.append((key, tuple(t.shape), str(t.dtype).replace('torch.', ''), mean, std))
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True,
                        help='clone of DingXiaoH/RepLKNet-pytorch')
    parser.add_argument('--out', type=Path, default=Path('tests/fixtures/backbones/replknet_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    Official = load_official_replknet(args.official)
    torch.manual_seed(args.seed)
    model = Official(drop_path_rate=0.0, num_classes=None, out_indices=(0, 1, 2, 3),
                     use_checkpoint=False, use_sync_bn=False, **CONFIG)
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
