"""k-means cross-attention of kMaX-DeepLab: the official one-hot matmul, an index (scatter-add)
form, and the fused Triton kernel of ``densekit.ops.kmeans_attention``.

kMaX's update of the cluster centres is ``einsum('bqp,bcp->bcq', one_hot(argmax_q(logits)), V)``
(``densekit.ops.kmeans_attention(backend='reference')``, the official port's formulation): it
materialises a ``[B, Q, HW]`` one-hot and spends ``Q x HW x C`` multiply-adds on a sum in which
each pixel meets one cluster only. The index form adds every pixel's value into its cluster's
slot (``scatter_add`` over ``HW x C`` entries; its backward is a gather; atomics on CUDA). The
Triton kernel (``backend='triton'``) fuses the argmax with the one-hot matmul, one-hot tiles in
registers only; its backward is a gather at the stored assignment. Shapes: the official COCO
recipe (1281 crops, 2 images per GPU, 128 clusters, value depth 256) at strides 32, 16 and 8.

Prints one markdown row per (dtype, shape, pass): milliseconds of each form and the ratios
``one-hot / form`` (> 1: that form is faster than the official one), after checking each form's
output against the one-hot form (largest difference in the last column). The Triton rows run on
CUDA only (on the CPU the kernel would run in the interpreter: "not measured"), or with
``--smoke`` under ``TRITON_INTERPRET=1`` (tiny shapes, a check that every row runs). Nothing here
is asserted.

    OMP_NUM_THREADS=1 python benchmarks/kmax_kmeans.py --device cpu
    python benchmarks/kmax_kmeans.py --device cuda --dtypes float32 bfloat16 --json kmax_kmeans.json
    TRITON_INTERPRET=1 python benchmarks/kmax_kmeans.py --device cpu --smoke
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'benchmarks')]

from _timing import median_ms  # noqa: E402  (benchmarks/_timing.py)
from densekit.ops import kmeans_attention  # noqa: E402

SHAPES = {'stride 32 (41x41)': 41 * 41, 'stride 16 (81x81)': 81 * 81, 'stride 8 (161x161)': 161 * 161}
SMOKE_SHAPES = {'smoke (7x9)': 63}
FORMS = ('one-hot', 'index', 'triton')


def index_form(mask_logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The same sums as the one-hot form by scatter-add of each pixel's value."""
    B, Q, _ = mask_logits.shape
    index = mask_logits.detach().argmax(1, keepdim=True).expand(-1, value.shape[1], -1)
    return value.new_zeros(B, value.shape[1], Q).scatter_add(2, index, value)


def _form(name: str):
    if name == 'one-hot':
        return lambda logits, value: kmeans_attention(logits, value, backend='reference')
    if name == 'triton':
        return lambda logits, value: kmeans_attention(logits, value, backend='triton')
    return index_form


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtypes', nargs='+', default=['float32'], choices=('float32', 'float16', 'bfloat16'),
                        help='value dtype (the logits too); the COCO recipe trains in fp32')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--queries', type=int, default=128)
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--reps', type=int, default=10)
    parser.add_argument('--smoke', action='store_true', help='tiny shapes, every row (SMOKE_SHAPES)')
    parser.add_argument('--json', default=None, help='write the rows (and the setup) here')
    args = parser.parse_args()
    dev = torch.device(args.device)
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    with_triton = dev.type == 'cuda' or (args.smoke and os.environ.get('TRITON_INTERPRET') == '1')
    meta = dict(device=str(dev), torch=torch.__version__, batch=args.batch, queries=args.queries,
                channels=args.channels, reps=args.reps)
    if dev.type == 'cuda':
        meta['gpu'] = torch.cuda.get_device_name(dev)
    rows = []
    print('| dtype | shape | pass | one-hot ms | index ms | Triton ms | one-hot / index | one-hot / Triton | '
          'max abs diff (index / Triton) |')
    print('|---|---|---|---|---|---|---|---|---|')
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for name, hw in shapes.items():
            gen = torch.Generator().manual_seed(0)
            logits = torch.randn(args.batch, args.queries, hw, generator=gen).to(dev, dtype)
            value = torch.randn(args.batch, args.channels, hw, generator=gen).to(dev, dtype).requires_grad_()
            grad = torch.randn(args.batch, args.channels, args.queries, generator=gen).to(dev, dtype)
            forms = [f for f in FORMS if f != 'triton' or with_triton]
            with torch.no_grad():
                base_out = _form('one-hot')(logits, value).float()
                diffs = {f: float((_form(f)(logits, value).float() - base_out).abs().max()) for f in forms}
            for pas in ('fwd', 'fwd+bwd'):
                def run(fn):
                    if pas == 'fwd':
                        def call():
                            with torch.no_grad():
                                return fn(logits, value)
                        return call
                    return lambda: torch.autograd.grad(fn(logits, value), value, grad)
                ms = {f: median_ms(run(_form(f)), dev, reps=args.reps) for f in forms}
                row = dict(dtype=dtype_name, shape=name, hw=hw, pass_=pas, **{f'{f}_ms': ms[f] for f in forms},
                           **{f'{f}_max_abs_diff': diffs[f] for f in forms if f != 'one-hot'})
                rows.append(row)
                tri = f"{ms['triton']:.3f}" if 'triton' in ms else 'not measured'
                tri_ratio = f"{ms['one-hot'] / ms['triton']:.2f}" if 'triton' in ms else '-'
                tri_diff = f"{diffs['triton']:.1e}" if 'triton' in diffs else '-'
                print(f"| {dtype_name} | {name} | {pas} | {ms['one-hot']:.3f} | {ms['index']:.3f} | {tri} | "
                      f"{ms['one-hot'] / ms['index']:.2f} | {tri_ratio} | {diffs['index']:.1e} / {tri_diff} |",
                      flush=True)
                if args.json:  # after every row: a run cut short keeps what it measured
                    with open(args.json, 'w') as fh:
                        json.dump(dict(meta, rows=[{k.rstrip('_'): v for k, v in r.items()} for r in rows]), fh,
                                  indent=1)
    if not with_triton:
        print(f'# Triton: not measured (device {dev.type}: the kernel runs on CUDA; on the CPU only through '
              'the interpreter)')


if __name__ == '__main__':
    main()
