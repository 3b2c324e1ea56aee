#!/usr/bin/env python
"""FasterViT: densekit vs the official dense backbone, same weights, same run; and the
``window_extra_attention`` backends at the backbone's own attention shapes.

    python benchmarks/fastervit.py --official /path/to/FasterViT [--device cpu|cuda] \
        [--model fastervit_2] [--size 800 1344] [--batch 1] [--reps 7] [--threads 1]
    python benchmarks/fastervit.py --ops --device cuda [--size 800 1333] [--batch 2] [--json out.json]

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

``--ops`` (no official clone needed): ``window_extra_attention`` itself at every distinct call
the backbone makes at ``--size`` (recorded by running it once: at 800x1333 the stage-2 windows of
4 carrier + 7x7 tokens, the stage-3 7x7 windows and the carrier-token attention, one window of
all carrier tokens), with the backbone's window-block bias needing a gradient: the official
formulation restated on the op's layout (``q @ k^T * scale``, the bias zero-padded to
``[heads, T, T]`` as FasterViT's ``F.pad``, softmax, ``@ v``; not copied), and the op's
``reference``, ``flex`` (compiled, CUDA) and ``triton`` backends; forward, forward + backward
and the peak memory of each, through ``benchmarks/_timing.py``, in ``--dtype`` (default bf16 on
CUDA, fp32 on CPU). Each backend's forward is checked against the official formulation first.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / 'tools' / 'dev')]

from _timing import median_ms, peak_mem_mb  # noqa: E402  (benchmarks/_timing.py)
from densekit.models import build_backbone, convert_checkpoint  # noqa: E402
from densekit.models.backbones import fastervit as fastervit_module  # noqa: E402
from densekit.models.backbones.fastervit import WindowAttention  # noqa: E402
from densekit.ops._backend import ENV_VAR  # noqa: E402
from densekit.ops.window_extra import window_extra_attention  # noqa: E402

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


def attention_calls(model: str, size, batch: int, device: str = 'cpu') -> list:
    """Distinct ``window_extra_attention`` calls of the backbone at ``size``: ``(q shape,
    num_extra, bias shape)``, recorded by one forward of a randomly initialised model in which the
    op returns zeros."""
    calls = []

    def record(q, k, v, *, num_extra=0, bias=None, **kw):
        key = (tuple(q.shape), num_extra, None if bias is None else tuple(bias.shape))
        if key not in calls:
            calls.append(key)
        return torch.zeros_like(q)

    original = fastervit_module.window_extra_attention
    fastervit_module.window_extra_attention = record
    try:
        with torch.no_grad():
            build_backbone(model).eval().to(device)(torch.zeros(batch, 3, *size, device=device))
    finally:
        fastervit_module.window_extra_attention = original
    return calls


def official_formulation(q, k, v, num_extra, bias, scale):
    """FasterViT's attention restated on the op's ``[B, nW, T, heads, d]`` layout (the official
    module holds ``[B * nW, heads, T, d]``: the transposes are views): logits ``(q @ k^T) *
    scale``, the window-block bias zero-padded to ``[heads, T, T]``, softmax, ``@ v``."""
    B, nW, T, h, d = q.shape
    qt, kt, vt = (t.flatten(0, 1).transpose(1, 2) for t in (q, k, v))
    attn = (qt @ kt.transpose(-2, -1)) * scale
    pad = T - bias.shape[-1]
    attn = attn + torch.nn.functional.pad(bias, (pad, 0, pad, 0))
    return (attn.softmax(dim=-1) @ vt).transpose(1, 2).reshape(B, nW, T, h, d)


def op_rows(args, dev: str) -> list:
    """Rows of the ``--ops`` comparison (see the module docstring)."""
    dtype = getattr(torch, args.dtype or ('bfloat16' if dev == 'cuda' else 'float32'))
    impls = ['official formulation', 'reference'] + (['flex', 'triton'] if dev == 'cuda' else [])
    rows = []
    for shape, P, bias_shape in attention_calls(args.model, args.size, args.batch, dev):
        g = torch.Generator().manual_seed(0)
        q, k, v, go = (torch.randn(shape, generator=g).to(dev, dtype) for _ in range(4))
        bias = torch.randn(bias_shape, generator=g).to(dev, dtype)
        scale = shape[-1] ** -0.5
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v, bias)]
        with torch.no_grad():
            expected = official_formulation(q, k, v, P, bias, scale).float()
        for impl in impls:
            if impl == 'official formulation':
                fn = functools.partial(official_formulation, num_extra=P, scale=scale)
            else:
                fn = functools.partial(window_extra_attention, num_extra=P, scale=scale, backend=impl)

            def fwd():
                with torch.no_grad():
                    return fn(q, k, v, bias=bias)

            def fwdbwd():
                fn(*leaves[:3], bias=leaves[3]).backward(go)

            row = dict(shape=list(shape), num_extra=P, bias=list(bias_shape), impl=impl,
                       dtype=str(dtype).replace('torch.', ''))
            try:
                row['max_abs_diff'] = (fwd().float() - expected).abs().max().item()
                for name, f in (('fwd', fwd), ('fwdbwd', fwdbwd)):
                    row[f'{name}_ms'] = median_ms(f, dev, warmup=2, reps=args.reps)
                    row[f'{name}_peak_MiB'] = peak_mem_mb(f, dev)
            except (RuntimeError, torch.OutOfMemoryError) as e:  # an unavailable backend, or OOM
                row['error'] = f'{type(e).__name__}: {str(e)[:160]}'
                if dev == 'cuda':
                    torch.cuda.empty_cache()
            rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, default=None,
                        help='clone of NVlabs/FasterViT (the module and backbone comparisons)')
    parser.add_argument('--ops', action='store_true',
                        help='time the window_extra_attention backends at the backbone\'s attention shapes')
    parser.add_argument('--dtype', default=None, help='of --ops: default bfloat16 on CUDA, float32 on CPU')
    parser.add_argument('--json', default=None, help='write the --ops rows here')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--model', default='fastervit_2', choices=sorted(OFFICIAL_NAMES))
    parser.add_argument('--size', type=int, nargs=2, default=(800, 1344))
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--reps', type=int, default=7)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--skip-backbone', action='store_true')
    args = parser.parse_args(argv)
    if args.official is None and not args.ops:
        parser.error('give --official (module and backbone vs the official code) and / or --ops')
    torch.set_num_threads(args.threads)
    dev = args.device
    name = torch.cuda.get_device_name() if dev == 'cuda' else f'{platform.machine()} CPU, {args.threads} thread(s)'
    print(f'Stamp: {datetime.date.today()} · {name} · torch {torch.__version__} · '
          f'`python benchmarks/fastervit.py {" ".join(argv if argv is not None else sys.argv[1:])}`\n')
    if args.ops:
        print(f'window_extra_attention at {args.model}\'s calls, input {args.batch}x3x{args.size[0]}x{args.size[1]}\n')
        print('| q [B, nW, T, heads, d] | P | bias | impl | dtype | max abs diff | fwd ms | fwd+bwd ms | '
              'fwd peak MiB | fwd+bwd peak MiB |')
        print('|---|---|---|---|---|---|---|---|---|---|')
        rows = op_rows(args, dev)
        for r in rows:
            f = lambda k: f'{r[k]:.3g}' if isinstance(r.get(k), float) else '-'  # noqa: E731
            print(f"| {tuple(r['shape'])} | {r['num_extra']} | {tuple(r['bias'])} | {r['impl']} | {r['dtype']} | "
                  f"{f('max_abs_diff')} | {f('fwd_ms')} | {f('fwdbwd_ms')} | {f('fwd_peak_MiB')} | "
                  f"{f('fwdbwd_peak_MiB')} |" + (f" {r['error'][:100]}" if 'error' in r else ''), flush=True)
        if args.json:
            with open(args.json, 'w') as fh:
                json.dump(dict(device=name, torch=torch.__version__, model=args.model, size=list(args.size),
                               batch=args.batch, rows=rows), fh, indent=1)
        if args.official is None:
            return 0
        print()
    from make_fastervit_fixture import NestedTensor, load_official_module  # tools/dev
    official_module = load_official_module(args.official)
    print('float32\n')
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
