#!/usr/bin/env python
"""FasterViT: densekit vs the official dense backbone, same weights, same run.

    python benchmarks/fastervit.py --official /path/to/FasterViT [--device cpu|cuda] \
        [--model fastervit_2] [--size 800 1344] [--batch 1] [--reps 7] [--threads 1]

The official code (``downstream/object_detection/dino/models/dino/fastervit.py`` of a local clone
of https://github.com/NVlabs/FasterViT) is imported at run time, as
``tools/dev/make_fastervit_fixture.py`` does; nothing of it is copied here. Two comparisons, each
official and densekit with the same random weights (outputs checked equal first):

* ``attention``: the stage-2 hierarchical-attention window attention (``WindowAttention``: qkv,
  attention over ``[4 carrier tokens | 7x7 window]`` with the position bias, projection) on the
  model's stage-2 token shape at ``--size``; densekit's module runs on
  ``window_extra_attention`` with the automatic backend (flex on CUDA) and, separately, with
  ``DENSEKIT_ATTN_BACKEND=reference``. Forward and forward + backward.
* ``backbone``: the whole backbone's training step (forward + backward of the sum of the four
  maps, train mode).

Times are medians of ``--reps`` runs after two warm-ups, the implementations alternating within
each repetition (CUDA: events; the peak allocated memory of one call). Output: a markdown table
on stdout, after a stamp line.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / 'tools' / 'dev')]

from densekit.models import build_backbone, convert_checkpoint  # noqa: E402
from densekit.models.backbones.fastervit import WindowAttention  # noqa: E402
from densekit.ops._backend import ENV_VAR  # noqa: E402
from make_fastervit_fixture import NestedTensor, load_official_module  # noqa: E402  (tools/dev)

OFFICIAL_NAMES = {'fastervit_0': 'faster_vit_0_224', 'fastervit_1': 'faster_vit_1_224',
                  'fastervit_2': 'faster_vit_2_224', 'fastervit_3': 'faster_vit_3_224',
                  'fastervit_4': 'faster_vit_4_224'}


@contextlib.contextmanager
def attn_backend(name):
    old = os.environ.get(ENV_VAR)
    if name is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = old


def _time_once(fn, device: str) -> float:
    if device == 'cuda':
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def measure(fns: dict, device: str, reps: int) -> dict:
    """``name -> (median ms, peak allocated MiB on CUDA)`` of each ``(fn, backend)``. The
    implementations alternate within every repetition, so load from other processes spreads
    over all of them alike."""
    times = {name: [] for name in fns}
    peaks = {}
    for name, (fn, backend) in fns.items():  # warm-up, and the peak memory of one call
        with attn_backend(backend):
            fn()
            if device == 'cuda':
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            fn()
            peaks[name] = torch.cuda.max_memory_allocated() / 2 ** 20 if device == 'cuda' else float('nan')
    for _ in range(reps):
        for name, (fn, backend) in fns.items():
            with attn_backend(backend):
                times[name].append(_time_once(fn, device))
    return {name: (statistics.median(t), peaks[name]) for name, t in times.items()}


def step_fn(forward, x, backward: bool):
    def fn():
        xi = x.detach().requires_grad_(backward)
        outs = forward(xi)
        if backward:
            sum(o.float().sum() for o in outs).backward()
    return fn


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True, help='clone of NVlabs/FasterViT')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--model', default='fastervit_2', choices=sorted(OFFICIAL_NAMES))
    parser.add_argument('--size', type=int, nargs=2, default=(800, 1344))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--reps', type=int, default=7)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--skip-backbone', action='store_true')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = args.device
    official_module = load_official_module(args.official)
    name = torch.cuda.get_device_name() if dev == 'cuda' else f'{platform.machine()} CPU, {args.threads} thread(s)'
    print(f'Stamp: {datetime.date.today()} · {name} · torch {torch.__version__} · float32 · '
          f'`python benchmarks/fastervit.py {" ".join(argv if argv is not None else sys.argv[1:])}`\n')
    rows = ['| comparison | shape | impl | fwd ms | fwd+bwd ms | peak MiB (fwd+bwd) |', '|---|---|---|---|---|---|']

    # --- attention: stage 2 of the model at --size (stride 16, padded to a multiple of 7).
    torch.manual_seed(0)
    ours_bb = build_backbone(args.model)
    blk = ours_bb.stages[2].blocks[0]
    dim, heads = ours_bb.feature_info[2]['num_chs'], blk.attn.num_heads
    H, W = (-(-s // 16) for s in args.size)
    nW = -(-H // 7) * -(-W // 7)
    T = blk.num_extra + 49
    official_attn = official_module.WindowAttention(dim, num_heads=heads, qkv_bias=True, resolution=7, seq_length=T)
    ours_attn = WindowAttention(dim, num_heads=heads, window=7)
    ours_attn.load_state_dict({k: v for k, v in official_attn.state_dict().items() if 'relative' not in k})
    official_attn.to(dev)
    ours_attn.to(dev)
    x = torch.randn(args.batch * nW, T, dim, device=dev)
    with torch.no_grad():
        torch.testing.assert_close(ours_attn(x, nW), official_attn(x), atol=1e-4, rtol=0)
    shape = f'{args.batch * nW} windows x {T} tokens, C={dim}, {heads} heads'
    impls = {'official': (lambda t: [official_attn(t)], None),
             'densekit (auto backend)': (lambda t: [ours_attn(t, nW)], None),
             'densekit (reference)': (lambda t: [ours_attn(t, nW)], 'reference')}
    with torch.no_grad():
        fwd = measure({k: (step_fn(f, x, False), b) for k, (f, b) in impls.items()}, dev, args.reps)
    both = measure({k: (step_fn(f, x, True), b) for k, (f, b) in impls.items()}, dev, args.reps)
    for impl in impls:
        rows.append(f'| attention | {shape} | {impl} | {fwd[impl][0]:.2f} | {both[impl][0]:.2f} | '
                    f'{both[impl][1]:.0f} |')

    # --- backbone training step, same weights.
    if not args.skip_backbone:
        torch.manual_seed(0)
        official_bb = official_module.build_fastervit(OFFICIAL_NAMES[args.model], out_indices=(0, 1, 2, 3))
        ours_bb.load_state_dict(convert_checkpoint('fastervit', official_bb.state_dict()), strict=True)
        official_bb.to(dev).train()
        ours_bb.to(dev).train()
        img = torch.randn(args.batch, 3, *args.size, device=dev)
        mask = torch.zeros(args.batch, *args.size, dtype=torch.bool, device=dev)

        def official_forward(t):
            outs = official_bb(NestedTensor(t, mask))
            return [outs[i].tensors for i in range(len(outs))]

        shape = f'{args.batch}x3x{args.size[0]}x{args.size[1]}'
        impls = {'official': (official_forward, None), 'densekit (auto backend)': (ours_bb, None),
                 'densekit (reference)': (ours_bb, 'reference')}
        both = measure({k: (step_fn(f, img, True), b) for k, (f, b) in impls.items()}, dev, args.reps)
        for impl in impls:
            rows.append(f'| backbone train step ({args.model}) | {shape} | {impl} | - | {both[impl][0]:.1f} | '
                        f'{both[impl][1]:.0f} |')
    print('\n'.join(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
