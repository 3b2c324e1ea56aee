"""Strided halo queries: ``halo_attention(query_stride=s)`` against the padded-query formulation
(the strided queries placed in the corner of full ``b x b`` blocks, attended at stride 1 and
cropped: 4x the query work at stride 2). Same process, median fwd+bwd of each.

    python benchmarks/halo_stride.py                       # CPU, reference backend
    python benchmarks/halo_stride.py --device cuda --backend triton --dtype bfloat16
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from _timing import samples_ms  # noqa: E402  (benchmarks/_timing.py)
from densekit.ops import halo_attention  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--shape', default='4,32,32,8,32', help='B,H,W,heads,head_dim of the keys')
    ap.add_argument('--block', type=int, default=8)
    ap.add_argument('--halo', type=int, default=2)
    ap.add_argument('--stride', type=int, default=2)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--backend', default='reference')
    ap.add_argument('--dtype', default='float32')
    ap.add_argument('--reps', type=int, default=7)
    args = ap.parse_args()
    if args.device == 'cpu':
        torch.set_num_threads(2)
    B, H, W, h, D = map(int, args.shape.split(','))
    b, hs, s = args.block, args.halo, args.stride
    bq, nbh, nbw = b // s, H // b, W // b
    dtype = getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(0)

    def leaf(*shape):
        return torch.randn(*shape, generator=g).to(args.device, dtype).requires_grad_()

    q = leaf(B, H // s, W // s, h, D)
    k, v = leaf(B, H, W, h, D), leaf(B, H, W, h, D)
    rh, rw = leaf(2 * (b + 2 * hs) - 1, D), leaf(2 * (b + 2 * hs) - 1, D)
    go = torch.randn(B, H // s, W // s, h, D, generator=g).to(args.device, dtype)

    def strided():
        return halo_attention(q, k, v, b, hs, rel_h=rh, rel_w=rw, query_stride=s, backend=args.backend)

    def padded():
        qp = F.pad(q.reshape(B, nbh, bq, nbw, bq, h, D), (0, 0, 0, 0, 0, b - bq, 0, 0, 0, b - bq))
        out = halo_attention(qp.reshape(B, H, W, h, D), k, v, b, hs, rel_h=rh, rel_w=rw, backend=args.backend)
        return out.reshape(B, nbh, b, nbw, b, h, D)[:, :, :bq, :, :bq].reshape(B, H // s, W // s, h, D)

    with torch.no_grad():
        print(f'max |strided - padded| = {(strided() - padded()).abs().max().item():.3g}')
    print(f'{args.device} {args.backend} {args.dtype} keys {args.shape} block {b} halo {hs} stride {s}, '
          f'torch {torch.__version__}: fwd+bwd median ms')
    for name, fn in (('padded (query_stride=1)', padded), (f'query_stride={s}', strided)):
        ts = samples_ms(lambda: fn().backward(go), args.device, warmup=0, reps=args.reps)
        print(f'  {name}: {sorted(ts)[len(ts) // 2]:.1f}')


if __name__ == '__main__':
    main()
