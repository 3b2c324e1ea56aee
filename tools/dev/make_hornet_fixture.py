"""Freeze the output-parity fixture of the HorNet converter from the OFFICIAL dense backbone.

Runs ``object_detection/models/hornet.py`` of https://github.com/raoyongming/HorNet (imported as
is from a local clone; the segmentation copy differs only in logging) with random weights, in eval
mode on an odd-sized input, and saves the four per-output-normalised maps and the gradient of
``sum_i sum(out_i ** 2)`` with respect to the input, for two configurations:

* ``hornet_tiny_gf``: the full HorNet-T (GF) of the official COCO config (filters 14x8 and 7x4,
  resized in the forward pass to the 4x3 and 2x2 spectra of the 65x73 input);
* ``tiny``: a small configuration whose filters have exactly the spectrum size of the maps (the
  forward pass uses them without resizing).

The fixture stays small because it stores no weights: every official state-dict entry is drawn
as ``mean + std * randn(shape)`` from one generator seeded with ``seed``, in the stored ``spec``
order (``(key, shape, dtype, mean, std)``).

``tests/models/test_hornet.py`` converts the state dicts with ``convert_checkpoint('hornet', ...)``
and compares. Every entry is random (unit LayerNorms or the 1e-6 layer scales would hide a wrong
key mapping). Nothing of the official code is copied here; its mmcv / mmdet 2.x imports (checkpoint
loading, logger, registry) are replaced by inert stand-ins.

Usage::

    python tools/dev/make_hornet_fixture.py --official /path/to/HorNet \
        --out tests/fixtures/backbones/hornet_official.pt
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch

from official_fixture import regenerate_state_dict  # tools/dev, beside this script


def _gnconvs(gf_sizes):
    """The official configs' ``gnconv`` strings (evaluated in the official module)."""
    out = []
    for order, size in zip((2, 3, 4, 5), gf_sizes):
        gf = '' if size is None else f', h={size[0]}, w={size[1]}, gflayer=GlobalLocalFilter'
        out.append(f'partial(gnconv, order={order}, s=1/3{gf})')
    return out


CONFIGS = {
    # object_detection/configs/hornet/cascade_mask_rcnn_hornet_tiny_gf_3x_coco_in1k.py
    'hornet_tiny_gf': dict(base_dim=64, depths=[2, 3, 18, 2],
                           gf_sizes=[None, None, (14, 8), (7, 4)]),
    'tiny': dict(base_dim=16, depths=[1, 1, 2, 1], gf_sizes=[None, None, (4, 3), (2, 2)]),
}
INPUT_SHAPE = (1, 3, 65, 73)  # stage maps 16x18, 8x9, 4x4, 2x2 (floor: the model does not pad)


def _install_import_stand_ins() -> None:
    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    modules = {
        'mmcv_custom': {'load_checkpoint': None},
        'mmdet': {}, 'mmdet.utils': {'get_root_logger': None},
        'mmdet.models': {}, 'mmdet.models.builder': {'BACKBONES': _Registry()},
    }
    for name, attrs in modules.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        mod.__path__ = []
        sys.modules[name] = mod


def load_official_hornet(official: Path):
    _install_import_stand_ins()
    path = official / 'object_detection' / 'models' / 'hornet.py'
    spec = importlib.util.spec_from_file_location('official_hornet', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.HorNet


def weight_spec(state_dict) -> list:
    """``(key, shape, dtype, mean, std)`` per entry: the scale of the official init, randomised."""
    spec = []
    for key, t in state_dict.items():
        name = key.rsplit('.', 1)[-1]
        if name in ('gamma1', 'gamma2'):
            mean, std = 0.3, 0.1
        elif name == 'complex_weight':
            mean, std = 0.0, 0.3
        elif t.ndim == 1:  # norm weights (1) and biases (0)
            mean, std = float(t.float().mean()), 0.2
        else:
            mean, std = 0.0, 0.02
        spec.append((key, tuple(t.shape), str(t.dtype).replace('torch.', ''), mean, std))
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True, help='clone of raoyongming/HorNet')
    parser.add_argument('--out', type=Path,
                        default=Path('tests/fixtures/backbones/hornet_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    OfficialHorNet = load_official_hornet(args.official)
    x = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(args.seed + 1))
    fixture = {'input': x, 'seed': args.seed}
    for name, cfg in CONFIGS.items():
        torch.manual_seed(args.seed)
        model = OfficialHorNet(base_dim=cfg['base_dim'], depths=cfg['depths'], block='Block',
                               gnconv=_gnconvs(cfg['gf_sizes']), drop_path_rate=0.0,
                               out_indices=[0, 1, 2, 3])
        spec = weight_spec(model.state_dict())
        sd = regenerate_state_dict(spec, args.seed)
        model.load_state_dict(sd, strict=True)
        model.eval()
        xi = x.clone().requires_grad_(True)
        outs = model(xi)
        sum(o.square().sum() for o in outs).backward()
        fixture[name] = dict(config=dict(cfg), spec=spec, outputs=[o.detach().clone() for o in outs],
                             input_grad=xi.grad.clone())
        print(name, 'params', sum(p.numel() for p in model.parameters()),
              'outputs', [tuple(o.shape) for o in outs],
              'output std', [round(float(o.detach().std()), 3) for o in outs],
              'grad std', float(xi.grad.std()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print('wrote', args.out, args.out.stat().st_size // 1024, 'KiB')


if __name__ == '__main__':
    main()
