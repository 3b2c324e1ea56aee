"""Compile every densekit Triton kernel for a GPU target here, without a GPU, and report resources.

For the benchmark shapes of issue 3 ((a)-(e), ``benchmarks/attention.py``) and a DINO-sized
multi-scale deformable attention, the ops' forward and backward run with every Triton launch
replaced by an ahead-of-time compilation (``densekit.ops._triton_aot``). The table gives, per
kernel: launch constants, warps, pipeline stages, registers per thread, spilled bytes, shared
memory per program, the matrix instruction in the machine code, and static SASS instruction
counts (the code's size: a loop body counts once; a proxy for the work per program, not a time).

    python tools/dev/triton_sm90_report.py                 # bf16, sm_90, markdown table
    python tools/dev/triton_sm90_report.py --dtype float32 --arch 80 --json out.json
    python tools/dev/triton_sm90_report.py --small ...     # small shapes (tests/ops/test_triton_compile.py)
    python tools/dev/triton_sm90_report.py --only a_nat --override 'neighborhood={"bias_tiles": false}'
                                            # a launch configuration of benchmarks/kernel_sweep.py

Run it in a fresh process without ``TRITON_INTERPRET``: ``@triton.jit`` decides at definition time
whether a kernel is compiled or interpreted, so kernels imported under the interpreter cannot be
compiled here (and the other way round).
"""
from __future__ import annotations

import argparse
import functools
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


# One runner per op (forward output; the caller runs backward). Shapes follow benchmarks/attention.py:
# NA (B, H, W, heads, D, kernel, dilation) with H = None for 1-D; window (B, H, W, C, heads, window,
# shift); halo (B, H, W, C, heads, block, halo); MSDA (batch, queries, heads, D, level sizes, points).
def _na(dtype, B, H, W, h, D, k, d):
    from densekit.ops.neighborhood.triton import na_triton
    spatial = (W,) if H is None else (H, W)
    kern = (k,) * len(spatial) if isinstance(k, int) else k
    dil = (d,) * len(spatial) if isinstance(d, int) else d
    q, kk, v = (_leaf(B, *spatial, h, D, dtype=dtype) for _ in range(3))
    rpb = _leaf(h, *(2 * x - 1 for x in kern), dtype=dtype)
    return na_triton(q, kk, v, kern, dil, rpb, D ** -0.5)


def _window(dtype, B, H, W, C, h, ws, shift, bias=True):
    """``ws`` / ``shift``: an int (square) or a (height, width) pair."""
    from densekit.ops.window.triton import window_triton
    wh, ww = (ws, ws) if isinstance(ws, int) else ws
    sh, sw = (shift, shift) if isinstance(shift, int) else shift
    q, kk, v = (_leaf(B, H, W, h, C // h, dtype=dtype) for _ in range(3))
    rpb = _leaf(h, 2 * wh - 1, 2 * ww - 1, dtype=dtype) if bias else None
    return window_triton(q, kk, v, (wh, ww), (sh, sw), rpb, (C // h) ** -0.5)


def _halo(dtype, B, H, W, C, h, bs, hs, stride=1, dv=None):
    """C / h is the query / key head dim; ``dv`` the value head dim (default the same)."""
    from densekit.ops.halo.triton import halo_triton
    D = C // h
    q = _leaf(B, H // stride, W // stride, h, D, dtype=dtype)
    kk, v = _leaf(B, H, W, h, D, dtype=dtype), _leaf(B, H, W, h, dv or D, dtype=dtype)
    rel_h, rel_w = (_leaf(2 * (bs + 2 * hs) - 1, D, dtype=dtype) for _ in range(2))
    return halo_triton(q, kk, v, bs, hs, rel_h, rel_w, D ** -0.5, False, 'zeros', stride)


def _msda(dtype, bs, nq, nh, d, levels, points):
    from densekit.ops.mmcv.ms_deform_attn.triton import ms_deform_attn_triton
    shapes = torch.tensor(levels)
    starts = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    value = _leaf(bs, int(shapes.prod(1).sum()), nh, d, dtype=dtype)
    loc = torch.rand(bs, nq, nh, len(levels), points, 2).to(dtype).requires_grad_()
    attn = torch.rand(bs, nq, nh, len(levels), points).to(dtype).requires_grad_()
    return ms_deform_attn_triton(value, shapes, starts, loc, attn)


def cases(dtype: torch.dtype) -> Dict[str, Callable[[], torch.Tensor]]:
    """The benchmark shapes (a)-(e) and a DINO-sized MSDA: case name -> forward of that op."""
    na, win, halo = _bench_cases()
    out: Dict[str, Callable[[], torch.Tensor]] = {}
    out.update({name: functools.partial(_na, dtype, *cfg) for name, cfg in na.items()})
    out.update({name: functools.partial(_window, dtype, *cfg) for name, cfg in win.items()})
    out.update({name: functools.partial(_halo, dtype, *cfg) for name, cfg in halo.items()})
    out['msda_dino_4scale'] = functools.partial(_msda, dtype, 2, 900, 8, 32,
                                                ((100, 168), (50, 84), (25, 42), (13, 21)), 4)
    return out


def small_cases(dtype: torch.dtype) -> Dict[str, Callable[[], torch.Tensor]]:
    """Small shapes with every code path: 2-D NA (dilated, non-square kernel), 1-D NA, shifted
    windows, halo (and strided queries), MSDA (what ``tests/ops/test_triton_compile.py`` compiles)."""
    return {
        'na2d': functools.partial(_na, dtype, 1, 16, 18, 2, 32, (7, 5), (2, 1)),
        'na1d': functools.partial(_na, dtype, 2, None, 40, 2, 64, 9, 1),
        'window': functools.partial(_window, dtype, 1, 14, 14, 96, 3, 7, 3),
        'halo': functools.partial(_halo, dtype, 1, 16, 16, 64, 2, 8, 3),
        'halo_s2': functools.partial(_halo, dtype, 1, 16, 16, 64, 2, 8, 3, 2),  # strided queries
        'halo_dv': functools.partial(_halo, dtype, 1, 16, 16, 32, 2, 8, 2, 1, 64),  # eca_halonext: 16 / 64
        'msda': functools.partial(_msda, dtype, 1, 5, 2, 32, ((6, 8), (3, 4)), 4),
    }


def report(dtype: torch.dtype, arch: int, small: bool = False, only: str = '') -> List[dict]:
    rows = []
    for name, run in (small_cases if small else cases)(dtype).items():
        if only and not any(o in name for o in only.split(',')):
            continue
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
    ap.add_argument('--only', default='', help='comma-separated substrings of the case names to compile')
    ap.add_argument('--override', action='append', default=[], metavar='MODULE=JSON',
                    help="CONFIG_OVERRIDE of densekit.ops.<MODULE>.triton (neighborhood, window, halo), "
                         "as in benchmarks/kernel_sweep.py; repeatable")
    args = ap.parse_args()
    for o in args.override:
        module, _, conf = o.partition('=')
        importlib.import_module(f'densekit.ops.{module}.triton').CONFIG_OVERRIDE = json.loads(conf)
    if os.environ.get('TRITON_INTERPRET') == '1':
        sys.exit('unset TRITON_INTERPRET: interpreted kernels cannot be compiled')
    ok, why = _triton_aot.available()
    if not ok:
        sys.exit(f'cannot compile ahead of time: {why}')
    import triton
    rows = report(getattr(torch, args.dtype), args.arch, args.small, args.only)
    print(f'triton {triton.__version__}, torch {torch.__version__}, target sm_{args.arch}, {args.dtype}\n')
    print('| case | kernel | constants | warps | stages | regs | stack B (spills) | smem KiB | MMA | '
          'SASS instr. (static) | LDG / LDGSTS | MUFU |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        consts = ', '.join(f'{k}={v}' for k, v in r['constants'].items())
        c = r['sass_classes']
        print(f"| {r['case']} | {r['kernel']} | {consts} | {r['num_warps']} | {r['num_stages']} | {r['registers']} | "
              f"{r['stack_bytes']} | {r['shared_bytes'] / 1024:.1f} | {r['mma'] or 'none'} | {c['total']} | "
              f"{c['LDG']} / {c['LDGSTS']} | {c['MUFU']} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(triton=triton.__version__, torch=torch.__version__, arch=args.arch, dtype=args.dtype,
                           rows=rows), f, indent=1, default=str)


if __name__ == '__main__':
    main()
