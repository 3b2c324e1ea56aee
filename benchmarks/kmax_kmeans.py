"""k-means cross-attention of kMaX-DeepLab: the one-hot matmul against an index (scatter-add) form.

kMaX's update of the cluster centres is ``einsum('blm,bdm->bdl', one_hot(argmax_q(logits)), V)``
(:func:`densekit.models.heads.kmax_deeplab.kmeans_cross_attention`, the official port's
formulation): it materialises a ``[B, Q, HW]`` one-hot and spends ``Q x HW x C`` multiply-adds
on a sum in which each pixel meets one cluster only. The index form adds every pixel's value
into its cluster's slot (``scatter_add`` over ``HW x C`` entries; its backward is a gather).
Both are plain PyTorch; no fused kernel exists. Shapes: the official COCO recipe (1281 crops,
2 images per GPU, 128 clusters, value depth 256) at strides 32, 16 and 8.

Prints one markdown row per (shape, pass): milliseconds of each form, the ratio
``one-hot / index`` (> 1: the index form is faster) and the largest difference of the outputs.
Nothing here is asserted.

    OMP_NUM_THREADS=1 python benchmarks/kmax_kmeans.py --device cpu
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / 'benchmarks')]

from _timing import median_ms  # noqa: E402  (benchmarks/_timing.py)
from densekit.models.heads.kmax_deeplab import kmeans_cross_attention  # noqa: E402

SHAPES = {'stride 32 (41x41)': 41 * 41, 'stride 16 (81x81)': 81 * 81, 'stride 8 (161x161)': 161 * 161}


def index_form(mask_logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The same sums as :func:`kmeans_cross_attention` by scatter-add of each pixel's value."""
    B, Q, _ = mask_logits.shape
    index = mask_logits.detach().argmax(1, keepdim=True).expand(-1, value.shape[1], -1)
    return value.new_zeros(B, value.shape[1], Q).scatter_add(2, index, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--queries', type=int, default=128)
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--reps', type=int, default=10)
    args = parser.parse_args()
    dev = args.device
    print('| shape | pass | one-hot ms | index ms | one-hot / index | max abs diff |')
    print('|---|---|---|---|---|---|')
    for name, hw in SHAPES.items():
        gen = torch.Generator().manual_seed(0)
        logits = torch.randn(args.batch, args.queries, hw, generator=gen).to(dev)
        value = torch.randn(args.batch, args.channels, hw, generator=gen).to(dev).requires_grad_()
        with torch.no_grad():
            diff = float((kmeans_cross_attention(logits, value) - index_form(logits, value)).abs().max())
        grad = torch.randn(args.batch, args.channels, args.queries, generator=gen).to(dev)
        for pas in ('fwd', 'fwd+bwd'):
            def run(fn):
                if pas == 'fwd':
                    def call():
                        with torch.no_grad():
                            return fn(logits, value)
                    return call
                return lambda: torch.autograd.grad(fn(logits, value), value, grad)
            base = median_ms(run(kmeans_cross_attention), dev, reps=args.reps)
            fast = median_ms(run(index_form), dev, reps=args.reps)
            print(f'| {name} | {pas} | {base:.2f} | {fast:.2f} | {base / fast:.2f} | {diff:.1e} |')


if __name__ == '__main__':
    main()
