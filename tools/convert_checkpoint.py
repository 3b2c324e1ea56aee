#!/usr/bin/env python
"""Convert an official or timm backbone checkpoint to densekit's keys.

Usage::

    python tools/convert_checkpoint.py FAMILY SRC DST
    python tools/convert_checkpoint.py --list

``FAMILY`` is a converter name (``--list`` prints them, e.g. ``convnext``, ``swin``). ``SRC`` is
a ``.safetensors`` file (timm's hub format) or a pickle checkpoint, loaded with
``weights_only=True`` (a checkpoint is untrusted input); ``DST`` is written as
``{'state_dict': converted}`` so both densekit and mmengine's ``init_cfg`` can load it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install


def load_source(path: Path) -> dict:
    """Tensors of ``path`` without running pickled code."""
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file
        return load_file(str(path), device='cpu')
    try:
        # densekit's allow-list also admits the numpy / mmengine metadata of mm* checkpoints.
        from densekit.compat.safe_load import safe_load
    except ImportError:
        return torch.load(path, map_location='cpu', weights_only=True)
    return safe_load(path, map_location='cpu')


def main(argv: list[str] | None = None) -> int:
    from densekit.models.convert import convert_checkpoint, list_converters, unwrap_state_dict

    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('family', nargs='?', help='converter family (see --list)')
    parser.add_argument('src', nargs='?', type=Path, help='source checkpoint')
    parser.add_argument('dst', nargs='?', type=Path, help='output path')
    parser.add_argument('--list', action='store_true', help='print the known families and exit')
    args = parser.parse_args(argv)

    if args.list:
        print('\n'.join(list_converters()))
        return 0
    if args.family is None or args.src is None or args.dst is None:
        parser.error('FAMILY, SRC and DST are required (or --list)')
    if args.family not in list_converters():
        parser.error(f"unknown family {args.family!r}; known: {', '.join(list_converters())}")
    if not args.src.is_file():
        parser.error(f'SRC {str(args.src)!r} is not a file')

    src = unwrap_state_dict(load_source(args.src))
    out = convert_checkpoint(args.family, src)
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': out}, args.dst)
    print(f'{args.family}: {len(src)} tensors in {args.src} -> {len(out)} tensors in {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
