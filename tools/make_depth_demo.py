"""Generate densekit's synthetic depth set: ``python tools/make_depth_demo.py data/synthetic_depth``.

Deterministic (scene ``i`` of a split depends only on the seed); see
:mod:`densekit.datasets.synthetic_depth` for what is rendered and the folder layout.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a source checkout

from densekit.datasets.synthetic_depth import make_synthetic_depth  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('out', nargs='?', default='data/synthetic_depth', help='output folder')
    p.add_argument('--num-train', type=int, default=64)
    p.add_argument('--num-val', type=int, default=16)
    p.add_argument('--height', type=int, default=96)
    p.add_argument('--width', type=int, default=128)
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args(argv)
    root = make_synthetic_depth(a.out, a.num_train, a.num_val, a.height, a.width, a.seed)
    print(f'wrote {a.num_train} train + {a.num_val} val scenes ({a.height}x{a.width}) to {root}')


if __name__ == '__main__':
    main()
