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

It writes a Markdown table (stamped with device, versions, date, commit and command) and, next to
it, a scatter plot of GFLOPs (or forward images/s, ``--plot-x``) against the accuracy the papers
report (from ``configs/README.md``): box AP for ``--task`` and mIoU for ``--seg-task``.

Rows are keyed by backbone. When the output table exists (and ``--fresh`` is not given), the
measured rows replace the rows of the same backbones and every other row is kept, so a subset can
be (re)measured with ``--filter``; each row names the run that measured it, and the table lists
the stamp and command of every run it still holds. Merging requires the same device, input size
and batch sizes as the existing table.
"""
from __future__ import annotations

import argparse
import datetime
import fnmatch
import inspect
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

CONFIG_README = osp.join(REPO, 'configs', 'README.md')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    p.add_argument('--size', type=int, nargs=2, default=(800, 1333), metavar=('H', 'W'))
    p.add_argument('--filter', nargs='+', default=None, metavar='GLOB',
                   help="backbone names to measure (fnmatch globs); default: every registered backbone "
                        "except the '*_test' variants")
    p.add_argument('--batch-sizes', type=int, nargs='+', default=(1, 2))
    p.add_argument('--iters', type=int, default=3, help='timed iterations (median) after one warm-up')
    p.add_argument('--task', default='Mask R-CNN 3x ms',
                   help='configs/README.md detection task whose box AP is plotted')
    p.add_argument('--seg-task', default='UPerNet ADE20K 160k',
                   help='configs/README.md segmentation task whose mIoU is plotted')
    p.add_argument('--plot-x', default='gflops', choices=('gflops', 'img_s'),
                   help='x axis of the plot: GFLOPs or forward images/s at batch 1')
    p.add_argument('--out', default=osp.join(REPO, 'docs', 'leaderboard.md'))
    p.add_argument('--note', default=None,
                   help='a paragraph written above the table (kept by later merges that give none)')
    p.add_argument('--merge-from', nargs='+', default=None, metavar='TABLE',
                   help='measure nothing: merge the rows (and runs) of these tables, written by this tool '
                        'with the same setup (e.g. by parallel runs), into --out')
    p.add_argument('--fresh', action='store_true',
                   help='start a new table instead of merging into an existing --out')
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
    from densekit.models.registry import get_backbone_builder
    from densekit.utils.flops import count_model_flops

    H, W = size
    kwargs = {}
    if 'img_size' in inspect.signature(get_backbone_builder(name)).parameters:
        # fixed-size models (BoTNet) are built for the measured size, rounded up to a multiple of 32
        kwargs['img_size'] = (-(-H // 32) * 32, -(-W // 32) * 32)
    model = build_backbone(name, **kwargs).to(device)
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


_METRIC = {'box': re.compile(r'box AP ([0-9.]+)'), 'miou': re.compile(r'mIoU ([0-9.]+)')}


def _config_backbone(path: str, names: set, depth: int = 0) -> str | None:
    """The registered backbone a config (or the first of its ``_base_`` files that names one) builds."""
    if depth > 8 or not osp.isfile(path):
        return None
    with open(path) as f:
        text = f.read()
    for name in re.findall(r"type\s*=\s*'([\w.-]+)'", text):
        if name in names:
            return name
    for base in re.findall(r"'([^']+\.py)'", text.split('_base_', 1)[1] if '_base_' in text else ''):
        found = _config_backbone(osp.normpath(osp.join(osp.dirname(path), base)), names, depth + 1)
        if found:
            return found
    return None


def paper_numbers(task: str, metric: str = 'box') -> dict:
    """``registered name -> reported number`` for ``task`` from the table in configs/README.md:
    ``metric='box'``: box AP, ``'miou'``: single-scale mIoU. The backbone of each row is the one its
    config builds."""
    import densekit  # noqa: F401
    from densekit.models import list_backbones
    names = set(list_backbones())
    out = {}
    with open(CONFIG_README) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            if len(cells) < 4 or cells[0] != task:
                continue
            m = _METRIC[metric].search(cells[3])
            cfg = re.search(r'\]\(([^)]+\.py)\)', cells[2])
            if not (m and cfg):
                continue
            name = _config_backbone(osp.join(osp.dirname(CONFIG_README), cfg.group(1)), names)
            if name is not None:
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
            f'{datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}')


def command(args) -> str:
    cmd = (f'python tools/analysis/leaderboard.py --device {args.device} --size {args.size[0]} {args.size[1]} '
           f'--batch-sizes {" ".join(map(str, args.batch_sizes))} --iters {args.iters}')
    if args.filter:
        cmd += ' --filter ' + ' '.join(args.filter)
    return cmd


def _setup(args) -> str:
    """What rows must share to sit in one table."""
    return (f'Setup: device {args.device} · input {args.size[0]}x{args.size[1]} · batch sizes '
            f'{" ".join(map(str, args.batch_sizes))} · '
            f'{"bf16 autocast" if args.device == "cuda" else "float32"} · median of timed iterations '
            f'after one warm-up')


def _header(bss) -> list:
    head = ['backbone', 'params (M)', 'GFLOPs', 'of which attention']
    for label in ('fwd', 'fwd+bwd'):
        for bs in bss:
            head += [f'{label} img/s b{bs}', f'{label} peak MiB b{bs}']
    return head + ['run']


def _cells(r, bss) -> list:
    if 'error' in r:
        return [r['model'], f"failed: {r['error']}"]
    cells = [r['model'], f"{r['params_m']:.1f}", f"{r['gflops']:.4g}", f"{r['gflops_attention']:.3g}"]
    for key in ('fwd', 'fwdbwd'):
        for bs in bss:
            cells += [f"{r[f'{key}_img_s_b{bs}']:.3g}", f"{r[f'{key}_peak_mib_b{bs}']:.0f}"]
    return cells


def read_table(path: str, bss) -> tuple:
    """``(setup line, note, {run id: stamp line}, {backbone: row dict})`` of a table this tool wrote."""
    setup, note, runs, rows = None, None, {}, {}
    head = _header(bss)
    with open(path) as f:
        lines = f.read().splitlines()
    for line in lines:
        if line.startswith('Setup: '):
            setup = line
        if line.startswith('Note: '):
            note = line[len('Note: '):]
        m = re.match(r'^- run (\d+): (.*)$', line)
        if m:
            runs[int(m.group(1))] = m.group(2)
        if not line.startswith('| ') or line.startswith('| backbone'):
            continue
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        r = {'model': cells[0], 'run': int(cells[-1])}
        if cells[1].startswith('failed: '):
            r['error'] = cells[1][len('failed: '):]
        else:
            if len(cells) != len(head):
                raise SystemExit(f'{path}: row {cells[0]!r} has {len(cells)} columns, this command writes '
                                 f'{len(head)} (other batch sizes?); use --fresh or another --out')
            r['params_m'], r['gflops'], r['gflops_attention'] = map(float, cells[1:4])
            i = 4
            for key in ('fwd', 'fwdbwd'):
                for bs in bss:
                    r[f'{key}_img_s_b{bs}'], r[f'{key}_peak_mib_b{bs}'] = float(cells[i]), float(cells[i + 1])
                    i += 2
        rows[r['model']] = r
    return setup, note, runs, rows


def _load(args, path: str) -> tuple:
    setup, note, runs, rows = read_table(path, args.batch_sizes)
    if args.note is None:
        args.note = note
    if setup is not None and setup != _setup(args):
        raise SystemExit(f'{path} was measured with another setup:\n  {setup}\nthis command:\n  '
                         f'{_setup(args)}\nuse --fresh to start a new table or another --out')
    return runs, rows


def merge(args, path: str, measured: list, others: list = ()) -> tuple:
    """Rows of the existing table at ``path`` with ``measured`` (or the rows of the tables ``others``,
    in order) replacing those of the same backbone."""
    runs, rows = {}, {}
    if not args.fresh and osp.isfile(path):
        runs, rows = _load(args, path)
    for other in others:
        other_runs, other_rows = _load(args, other)
        base = max(runs, default=0)
        runs.update({base + k: v for k, v in other_runs.items()})
        rows.update({name: dict(r, run=base + r['run']) for name, r in other_rows.items()})
    if measured or not others:
        run = max(runs, default=0) + 1
        runs[run] = f'{stamp(args.device)} · `{command(args)}`'
        for r in measured:
            rows[r['model']] = dict(r, run=run)
    used = {r['run'] for r in rows.values()}
    runs = {k: v for k, v in runs.items() if k in used}
    return runs, [rows[k] for k in sorted(rows)]


def write_table(rows, runs, args, path):
    bss = args.batch_sizes
    head = _header(bss)
    lines = [
        '# Backbone leaderboard',
        '',
        _setup(args),
        '',
        *([f'Note: {args.note}', ''] if args.note else []),
        'Runs (stamp: commit · device · versions · date · command):',
        '',
        *[f'- run {k}: {v}' for k, v in sorted(runs.items())],
        '',
        'GFLOPs: one image, multiply-add = 2, densekit attention ops by their analytic cost. Peak memory: '
        + ('`torch.cuda.max_memory_allocated` growth.' if args.device == 'cuda'
           else 'growth of the process\'s peak resident set (CPU; includes allocator slack).'),
        '',
        '| ' + ' | '.join(head) + ' |',
        '|' + '---|' * len(head),
    ]
    for r in rows:
        cells = _cells(r, bss)
        cells += [''] * (len(head) - 1 - len(cells)) + [str(r['run'])]
        lines.append('| ' + ' | '.join(cells) + ' |')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def write_plot(rows, args, path):
    """One panel per reported metric: x = GFLOPs (or forward img/s at the first batch size) as
    measured here, y = the paper's number for the full-size model of the same name."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    bs = args.batch_sizes[0]
    xkey = 'gflops' if args.plot_x == 'gflops' else f'fwd_img_s_b{bs}'
    xlabel = (f'backbone GFLOPs at {args.size[0]}x{args.size[1]} (densekit count)' if args.plot_x == 'gflops'
              else f'forward images/s at {args.size[0]}x{args.size[1]}, batch {bs} ({args.device})')
    panels = [(f'box AP, {args.task}', paper_numbers(args.task, 'box')),
              (f'mIoU, {args.seg_task}', paper_numbers(args.seg_task, 'miou'))]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    counts = []
    for ax, (ylabel, paper) in zip(axes, panels):
        pts = [(r[xkey], paper[r['model']], r['model']) for r in rows if 'error' not in r and r['model'] in paper]
        for x, y, name in pts:
            ax.scatter(x, y)
            ax.annotate(name, (x, y), textcoords='offset points', xytext=(4, 4), fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f'reported {ylabel}')
        ax.set_title(f'{len(pts)} measured backbones with a reported {ylabel}' if pts else
                     f'no measured backbone has a reported {ylabel} in configs/README.md', fontsize=9)
        ax.grid(alpha=0.3)
        counts.append(len(pts))
    fig.suptitle(f'Backbones: cost measured here vs accuracy reported by the papers (configs/README.md)')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return counts


def main(argv=None):
    args = parse_args(argv)
    if args.one:
        import densekit  # noqa: F401
        print(json.dumps(measure_one(args.one, args.device, args.size, args.batch_sizes, args.iters)))
        return
    if args.merge_from:
        runs, table = merge(args, args.out, [], args.merge_from)
        write_table(table, runs, args, args.out)
        print(f'table: {args.out} ({len(table)} rows from {", ".join(args.merge_from)})')
        if not args.no_plot:
            png = osp.splitext(args.out)[0] + '.png'
            print(f'plot:  {png}', write_plot(table, args, png))
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
    runs, table = merge(args, args.out, rows)
    write_table(table, runs, args, args.out)
    print(f'table: {args.out} ({len(rows)} measured, {len(table)} rows)')
    if not args.no_plot:
        png = osp.splitext(args.out)[0] + '.png'
        n_box, n_miou = write_plot(table, args, png)
        print(f'plot:  {png} ({n_box} backbones with a reported {args.task} box AP, '
              f'{n_miou} with a reported {args.seg_task} mIoU)')
    if any('error' in r for r in rows):
        sys.exit(1)


if __name__ == '__main__':
    main()
