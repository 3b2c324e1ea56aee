"""Backbone leaderboard: every registered backbone measured the same way at detection resolution.

    python tools/analysis/leaderboard.py [--device cpu|cuda] [--size 800 1333] [--filter 'swin_*' ...]
                                         [--batch-sizes 1 2] [--iters 3] [--out docs/leaderboard.md]

Per backbone: parameters; GFLOPs of one image at ``--size`` with densekit's attention ops counted
by their analytic cost (``densekit.utils.flops``; a multiply-add is 2 FLOPs, GMACs = what papers
call FLOPs); forward and forward+backward images/s and peak memory at each batch size (bf16
autocast on CUDA, float32 on CPU). Each backbone runs in its own subprocess so that one model's
memory does not count against the next. Peak memory is ``torch.cuda.max_memory_allocated`` on
CUDA and, on CPU, the growth of the process's peak resident set (VmHWM, reset before each
measurement) over its resident set at the start.

It writes a Markdown table (stamped with device, versions, date and commit) and a scatter plot of
GFLOPs against the box AP the papers report for ``--task`` (from ``configs/README.md``) next to it.
"""
from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

# Display names used in configs/README.md -> registered names.
_SIZE_WORDS = {'T': 'tiny', 'S': 'small', 'B': 'base', 'L': 'large', 'XL': 'xlarge', 'Mini': 'mini'}
_FAMILY_WORDS = {'ConvNeXt': 'convnext', 'Swin': 'swin', 'NAT': 'nat', 'DiNAT': 'dinat', 'CSWin': 'cswin'}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    p.add_argument('--size', type=int, nargs=2, default=(800, 1333), metavar=('H', 'W'))
    p.add_argument('--filter', nargs='+', default=None, metavar='GLOB',
                   help="backbone names to measure (fnmatch globs); default: every registered backbone "
                        "except the '*_test' variants")
    p.add_argument('--batch-sizes', type=int, nargs='+', default=(1, 2))
    p.add_argument('--iters', type=int, default=3, help='timed iterations (median) after one warm-up')
    p.add_argument('--task', default='Mask R-CNN 3x ms', help='configs/README.md task for the plot')
    p.add_argument('--out', default=osp.join(REPO, 'docs', 'leaderboard.md'))
    p.add_argument('--no-plot', action='store_true')
    p.add_argument('--one', help=argparse.SUPPRESS)  # internal: measure one backbone, print JSON
    return p.parse_args(argv)


def select(names, patterns):
    if patterns is None:
        return [n for n in names if not n.endswith('_test') and n != 'TimmBackbone']
    chosen = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if not chosen:
        raise SystemExit(f'--filter {patterns} matches no registered backbone; registered: {names}')
    return chosen


def _status_bytes(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f'/proc/self/status has no {field}')


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS and return that RSS."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    return _status_bytes('VmRSS')


def measure_one(name: str, device: str, size, batch_sizes, iters: int) -> dict:
    import torch

    from densekit.models import build_backbone
    from densekit.utils.flops import count_model_flops

    H, W = size
    model = build_backbone(name).to(device)
    row = {'model': name, 'params_m': sum(p.numel() for p in model.parameters()) / 1e6}
    model.eval()
    flops = count_model_flops(model, torch.zeros(1, 3, H, W, device=device))
    row['gflops'] = flops.total / 1e9
    row['gflops_attention'] = flops.attention / 1e9
    amp = torch.autocast('cuda', dtype=torch.bfloat16) if device == 'cuda' else torch.autocast('cpu', enabled=False)

    def sync():
        if device == 'cuda':
            torch.cuda.synchronize()

    def timed(fn):
        fn()
        sync()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    for bs in batch_sizes:
        x = torch.randn(bs, 3, H, W, device=device)

        def forward():
            with torch.no_grad(), amp:
                model(x)

        def forward_backward():
            with amp:
                out = model(x)
            sum(o.float().mean() for o in out).backward()
            model.zero_grad(set_to_none=True)

        for key, fn, train in (('fwd', forward, False), ('fwdbwd', forward_backward, True)):
            model.train(train)
            if device == 'cuda':
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            else:
                base = _reset_peak_rss()
            seconds = timed(fn)
            peak = (torch.cuda.max_memory_allocated() if device == 'cuda' else _status_bytes('VmHWM')) - base
            row[f'{key}_img_s_b{bs}'] = bs / seconds
            row[f'{key}_peak_mib_b{bs}'] = max(peak, 0) / 2 ** 20
    return row


def paper_numbers(task: str) -> dict:
    """``registered name -> box AP`` for ``task`` from the table in configs/README.md."""
    path = osp.join(REPO, 'configs', 'README.md')
    out = {}
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            if len(cells) < 4 or cells[0] != task:
                continue
            m = re.search(r'box AP ([0-9.]+)', cells[3])
            fam = re.match(r'([A-Za-z]+)-(\w+)$', cells[1])
            if not (m and fam):
                continue
            family, size = fam.groups()
            if family == 'HaloNet':
                name = f'halonet{size}'
            elif family in _FAMILY_WORDS and size in _SIZE_WORDS:
                name = f'{_FAMILY_WORDS[family]}_{_SIZE_WORDS[size]}'
            else:
                continue
            out[name] = float(m.group(1))
    return out


def stamp(device: str) -> str:
    import torch
    try:
        commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = 'unknown'
    if device == 'cuda':
        dev = torch.cuda.get_device_name()
    else:
        dev = f'CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads, load average ' \
              f'{os.getloadavg()[0]:.1f})'
    import timm
    return (f'commit {commit} · {dev} · torch {torch.__version__}, timm {timm.__version__} · '
            f'{datetime.date.today().isoformat()}')


def write_table(rows, args, path):
    bss = args.batch_sizes
    head = ['backbone', 'params (M)', 'GFLOPs', 'of which attention']
    for key, label in (('fwd', 'fwd'), ('fwdbwd', 'fwd+bwd')):
        for bs in bss:
            head += [f'{label} img/s b{bs}', f'{label} peak MiB b{bs}']
    lines = [
        '# Backbone leaderboard',
        '',
        f'Stamp: {stamp(args.device)} · input {args.size[0]}x{args.size[1]} · '
        f'{"bf16 autocast" if args.device == "cuda" else "float32"} · median of {args.iters} after one warm-up · '
        f'`python tools/analysis/leaderboard.py --device {args.device} --size {args.size[0]} {args.size[1]}'
        + (f" --filter {' '.join(args.filter)}" if args.filter else '') + '`',
        '',
        'GFLOPs: one image, multiply-add = 2, densekit attention ops by their analytic cost. Peak memory: '
        + ('`torch.cuda.max_memory_allocated` growth.' if args.device == 'cuda'
           else 'growth of the process\'s peak resident set (CPU; includes allocator slack).'),
        '',
        '| ' + ' | '.join(head) + ' |',
        '|' + '---|' * len(head),
    ]
    for r in rows:
        if 'error' in r:
            lines.append(f"| {r['model']} | failed: {r['error']} |" + ' |' * (len(head) - 2))
            continue
        cells = [r['model'], f"{r['params_m']:.1f}", f"{r['gflops']:.4g}", f"{r['gflops_attention']:.3g}"]
        for key in ('fwd', 'fwdbwd'):
            for bs in bss:
                cells += [f"{r[f'{key}_img_s_b{bs}']:.3g}", f"{r[f'{key}_peak_mib_b{bs}']:.0f}"]
        lines.append('| ' + ' | '.join(cells) + ' |')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def write_plot(rows, task, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    paper = paper_numbers(task)
    pts = [(r['gflops'], paper[r['model']], r['model']) for r in rows if 'error' not in r and r['model'] in paper]
    fig, ax = plt.subplots(figsize=(7, 5))
    for x, y, name in pts:
        ax.scatter(x, y)
        ax.annotate(name, (x, y), textcoords='offset points', xytext=(4, 4), fontsize=8)
    ax.set_xlabel('backbone GFLOPs at the measured size (densekit count)')
    ax.set_ylabel(f'paper box AP, {task}')
    ax.set_title('Backbones: cost vs reported accuracy' if pts else
                 f'no measured backbone has a reported {task} box AP in configs/README.md')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(pts)


def main(argv=None):
    args = parse_args(argv)
    if args.one:
        import densekit  # noqa: F401
        print(json.dumps(measure_one(args.one, args.device, args.size, args.batch_sizes, args.iters)))
        return
    import densekit  # noqa: F401
    from densekit.models import list_backbones
    names = select(list_backbones(), args.filter)
    rows = []
    for i, name in enumerate(names, 1):
        print(f'[{i}/{len(names)}] {name}', flush=True)
        cmd = [sys.executable, osp.abspath(__file__), '--one', name, '--device', args.device,
               '--size', *map(str, args.size), '--iters', str(args.iters),
               '--batch-sizes', *map(str, args.batch_sizes)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ['no output'])[-1]
            print(f'  failed: {last}', flush=True)
            rows.append({'model': name, 'error': last})
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    write_table(rows, args, args.out)
    print(f'table: {args.out}')
    if not args.no_plot:
        png = osp.splitext(args.out)[0] + '.png'
        n = write_plot(rows, args.task, png)
        print(f'plot:  {png} ({n} backbones with a reported {args.task} box AP)')
    if any('error' in r for r in rows):
        sys.exit(1)


if __name__ == '__main__':
    main()
