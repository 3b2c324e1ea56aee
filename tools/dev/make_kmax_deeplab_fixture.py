"""Freeze the output-parity fixture of the kMaX-DeepLab head from the OFFICIAL PyTorch port.

Runs ``kmax_deeplab/modeling/pixel_decoder/kmax_pixel_decoder.py`` (``kMaXPixelDecoder``) and
``kmax_deeplab/modeling/transformer_decoder/kmax_transformer_decoder.py``
(``kMaXTransformerDecoder``) of https://github.com/bytedance/kmax-deeplab (imported as is from a
local clone) as the COCO panoptic R50 head (``configs/coco/panoptic_segmentation/kmax_r50.yaml``:
pixel decoder ``[1, 5, 1, 1]`` blocks of widths ``[512, 256, 128, 64]``, axial at strides 32 and
16; transformer decoder ``[2, 2, 2]`` layers, 128 queries, 133 classes; no auxiliary semantic
head) with random weights and random BatchNorm statistics, in eval mode, on random backbone maps
of a 97 x 129 image (the official odd-sided layout: each map is ``side // stride + 1``; the
official axial attention is built for exactly these sides). Keeps the class and mask logits of
the prediction after the third layer and of the final one. ``tests/models/test_kmax_deeplab.py``
rebuilds the same official state dict and inputs, converts the keys with
:func:`densekit.models.heads.kmax_deeplab.convert_official_kmax_deeplab` and compares. The
fixture stores no weights and no inputs (``tools/dev/official_fixture.py``).

Nothing of the official code is copied here. Its detectron2 imports are replaced by stand-ins:
``configurable`` and the registries are inert, ``ShapeSpec`` is a named tuple, ``Backbone`` a
plain module (the official ConvNeXt file is imported only for its ``LayerNorm``). The official
``nn.SyncBatchNorm`` (one process here) is reverted to BatchNorm with the same eps / momentum.
timm's ``DropPath`` / ``trunc_normal_tf_`` are the real ones (drop path is 0 / eval anyway).

Usage::

    python tools/dev/make_kmax_deeplab_fixture.py --official /path/to/kmax-deeplab \
        --out tests/fixtures/heads/kmax_deeplab_official.pt
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

CONFIG = dict(in_channels=[256, 512, 1024, 2048], num_classes=133, num_queries=128,
              pixel_decoder_channels=[512, 256, 128, 64], pixel_decoder_layers=[1, 5, 1, 1],
              pixel_decoder_types=['axial', 'axial', 'bottleneck', 'bottleneck'],
              transformer_decoder_layers=[2, 2, 2])
IMAGE_SIZE = (97, 129)
KEPT = (3, 6)  # predictions kept: after the third layer (stride 16), the final one


def input_maps(seed: int, batch: int = 1) -> list:
    gen = torch.Generator().manual_seed(seed)
    h, w = IMAGE_SIZE
    return [torch.randn((batch, c, h // s + 1, w // s + 1), generator=gen)
            for c, s in zip(CONFIG['in_channels'], (4, 8, 16, 32))]


def weight_spec(state_dict) -> list:
    """``(key, shape, dtype, mean, std)`` per entry, randomised at about the init's scale."""
    spec = []
    for key, t in state_dict.items():
        name = key.rsplit('.', 1)[-1]
        if not t.is_floating_point():
            mean, std = 0.0, 0.0
        elif name == 'running_var' or (t.ndim == 1 and name == 'weight'):
            mean, std = 1.0, 0.2
        elif t.ndim == 1:
            mean, std = 0.0, 0.2
        else:
            mean, std = 0.0, t[0].numel() ** -0.5
        spec.append((key, tuple(t.shape), str(t.dtype).replace('torch.', ''), mean, std))
    return spec


def _install_import_stand_ins() -> None:
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

    shape_spec = collections.namedtuple('ShapeSpec', ['channels', 'height', 'width', 'stride'],
                                        defaults=[None, None, None, None])
    modules = {
        'detectron2': {}, 'detectron2.config': {'configurable': lambda f: f},
        'detectron2.layers': {'ShapeSpec': shape_spec},
        'detectron2.modeling': {'SEM_SEG_HEADS_REGISTRY': _Registry(),
                                'BACKBONE_REGISTRY': _Registry(), 'Backbone': nn.Module,
                                'ShapeSpec': shape_spec},
        'detectron2.utils': {}, 'detectron2.utils.registry': {'Registry': _Registry},
    }
    for name, attrs in modules.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        mod.__path__ = []
        sys.modules[name] = mod


def load_official(official: Path):
    _install_import_stand_ins()
    pkg = 'kmax_official'
    for name in (pkg, f'{pkg}.backbone', f'{pkg}.pixel_decoder', f'{pkg}.transformer_decoder'):
        mod = types.ModuleType(name)
        mod.__path__ = []
        sys.modules[name] = mod
    loaded = {}
    for sub, file in (('backbone', 'convnext'), ('pixel_decoder', 'kmax_pixel_decoder'),
                      ('transformer_decoder', 'kmax_transformer_decoder')):
        name = f'{pkg}.{sub}.{file}'
        spec = importlib.util.spec_from_file_location(
            name, official / 'kmax_deeplab' / 'modeling' / sub / f'{file}.py')
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        loaded[file] = module
    return (loaded['kmax_pixel_decoder'].kMaXPixelDecoder,
            loaded['kmax_transformer_decoder'].kMaXTransformerDecoder)


class OfficialKMaXHead(nn.Module):
    """The official pixel decoder and predictor under the official head's attribute names."""

    def __init__(self, PixelDecoder, Predictor):
        super().__init__()
        from detectron2.layers import ShapeSpec
        c = CONFIG
        shapes = {f'res{i + 2}': ShapeSpec(channels=ch, stride=4 * 2 ** i)
                  for i, ch in enumerate(c['in_channels'])}
        self.pixel_decoder = PixelDecoder(
            shapes, dec_layers=c['pixel_decoder_layers'], dec_channels=c['pixel_decoder_channels'],
            layer_types=c['pixel_decoder_types'], drop_path_prob=0.0,
            spatial_shape=list(IMAGE_SIZE))
        self.predictor = Predictor(
            dec_layers=c['transformer_decoder_layers'],
            in_channels=[4 * w for w in c['pixel_decoder_channels']],
            num_classes=c['num_classes'], num_queries=c['num_queries'], drop_path_prob=0.0,
            add_aux_semantic_pred=False, use_aux_semantic_decoder=True,
            input_shape_from_backbone=shapes)

    def forward(self, feats):
        named = collections.OrderedDict((f'res{i + 2}', f) for i, f in enumerate(feats))
        panoptic, semantic, multi_scale = self.pixel_decoder.forward_features(named)
        out = self.predictor(multi_scale, panoptic, semantic)
        preds = out['aux_outputs'] + [dict(pred_logits=out['pred_logits'], pred_masks=out['pred_masks'])]
        return [p['pred_logits'] for p in preds], [p['pred_masks'] for p in preds]


def main() -> None:
    from mmengine.model import revert_sync_batchnorm
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True, help='clone of bytedance/kmax-deeplab')
    parser.add_argument('--out', type=Path,
                        default=Path('tests/fixtures/heads/kmax_deeplab_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    head = revert_sync_batchnorm(OfficialKMaXHead(*load_official(args.official)))
    spec = weight_spec(head.state_dict())
    head.load_state_dict(regenerate_state_dict(spec, args.seed), strict=True)
    head.eval()
    with torch.no_grad():
        classes, masks = head(input_maps(args.seed + 1))
    n = sum(CONFIG['transformer_decoder_layers']) + 1
    assert len(classes) == n, len(classes)
    # The k-means assignment is an arg-max over the queries: a near tie would make the parity
    # test flip on rounding. Report the smallest top-1 / top-2 gap of the kept predictions.
    gaps = [float((m.topk(2, dim=1).values.diff(dim=1)).abs().min()) for m in masks]
    print('smallest top-2 mask-logit gap per prediction', ['%.2e' % g for g in gaps])
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
