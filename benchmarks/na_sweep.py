"""Launch-configuration sweep of the neighborhood-attention Triton kernels (GPU; developer tool).

For each configuration (query tile, key / query chunk, warps, pipelining stages) on the issue's
NA cases, bf16: first the output and every gradient against the fp32 reference backend on the
same inputs (a configuration that computes wrongly -- e.g. a miscompile -- is reported and not
timed), then the median forward and forward+backward times (``triton.testing.do_bench``). The
default configuration is timed in the same run, so ratios are same-run. JSON after every row.

    python benchmarks/na_sweep.py --json sweep.json              # on a GPU
    TRITON_INTERPRET=1 python benchmarks/na_sweep.py --smoke     # CPU: tiny shapes, checks only
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import densekit.ops.neighborhood.triton as na_triton  # noqa: E402
from attention import NA_GPU  # noqa: E402  (benchmarks/attention.py, this script's folder)
from densekit.ops import na2d  # noqa: E402

# (B, H, W, heads, head_dim, kernel, dilation): the issue's NA cases (dilation 4 shares d1's tiles)
CASES = {name: NA_GPU[name] for name in ('a_nat_t_s1', 'b_56_4x64', 'c_det_d1')}
SMOKE_CASES = {'smoke': (1, 12, 10, 2, 16, 3, 1)}
CONFIGS = [  # None = the library default
    None,
    dict(num_warps=8),
    dict(num_stages=2),
    dict(num_stages=1),
    dict(block_n=32),
    dict(block_n=32, num_warps=8),
    dict(tile_h=8, tile_w=16, num_warps=8),
    dict(tile_h=16, tile_w=8, num_warps=8),
    dict(tile_h=4, tile_w=8, block_n=32),
]
# bf16 rounding of an O(1) output is ~0.008; a miscompile is orders of magnitude off
MAX_ERR = 0.05


def run_case(cfg, device, dtype):
    B, H, W, h, D, k, d = cfg
    g = torch.Generator().manual_seed(0)
    q, kk, v, go = (torch.randn(B, H, W, h, D, generator=g) for _ in range(4))
    rpb = torch.randn(h, 2 * k - 1, 2 * k - 1, generator=g)
    leaves32 = [t.clone().to(device).requires_grad_() for t in (q, kk, v, rpb)]
    out = na2d(*leaves32[:3], k, d, rpb=leaves32[3], backend='reference')
    out.backward(go.to(device))
    ref = [out.detach()] + [t.grad for t in leaves32]
    scale = [max(1.0, r.abs().max().item()) for r in ref]
    leaves = [t.to(device, dtype).requires_grad_() for t in (q, kk, v, rpb)]
    dout = go.to(device, dtype)

    def fwd():
        return na2d(*leaves[:3], k, d, rpb=leaves[3], backend='triton')

    def fwd_bwd():
        for t in leaves:
            t.grad = None
        fwd().backward(dout)
    return ref, scale, leaves, fwd, fwd_bwd


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--json', default=None)
    ap.add_argument('--smoke', action='store_true')
    ap.add_argument('--only', default=None, help='comma-separated case names')
    args = ap.parse_args()
    device = 'cpu' if args.smoke else 'cuda'
    dtype = torch.float32 if args.smoke else torch.bfloat16  # the interpreter's bf16 dot is not the GPU's
    cases = SMOKE_CASES if args.smoke else CASES
    meta = {'date': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'torch': torch.__version__,
            'device': torch.cuda.get_device_name() if device == 'cuda' else 'cpu (interpreter)',
            'command': ' '.join(['python'] + sys.argv)}
    rows = []
    for name, cfg in cases.items():
        if args.only and name not in args.only.split(','):
            continue
        ref, scale, leaves, fwd, fwd_bwd = run_case(cfg, device, dtype)
        for conf in CONFIGS:
            row = {'case': name, 'config': conf or 'default'}
            na_triton.CONFIG_OVERRIDE = conf
            try:
                fwd_bwd()
                got = [fwd().detach()] + [t.grad for t in leaves]
                row['max_err'] = max(((a.float() - b).abs().max().item() / s) for a, b, s in zip(got, ref, scale))
                if not row['max_err'] <= MAX_ERR:  # NaN fails too
                    row['error'] = f'wrong result: max error {row["max_err"]:.3g} (x max magnitude)'
                elif device == 'cuda':
                    from triton.testing import do_bench
                    with torch.no_grad():
                        row['fwd_ms'] = do_bench(fwd, warmup=25, rep=100, return_mode='median')
                    row['fwdbwd_ms'] = do_bench(fwd_bwd, warmup=25, rep=100, return_mode='median')
            except Exception as e:  # e.g. out of shared memory for this configuration
                row['error'] = f'{type(e).__name__}: {str(e)[:160]}'
            finally:
                na_triton.CONFIG_OVERRIDE = None
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, 'w') as f:
                    json.dump({'meta': meta, 'rows': rows}, f, indent=1)
    base = {r['case']: r for r in rows if r['config'] == 'default' and 'fwdbwd_ms' in r}
    print('| case | config | max err | fwd ms | fwd+bwd ms | fwd+bwd vs default |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        b = base.get(r['case'])
        ratio = f"{b['fwdbwd_ms'] / r['fwdbwd_ms']:.2f}x" if b and 'fwdbwd_ms' in r else '-'
        print(f"| {r['case']} | {r['config']} | {r.get('max_err', float('nan')):.3g} | {r.get('fwd_ms', '-')} | "
              f"{r.get('fwdbwd_ms', r.get('error', '-'))} | {ratio} |")


if __name__ == '__main__':
    main()
