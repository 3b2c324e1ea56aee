"""Freeze the output-parity fixture of the FLatten converter from the OFFICIAL models.

Runs ``FLattenSwinTransformer`` (``models/flatten_swin.py``) and ``PyramidVisionTransformer``
(``models/flatten_pvt.py``) of https://github.com/LeapLabTHU/FLatten-Transformer, imported as is
from a local clone, with the architectures of ``flatten_swin_test`` and ``flatten_pvt_test`` and
the settings of the released configs (focusing factor 3, kernel 5; PVT ``attn_type='LLLL'``
with ``la_sr_ratios='1111'``), random weights, eval mode, on one 224x224 image (the only size
the official models accept), and saves, per model, the four stage outputs (Swin: each stage's
blocks before the patch merging that ends it; PVT: each stage's tokens) and the gradient of
``sum_i sum(out_i ** 2)`` with respect to the input.
``tests/models/test_flatten.py`` rebuilds the same official state dicts, converts them with
``convert_checkpoint('flatten', ...)`` and compares.

``flatten_swin_test`` uses window 28 and ``attn_type='LLSL'`` (the released models: 56 and
``'LLSS'``), so the official model runs shifted linear-attention windows in stage 0 (56x56 map),
one linear-attention window covering the map in stages 1 and 3 and shifted softmax windows in
stage 2.

The fixture stores no weights and no input: every official state-dict entry is drawn as
``mean + std * randn(shape)`` from one generator seeded with ``seed``, in the stored ``spec``
order (position encodings and focusing scales included: the official zero init would hide a
wrong mapping), and the input is ``randn(1, 3, 224, 224)`` from a generator seeded with
``seed + 1``.

Nothing of the official code is copied here. Its one missing import, ``einops`` (imported, not
used), is replaced by an inert module; timm's ``DropPath`` / ``trunc_normal_`` come from the
installed timm.

Usage::

    python tools/dev/make_flatten_fixture.py --official /path/to/FLatten-Transformer \
        --out tests/fixtures/backbones/flatten_official.pt
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

INPUT_SHAPE = (1, 3, 224, 224)
# flatten_swin_test / flatten_pvt_test with the released settings.
CONFIGS = {
    'swin': dict(embed_dim=16, depths=[2, 2, 2, 1], num_heads=[1, 2, 4, 8], window_size=28,
                 attn_type='LLSL', focusing_factor=3, kernel_size=5),
    'pvt': dict(embed_dims=[16, 32, 48, 64], depths=[1, 2, 1, 1], num_heads=[1, 2, 3, 4],
                mlp_ratios=[8, 8, 4, 4], qkv_bias=True, sr_ratios=[8, 4, 2, 1], la_sr_ratios='1111',
                attn_type='LLLL', focusing_factor=3, kernel_size=5),
}


def _load(official: Path, name: str):
    if 'einops' not in sys.modules:
        mod = types.ModuleType('einops')
        mod.rearrange = None
        sys.modules['einops'] = mod
    spec = importlib.util.spec_from_file_location(f'official_{name}', official / 'models' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_official(official: Path, which: str) -> nn.Module:
    cfg = dict(CONFIGS[which])
    with contextlib.redirect_stdout(io.StringIO()):  # the official attention prints its settings
        if which == 'swin':
            return _load(official, 'flatten_swin').FLattenSwinTransformer(
                img_size=224, drop_path_rate=0.0, **cfg)
        module = _load(official, 'flatten_pvt')
        return module.PyramidVisionTransformer(
            patch_size=4, drop_path_rate=0.0, norm_layer=lambda d: nn.LayerNorm(d, eps=1e-6), **cfg)


def stage_modules(model: nn.Module, which: str) -> list:
    """The module whose output is each stage's feature map."""
    if which == 'swin':
        return [layer.blocks[-1] for layer in model.layers]
    return [getattr(model, f'block{i + 1}')[-1] for i in range(4)]


def weight_spec(state_dict) -> list:
    """``(key, shape, dtype, mean, std)`` per entry: LayerNorm weights around 1, biases and
    focusing scales around 0, weights and position encodings at the init's scale (at least 0.02)."""
    spec = []
    for key, t in state_dict.items():
        name = key.rsplit('.', 1)[-1]
        if not t.is_floating_point() or name in ('relative_position_index', 'attn_mask'):
            spec.append((key, tuple(t.shape), str(t.dtype).replace('torch.', ''), 0.0, 0.0))
            continue
        if t.ndim == 1:
            mean, std = (1.0 if name == 'weight' else 0.0), 0.2
        elif name == 'scale':
            mean, std = 0.0, 0.5
        elif name in ('positional_encoding',) or name.startswith('pos_embed'):
            mean, std = 0.0, 0.2
        else:
            mean, std = 0.0, max(float(t.float().std()), 0.02)
        spec.append((key, tuple(t.shape), str(t.dtype).replace('torch.', ''), mean, std))
    return spec


def run(official: Path, which: str, seed: int, x: torch.Tensor) -> dict:
    torch.manual_seed(seed)
    model = build_official(official, which)
    for m in model.modules():  # the official init, so that the spec follows its scales
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
    sd = model.state_dict()
    spec = weight_spec(sd)
    weights = regenerate_state_dict(spec, seed)
    # buffers (Swin's relative_position_index and attn_mask) keep the official values
    for key, _, _, _, std in spec:
        if key.endswith(('relative_position_index', 'attn_mask')):
            weights[key] = sd[key]
    model.load_state_dict(weights, strict=True)
    model.eval()

    feats = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: feats.append(out)) for m in stage_modules(model, which)]
    x = x.clone().requires_grad_(True)
    with contextlib.redirect_stdout(io.StringIO()):
        model(x)
    for h in hooks:
        h.remove()
    side = [56, 28, 14, 7]
    outs = [f.reshape(1, s, s, -1).permute(0, 3, 1, 2) for f, s in zip(feats, side)]
    sum(o.square().sum() for o in outs).backward()
    print(which, 'params', sum(p.numel() for p in model.parameters()),
          'outputs', [tuple(o.shape) for o in outs],
          'output std', [round(float(o.detach().std()), 3) for o in outs], 'grad std', float(x.grad.std()))
    return dict(config=dict(CONFIGS[which]), seed=seed, spec=spec,
                outputs=[o.detach().clone() for o in outs], input_grad=x.grad.clone())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True, help='clone of LeapLabTHU/FLatten-Transformer')
    parser.add_argument('--out', type=Path, default=Path('tests/fixtures/backbones/flatten_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    x = torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(args.seed + 1))
    fixture = dict(input_seed=args.seed + 1, input_shape=INPUT_SHAPE,
                   swin=run(args.official, 'swin', args.seed, x),
                   pvt=run(args.official, 'pvt', args.seed + 2, x))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print('wrote', args.out, args.out.stat().st_size // 1024, 'KiB')


if __name__ == '__main__':
    main()
