"""Benchmark multi-scale deformable attention: grid_sample reference vs the fused Triton kernels.

Shapes follow Deformable DETR on an ~800x1066 image (4 levels, 8 heads, head_dim 32, 4 points):
the encoder (one query per pixel of every level) and the decoder (300 queries).

Usage::

    python benchmarks/ms_deform_attn.py            # CUDA: reference and triton, fwd and fwd+bwd
    python benchmarks/ms_deform_attn.py --device cpu --small   # reference only (Triton needs CUDA)
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from _timing import median_ms  # noqa: E402  (benchmarks/_timing.py)
from densekit.ops.mmcv.ms_deform_attn import ms_deform_attn  # noqa: E402

LEVELS = [(100, 134), (50, 67), (25, 34), (13, 17)]


def make_inputs(levels, bs, nq, heads, dim, points, device, dtype):
    shapes = torch.tensor(levels, device=device)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    value = torch.randn(bs, int(areas.sum()), heads, dim, device=device, dtype=dtype)
    loc = torch.rand(bs, nq, heads, len(levels), points, 2, device=device, dtype=dtype)
    attn = torch.rand(bs, nq, heads, len(levels), points, device=device, dtype=dtype)
    attn = attn / attn.sum((-1, -2), keepdim=True)
    return value, shapes, starts, loc, attn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--dtype', default='float32', choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument('--small', action='store_true', help='quarter-resolution levels')
    parser.add_argument('--reps', type=int, default=5, help='CPU repetitions')
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    levels = [(max(1, h // 4), max(1, w // 4)) for h, w in LEVELS] if args.small else LEVELS
    num_keys = sum(h * w for h, w in levels)
    backends = ['reference'] + (['triton'] if args.device == 'cuda' else [])
    if args.device != 'cuda':
        print('note: the Triton kernels need CUDA; timing the reference only')
    print(f'device={args.device} dtype={args.dtype} levels={levels}')
    for name, nq in (('encoder', num_keys), ('decoder', 300)):
        value, shapes, starts, loc, attn = make_inputs(levels, 2, nq, 8, 32, 4, args.device,
                                                       dtype)
        for backend in backends:
            def fwd():
                with torch.no_grad():
                    ms_deform_attn(value, shapes, starts, loc, attn, backend=backend)

            leaves = [t.clone().requires_grad_(True) for t in (value, loc, attn)]

            def fwd_bwd():
                out = ms_deform_attn(leaves[0], shapes, starts, leaves[1], leaves[2],
                                     backend=backend)
                out.backward(torch.ones_like(out))

            print(f'{name:8s} nq={nq:6d} {backend:9s} fwd {median_ms(fwd, args.device, warmup=1, reps=args.reps):9.2f}'
                  f' ms   fwd+bwd {median_ms(fwd_bwd, args.device, warmup=1, reps=args.reps):9.2f} ms')


if __name__ == '__main__':
    main()
