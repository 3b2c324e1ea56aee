"""Freeze the output-parity fixture of the CSWin converter from the OFFICIAL model code.

Runs microsoft/CSWin-Transformer's dense-prediction backbone
(``segmentation/backbone/cswin_transformer.py`` of a local clone, imported as is) with random
weights on a tiny configuration and saves the official state dict, the input and the four
per-output-normalised feature maps. ``tests/models/test_cswin.py`` converts the state dict with
``convert_checkpoint('cswin', ...)`` and compares densekit's features.

Nothing of the official code is copied here. Its mmcv / mmseg 0.x-only imports (checkpoint
loading, the backbone registry) are replaced by inert stand-ins, and so is ``einops.Rearrange``
when einops is not installed: the segmentation forward never calls it.

Usage::

    python tools/dev/make_cswin_fixture.py --official /path/to/CSWin-Transformer \
        --out tests/fixtures/backbones/cswin_official.pt
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn

# Heads double per stage so that the official segmentation code (which derives the channels from
# the head ratio) builds the same widths as the ImageNet models. The 69x85 input gives stage maps
# 17x21, 9x11, 5x6, 3x3: stripes of width 2 and 7 need asymmetric and symmetric padding.
CONFIG = dict(embed_dim=4, depth=[1, 1, 2, 1], num_heads=[2, 4, 8, 16], split_size=[1, 2, 7, 7],
              mlp_ratio=2.0)
INPUT_SHAPE = (1, 3, 69, 85)


def _install_import_stand_ins() -> None:
    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    modules = {
        'mmcv_custom': {'load_checkpoint': None},
        'mmseg': {}, 'mmseg.utils': {'get_root_logger': None},
        'cswin_official': {}, 'cswin_official.builder': {'BACKBONES': _Registry()},
        'cswin_official.backbone': {},
    }
    try:
        import einops.layers.torch  # noqa: F401
    except ImportError:
        class Rearrange(nn.Module):  # placeholder: never called by the segmentation forward
            def __init__(self, *args, **kwargs):
                super().__init__()

        modules.update({'einops': {}, 'einops.layers': {}, 'einops.layers.torch': {'Rearrange': Rearrange}})
    for name, attrs in modules.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        mod.__path__ = []  # importable as a package
        sys.modules[name] = mod


def load_official_cswin(official: Path):
    _install_import_stand_ins()
    path = official / 'segmentation' / 'backbone' / 'cswin_transformer.py'
    name = 'cswin_official.backbone.cswin_transformer'  # its `from ..builder import` resolves
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.CSWin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True,
                        help='clone of microsoft/CSWin-Transformer')
    parser.add_argument('--out', type=Path,
                        default=Path('tests/fixtures/backbones/cswin_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    OfficialCSWin = load_official_cswin(args.official)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = OfficialCSWin(drop_path_rate=0.0, **CONFIG).eval()
    model.init_weights()
    # Perturb every parameter (LayerNorms start at (1, 0) and biases at 0) so each shows in the
    # outputs and a wrong key mapping cannot hide.
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.add_((0.2 if p.ndim == 1 else 0.05) * noise)
    x = torch.randn(INPUT_SHAPE, generator=gen)
    with torch.no_grad():
        outs = model(x)
    fixture = dict(config=dict(CONFIG), input=x,
                   state_dict={k: v.clone() for k, v in model.state_dict().items()},
                   outputs=[o.clone() for o in outs])
    print('params', sum(p.numel() for p in model.parameters()),
          'outputs', [tuple(o.shape) for o in outs])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print('wrote', args.out, args.out.stat().st_size // 1024, 'KiB')


if __name__ == '__main__':
    main()
