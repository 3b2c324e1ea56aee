"""Launch-configuration sweep of the attention Triton kernels, with a per-kernel time breakdown
(GPU; developer tool).

For each kernel family (window, neighborhood, halo) on the bf16 benchmark cases (a)-(e), and each
launch configuration (passed as ``triton_config=`` to the op; keys in
``densekit.ops.<family>.triton.CONFIG_KEYS``; the library default first, so every ratio is
same-run):

1. output and every gradient against the fp32 reference backend on the same inputs; a
   configuration that computes wrongly (a miscompile) is reported and not timed;
2. median forward and forward+backward milliseconds (``_timing.median_ms``: ``do_bench``);
3. the device time of every kernel the forward and the backward launch (``torch.profiler``;
   the Triton kernels by name, plus torch's own ops such as the dS reductions), which says where
   the backward's time goes and lets each kernel take its own best configuration.

Then, per family, the best configuration of each kernel, and (NA, halo) the combination of the
per-kernel bests, checked and timed like the others. JSON after every row; SIGINT (the GPU check's
time cap) stops the sweep and still prints the summary.

    python benchmarks/kernel_sweep.py --json sweep.json                    # on a GPU
    python benchmarks/kernel_sweep.py --only window,na:a_nat_t_s1           # some families / cases
    TRITON_INTERPRET=1 python benchmarks/kernel_sweep.py --smoke           # CPU: tiny shapes, checks only
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from _timing import median_ms  # noqa: E402  (benchmarks/_timing.py)
from attention import HALO_GPU, NA_GPU, WIN_GPU  # noqa: E402  (benchmarks/attention.py)
from densekit.ops import halo_attention, na2d, window_attention  # noqa: E402

# bf16 rounding of an O(1) output is ~0.008; a miscompile is orders of magnitude off
MAX_ERR = 0.05

# family -> list of configurations (None = the library default). Flat NA dicts apply to all three
# kernels; the per-kernel best is then read off the breakdown.
CONFIGS = {
    'window': [
        None,
        dict(kv_warps=4),
        dict(kv_stages=2),
        dict(kv_stages=1),
        dict(min_programs=256),
        dict(min_programs=4096),
        dict(min_programs=1 << 30),  # one image per program: dS summed outside (more memory)
        dict(warps=8),
        dict(fwd_stages=2),
        dict(block=32),  # two chunks: dQ in its own kernel, dK/dV on smaller tiles
    ],
    'na': [
        None,
        dict(bias_tiles=False),  # per-pair mask + bias gather instead of precomputed tiles
        dict(bias_tiles=False, num_warps=8),
        dict(block_n=128),
        dict(num_warps=8),
        dict(num_stages=2),
        dict(num_stages=1),
        dict(block_n=32),
        dict(block_n=32, num_warps=8),
        dict(tile_h=8, tile_w=16, num_warps=8),
        dict(tile_h=16, tile_w=8, num_warps=8),
        dict(tile_h=4, tile_w=8, block_n=32),
        dict(tile_h=4, tile_w=16),
    ],
    'halo': [
        None,
        dict(fwd_warps=4, dq_warps=4, dkdv_warps=4),
        dict(dq_stages=2, dkdv_stages=2),
        dict(dq_stages=1, dkdv_stages=1),
        dict(dq_rows=2),
        dict(dq_rows=8),
        dict(fwd_stages=1),
    ],
}
# in order of value: the cases whose backward is furthest from its target first
CASES = [('window', 'd_swin_t_s1'), ('na', 'a_nat_t_s1'), ('halo', 'e_halo'), ('na', 'c_det_d1'),
         ('na', 'b_56_4x64')]
SMOKE = {
    'window': {'smoke_win': (1, 16, 16, 32, 2, 8, 4)},  # 64-token windows: 2 fp32 chunks (4 with block 16)
    'na': {'smoke_na': (1, 12, 10, 2, 16, 3, 1)},
    'halo': {'smoke_halo': (1, 8, 8, 32, 2, 4, 1)},
}
SMOKE_CONFIGS = {  # a few configurations per family that reach every hook on tiny shapes
    'window': [None, dict(kv_warps=4), dict(min_programs=1 << 30), dict(block=16)],
    'na': [None, dict(bias_tiles=False), dict(tile_h=4, tile_w=8, block_n=32)],
    'halo': [None, dict(fwd_warps=4, dq_warps=4, dkdv_warps=4), dict(dq_rows=2)],
}


def make_case(family: str, cfg: tuple, device: str, dtype: torch.dtype):
    """Inputs, the fp32 reference (output + gradients) and ``bind(config)``, which returns the
    Triton forward and forward+backward of one case under that launch configuration."""
    g = torch.Generator().manual_seed(0)
    if family == 'na':
        B, H, W, h, D, ks, d = cfg
        shape, extra = (B, H, W, h, D), [(h, 2 * ks - 1, 2 * ks - 1)]

        def op(q, kk, v, rpb, backend, config=None):
            return na2d(q, kk, v, ks, d, rpb=rpb, backend=backend, triton_config=config)
    elif family == 'window':
        B, H, W, C, h, win, shift = cfg
        shape, extra = (B, H, W, h, C // h), [(h, 2 * win - 1, 2 * win - 1)]

        def op(q, kk, v, rpb, backend, config=None):
            return window_attention(q, kk, v, win, shift, rpb=rpb, backend=backend, triton_config=config)
    else:
        B, H, W, C, h, block, halo = cfg
        D = C // h
        r = 2 * (block + 2 * halo) - 1
        shape, extra = (B, H, W, h, D), [(r, D), (r, D)]

        def op(q, kk, v, rel_h, rel_w, backend, config=None):
            return halo_attention(q, kk, v, block, halo, rel_h=rel_h, rel_w=rel_w, backend=backend,
                                  triton_config=config)
    q, k, v, go = (torch.randn(*shape, generator=g) for _ in range(4))
    params = [torch.randn(*s, generator=g) * (0.1 if family == 'halo' else 1.0) for s in extra]
    leaves32 = [t.clone().to(device).requires_grad_() for t in (q, k, v, *params)]
    out = op(*leaves32, backend='reference')
    out.backward(go.to(device))
    ref = [out.detach()] + [t.grad for t in leaves32]
    scale = [max(1.0, x.abs().max().item()) for x in ref]
    leaves = [t.to(device, dtype).requires_grad_() for t in (q, k, v, *params)]
    dout = go.to(device, dtype)

    def bind(config: Optional[dict]):
        def fwd():
            return op(*leaves, backend='triton', config=config)

        def fwd_bwd():
            for t in leaves:
                t.grad = None
            fwd().backward(dout)
        return fwd, fwd_bwd
    return ref, scale, leaves, bind


def kernel_times(fn: Callable[[], object], device: str, iters: int) -> Dict[str, float]:
    """Device microseconds per call of every kernel ``fn`` launches (CPU: CPU ops, smoke only)."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CUDA] if device == 'cuda' else [ProfilerActivity.CPU]
    want = torch.autograd.DeviceType.CUDA if device == 'cuda' else torch.autograd.DeviceType.CPU
    with profile(activities=acts) as prof:
        for _ in range(iters):
            fn()
        if device == 'cuda':
            torch.cuda.synchronize()
    out: Dict[str, float] = defaultdict(float)
    for e in prof.key_averages():
        if e.device_type != want:
            continue
        us = getattr(e, 'self_device_time_total', None) if device == 'cuda' else e.self_cpu_time_total
        if us is None:  # older torch
            us = getattr(e, 'self_cuda_time_total', 0.0)
        if us:
            out[e.key[:60]] += us / iters
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def measure(family, conf, case, device, iters) -> dict:
    ref, scale, leaves, bind = case
    fwd, fwd_bwd = bind(conf)
    row = {'config': conf or 'default'}
    try:
        fwd_bwd()
        got = [fwd().detach()] + [t.grad for t in leaves]
        row['max_err'] = max((a.float() - b).abs().max().item() / s for a, b, s in zip(got, ref, scale))
        if not row['max_err'] <= MAX_ERR:  # NaN fails too
            row['error'] = f'wrong result: max error {row["max_err"]:.3g} (x max magnitude)'
            return row
        with torch.no_grad():
            fwd_k = kernel_times(fwd, device, iters)
        all_k = kernel_times(fwd_bwd, device, iters)
        row['kernels_fwd_us'] = fwd_k
        row['kernels_bwd_us'] = {k: round(v - fwd_k.get(k, 0.0), 3) for k, v in all_k.items()
                                 if v - fwd_k.get(k, 0.0) > 1e-3}
        if device == 'cuda':
            with torch.no_grad():
                row['fwd_ms'] = median_ms(fwd, device)
            row['fwdbwd_ms'] = median_ms(fwd_bwd, device)
    except Exception as e:  # e.g. out of shared memory for this configuration
        row['error'] = f'{type(e).__name__}: {str(e)[:200]}'
    return row


# which kernels (by the profiler's name, phase) each configuration slot governs, per family
SLOTS = {
    'na': {'fwd': ('fwd', '_na_fwd'), 'dq': ('bwd', '_na_bwd_dq'), 'dkdv': ('bwd', '_na_bwd_dkdv')},
    'halo': {'fwd': ('fwd', '_halo_fwd_or_dq'), 'dq': ('bwd', '_halo_fwd_or_dq'), 'dkdv': ('bwd', '_halo_dkdv')},
    'window': {'fwd': ('fwd', '_window_fwd'), 'dkdv': ('bwd', '_window_bwd_dkdv'), 'dq': ('bwd', '_window_bwd_dq')},
}


def _kernel_us(row: dict, phase: str, name: str) -> Optional[float]:
    d = row.get(f'kernels_{phase}_us') or {}
    hits = [v for k, v in d.items() if k.startswith(name)]
    return sum(hits) if hits else None


def best_per_kernel(family: str, rows: List[dict]) -> Dict[str, dict]:
    """Per slot: the configuration whose kernel took the least device time (and the default's)."""
    out = {}
    for slot, (phase, name) in SLOTS[family].items():
        timed = [(t, r) for r in rows if 'error' not in r for t in [_kernel_us(r, phase, name)] if t is not None]
        if not timed:
            continue
        t, r = min(timed, key=lambda x: x[0])
        base = next((_kernel_us(x, phase, name) for x in rows if x['config'] == 'default'), None)
        out[slot] = {'config': r['config'], 'us': t, 'default_us': base}
    return out


def combine(family: str, best: Dict[str, dict]) -> Optional[dict]:
    """One configuration made of the per-kernel bests (NA: per-kernel dicts; halo: prefixed keys)."""
    pick = {slot: (b['config'] if isinstance(b['config'], dict) else {}) for slot, b in best.items()}
    if family == 'na':
        conf = {slot: c for slot, c in pick.items() if c}
    elif family == 'halo':
        conf = {}
        for slot, c in pick.items():
            conf.update({k: v for k, v in c.items() if k.startswith(slot + '_')})
    else:
        return None  # window: the kernels share the chunk size; read the per-kernel table instead
    return conf or None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--json', default=None)
    ap.add_argument('--smoke', action='store_true')
    ap.add_argument('--only', default=None, help='comma-separated families or family:case')
    ap.add_argument('--iters', type=int, default=None, help='profiled calls per breakdown (10; smoke 1)')
    args = ap.parse_args()
    args.iters = args.iters or (1 if args.smoke else 10)
    device = 'cpu' if args.smoke else 'cuda'
    dtype = torch.float32 if args.smoke else torch.bfloat16  # the interpreter's bf16 dot is not the GPU's
    meta = {'date': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'torch': torch.__version__,
            'device': torch.cuda.get_device_name() if device == 'cuda' else 'cpu (interpreter)',
            'command': ' '.join(['python'] + sys.argv)}
    try:
        import triton
        meta['triton'] = triton.__version__
    except ImportError:
        pass
    if args.smoke:
        cases = [(f, c) for f in SMOKE for c in SMOKE[f]]
        table = {f: dict(SMOKE[f]) for f in SMOKE}
        configs = SMOKE_CONFIGS
    else:
        cases, table, configs = CASES, {'na': NA_GPU, 'window': WIN_GPU, 'halo': HALO_GPU}, CONFIGS
    only = set(args.only.split(',')) if args.only else None
    rows: List[dict] = []
    summary: List[dict] = []

    def save():
        if args.json:
            with open(args.json, 'w') as f:
                json.dump({'meta': meta, 'rows': rows, 'best': summary}, f, indent=1)

    t0 = time.time()
    try:
        for family, name in cases:
            if only and family not in only and f'{family}:{name}' not in only:
                continue
            case = make_case(family, table[family][name], device, dtype)
            case_rows = []
            for conf in configs[family]:
                row = {'family': family, 'case': name, **measure(family, conf, case, device, args.iters)}
                rows.append(row)
                case_rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if not k.startswith('kernels')}), flush=True)
                save()
            best = best_per_kernel(family, case_rows)
            entry = {'family': family, 'case': name, 'per_kernel': best}
            conf = combine(family, best)
            if conf is not None and conf not in configs[family]:
                row = {'family': family, 'case': name, 'combined': True,
                       **measure(family, conf, case, device, args.iters)}
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if not k.startswith('kernels')}), flush=True)
            summary.append(entry)
            save()
    except KeyboardInterrupt:
        print(f'interrupted after {time.time() - t0:.0f} s; summary of what ran:', flush=True)
    save()
    print_summary(rows, summary)


def _fmt(x, nd=3):
    return f'{x:.{nd}f}' if isinstance(x, float) else str(x)


def print_summary(rows: List[dict], summary: List[dict]):
    default = {(r['family'], r['case']): r for r in rows if r['config'] == 'default' and 'error' not in r}
    base = {key: r for key, r in default.items() if 'fwdbwd_ms' in r}
    print('| family | case | config | max err | fwd ms | fwd+bwd ms | fwd+bwd vs default |')
    print('|---|---|---|---|---|---|---|')
    for r in rows:
        b = base.get((r['family'], r['case']))
        ratio = f"{b['fwdbwd_ms'] / r['fwdbwd_ms']:.2f}x" if b and 'fwdbwd_ms' in r else '-'
        conf = ('combined ' if r.get('combined') else '') + json.dumps(r['config'])
        print(f"| {r['family']} | {r['case']} | {conf} | {_fmt(r.get('max_err', float('nan')), 3)} | "
              f"{_fmt(r.get('fwd_ms', '-'))} | {_fmt(r.get('fwdbwd_ms', r.get('error', '-')))} | {ratio} |")
    print('\nPer-kernel device time of the default configuration (us per call; CPU: op times, top 12):')
    print('| family | case | phase | kernel | us |')
    print('|---|---|---|---|---|')
    for (fam, case), r in default.items():
        for phase in ('fwd', 'bwd'):
            for k, v in list((r.get(f'kernels_{phase}_us') or {}).items())[:12]:
                print(f'| {fam} | {case} | {phase} | {k} | {v:.1f} |')
    print('\nBest configuration per kernel:')
    print('| family | case | kernel | best config | us | default us |')
    print('|---|---|---|---|---|---|')
    for e in summary:
        for slot, b in e['per_kernel'].items():
            print(f"| {e['family']} | {e['case']} | {slot} | {json.dumps(b['config'])} | {_fmt(b['us'], 1)} | "
                  f"{_fmt(b['default_us'], 1)} |")


if __name__ == '__main__':
    main()
