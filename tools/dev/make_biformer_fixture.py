"""Freeze the output-parity fixture of the BiFormer converter from the OFFICIAL model code.

Runs the official dense-prediction backbone (``BiFormer_mm`` of
``object_detection/models_mm/biformer_mm.py`` in https://github.com/rayleizhu/BiFormer, i.e.
``models/biformer.py`` with ``ops/bra_legacy.py``, used as is from a local clone) with BiFormer-T's
architecture, the detection configs' ``n_win=16`` and ``auto_pad=True``, on an input whose map
sizes are not multiples of 16 at any stage, and saves the input, the four outputs and the input
gradient. The weights are not stored: :func:`official_random_state` regenerates them from the
seed and the official keys / shapes (which are stored), so ``tests/models/test_biformer.py``
builds the same official state dict, converts it with ``convert_checkpoint('biformer', ...)``
and compares densekit's outputs and input gradient.

Nothing of the official code is copied here: it is imported from ``--official``. Its mmcv 1.x /
mmdet 2.x imports (``mmcv_custom``, ``mmdet.models.builder``, ``mmdet.utils``) and ``fairscale``
(only used for activation checkpointing) are replaced by inert stand-ins; ``einops`` and ``timm``
must be importable (``--deps`` adds a directory holding them to ``sys.path``).

Usage::

    python tools/dev/make_biformer_fixture.py --official /path/to/BiFormer [--deps /path/to/site] \
        --out tests/fixtures/backbones/biformer_official.pt
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path
from typing import Dict, Mapping, Sequence

import torch

# BiFormer-T (models/biformer.py, biformer_tiny) as the dense class, detection settings.
OFFICIAL_CONFIG = dict(
    depth=[2, 2, 8, 2], embed_dim=[64, 128, 256, 512], mlp_ratios=[3, 3, 3, 3], n_win=16,
    kv_downsample_mode='identity', kv_per_wins=[-1, -1, -1, -1], topks=[1, 4, 16, -2], side_dwconv=5,
    before_attn_dwconv=3, layer_scale_init_value=-1, qk_dims=[64, 128, 256, 512], head_dim=32,
    param_routing=False, diff_routing=False, soft_routing=False, pre_norm=True, pe=None, auto_pad=True,
    use_checkpoint_stages=[], drop_path_rate=0.0)
# The same model as densekit's BiFormer arguments.
CONFIG = dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 8, 2), topks=(1, 4, 16, -2), n_win=16,
              head_dim=32, mlp_ratio=3.0, side_dwconv=5, drop_path_rate=0.0)
# Maps of 50x66, 25x33, 13x17, 7x9: none a multiple of n_win, padded differently per stage.
INPUT_SHAPE = (1, 3, 197, 261)


def official_random_state(shapes: Mapping[str, Sequence[int]], seed: int) -> Dict[str, torch.Tensor]:
    """Random weights for the official keys, in the stored order: every parameter perturbed (unit
    norms or zero biases would hide a wrong mapping), matrices scaled by ``fan_in ** -0.5`` so the
    activations stay O(1) through the network, positive BatchNorm variances."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        shape = tuple(shape)
        if key.endswith('num_batches_tracked'):
            out[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith('running_var'):
            out[key] = 0.5 + torch.rand(shape, generator=gen)
        elif len(shape) == 1 and key.endswith('weight'):  # norm scales
            out[key] = 1.0 + 0.2 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:  # biases, norm shifts, running means
            out[key] = 0.2 * torch.randn(shape, generator=gen)
        else:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            out[key] = torch.randn(shape, generator=gen) * fan_in ** -0.5
    return out


def output_grads(outputs: Sequence[torch.Tensor], seed: int) -> list:
    """The output gradients of the backward pass whose input gradient the fixture stores."""
    gen = torch.Generator().manual_seed(seed + 1)
    return [torch.randn(o.shape, generator=gen) for o in outputs]


def _install_import_stand_ins() -> None:
    """Inert stand-ins for the imports the official files only use for checkpoint loading,
    registration and activation checkpointing."""
    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    stubs = {
        'mmcv_custom': {'load_checkpoint': None},
        'mmdet': {}, 'mmdet.utils': {'get_root_logger': None},
        'mmdet.models': {}, 'mmdet.models.builder': {'BACKBONES': _Registry()},
        'fairscale': {}, 'fairscale.nn': {}, 'fairscale.nn.checkpoint': {'checkpoint_wrapper': lambda m: m},
    }
    for name, attrs in stubs.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod


def load_official_biformer(official: Path):
    """The official ``BiFormer_mm`` class (``object_detection/models_mm/biformer_mm.py``)."""
    _install_import_stand_ins()
    sys.path[:0] = [str(official), str(official / 'object_detection')]  # ops.*, models_cls.*
    path = official / 'object_detection' / 'models_mm' / 'biformer_mm.py'
    spec = importlib.util.spec_from_file_location('official_biformer_mm', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BiFormer_mm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True, help='clone of rayleizhu/BiFormer')
    parser.add_argument('--deps', type=Path, default=None, help='directory holding einops (if not installed)')
    parser.add_argument('--out', type=Path, default=Path('tests/fixtures/backbones/biformer_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    if args.deps is not None:
        sys.path.insert(0, str(args.deps))

    Official = load_official_biformer(args.official)
    torch.manual_seed(args.seed)
    model = Official(**OFFICIAL_CONFIG)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(official_random_state(shapes, args.seed), strict=True)
    model.eval()  # BatchNorms on their (random) running statistics
    x = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(args.seed)).requires_grad_(True)
    outs = model(x)
    torch.autograd.backward(outs, output_grads(outs, args.seed))
    fixture = dict(seed=args.seed, config=CONFIG, official_config=OFFICIAL_CONFIG, shapes=shapes,
                   input=x.detach().clone(), outputs=[o.detach().clone() for o in outs],
                   input_grad=x.grad.clone())
    print('params', sum(p.numel() for p in model.parameters()), 'outputs', [tuple(o.shape) for o in outs])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print('wrote', args.out, args.out.stat().st_size // 1024, 'KiB')


if __name__ == '__main__':
    main()
