"""Freeze the output-parity fixture of the PEM head from the OFFICIAL pixel and transformer
decoders.

Runs ``pem/modeling/pixel_decoder/pem_pixel_decoder.py`` (``PEM_Pixel_Decoder``) and
``pem/modeling/transformer_decoder/pem_transformer_decoder.py``
(``MultiScaleMaskedTransformerDecoder``) of https://github.com/NiccoloCavagnero/PEM (imported as is
from a local clone) as the ADE20K R50 semantic-segmentation head (``pem_R50_bs32_160k.yaml``:
conv dim 128, mask dim 256, 100 queries, 8 heads, 6 decoder layers, 150 classes) with random
weights and random BatchNorm statistics, in eval mode, on random backbone maps of a 64 x 96
image, and keeps the class and mask logits of the last prediction and of the one after the
third layer. ``tests/models/test_pem.py`` rebuilds the same official state dict and inputs,
converts the keys with :func:`densekit.models.heads.pem.convert_official_pem` and compares. The
fixture stores no weights and no inputs (``tools/dev/official_fixture.py``).

Nothing of the official code is copied here. Its detectron2 / fvcore imports are replaced by
stand-ins: ``configurable`` and the registries are inert, ``Conv2d`` is ``nn.Conv2d``, ``get_norm``
gives ``nn.BatchNorm2d`` (the official SyncBN on one process), the fvcore initialisers are inert
(the weights are set from the spec), and ``ModulatedDeformConv`` (a CUDA-only detectron2 op) runs
torchvision's ``deform_conv2d`` with its mask, the DCNv2 of the same offset layout; densekit's
portable op is checked against mmcv's kernel separately (``tests/ops/test_mmcv_deform_conv.py``).
``nn.SyncBatchNorm`` of the official prototype attention is reverted to BatchNorm.

Usage::

    python tools/dev/make_pem_fixture.py --official /path/to/PEM \
        --out tests/fixtures/heads/pem_official.pt
"""
from __future__ import annotations

import argparse
import collections
import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn

from official_fixture import regenerate_state_dict  # tools/dev, beside this script

CONFIG = dict(in_channels=[256, 512, 1024, 2048], num_classes=150, conv_dim=128, mask_dim=256,
              hidden_dim=256, num_queries=100, nheads=8, dim_feedforward=2048, dec_layers=6)
IMAGE_SIZE = (64, 96)
KEPT = (3, 6)  # predictions kept: after the third layer, after the last


def input_maps(seed: int, batch: int = 1) -> list:
    gen = torch.Generator().manual_seed(seed)
    h, w = IMAGE_SIZE
    return [torch.randn((batch, c, h // s, w // s), generator=gen)
            for c, s in zip(CONFIG['in_channels'], (4, 8, 16, 32))]


def weight_spec(state_dict) -> list:
    """``(key, shape, dtype, mean, std)`` per entry, randomised at about the init's scale."""
    spec = []
    for key, t in state_dict.items():
        name = key.rsplit('.', 1)[-1]
        if not t.is_floating_point():
            mean, std = 0.0, 0.0
        elif name == 'running_var':
            mean, std = 1.0, 0.2
        elif name == 'alpha' or (t.ndim == 1 and name == 'weight'):
            mean, std = 1.0, 0.2
        elif t.ndim == 1:
            mean, std = 0.0, 0.2
        elif 'dcn_offset' in key:
            mean, std = 0.0, 0.05  # offsets of about a pixel
        else:
            mean, std = 0.0, t[0].numel() ** -0.5
        spec.append((key, tuple(t.shape), str(t.dtype).replace('torch.', ''), mean, std))
    return spec


def _install_import_stand_ins() -> None:
    import torchvision

    class _Registry:
        def __init__(self, *args):
            self._obj = {}

        def register(self, obj=None):
            if obj is None:
                return lambda o: self._obj.setdefault(o.__name__, o)
            self._obj[obj.__name__] = obj
            return obj

        def get(self, name):
            return self._obj[name]

    class Conv2d(nn.Conv2d):
        def __init__(self, *args, norm=None, activation=None, **kwargs):
            super().__init__(*args, **kwargs)
            assert norm is None and activation is None

    class ModulatedDeformConv(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                     groups=1, deformable_groups=1, bias=True, norm=None, activation=None):
            super().__init__()
            assert groups == 1 and deformable_groups == 1 and not bias
            self.stride, self.padding, self.dilation = stride, padding, dilation
            self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
            self.bias = None

        def forward(self, x, offset, mask):
            return torchvision.ops.deform_conv2d(x, offset, self.weight, None, stride=self.stride,
                                                 padding=self.padding, dilation=self.dilation,
                                                 mask=mask)

    def get_norm(norm, out_channels):
        assert norm in ('BN', 'SyncBN'), norm
        return nn.BatchNorm2d(out_channels)

    shape_spec = collections.namedtuple('ShapeSpec', ['channels', 'height', 'width', 'stride'],
                                        defaults=[None, None, None, None])
    inert = lambda *args, **kwargs: None  # noqa: E731
    modules = {
        'detectron2': {}, 'detectron2.config': {'configurable': lambda f: f},
        'detectron2.layers': {'Conv2d': Conv2d, 'DeformConv': None,
                              'ModulatedDeformConv': ModulatedDeformConv, 'ShapeSpec': shape_spec,
                              'get_norm': get_norm},
        'detectron2.modeling': {'SEM_SEG_HEADS_REGISTRY': _Registry()},
        'detectron2.utils': {}, 'detectron2.utils.registry': {'Registry': _Registry},
        'fvcore': {}, 'fvcore.nn': {},
        'fvcore.nn.weight_init': {'c2_msra_fill': inert, 'c2_xavier_fill': inert},
    }
    for name, attrs in modules.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        mod.__path__ = []
        sys.modules[name] = mod
    sys.modules['fvcore.nn'].weight_init = sys.modules['fvcore.nn.weight_init']


def load_official(official: Path):
    _install_import_stand_ins()
    pkg = 'pem_official'
    for name in (pkg, f'{pkg}.pixel_decoder', f'{pkg}.transformer_decoder'):
        mod = types.ModuleType(name)
        mod.__path__ = []
        sys.modules[name] = mod
    loaded = {}
    for sub, file in (('transformer_decoder', 'position_encoding'),
                      ('transformer_decoder', 'pem_transformer_decoder'),
                      ('pixel_decoder', 'pem_pixel_decoder')):
        name = f'{pkg}.{sub}.{file}'
        spec = importlib.util.spec_from_file_location(
            name, official / 'pem' / 'modeling' / sub / f'{file}.py')
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        loaded[file] = module
    return (loaded['pem_pixel_decoder'].PEM_Pixel_Decoder,
            loaded['pem_transformer_decoder'].MultiScaleMaskedTransformerDecoder)


class OfficialPEMHead(nn.Module):
    """The official pixel decoder and predictor under the official head's attribute names."""

    def __init__(self, PixelDecoder, Predictor):
        super().__init__()
        c = CONFIG
        shapes = {f'res{i + 2}': (ch, 4 * 2 ** i) for i, ch in enumerate(c['in_channels'])}
        from detectron2.layers import ShapeSpec
        self.pixel_decoder = PixelDecoder(
            {k: ShapeSpec(channels=ch, stride=s) for k, (ch, s) in shapes.items()},
            conv_dim=c['conv_dim'], mask_dim=c['mask_dim'], norm='SyncBN')
        self.predictor = Predictor(
            c['conv_dim'], True, num_classes=c['num_classes'], hidden_dim=c['hidden_dim'],
            num_queries=c['num_queries'], nheads=c['nheads'], dim_feedforward=c['dim_feedforward'],
            dec_layers=c['dec_layers'], pre_norm=True, mask_dim=c['mask_dim'],
            enforce_input_project=True)

    def forward(self, feats):
        named = collections.OrderedDict((f'res{i + 2}', f) for i, f in enumerate(feats))
        mask_features, _, multi_scale = self.pixel_decoder.forward_features(named)
        out = self.predictor(multi_scale, mask_features, None)
        preds = out['aux_outputs'] + [dict(pred_logits=out['pred_logits'], pred_masks=out['pred_masks'])]
        return [p['pred_logits'] for p in preds], [p['pred_masks'] for p in preds]


def main() -> None:
    from mmengine.model import revert_sync_batchnorm
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True, help='clone of NiccoloCavagnero/PEM')
    parser.add_argument('--out', type=Path, default=Path('tests/fixtures/heads/pem_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    head = OfficialPEMHead(*load_official(args.official))
    head = revert_sync_batchnorm(head)
    spec = weight_spec(head.state_dict())
    head.load_state_dict(regenerate_state_dict(spec, args.seed), strict=True)
    head.eval()
    with torch.no_grad():
        classes, masks = head(input_maps(args.seed + 1))
    assert len(classes) == CONFIG['dec_layers'] + 1
    fixture = dict(config=dict(CONFIG), image_size=IMAGE_SIZE, seed=args.seed, spec=spec, kept=KEPT,
                   classes={i: classes[i].clone() for i in KEPT},
                   masks={i: masks[i].clone() for i in KEPT})
    for i in KEPT:
        print(i, tuple(classes[i].shape), tuple(masks[i].shape),
              'std', float(classes[i].std()), float(masks[i].std()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print('wrote', args.out, args.out.stat().st_size // 1024, 'KiB')


if __name__ == '__main__':
    main()
