"""Freeze the output-parity fixture of the NAT / DiNAT converter from the OFFICIAL model code.

Runs SHI-Labs' dense-prediction backbone (``detection/nat.py`` of
https://github.com/SHI-Labs/Neighborhood-Attention-Transformer, used as is from a local clone)
with random weights on tiny configurations and saves, per configuration, the official state dict,
the input and the four per-output-normalised feature maps. ``tests/models/test_nat.py`` converts
the state dict with ``convert_checkpoint('nat' | 'dinat', ...)`` and compares densekit's features.

Nothing of the official code is copied here: it is imported from ``--official``. Its
``NeighborhoodAttention2D`` comes from a ``natten`` package found on ``--natten`` (the real
NATTEN <= 0.17, or any implementation of its documented semantics); mmcv / mmdet 2.x-only imports
of that file (``mmcv.runner``, ``mmdet.models.builder``) are replaced by inert stand-ins since the
fixture never loads checkpoints or builds detectors.

Usage::

    python tools/dev/make_nat_fixture.py --official /path/to/Neighborhood-Attention-Transformer \
        --natten /path/to/dir/containing/natten --out tests/fixtures/backbones/nat_official.pt
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch

# Tiny configurations: they exercise layer scale, dilations whose windows exceed the feature map
# (padding), lengths not divisible by the dilation, and the per-output norms.
CONFIGS = {
    'nat': dict(embed_dim=4, mlp_ratio=2.0, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4],
                kernel_size=7, dilations=None, layer_scale=1e-5),
    'dinat': dict(embed_dim=4, mlp_ratio=2.0, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4],
                  kernel_size=5, dilations=[[4], [2], [1, 3], [1]], layer_scale=None),
}
INPUT_SHAPE = (1, 3, 65, 81)  # odd sizes; kept small so the fixture stays ~200 KiB


def _install_import_stand_ins() -> None:
    """The official file imports mmcv 1.x / mmdet 2.x names it only uses for checkpoint loading."""
    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    stubs = {
        'mmcv': {}, 'mmcv.runner': {'load_checkpoint': None},
        'mmdet': {}, 'mmdet.utils': {'get_root_logger': None},
        'mmdet.models': {}, 'mmdet.models.builder': {'BACKBONES': _Registry()},
    }
    for name, attrs in stubs.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod


def load_official_nat(official: Path, natten_dir: Path):
    sys.path.insert(0, str(natten_dir))
    _install_import_stand_ins()
    path = official / 'detection' / 'nat.py'
    spec = importlib.util.spec_from_file_location('official_nat', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.NAT


def _randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    # Official init leaves LayerNorms at (1, 0) and layer scales at 1e-5, which would hide a wrong
    # key mapping; perturb every parameter so that each one shows in the outputs.
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith(('gamma1', 'gamma2')):
                p.copy_(0.5 + 0.25 * noise)
            elif p.ndim == 1 or 'rpb' in name:
                p.add_(0.2 * noise)
            else:
                p.add_(0.05 * noise)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True,
                        help='clone of SHI-Labs/Neighborhood-Attention-Transformer')
    parser.add_argument('--natten', type=Path, required=True,
                        help='directory containing the natten package to run it with')
    parser.add_argument('--out', type=Path, default=Path('tests/fixtures/backbones/nat_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    OfficialNAT = load_official_nat(args.official, args.natten)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(INPUT_SHAPE, generator=gen)
    fixture = {'input': x}
    for family, cfg in CONFIGS.items():
        torch.manual_seed(args.seed)
        model = OfficialNAT(drop_path_rate=0.0, out_indices=(0, 1, 2, 3), **cfg)
        model.eval()  # the official train() returns None, so no chaining
        _randomise(model, gen)
        with torch.no_grad():
            outs = model(x)
        fixture[family] = dict(
            config={k: v for k, v in cfg.items()},
            state_dict={k: v.clone() for k, v in model.state_dict().items()},
            outputs=[o.clone() for o in outs],
        )
        print(family, 'params', sum(p.numel() for p in model.parameters()),
              'outputs', [tuple(o.shape) for o in outs])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print('wrote', args.out, args.out.stat().st_size // 1024, 'KiB')


if __name__ == '__main__':
    main()
