"""The full config a tool would run, after ``_base_`` inheritance and the command-line changes.

    python tools/analysis/print_config.py CONFIG [--data-root DIR] [--max-iters N | --max-epochs N]
        [--cfg-options k=v ...] [--save-path full.py]

The same steps as ``tools/train.py``: ``--cfg-options`` (checked for typos), ``--data-root``,
the schedule length, and ``classes`` copied into the datasets and heads.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def main(argv=None) -> None:
    from mmengine.config import DictAction

    from densekit.mm.runner import add_user_arguments, apply_user_arguments, load_config
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config fields')
    p.add_argument('--save-path', help='also write the full config to this .py file')
    add_user_arguments(p, training=True)
    args = p.parse_args(argv)
    import densekit  # noqa: F401
    cfg = load_config(args.config, args.cfg_options)
    apply_user_arguments(cfg, args)
    print(cfg.pretty_text)
    if args.save_path:
        cfg.dump(args.save_path)
        print(f'written to {args.save_path}', file=sys.stderr)


if __name__ == '__main__':
    main()
