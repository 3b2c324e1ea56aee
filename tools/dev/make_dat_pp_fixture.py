"""Freeze the output-parity fixture of the DAT++ converter from the OFFICIAL model code.

Runs the official dense-prediction backbone (the ``DAT`` class of ``models/backbones/dat.py`` in
https://github.com/LeapLabTHU/DAT-Detection, with ``models/utils/dat_blocks.py`` and
``models/utils/nat.py``, used as is from a local clone) in a small DAT++ configuration (both
block kinds, several offset groups, every reference-grid stride, DAT++'s options) on two inputs:
197x261 (maps of 50x66 ... 7x9) and 45x70 (maps of 12x18 ... 3x5: neighborhood attention on maps
smaller than its window, which the official code pads). Saves the four outputs and the input
gradient of each, and the parameter counts of the official DAT-T++ / S++ / B++ backbones. The
inputs and weights are not stored: ``official_fixture.regenerate_state_dict`` redraws them from the seed and
the stored spec (keys, shapes, scales), so ``tests/models/test_dat_pp.py`` builds the same
official state dict, converts it with ``convert_checkpoint('dat_pp', ...)`` and compares.

Nothing of the official code is copied here: it is imported from ``--official``. Its mmcv 1.x /
mmdet 2.x imports (``mmcv.runner.auto_fp16``, ``mmdet.models.builder``, ``mmdet.utils``, the
checkpoint loader) are inert stand-ins, and the compiled NATTEN 0.14 functions it calls
(``NATTEN2DQKRPBFunction``, ``NATTEN2DAVFunction``) are replaced by :class:`_NattenQKRPB` /
:class:`_NattenAV` below, written from NATTEN's definition (window clamped at the borders,
bias indexed by the key-minus-query offset); ``einops`` and ``timm`` must be importable
(``--deps`` adds a directory holding them to ``sys.path``).

Usage::

    python tools/dev/make_dat_pp_fixture.py --official /path/to/DAT-Detection [--deps /path/to/site] \
        --out tests/fixtures/backbones/dat_pp_official.pt
"""
from __future__ import annotations

import argparse
import importlib
import sys
import types
from pathlib import Path

import torch

from official_fixture import regenerate_state_dict

_SPECS = [['N', 'D'], ['D'], ['N', 'D'], ['N', 'D']]
# dat_pp_test's architecture with DAT++'s options (configs/dat/mrcn_tiny_1x_4n_dp00_lr4.py).
OFFICIAL_CONFIG = dict(
    img_size=224, patch_size=4, expansion=4, dim_stem=16, dims=[16, 32, 64, 128], depths=[2, 1, 2, 2],
    stage_spec=_SPECS, heads=[1, 2, 4, 4], groups=[1, 2, 2, 4], use_pes=[True] * 4, strides=[8, 4, 2, 1],
    offset_range_factor=[-1] * 4, use_dwc_mlps=[True] * 4, use_lpus=[True] * 4, use_conv_patches=True,
    ksizes=[9, 7, 5, 3], nat_ksizes=[7] * 4, drop_path_rate=0.0, use_checkpoint=False)
# The same model as densekit's DATPlusPlus arguments.
CONFIG = dict(dims=(16, 32, 64, 128), stage_specs=('ND', 'D', 'ND', 'ND'), num_heads=(1, 2, 4, 4),
              groups=(1, 2, 2, 4), strides=(8, 4, 2, 1), ksizes=(9, 7, 5, 3), nat_ksize=7, img_size=224,
              drop_path_rate=0.0)
INPUT_SHAPES = ((1, 3, 197, 261), (1, 3, 45, 70))
# The released architectures (LeapLabTHU/DAT configs/dat_{tiny,small,base}.yaml).
_FULL = dict(
    tiny=dict(dim_stem=64, dims=[64, 128, 256, 512], heads=[2, 4, 8, 16], groups=[1, 2, 4, 8]),
    small=dict(dim_stem=96, dims=[96, 192, 384, 768], heads=[3, 6, 12, 24], groups=[1, 2, 3, 6]),
    base=dict(dim_stem=128, dims=[128, 256, 512, 1024], heads=[4, 8, 16, 32], groups=[2, 4, 8, 16]),
)
_FULL_SPECS = [['N', 'D'], ['N', 'D'] * 2, ['N', 'D'] * 9, ['D', 'D']]


class _NattenQKRPB:
    """NATTEN 0.14 ``NATTEN2DQKRPBFunction`` (dilation 1): ``[B, h, H, W, k*k]`` logits of each
    query with the ``k x k`` window of keys starting at ``clamp(i - k // 2, 0, H - k)``, plus
    ``rpb[h, ki - i + k - 1, kj - j + k - 1]``, as a differentiable gather (the stand-in for the
    compiled autograd function, called the same way)."""

    @staticmethod
    def apply(q, k, rpb, kernel_size, dilation):
        assert dilation == 1
        idx_y, idx_x = _windows(q.shape[2], kernel_size, q.device), _windows(q.shape[3], kernel_size, q.device)
        ks = k[:, :, idx_y][:, :, :, :, idx_x]  # B h H ky W kx D
        logits = torch.einsum('bhijd,bhiyjxd->bhijyx', q, ks)
        ry = idx_y - torch.arange(q.shape[2], device=q.device)[:, None] + kernel_size - 1  # H ky
        rx = idx_x - torch.arange(q.shape[3], device=q.device)[:, None] + kernel_size - 1  # W kx
        bias = rpb[:, ry[:, None, :, None], rx[None, :, None, :]]  # h H W ky kx
        logits = logits + bias[None]
        B, h, H, W = q.shape[:4]
        return logits.reshape(B, h, H, W, kernel_size * kernel_size)


class _NattenAV:
    """NATTEN 0.14 ``NATTEN2DAVFunction`` (dilation 1): the weighted sum of each window's values."""

    @staticmethod
    def apply(attn, v, kernel_size, dilation):
        assert dilation == 1
        idx_y, idx_x = _windows(v.shape[2], kernel_size, v.device), _windows(v.shape[3], kernel_size, v.device)
        vs = v[:, :, idx_y][:, :, :, :, idx_x]  # B h H ky W kx D
        B, h, H, W = attn.shape[:4]
        a = attn.reshape(B, h, H, W, kernel_size, kernel_size)
        return torch.einsum('bhijyx,bhiyjxd->bhijd', a, vs)


def _windows(n: int, k: int, device) -> torch.Tensor:
    """``[n, k]`` key indices of each query's window along one side."""
    start = (torch.arange(n, device=device) - k // 2).clamp(0, n - k)
    return start[:, None] + torch.arange(k, device=device)


def _install_import_stand_ins() -> None:
    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    def auto_fp16(apply_to=None, out_fp32=False):
        return lambda fn: fn

    stubs = {
        'mmcv.runner': {'auto_fp16': auto_fp16},
        'mmdet': {}, 'mmdet.utils': {'get_root_logger': None},
        'mmdet.models': {}, 'mmdet.models.builder': {'BACKBONES': _Registry()},
        'natten': {}, 'natten.functional': {'NATTEN2DQKRPBFunction': _NattenQKRPB,
                                            'NATTEN2DAVFunction': _NattenAV},
        'datdet.backbones.loading': {'load_checkpoint': None},
    }
    import mmcv  # noqa: F401  (the real package; only its 1.x ``runner`` submodule is replaced)
    for name, attrs in stubs.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod


def load_official_dat(official: Path):
    """The official ``DAT`` backbone class, its ``models`` directory imported as package ``datdet``
    without running its ``__init__`` files (they import the checkpoint loader)."""
    _install_import_stand_ins()
    for name, sub in (('datdet', ''), ('datdet.backbones', 'backbones'), ('datdet.utils', 'utils')):
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(official / 'models' / sub)]
        sys.modules[name] = pkg
    return importlib.import_module('datdet.backbones.dat').DAT


def state_spec(state: dict) -> list:
    """``(key, shape, dtype, mean, std)`` per entry: every parameter perturbed (unit norms or zero
    tables would hide a wrong mapping), weights scaled by ``fan_in ** -0.5`` so activations stay
    O(1), bias tables of magnitude 1 so that their interpolation matters, and the offset
    network's last conv scaled down so that the sampling offsets are a pixel or so, as in a
    trained model (offsets of half the map would make the input gradient O(100) and its fp32
    rounding, 1e-5 relative, exceed the test's absolute tolerance)."""
    spec = []
    for key, t in state.items():
        shape = list(t.shape)
        if key.endswith('rpe_table') or key.endswith('rpb'):
            mean, std = 0.0, 1.0
        elif len(shape) == 1 and key.endswith('weight'):  # norm scales
            mean, std = 1.0, 0.2
        elif len(shape) == 1:  # biases, norm shifts
            mean, std = 0.0, 0.2
        else:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            mean, std = 0.0, fan_in ** -0.5 * (0.05 if key.endswith('conv_offset.3.weight') else 1.0)
        spec.append((key, shape, str(t.dtype).replace('torch.', ''), mean, std))
    return spec


def fixture_input(shape, seed: int) -> torch.Tensor:
    """The input of one case, redrawn from its seed (not stored, to keep the fixture small)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def output_grads(outputs, seed: int) -> list:
    """The output gradients of the backward pass whose input gradient the fixture stores."""
    gen = torch.Generator().manual_seed(seed + 1)
    return [torch.randn(o.shape, generator=gen) for o in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True, help='clone of LeapLabTHU/DAT-Detection')
    parser.add_argument('--deps', type=Path, default=None, help='directory holding einops (if not installed)')
    parser.add_argument('--out', type=Path, default=Path('tests/fixtures/backbones/dat_pp_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    if args.deps is not None:
        sys.path.insert(0, str(args.deps))

    Official = load_official_dat(args.official)
    model = Official(**OFFICIAL_CONFIG)
    spec = state_spec(model.state_dict())
    model.load_state_dict(regenerate_state_dict(spec, args.seed), strict=True)
    model.eval()
    cases = []
    for n, shape in enumerate(INPUT_SHAPES):
        x = fixture_input(shape, args.seed + 10 * n).requires_grad_(True)
        outs = model(x)
        torch.autograd.backward(outs, output_grads(outs, args.seed + 10 * n))
        cases.append(dict(input_shape=shape, input_seed=args.seed + 10 * n,
                          outputs=[o.detach().clone() for o in outs], input_grad=x.grad.clone()))
        print('input', tuple(shape), 'outputs', [tuple(o.shape) for o in outs])
    param_counts = {}
    for name, arch in _FULL.items():
        full = Official(**{**OFFICIAL_CONFIG, **arch, 'depths': [2, 4, 18, 2], 'stage_spec': _FULL_SPECS})
        param_counts[name] = sum(p.numel() for p in full.parameters())
    print('official backbone params', param_counts)
    fixture = dict(seed=args.seed, config=CONFIG, official_config=OFFICIAL_CONFIG, spec=spec, cases=cases,
                   param_counts=param_counts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print('wrote', args.out, args.out.stat().st_size // 1024, 'KiB')


if __name__ == '__main__':
    main()
