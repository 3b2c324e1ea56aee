"""Compile every densekit Triton kernel for a GPU target here, without a GPU, and report resources.

For the benchmark shapes of issue 3 ((a)-(e), ``benchmarks/attention.py``) and a DINO-sized
multi-scale deformable attention, the ops' forward and backward run with every Triton launch
replaced by an ahead-of-time compilation (``densekit.ops._triton_aot``). The table gives, per
kernel: launch constants, warps, pipeline stages, registers per thread, spilled bytes, shared
memory per program, and the matrix instruction in the machine code.

    python tools/dev/triton_sm90_report.py                 # bf16, sm_90, markdown table
    python tools/dev/triton_sm90_report.py --dtype float32 --arch 80 --json out.json
    python tools/dev/triton_sm90_report.py --small ...     # small shapes (tests/ops/test_triton_compile.py)

Run it in a fresh process without ``TRITON_INTERPRET``: ``@triton.jit`` decides at definition time
whether a kernel is compiled or interpreted, so kernels imported under the interpreter cannot be
compiled here (and the other way round).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from typing import Callable, Dict, List

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from densekit.ops import _triton_aot  # noqa: E402

_SHOWN = ('KH', 'KW', 'DH', 'DW', 'TILE_H', 'TILE_W', 'BLOCK_N', 'BLOCK_M', 'BLOCK_D', 'WH', 'WW', 'BLOCK',
          'BS', 'HALO', 'WP', 'BM', 'BACKWARD', 'HAS_RPB', 'WRITE_DS', 'BLOCK_P')


def _bench_cases():
    spec = importlib.util.spec_from_file_location('dk_bench_attention', os.path.join(ROOT, 'benchmarks', 'attention.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.NA_GPU, mod.WIN_GPU, mod.HALO_GPU


def _leaf(*shape, dtype):
    return torch.empty(*shape, dtype=dtype).normal_().requires_grad_()


def cases(dtype: torch.dtype) -> Dict[str, Callable[[], torch.Tensor]]:
    """Case name -> a function running forward + backward of one op at that shape."""
    from densekit.ops.halo.triton import halo_triton
    from densekit.ops.ms_deform_attn.triton import ms_deform_attn_triton
    from densekit.ops.neighborhood.triton import na_triton
    from densekit.ops.window.triton import window_triton

    na, win, halo = _bench_cases()
    out: Dict[str, Callable[[], torch.Tensor]] = {}
    for name, (B, H, W, h, D, k, d) in na.items():
        def run(B=B, H=H, W=W, h=h, D=D, k=k, d=d):
            q, kk, v = (_leaf(B, H, W, h, D, dtype=dtype) for _ in range(3))
            rpb = _leaf(h, 2 * k - 1, 2 * k - 1, dtype=dtype)
            return na_triton(q, kk, v, (k, k), (d, d), rpb, D ** -0.5)
        out[name] = run
    for name, (B, H, W, C, h, ws, shift) in win.items():
        def run(B=B, H=H, W=W, C=C, h=h, ws=ws, shift=shift):
            q, kk, v = (_leaf(B, H, W, h, C // h, dtype=dtype) for _ in range(3))
            rpb = _leaf(h, 2 * ws - 1, 2 * ws - 1, dtype=dtype)
            return window_triton(q, kk, v, (ws, ws), (shift, shift), rpb, (C // h) ** -0.5)
        out[name] = run
    for name, (B, H, W, C, h, bs, hs) in halo.items():
        def run(B=B, H=H, W=W, C=C, h=h, bs=bs, hs=hs):
            D = C // h
            q, kk, v = (_leaf(B, H, W, h, D, dtype=dtype) for _ in range(3))
            rel_h, rel_w = (_leaf(2 * (bs + 2 * hs) - 1, D, dtype=dtype) for _ in range(2))
            return halo_triton(q, kk, v, bs, hs, rel_h, rel_w, D ** -0.5, False, 'zeros')
        out[name] = run

    def msda(bs=2, nq=900, nh=8, d=32, levels=((100, 168), (50, 84), (25, 42), (13, 21)), points=4):
        shapes = torch.tensor(levels)
        starts = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
        value = _leaf(bs, int(shapes.prod(1).sum()), nh, d, dtype=dtype)
        loc = torch.rand(bs, nq, nh, len(levels), points, 2, dtype=dtype).requires_grad_()
        attn = torch.rand(bs, nq, nh, len(levels), points, dtype=dtype).requires_grad_()
        return ms_deform_attn_triton(value, shapes, starts, loc, attn)
    out['msda_dino_4scale'] = msda
    return out


def small_cases(dtype: torch.dtype) -> Dict[str, Callable[[], torch.Tensor]]:
    """Small shapes with every code path: 2-D NA (dilated, non-square kernel), 1-D NA, shifted
    windows, halo, MSDA (what ``tests/ops/test_triton_compile.py`` compiles)."""
    from densekit.ops.halo.triton import halo_triton
    from densekit.ops.ms_deform_attn.triton import ms_deform_attn_triton
    from densekit.ops.neighborhood.triton import na_triton
    from densekit.ops.window.triton import window_triton

    def na2d():
        q, k, v = (_leaf(1, 16, 18, 2, 32, dtype=dtype) for _ in range(3))
        return na_triton(q, k, v, (7, 5), (2, 1), _leaf(2, 13, 9, dtype=dtype), 0.2)

    def na1d():
        q, k, v = (_leaf(2, 40, 2, 64, dtype=dtype) for _ in range(3))
        return na_triton(q, k, v, (9,), (1,), _leaf(2, 17, dtype=dtype), 0.125)

    def window():
        q, k, v = (_leaf(1, 14, 14, 3, 32, dtype=dtype) for _ in range(3))
        return window_triton(q, k, v, (7, 7), (3, 3), _leaf(3, 13, 13, dtype=dtype), 32 ** -0.5)

    def halo():
        q, k, v = (_leaf(1, 16, 16, 2, 32, dtype=dtype) for _ in range(3))
        rel_h, rel_w = (_leaf(27, 32, dtype=dtype) for _ in range(2))
        return halo_triton(q, k, v, 8, 3, rel_h, rel_w, 32 ** -0.5, False, 'zeros')

    def msda():
        shapes, starts = torch.tensor([[6, 8], [3, 4]]), torch.tensor([0, 48])
        loc = torch.rand(1, 5, 2, 2, 4, 2).to(dtype).requires_grad_()
        attn = torch.rand(1, 5, 2, 2, 4).to(dtype).requires_grad_()
        return ms_deform_attn_triton(_leaf(1, 60, 2, 32, dtype=dtype), shapes, starts, loc, attn)

    return {'na2d': na2d, 'na1d': na1d, 'window': window, 'halo': halo, 'msda': msda}


def report(dtype: torch.dtype, arch: int, small: bool = False) -> List[dict]:
    rows = []
    for name, run in (small_cases if small else cases)(dtype).items():
        with _triton_aot.compile_only(arch, constants_shown=_SHOWN) as reports:
            y = run()
            y.backward(torch.ones_like(y))
        for r in reports:
            rows.append(dict(case=name, **r.__dict__))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float16', 'float32'))
    ap.add_argument('--arch', type=int, default=90, help='compute capability x10 (90 = Hopper, 80 = Ampere)')
    ap.add_argument('--json', default=None)
    ap.add_argument('--small', action='store_true', help='small test shapes instead of the benchmark shapes')
    args = ap.parse_args()
    if os.environ.get('TRITON_INTERPRET') == '1':
        sys.exit('unset TRITON_INTERPRET: interpreted kernels cannot be compiled')
    ok, why = _triton_aot.available()
    if not ok:
        sys.exit(f'cannot compile ahead of time: {why}')
    import triton
    rows = report(getattr(torch, args.dtype), args.arch, args.small)
    print(f'triton {triton.__version__}, torch {torch.__version__}, target sm_{args.arch}, {args.dtype}\n')
    print('| case | kernel | constants | warps | stages | regs | spill B | smem KiB | MMA |')
    print('|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        consts = ', '.join(f'{k}={v}' for k, v in r['constants'].items())
        print(f"| {r['case']} | {r['kernel']} | {consts} | {r['num_warps']} | {r['num_stages']} | {r['registers']} | "
              f"{r['local_bytes']} | {r['shared_bytes'] / 1024:.1f} | {r['mma'] or 'none'} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(triton=triton.__version__, torch=torch.__version__, arch=args.arch, dtype=args.dtype,
                           rows=rows), f, indent=1, default=str)


if __name__ == '__main__':
    main()
