"""Parameters and FLOPs of a config's model (or of a registered backbone) at a given input size.

    python tools/analysis/get_flops.py CONFIG [--shape H W] [--cfg-options k=v ...]
    python tools/analysis/get_flops.py --backbone swin_tiny [--shape 800 1333]

densekit's attention ops (``na2d``, ``window_attention``, ``halo_attention``) are counted by their
analytic cost (``densekit.utils.flops``); every other operator by torch's ``FlopCounterMode``. A
multiply-add counts 2 FLOPs; the ``GMACs`` column is the multiply-add count papers call "FLOPs".
The model runs one forward pass on a zero image of the given size (``mode='tensor'``, i.e. without
post-processing, as mmdet's and mmseg's ``get_flops.py`` do).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config', nargs='?', help='config file (omit with --backbone)')
    p.add_argument('--backbone', help='a registered backbone name instead of a config')
    p.add_argument('--shape', type=int, nargs=2, default=(800, 1333), metavar=('H', 'W'))
    from mmengine.config import DictAction
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                   help='override config fields')
    args = p.parse_args(argv)
    if (args.config is None) == (args.backbone is None):
        p.error('give exactly one of CONFIG or --backbone')
    return args


def build_from_config(path: str, options: dict | None):
    from mmengine.registry import MODELS, init_default_scope

    import densekit  # noqa: F401  (portable mmcv ops, densekit registrations)
    from densekit.mm.runner import load_config

    cfg = load_config(path, options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    cfg.model.pop('init_cfg', None)
    backbone = cfg.model.get('backbone')
    if isinstance(backbone, dict):
        backbone.pop('init_cfg', None)
        backbone.pop('pretrained', None)
    return MODELS.build(cfg.model), cfg.get('default_scope', 'mmdet')


def dummy_samples(scope: str, H: int, W: int):
    """One data sample with the image meta every mmdet / mmseg head reads in ``tensor`` mode."""
    meta = dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W), batch_input_shape=(H, W),
                scale_factor=(1.0, 1.0))
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample
        return [SegDataSample(metainfo=meta)]
    from mmdet.structures import DetDataSample
    return [DetDataSample(metainfo=meta)]


def main(argv=None):
    args = parse_args(argv)
    from densekit.utils.flops import count_flops

    H, W = args.shape
    x = torch.zeros(1, 3, H, W)
    if args.backbone:
        from densekit.models import build_backbone
        model = build_backbone(args.backbone).eval()
        run = lambda: model(x)  # noqa: E731
        name = args.backbone
    else:
        model, scope = build_from_config(args.config, args.cfg_options)
        model.eval()
        samples = dummy_samples(scope, H, W)
        run = lambda: model(x, samples, mode='tensor')  # noqa: E731
        name = args.config
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad(), count_flops() as c:
        run()
    print(f'model:   {name}')
    print(f'input:   1x3x{H}x{W}')
    print(f'params:  {params / 1e6:.2f} M')
    print(f'GFLOPs:  {c.total / 1e9:.2f}  (multiply-add = 2)')
    print(f'GMACs:   {c.macs / 1e9:.2f}  (what papers report as FLOPs)')
    for op, flops in sorted(c.by_op.items()):
        print(f'  of which {op}: {flops / 1e9:.3f} GFLOPs in {c.calls[op]} calls (analytic)')
    return c, params


if __name__ == '__main__':
    main()
