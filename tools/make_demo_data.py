"""Generate densekit's synthetic quickstart datasets (no download; deterministic).

Usage:
    python tools/make_demo_data.py data/quickstart                # COCO shapes + ADE shapes
    python tools/make_demo_data.py OUT --kind coco --num-train 200 --num-val 50 --seed 0
    python tools/make_demo_data.py OUT --kind coco_panoptic    # the COCO-panoptic-layout set

Writes ``OUT/coco/{train,val}/*.jpg`` + ``OUT/coco/annotations/instances_{train,val}.json`` and
``OUT/ade/{images,annotations}/{training,validation}/``; ``--kind coco_panoptic`` writes
``OUT/coco_panoptic/{train,val}/*.jpg`` + ``OUT/coco_panoptic/annotations/panoptic_{train,val}``
(``.json`` and a folder of PNGs). The same seed gives identical files.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from densekit.datasets.synthetic import make_demo_data  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('out_dir', help='output root, e.g. data/quickstart')
    parser.add_argument('--kind', choices=('coco', 'ade', 'all', 'coco_panoptic'), default='all')
    parser.add_argument('--num-train', type=int, default=200)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    written = make_demo_data(args.out_dir, args.kind, args.num_train, args.num_val, args.seed)
    for kind, root in written.items():
        print(f'{kind}: {root} ({args.num_train} train + {args.num_val} val images)')
    print(f'done in {time.perf_counter() - t0:.1f} s')


if __name__ == '__main__':
    main()
