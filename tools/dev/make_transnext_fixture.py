"""Freeze the output-parity fixture of the TransNeXt converter from the OFFICIAL model code.

Runs the official dense-prediction backbone (``segmentation/upernet/transnext_native.py`` of
https://github.com/DaiShiResearch/TransNeXt, its pure-PyTorch path, imported as is from a local
clone) with random weights on a tiny configuration, with and without ``is_extrapolation``, and
saves the official state dict and, per configuration, the four output maps and the input gradient of
``sum_i sum(out_i ** 2)``. ``tests/models/test_transnext.py`` converts the state dict with
``convert_checkpoint('transnext', ...)`` and compares densekit's outputs and input gradient.

Nothing of the official code is copied here. Its mmseg 0.x / mmcv 1.x imports (``BACKBONES``,
``get_root_logger``, ``load_checkpoint``; used only to register the class and load checkpoints)
are replaced by inert stand-ins while the file is imported.

Usage::

    python tools/dev/make_transnext_fixture.py --official /path/to/TransNeXt \
        --out tests/fixtures/backbones/transnext_official.pt
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

# A tiny configuration with every attention kind (aggregated attention in stages 0-2, full
# attention in stage 3); the position-bias tables are built for 128 px and resized to the input's
# maps, or built for the maps themselves (``is_extrapolation``).
ARCH = dict(embed_dims=[8, 16, 16, 32], num_heads=[1, 2, 2, 4], mlp_ratios=[2, 2, 2, 2], depths=[1, 1, 2, 1],
            sr_ratios=[8, 4, 2, 1])
CONFIGS = {
    'resized': dict(img_size=128, pretrain_size=96, is_extrapolation=False),
    'extrapolation': dict(img_size=128, pretrain_size=96, is_extrapolation=True),
}
INPUT_SHAPE = (1, 3, 69, 91)  # not a multiple of 32; small so the fixture stays a few hundred KiB


def load_official_transnext(official: Path):
    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    stubs = {'mmseg': {}, 'mmseg.models': {}, 'mmseg.models.builder': {'BACKBONES': _Registry()},
             'mmseg.utils': {'get_root_logger': None}, 'mmcv': {}, 'mmcv.runner': {'load_checkpoint': None}}
    saved = {name: sys.modules.get(name) for name in stubs}
    for name, attrs in stubs.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
    try:
        spec = importlib.util.spec_from_file_location(
            'official_transnext_native', official / 'segmentation' / 'upernet' / 'transnext_native.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
    return module.TransNeXt


def _randomise(model: nn.Module, gen: torch.Generator) -> None:
    # Unit LayerNorms, zero learnable biases and near-zero local position biases would hide a
    # wrong key mapping; perturb every parameter so that each one shows in the outputs.
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_((0.2 if p.ndim == 1 else 0.05) * torch.randn(p.shape, generator=gen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True, help='clone of DaiShiResearch/TransNeXt')
    parser.add_argument('--out', type=Path, default=Path('tests/fixtures/backbones/transnext_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    OfficialTransNeXt = load_official_transnext(args.official)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(INPUT_SHAPE, generator=gen)
    fixture = {'seed': args.seed, 'input': x, 'config': dict({k: tuple(v) for k, v in ARCH.items()}, window_size=3)}
    state_dict = None
    for name, cfg in CONFIGS.items():
        torch.manual_seed(args.seed)
        model = OfficialTransNeXt(window_size=[3, 3, 3, None], patch_size=4, qkv_bias=True,
                                  norm_layer=partial(nn.LayerNorm, eps=1e-6), drop_path_rate=0.0, **ARCH, **cfg)
        model.eval()
        if state_dict is None:  # one set of random weights for every configuration
            _randomise(model, gen)
            state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
            fixture['state_dict'] = state_dict
        model.load_state_dict(state_dict)
        xi = x.clone().requires_grad_(True)
        outs = model(xi)
        sum(o.square().sum() for o in outs).backward()
        fixture[name] = dict(config=cfg, outputs=[o.detach().clone() for o in outs], input_grad=xi.grad.clone())
        print(name, 'params', sum(p.numel() for p in model.parameters()),
              'outputs', [tuple(o.shape) for o in outs])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print('wrote', args.out, args.out.stat().st_size // 1024, 'KiB')


if __name__ == '__main__':
    main()
