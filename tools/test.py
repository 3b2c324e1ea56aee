"""Evaluate a checkpoint: ``python tools/test.py CONFIG CKPT [--out F] [--show-dir D] [--tta]``."""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a source checkout

from densekit.mm.runner import test  # noqa: E402

if __name__ == '__main__':
    test()
