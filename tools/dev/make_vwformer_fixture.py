"""Freeze the output-parity fixture of the VWFormer head from the OFFICIAL ``VWHead``.

Runs ``mmsegmentation-custom/mmseg/models/decode_heads/vw_head.py`` of
https://github.com/yan-hao-tian/VW (imported as is from a local clone) with random weights and
random BatchNorm statistics on random backbone maps, in two settings:

* ``eval``: the official ADE20K head of the ConvNeXt-T config (``in_channels`` 96..768, 512
  channels, one attention head, 150 classes), in eval mode; the stride-8 map is 16 x 24 pixels,
  i.e. 2 x 3 pixel query windows (the odd width exercises the copy-shift padding's rounding);
* ``train``: a narrower head (256 channels, 16 attention heads, 19 classes, no dropout) in
  training mode (BatchNorm on batch statistics) on a batch of two 16 x 16 stride-8 maps; besides
  the logits it keeps the gradient of ``sum(logits ** 2)`` with respect to every input map.

``tests/models/test_vwformer.py`` rebuilds the same official state dicts and inputs, converts
the weights with :func:`densekit.models.heads.vwformer.convert_official_vw_head` and compares.
The fixture stores no weights and no inputs: every official state-dict entry is drawn as
``mean + std * randn(shape)`` from one generator seeded with ``seed`` in the stored ``spec`` order
(``tools/dev/official_fixture.py``), every input map from a generator seeded with ``seed + 1``.

Nothing of the official code is copied here. Its imports are served by what is installed
(mmcv 2.x's ``ConvModule`` / ``NonLocal2d``, the same classes as mmcv 1.x's for this use) and by
stand-ins: ``mmseg.ops.resize`` is mmseg 1.x's ``resize``, the relative ``..builder.HEADS`` is an
inert registry and ``.decode_head.BaseDecodeHead`` is mmseg 1.x's (whose ``conv_seg`` / ``dropout``
/ ``cls_seg`` are mmseg 0.x's); SyncBN is reverted to BatchNorm (same numerics on one process).
``einops`` must be importable (``pip install --target DIR einops`` and ``--pythonpath DIR``).

Usage::

    python tools/dev/make_vwformer_fixture.py --official /path/to/VW \
        --out tests/fixtures/heads/vwformer_official.pt
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch

from official_fixture import regenerate_state_dict  # tools/dev, beside this script

SETTINGS = {
    'eval': dict(head=dict(in_channels=[96, 192, 384, 768], channels=512, nheads=1,
                           num_classes=150, dropout_ratio=0.1),
                 batch=1, c2_size=(16, 24), train=False),
    'train': dict(head=dict(in_channels=[16, 32, 64, 128], channels=256, nheads=16,
                            num_classes=19, dropout_ratio=0.0),
                  batch=2, c2_size=(16, 16), train=True),
}


def input_maps(setting: dict, seed: int) -> list:
    """The four backbone maps (strides 4..32 relative to an image of 8x the stride-8 map)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = setting['c2_size']
    sizes = [(2 * h, 2 * w), (h, w), (h // 2, w // 2), (h // 4, w // 4)]
    return [torch.randn((setting['batch'], c) + s, generator=gen)
            for c, s in zip(setting['head']['in_channels'], sizes)]


def weight_spec(state_dict) -> list:
    """``(key, shape, dtype, mean, std)`` per entry: the scale of the official init, randomised
    (the official zero-initialised attention output norms would hide the attention)."""
    spec = []
    for key, t in state_dict.items():
        name = key.rsplit('.', 1)[-1]
        if not t.is_floating_point():
            mean, std = 0.0, 0.0
        elif name == 'running_var':
            mean, std = 1.0, 0.2
        elif name == 'running_mean':
            mean, std = 0.0, 0.2
        elif t.ndim == 1 and name == 'weight':
            mean, std = 1.0, 0.2
        elif t.ndim == 1:
            mean, std = 0.0, 0.2
        else:
            fan_in = t[0].numel()
            mean, std = 0.0, fan_in ** -0.5
        spec.append((key, tuple(t.shape), str(t.dtype).replace('torch.', ''), mean, std))
    return spec


def load_official_vw_head(official: Path):
    import densekit  # noqa: F401  (mmcv ops for mmseg 1.x's imports)
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead
    from mmseg.models.utils import resize

    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    pkg = 'vw_official'
    stand_ins = {
        'mmseg.ops': {'resize': resize},
        pkg: {}, f'{pkg}.builder': {'HEADS': _Registry()}, f'{pkg}.decode_heads': {},
        f'{pkg}.decode_heads.decode_head': {'BaseDecodeHead': BaseDecodeHead},
    }
    for name, attrs in stand_ins.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        mod.__path__ = []
        sys.modules[name] = mod
    path = official / 'mmsegmentation-custom/mmseg/models/decode_heads/vw_head.py'
    spec = importlib.util.spec_from_file_location(f'{pkg}.decode_heads.vw_head', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VWHead


def run_setting(VWHead, setting: dict, seed: int) -> dict:
    from mmengine.model import revert_sync_batchnorm
    torch.manual_seed(seed)
    head = VWHead(short_cut=True, norm_cfg=dict(type='SyncBN', requires_grad=True),
                  align_corners=False, in_index=[0, 1, 2, 3],
                  loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                  **setting['head'])
    head = revert_sync_batchnorm(head)
    spec = weight_spec(head.state_dict())
    head.load_state_dict(regenerate_state_dict(spec, seed), strict=True)
    head.train(setting['train'])
    inputs = [x.requires_grad_(setting['train']) for x in input_maps(setting, seed + 1)]
    logits = head(inputs)
    assert torch.isfinite(logits).all()
    out = dict(spec=spec, logits=logits.detach().clone())
    if setting['train']:
        logits.square().sum().backward()
        out['input_grads'] = [x.grad.clone() for x in inputs]
    print(setting['head'], 'logits', tuple(logits.shape), 'std', round(float(logits.detach().std()), 3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True, help='clone of yan-hao-tian/VW')
    parser.add_argument('--pythonpath', type=Path, default=None, help='directory with einops')
    parser.add_argument('--out', type=Path,
                        default=Path('tests/fixtures/heads/vwformer_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    if args.pythonpath is not None:
        sys.path.insert(0, str(args.pythonpath))

    VWHead = load_official_vw_head(args.official)
    fixture = dict(seed=args.seed, settings=SETTINGS,
                   results={name: run_setting(VWHead, s, args.seed) for name, s in SETTINGS.items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print('wrote', args.out, args.out.stat().st_size // 1024, 'KiB')


if __name__ == '__main__':
    main()
