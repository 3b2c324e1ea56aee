"""Benchmark the large-kernel depthwise convolution: Triton kernels against ``F.conv2d`` (cuDNN).

The numbers that decide the op's automatic choice (``densekit.ops.large_kernel``: the reference
everywhere until a GPU run of this script shows the Triton kernels faster at a shape). Each row
times :func:`densekit.ops.large_kernel.large_kernel_conv2d` with one backend on one stage shape,
forward (no grad) and forward + backward (input, weight and bias gradients), with the peak CUDA
memory of each; the Triton rows carry the ratio ``reference_ms / triton_ms`` to the reference row
measured just before them in the same run (``> 1``: Triton faster, the convention of
``benchmarks/RESULTS.md``), after a check of the Triton output against the reference.
``torch.compile`` is not timed: a compiled depthwise convolution is the same cuDNN call.

Shapes: the depthwise convolutions of RepLKNet-31B (31 / 29 / 27 / 13 taps, 128 ... 1024
channels) and UniRepLKNet-T / -S (13 taps and the 3x3 dilation-5 branch, 160 ... 768 channels)
at an 800x1333 image (maps at strides 4 ... 32 of a network that pads by half its kernel:
``ceil(800 / s) x ceil(1333 / s)``), and VAN's 7x7 dilation-3 kernel at stride 4.

Usage::

    python benchmarks/large_kernel.py --device cuda --json large_kernel_gpu.json   # bf16, batch 2
    python benchmarks/large_kernel.py --device cpu --cases replknet_31b_s32 --reps 3  # reference only
    TRITON_INTERPRET=1 python benchmarks/large_kernel.py --device cpu --smoke         # every row, tiny
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from _timing import median_ms  # noqa: E402  (benchmarks/_timing.py)
from densekit.ops.large_kernel import large_kernel_conv2d  # noqa: E402

IMAGE = (800, 1333)


def map_size(stride: int):
    """``ceil(800 / s) x ceil(1333 / s)``: every stride-2 step pads by half its kernel."""
    h, w = IMAGE
    for _ in range(int(math.log2(stride))):
        h, w = -(-h // 2), -(-w // 2)
    return h, w


# name -> (channels, map (H, W), kernel, dilation)
CASES = {
    'replknet_31b_s4': (128, map_size(4), 31, 1),
    'replknet_31b_s8': (256, map_size(8), 29, 1),
    'replknet_31b_s16': (512, map_size(16), 27, 1),
    'replknet_31b_s32': (1024, map_size(32), 13, 1),
    'unireplknet_t_s8': (160, map_size(8), 13, 1),
    'unireplknet_t_s16': (320, map_size(16), 13, 1),
    'unireplknet_t_s16_d5': (320, map_size(16), 3, 5),  # the 3x3 dilation-5 branch of a 13x13 block
    'unireplknet_t_s32': (640, map_size(32), 13, 1),
    'unireplknet_s_s8': (192, map_size(8), 13, 1),
    'unireplknet_s_s16': (384, map_size(16), 13, 1),
    'unireplknet_s_s32': (768, map_size(32), 13, 1),
    'van_b1_s4_d3': (64, map_size(4), 7, 3),  # VAN-B1's stage 1 7x7 dilation 3
}
# --smoke: every row on tiny shapes (the Triton rows through the interpreter on CPU, with
# TRITON_INTERPRET=1), so that the script the GPU check runs is exercised without a GPU
SMOKE_CASES = {'smoke_k13': (1, (5, 7), 13, 1), 'smoke_k3_d5': (1, (6, 5), 3, 5)}


def make_inputs(case: str, batch: int, device, dtype):
    C, (H, W), k, _ = CASES[case]
    g = torch.Generator().manual_seed(0)
    mk = lambda *s: torch.randn(*s, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    return dict(x=mk(batch, C, H, W), weight=mk(C, 1, k, k) / k, bias=mk(C))


def run_case(case, batch, impl, device, dtype, reps):
    dilation = CASES[case][3]
    inputs = make_inputs(case, batch, device, dtype)
    leaves = {n: t.clone().requires_grad_(True) for n, t in inputs.items()}
    go = torch.randn_like(inputs['x'])

    def fwd():
        with torch.no_grad():
            return large_kernel_conv2d(**inputs, dilation=dilation, backend=impl)

    def fwdbwd():
        large_kernel_conv2d(**leaves, dilation=dilation, backend=impl).backward(go)

    C, (H, W), k, _ = CASES[case]
    row = dict(case=case, impl=impl, batch=batch, channels=C, map=[H, W], kernel=k,
               dilation=dilation, dtype=str(dtype).replace('torch.', ''), device=str(device))
    for name, f in (('fwd', fwd), ('fwdbwd', fwdbwd)):
        if device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        row[f'{name}_ms'] = median_ms(f, device, warmup=1, reps=reps)
        if device.type == 'cuda':
            row[f'{name}_peak_MiB'] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    return row


def check(case, batch, device, dtype):
    """Max |triton - reference| of the forward, in units of the reference's largest magnitude."""
    dilation = CASES[case][3]
    inputs = make_inputs(case, batch, device, dtype)
    with torch.no_grad():
        ref = large_kernel_conv2d(**inputs, dilation=dilation, backend='reference').float()
        out = large_kernel_conv2d(**inputs, dilation=dilation, backend='triton').float()
    return (ref - out).abs().max().item() / max(1.0, ref.abs().max().item())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--dtype', default=None, help='default: bfloat16 on CUDA, float32 on CPU')
    parser.add_argument('--cases', default=','.join(CASES))
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--reps', type=int, default=20)
    parser.add_argument('--impls', default=None,
                        help='default: reference,triton on CUDA; reference on CPU (Triton on CPU is the interpreter)')
    parser.add_argument('--json', default=None)
    parser.add_argument('--smoke', action='store_true', help='tiny shapes, every row (see SMOKE_CASES)')
    args = parser.parse_args()
    if args.smoke:
        CASES.update(SMOKE_CASES)
        args.cases, args.reps = ','.join(SMOKE_CASES), 1
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ('bfloat16' if device.type == 'cuda' else 'float32'))
    with_triton = device.type == 'cuda' or (args.smoke and os.environ.get('TRITON_INTERPRET') == '1')
    impls = (args.impls or ('reference,triton' if with_triton else 'reference')).split(',')
    unknown = set(args.cases.split(',')) - set(CASES)
    if unknown:
        sys.exit(f'--cases: unknown {sorted(unknown)}; choose from {list(CASES)}')
    meta = dict(device=str(device), dtype=str(dtype), batch=args.batch, torch=torch.__version__,
                image=list(IMAGE), threads=torch.get_num_threads())
    if device.type == 'cuda':
        meta['gpu'] = torch.cuda.get_device_name(device)
    rows = []
    print(f"# {meta}")
    print('| case | C | map | k / dil | impl | fwd ms | fwd+bwd ms | fwd ratio | fwd+bwd ratio | '
          'fwd+bwd peak MiB | max rel diff |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for case in args.cases.split(','):
        base = None
        for impl in impls:
            try:
                diff = check(case, args.batch, device, dtype) if impl == 'triton' else 0.0
                row = run_case(case, args.batch, impl, device, dtype, args.reps)
                row['max_rel_diff'] = diff
                if impl == 'reference':
                    base = row
                elif base is not None:  # ratio to the reference measured just before, same run
                    row['fwd_ratio'] = base['fwd_ms'] / row['fwd_ms']
                    row['fwdbwd_ratio'] = base['fwdbwd_ms'] / row['fwdbwd_ms']
            except (RuntimeError, torch.OutOfMemoryError) as e:  # OOM or an unavailable backend
                row = dict(case=case, impl=impl, error=f'{type(e).__name__}: {str(e)[:160]}')
                if device.type == 'cuda':
                    torch.cuda.empty_cache()
            rows.append(row)
            f = lambda k: f'{row[k]:.3g}' if isinstance(row.get(k), float) else row.get('error', '-')[:60]  # noqa: E731
            C, (H, W), k, d = CASES[case]
            print(f"| {case} | {C} | {H}x{W} | {k} / {d} | {impl} | {f('fwd_ms')} | {f('fwdbwd_ms')} | "
                  f"{f('fwd_ratio')} | {f('fwdbwd_ratio')} | {f('fwdbwd_peak_MiB')} | {f('max_rel_diff')} |",
                  flush=True)
            if args.json:
                with open(args.json, 'w') as fh:
                    json.dump(dict(meta, rows=rows), fh, indent=1)
    faster = [r['case'] for r in rows if r.get('fwdbwd_ratio', 0.0) > 1.0 and r.get('fwd_ratio', 0.0) > 1.0]
    if 'triton' in impls:
        print(f'# Triton faster than the reference (fwd and fwd+bwd): {faster or "none"}')


if __name__ == '__main__':
    main()
