"""Loss, learning-rate and metric curves of a training run, as a PNG (matplotlib only).

    python tools/analysis/plot_curves.py WORK_DIR [--out curves.png] [--keys loss lr coco/bbox_mAP]

WORK_DIR is a ``tools/train.py`` work dir (its newest ``<timestamp>/vis_data/scalars.json`` is
read) or a ``scalars.json`` itself. Losses, learning rates and validation metrics are drawn in
separate panels. Training writes the same picture to ``WORK_DIR/curves.png`` at each validation
unless the config sets ``plot_curves = False``.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('work_dir', help='work dir of a run, or a scalars.json')
    p.add_argument('--out', help='PNG to write (default: WORK_DIR/curves.png)')
    p.add_argument('--keys', nargs='+', help='only these scalars (e.g. loss lr coco/bbox_mAP)')
    args = p.parse_args(argv)
    from densekit.mm.curves import find_scalars, plot_curves
    scalars = find_scalars(args.work_dir)
    out = args.out or osp.join(args.work_dir if osp.isdir(args.work_dir)
                               else osp.dirname(scalars), 'curves.png')
    drawn = plot_curves(scalars, out, args.keys)
    print(f'{out}: {", ".join(drawn)} (from {scalars})')


if __name__ == '__main__':
    main()
