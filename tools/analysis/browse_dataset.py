"""The training pipeline's output drawn to PNGs: what the model sees, with its ground truth.

    python tools/analysis/browse_dataset.py CONFIG [--out-dir browse/] [--num 20]
        [--split train|val|test] [--data-root DIR] [--cfg-options k=v ...]

Each item of the split's dataset goes through the config's pipeline (augmentations included, so
two runs differ) and is written as ``<out-dir>/<image name>.png``: detection boxes / masks and
segmentation labels by the config's visualizer, depth maps in a colour scale beside the image
with a colour bar in metres.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import numpy as np  # noqa: E402


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--out-dir', default='browse')
    p.add_argument('--num', type=int, default=20, help='how many items (from the first)')
    p.add_argument('--split', choices=['train', 'val', 'test'], default='train')
    p.add_argument('--data-root', help='as tools/train.py --data-root')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config fields')
    return p.parse_args(argv)


def _depth_panel(image_rgb: np.ndarray, depth: np.ndarray, out: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    axes[0].imshow(image_rgb)
    axes[0].set_title('image')
    valid = depth > 0
    shown = np.where(valid, depth, np.nan)
    im = axes[1].imshow(shown, cmap='magma_r')
    axes[1].set_title('ground-truth depth (0 = no value)')
    fig.colorbar(im, ax=axes[1], fraction=0.046, label='metres')
    for ax in axes:
        ax.axis('off')
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    from mmengine.registry import DATASETS, VISUALIZERS, init_default_scope

    import densekit  # noqa: F401
    from densekit.mm.runner import apply_user_arguments, load_config
    cfg = load_config(args.config, args.cfg_options)
    args.max_iters = args.max_epochs = None
    apply_user_arguments(cfg, args)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    dataset = DATASETS.build(cfg[f'{args.split}_dataloader'].dataset)
    os.makedirs(args.out_dir, exist_ok=True)
    visualizer = None
    written = 0
    for i in range(min(args.num, len(dataset))):
        item = dataset[i]
        sample = item['data_samples']
        image = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1].copy()  # BGR CHW -> RGB HWC
        name = osp.splitext(osp.basename(sample.img_path))[0] + '.png'
        out = osp.join(args.out_dir, name)
        if 'gt_depth_map' in sample:
            _depth_panel(image, sample.gt_depth_map.data.squeeze().numpy(), out, sample.img_path)
        else:
            if visualizer is None:
                visualizer = VISUALIZERS.build(dict(cfg.visualizer, name='browse',
                                                    vis_backends=None, save_dir=None))
                visualizer.dataset_meta = dataset.metainfo
            visualizer.add_datasample(name, image, sample, draw_gt=True, draw_pred=False,
                                      show=False, out_file=out)
        written += 1
    print(f'{written} images written to {args.out_dir}')


if __name__ == '__main__':
    main()
