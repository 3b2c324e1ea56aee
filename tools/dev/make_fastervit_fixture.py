"""Freeze the output-parity fixture of the FasterViT converter from the OFFICIAL dense backbone.

Runs the official dense-prediction ``FasterViT`` (``downstream/object_detection/dino/models/dino/
fastervit.py`` of https://github.com/NVlabs/FasterViT, imported as is from a local clone) with
random weights and random BatchNorm statistics, in eval mode, through its DINO ``forward``
(a ``NestedTensor`` in, the four normalised maps out), on tiny configurations:

* ``hat``: carrier tokens in stage 2 (the 224 configuration), layer scales, on 197x261 (not a
  multiple of 32 or 7; the stage-2 map is 13x17, padded to 14x21: 2x3 windows, a 4x6 carrier grid
  with more tokens than the 4x4 bias table, non-square so the official carrier reordering shows);
* ``propagation``: ``do_propagation=True`` without layer scales, on 75x101 (a single stage-2
  window: 4 carrier tokens, fewer than the 4x4 bias table, which is cropped);
* ``window14``: the ImageNet-21k layout (no carrier tokens, a 14 window in stage 2), on 75x101.

It saves, per configuration, the spec of the random official state dict (``(key, shape, dtype,
mean, std)``; ``tools/dev/official_fixture.py`` redraws it from the seed), the four outputs and the
gradient of ``sum_i sum(out_i ** 2)`` with respect to the input (redrawn from ``seed + 1``).
``tests/models/test_fastervit.py`` converts the state dict with ``convert_checkpoint('fastervit',
...)`` and compares. The official position-table buffers (``relative_coords_table``,
``relative_position_index``, ``relative_bias``) are computed by the official code and not random.

Nothing of the official code is copied here. Its imports of the DINO repository
(``util.misc.NestedTensor``) get a stand-in with ``tensors`` and ``mask``; ``timm.models.layers``
is timm's own (deprecated) alias.

Usage::

    python tools/dev/make_fastervit_fixture.py --official /path/to/FasterViT \
        --out tests/fixtures/backbones/fastervit_official.pt
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import types
from pathlib import Path

import torch

from official_fixture import regenerate_state_dict  # tools/dev, beside this script

BASE = dict(dim=8, in_dim=8, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4], ct_size=2, mlp_ratio=2)
CONFIGS = {
    'hat': (dict(BASE, window_size=[7, 7, 7, 7], hat=[False, False, True, False], layer_scale=0.5),
            (1, 3, 197, 261)),
    'propagation': (dict(BASE, window_size=[7, 7, 7, 7], hat=[False, False, True, False], do_propagation=True),
                    (1, 3, 75, 101)),
    'window14': (dict(BASE, window_size=[7, 7, 14, 7], hat=[False, False, False, False], layer_scale=0.5),
                 (1, 3, 75, 101)),
}
_OFFICIAL_BUFFER = re.compile(r'\.(relative_bias|relative_coords_table|relative_position_index)$')


class NestedTensor:
    """Stand-in for DINO's ``util.misc.NestedTensor``: the batch and its padding mask."""

    def __init__(self, tensors, mask):
        self.tensors, self.mask = tensors, mask


def load_official_fastervit(official: Path):
    """The official ``FasterViT`` class."""
    return load_official_module(official).FasterViT


def load_official_module(official: Path):
    """The official dense ``fastervit.py`` module, imported from the clone ``official``."""
    for name, attrs in {'util': {}, 'util.misc': {'NestedTensor': NestedTensor}}.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        mod.__path__ = []
        sys.modules[name] = mod
    path = official / 'downstream' / 'object_detection' / 'dino' / 'models' / 'dino' / 'fastervit.py'
    spec = importlib.util.spec_from_file_location('official_fastervit', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def weight_spec(state_dict) -> list:
    """``(key, shape, dtype, mean, std)`` per parameter and BatchNorm statistic: the scale of the
    official (PyTorch default) init, randomised so that every entry shows in the outputs."""
    spec = []
    for key, t in state_dict.items():
        if _OFFICIAL_BUFFER.search(key):
            continue
        name = key.rsplit('.', 1)[-1]
        if not t.is_floating_point():
            mean, std = 0.0, 0.0
        elif name == 'running_var':
            mean, std = 1.0, 0.2
        elif name.startswith('gamma'):
            mean, std = 0.5, 0.2
        elif t.ndim == 1:  # norm weights (1) and biases (0)
            mean, std = float(t.float().mean()), 0.2
        else:
            mean, std = 0.0, float(t.float().std())
        spec.append((key, tuple(t.shape), str(t.dtype).replace('torch.', ''), mean, std))
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True, help='clone of NVlabs/FasterViT')
    parser.add_argument('--out', type=Path, default=Path('tests/fixtures/backbones/fastervit_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    OfficialFasterViT = load_official_fastervit(args.official)
    fixture = {'seed': args.seed}
    for name, (cfg, shape) in CONFIGS.items():
        torch.manual_seed(args.seed)
        model = OfficialFasterViT(drop_path_rate=0.0, out_indices=(0, 1, 2, 3), **cfg)
        spec = weight_spec(model.state_dict())
        missing, unexpected = model.load_state_dict(regenerate_state_dict(spec, args.seed), strict=False)
        assert not unexpected and all(_OFFICIAL_BUFFER.search(k) for k in missing), (missing, unexpected)
        model.eval()
        x = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed + 1)).requires_grad_(True)
        outs = model(NestedTensor(x, torch.zeros(shape[0], *shape[2:], dtype=torch.bool)))
        outs = [outs[i].tensors for i in range(len(outs))]
        sum(o.square().sum() for o in outs).backward()
        fixture[name] = dict(config={k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()},
                             input_shape=shape, spec=spec, outputs=[o.detach().clone() for o in outs],
                             input_grad=x.grad.clone())
        print(name, 'params', sum(p.numel() for p in model.parameters()),
              'outputs', [tuple(o.shape) for o in outs],
              'output std', [round(float(o.detach().std()), 3) for o in outs], 'grad std', float(x.grad.std()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print('wrote', args.out, args.out.stat().st_size // 1024, 'KiB')


if __name__ == '__main__':
    main()
