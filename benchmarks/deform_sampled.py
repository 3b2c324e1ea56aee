"""Benchmark deformable sampled-key attention (DAT++) against the official PyTorch formulation.

The official path (``DAttentionBaseline.forward`` of LeapLabTHU/DAT-Detection from the projected
q / k / v on, restated here: the code is not copied) builds the whole ``[B * heads, H * W, N]``
bias with ``grid_sample`` of the group-expanded table at every query-to-sample displacement, adds
it to the ``einsum`` logits, softmax, ``einsum``. densekit's op
(:func:`densekit.ops.deform_sampled_attention`) on the reference backend (chunked rows) and, on
CUDA, the Triton kernels (bias interpolated inside the kernel). Both get the same inputs; the
official output is checked against ours before timing.

Shapes: DAT-T++ stages at an 800x1333 image padded to 800x1344 (maps 200x336 ... 25x42; every
stage samples a 25x42 grid, ``N = 1050`` keys; heads 2 / 4 / 8 / 16 of 32 channels; groups
1 / 2 / 4 / 8; tables 111 / 55 / 27 / 13 per side).

Usage::

    python benchmarks/deform_sampled.py --device cuda                   # all stages, fwd and fwd+bwd
    python benchmarks/deform_sampled.py --device cpu --stages 3 --dtype float32 --reps 5
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from _timing import median_ms  # noqa: E402  (benchmarks/_timing.py)
from densekit.ops.deform_sampled import deform_sampled_attention  # noqa: E402

# stage -> (H, W, heads, groups, table side)
STAGES = {0: (200, 336, 2, 1, 111), 1: (100, 168, 4, 2, 55), 2: (50, 84, 8, 4, 27), 3: (25, 42, 16, 8, 13)}
HK, WK, HEAD_DIM = 25, 42, 32


def make_inputs(stage: int, batch: int, device, dtype):
    H, W, heads, groups, side = STAGES[stage]
    g = torch.Generator().manual_seed(stage)
    n = HK * WK
    mk = lambda *s: torch.randn(*s, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    pos = (torch.rand(batch, groups, n, 2, generator=g) * 2 - 1).to(device=device, dtype=dtype)
    return dict(q=mk(batch, H, W, heads, HEAD_DIM), k=mk(batch, n, heads, HEAD_DIM), v=mk(batch, n, heads, HEAD_DIM),
                pos=pos, table=mk(heads, side, side) * 0.1)


def official(q, k, v, pos, table, scale):
    """The official formulation on the op's layouts (the layout changes are outside its cost: the
    official module holds q / k / v as ``[B * heads, head_dim, tokens]``)."""
    B, H, W, h, D = q.shape
    G, n = pos.shape[1], k.shape[1]
    qo = q.reshape(B, H * W, h, D).permute(0, 2, 3, 1).reshape(B * h, D, H * W)
    ko = k.permute(0, 2, 3, 1).reshape(B * h, D, n)
    vo = v.permute(0, 2, 3, 1).reshape(B * h, D, n)
    attn = torch.einsum('b c m, b c n -> b m n', qo, ko).mul(scale)
    ys = torch.arange(H, dtype=q.dtype, device=q.device).div(H - 1.0).mul(2.0).sub(1.0)
    xs = torch.arange(W, dtype=q.dtype, device=q.device).div(W - 1.0).mul(2.0).sub(1.0)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing='ij'), -1).reshape(1, H * W, 1, 2)
    disp = (grid - pos.reshape(B * G, 1, n, 2)).mul(0.5)
    rpe = table[None].expand(B, -1, -1, -1).reshape(B * G, h // G, *table.shape[1:])
    bias = F.grid_sample(rpe, disp[..., (1, 0)], mode='bilinear', align_corners=True)
    attn = (attn + bias.reshape(B * h, H * W, n)).softmax(2)
    return torch.einsum('b m n, b c n -> b c m', attn, vo)  # [B * heads, D, H * W]


def _to_official_layout(out):
    B, H, W, h, D = out.shape
    return out.reshape(B, H * W, h, D).permute(0, 2, 3, 1).reshape(B * h, D, H * W)


def run_case(stage, batch, impl, device, dtype, reps):
    inputs = make_inputs(stage, batch, device, dtype)
    scale = HEAD_DIM ** -0.5
    if impl == 'official':
        fn = lambda **a: official(**a, scale=scale)  # noqa: E731
    else:
        fn = lambda **a: _to_official_layout(deform_sampled_attention(**a, scale=scale, backend=impl))  # noqa: E731
    leaves = {n: t.clone().requires_grad_(True) for n, t in inputs.items()}
    go = torch.randn_like(fn(**inputs))

    def fwd():
        with torch.no_grad():
            return fn(**inputs)

    def fwdbwd():
        out = fn(**leaves)
        out.backward(go)

    row = dict(stage=stage, batch=batch, impl=impl, dtype=str(dtype).replace('torch.', ''), device=str(device))
    for name, f in (('fwd', fwd), ('fwdbwd', fwdbwd)):
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        row[f'{name}_ms'] = median_ms(f, device, warmup=1, reps=reps)
        if device.type == 'cuda':
            row[f'{name}_peak_MiB'] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    return row


def check(stage, batch, impl, device, dtype):
    """Max |official - impl| on one case's forward (inputs as in the timing)."""
    inputs = make_inputs(stage, batch, device, dtype)
    with torch.no_grad():
        ref = official(**inputs, scale=HEAD_DIM ** -0.5).float()
        out = _to_official_layout(deform_sampled_attention(**inputs, scale=HEAD_DIM ** -0.5, backend=impl)).float()
    return (ref - out).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--dtype', default=None, help='default: bfloat16 on CUDA, float32 on CPU')
    parser.add_argument('--stages', default='0,1,2,3')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--reps', type=int, default=20)
    parser.add_argument('--impls', default=None, help='default: official,reference (+ triton on CUDA)')
    parser.add_argument('--json', default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ('bfloat16' if device.type == 'cuda' else 'float32'))
    impls = (args.impls or ('official,reference,triton' if device.type == 'cuda' else 'official,reference')).split(',')
    rows = []
    print(f'# {device} {dtype} batch {args.batch} torch {torch.__version__} threads {torch.get_num_threads()}')
    print('| stage | impl | max abs diff vs official | fwd ms | fwd+bwd ms | fwd peak MiB | fwd+bwd peak MiB |')
    print('|---|---|---|---|---|---|---|')
    for stage in (int(s) for s in args.stages.split(',')):
        for impl in impls:
            try:
                diff = 0.0 if impl == 'official' else check(stage, args.batch, impl, device, dtype)
                row = run_case(stage, args.batch, impl, device, dtype, args.reps)
                row['max_abs_diff'] = diff
            except (RuntimeError, torch.OutOfMemoryError) as e:  # OOM or an unavailable backend
                row = dict(stage=stage, impl=impl, error=f'{type(e).__name__}: {str(e)[:120]}')
                if device.type == 'cuda':
                    torch.cuda.empty_cache()
            rows.append(row)
            f = lambda k: f'{row[k]:.3g}' if isinstance(row.get(k), float) else row.get('error', '-')[:60]  # noqa: E731
            print(f"| {stage} | {impl} | {f('max_abs_diff')} | {f('fwd_ms')} | {f('fwdbwd_ms')} | "
                  f"{f('fwd_peak_MiB')} | {f('fwdbwd_peak_MiB')} |", flush=True)
            if args.json:
                with open(args.json, 'w') as fh:
                    json.dump(dict(device=str(device), dtype=str(dtype), rows=rows), fh, indent=1)


if __name__ == '__main__':
    main()
