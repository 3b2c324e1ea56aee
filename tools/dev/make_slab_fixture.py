"""Freeze the output-parity fixture of the SLAB converter from the OFFICIAL dense backbone.

Runs ``SwinTransformer_SLAB`` of https://github.com/xinghaochen/SLAB
(``detection/mmdet_custom/swin_transformer_slab.py``, the mmdet 2.x detection backbone, with its
``prepbn.py``), imported as is from a local clone, with the ``slab_test`` architecture
(``attn_type='LLSL'``; the released models use ``'LLSS'``, windows 56, 28, 7, 7 in both),
random weights and random BatchNorm statistics, on a batch of two 61x87 images (odd sides: every
block pads its windows, patch merging pads odd maps), and saves the four outputs and the gradient
of ``sum_i sum(out_i ** 2)`` with respect to the input:

* in eval mode (PRepBN = RepBN);
* in training mode for one forward (PRepBN mixes LayerNorm and RepBN with ``lamda = iter /
  total_step``; the spec sets every ``iter`` to 3/4 of ``total_step``; BatchNorms in eval mode
  as the official backbone keeps them).

The fixture stores no weights: every official state-dict entry is drawn as
``mean + std * randn(shape)`` from one generator seeded with ``seed``, in the stored ``spec``
order; integer buffers (``iter``, ``total_step``, ``relative_position_index``,
``num_batches_tracked``) are stored in the spec's ``ints`` as their values.

Nothing of the official code is copied here. Its imports are replaced by stand-ins: mmdet's
registry and logger and ``mmcv_custom.load_checkpoint`` are inert; ``einops`` must be importable
(``pip install --target DIR einops`` and ``--pythonpath DIR``); timm's layers come from the
installed timm.

Usage::

    python tools/dev/make_slab_fixture.py --official /path/to/SLAB --pythonpath /path/to/einops_dir \
        --out tests/fixtures/backbones/slab_official.pt
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn

from official_fixture import regenerate_state_dict  # tools/dev, beside this script

CONFIG = dict(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=7,
              attn_type='LLSL', focusing_factor=3, kernel_size=5)
INPUT_SHAPE = (2, 3, 61, 87)
OFFICIAL_DIR = Path('detection/mmdet_custom')


def _install_import_stand_ins(official: Path) -> None:
    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    def _unused(*args, **kwargs):
        raise AssertionError('not used by the fixture')

    modules = {
        'mmcv_custom': {'load_checkpoint': _unused},
        'mmdet': {}, 'mmdet.utils': {'get_root_logger': _unused},
        'mmdet.models': {}, 'mmdet.models.builder': {'BACKBONES': _Registry()},
    }
    for name, attrs in modules.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        mod.__path__ = []
        sys.modules[name] = mod
    # the official package, without its __init__ (which imports the training APIs)
    pkg = types.ModuleType('slab_official')
    pkg.__path__ = [str(official / OFFICIAL_DIR)]
    sys.modules['slab_official'] = pkg


def load_official_slab(official: Path):
    _install_import_stand_ins(official)
    for name in ('prepbn', 'swin_transformer_slab'):
        path = official / OFFICIAL_DIR / f'{name}.py'
        spec = importlib.util.spec_from_file_location(f'slab_official.{name}', path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module.SwinTransformer_SLAB


def weight_spec(state_dict) -> list:
    """``(key, shape, dtype, mean, std)`` per float entry (norm weights and ``alpha`` around 1,
    biases around 0, running variances around 1, position encodings 0.2); integer buffers are
    kept by :func:`int_buffers`."""
    spec = []
    for key, t in state_dict.items():
        if not t.is_floating_point():
            continue
        name = key.rsplit('.', 1)[-1]
        if name == 'running_var':
            mean, std = 1.0, 0.2
        elif name == 'running_mean':
            mean, std = 0.0, 0.2
        elif name == 'alpha' or (t.ndim == 1 and name == 'weight'):
            mean, std = 1.0, 0.2
        elif t.ndim == 1:
            mean, std = 0.0, 0.2
        elif name == 'positional_encoding':
            mean, std = 0.0, 0.2
        else:
            mean, std = 0.0, max(float(t.float().std()), 0.02)
        spec.append((key, tuple(t.shape), str(t.dtype).replace('torch.', ''), mean, std))
    return spec


def int_buffers(state_dict) -> dict:
    """Integer buffers: ``iter`` at 3/4 of its schedule, the others as built."""
    out = {}
    for key, t in state_dict.items():
        if t.is_floating_point():
            continue
        out[key] = (t * 3 // 4) if key.endswith('.iter') else t.clone()
    return out


def run(model: nn.Module, x: torch.Tensor, train: bool) -> dict:
    model.train(train)
    x = x.clone().requires_grad_(True)
    outs = model(x)
    sum(o.square().sum() for o in outs).backward()
    model.zero_grad(set_to_none=True)
    print('train' if train else 'eval', 'outputs', [tuple(o.shape) for o in outs],
          'output std', [round(float(o.detach().std()), 3) for o in outs], 'grad std', float(x.grad.std()))
    return dict(outputs=[o.detach().clone() for o in outs], input_grad=x.grad.clone())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True, help='clone of xinghaochen/SLAB')
    parser.add_argument('--pythonpath', type=Path, default=None, help='a directory holding einops')
    parser.add_argument('--out', type=Path, default=Path('tests/fixtures/backbones/slab_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    if args.pythonpath:
        sys.path.insert(0, str(args.pythonpath))

    with contextlib.redirect_stdout(io.StringIO()):  # the official attention prints its settings
        OfficialSLAB = load_official_slab(args.official)
        torch.manual_seed(args.seed)
        model = OfficialSLAB(drop_path_rate=0.0, **CONFIG)
    model.init_weights()
    sd = model.state_dict()
    spec = weight_spec(sd)
    ints = int_buffers(sd)
    model.load_state_dict({**regenerate_state_dict(spec, args.seed), **ints}, strict=True)

    x = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(args.seed + 1))
    fixture = dict(config=dict(CONFIG), seed=args.seed, spec=spec, ints=ints, input=x.clone(),
                   eval=run(model, x, train=False), train=run(model, x, train=True))
    print('params', sum(p.numel() for p in model.parameters()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print('wrote', args.out, args.out.stat().st_size // 1024, 'KiB')


if __name__ == '__main__':
    main()
