#!/usr/bin/env python
"""Backbone throughput and memory: densekit kernels vs densekit's reference path vs timm.

GPU (the recorded figures)::

    python benchmarks/backbones.py gpu [--models swin_tiny convnext_tiny halonet26t ...]

For every model and setting (224x224 batch 64 and 800x1333 batch 2; HaloNet: 256x256 batch 64 and
768x1280 batch 2, the nearest sizes timm's HaloNet accepts) it times a training step (forward +
backward of the sum of all returned maps, bf16 autocast, fp32 weights) with CUDA events and
records the peak allocated memory, for

* ``densekit``: the automatic attention backend (Triton / FlexAttention where they run);
* ``reference``: the same densekit model with ``DENSEKIT_ATTN_BACKEND=reference``;
* ``timm``: timm's implementation of the same architecture where one exists (its stage outputs
  through ``forward_intermediates``).

800x1333 is fed as 800x1344 (what mmdet's ``pad_size_divisor=32`` makes of it) to every
implementation, so the rows compare the same work.

CPU (a regression figure for CI machines)::

    python benchmarks/backbones.py cpu [--threads 1]

times the forward pass (eval, no grad) of every tiny ``*_test`` variant at 224x224 and 97x131,
batch 1, median of ``--repeats`` runs.

Output: a markdown table on stdout (paste into ``benchmarks/RESULTS.md`` with the command line,
device, torch version and date the script prints first).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # run from a checkout without install

from _timing import samples_ms, seconds_per_call  # noqa: E402  (benchmarks/_timing.py)
from densekit.models import build_backbone, list_backbones  # noqa: E402
from densekit.ops._backend import ENV_VAR  # noqa: E402

# densekit name -> timm model name (same architecture)
TIMM_NAMES = {
    'convnext_tiny': 'convnext_tiny', 'convnext_small': 'convnext_small', 'convnext_base': 'convnext_base',
    'convnext_large': 'convnext_large', 'convnext_xlarge': 'convnext_xlarge',
    'swin_tiny': 'swin_tiny_patch4_window7_224', 'swin_small': 'swin_small_patch4_window7_224',
    'swin_base': 'swin_base_patch4_window7_224', 'swin_large': 'swin_large_patch4_window7_224',
    'swin_base_w12': 'swin_base_patch4_window12_384', 'swin_large_w12': 'swin_large_patch4_window12_384',
    'halonet_h1': 'halonet_h1', 'halonet26t': 'halonet26t', 'sehalonet33ts': 'sehalonet33ts',
    'halonet50ts': 'halonet50ts', 'eca_halonext26ts': 'eca_halonext26ts', 'haloregnetz_b': 'haloregnetz_b',
}
DEFAULT_GPU_MODELS = ('convnext_tiny', 'swin_tiny', 'swin_base_w12', 'halonet26t', 'halonet50ts',
                      'nat_tiny', 'dinat_tiny', 'cswin_tiny')
SETTINGS = (((224, 224), 64), ((800, 1344), 2))
# timm's HaloNet needs every attention map to be a multiple of its block size (8 at stride 32).
HALO_SETTINGS = (((256, 256), 64), ((768, 1280), 2))
HALO_FAMILY = ('halonet', 'sehalonet', 'eca_halonext', 'haloregnetz')


def family_kwargs(name: str, size: tuple[int, int]) -> dict:
    """Per-resolution settings of a family: DiNAT's dilation schedule follows the input size (the
    detection schedule's 7 x 28 window would pad a 224² stage-0 map from 56² to 196²)."""
    if name.startswith('dinat_'):
        return {'dilations': 'imagenet' if max(size) <= 384 else 'coco'}
    return {}


def header(argv: list[str], device: str) -> str:
    if device == 'cuda':
        dev = torch.cuda.get_device_name()
    else:
        dev = f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)'
    lines = [f'- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}',
             f'- command: `python benchmarks/backbones.py {" ".join(argv)}`',
             f'- device: {dev}', f'- torch {torch.__version__}']
    try:
        import triton
        lines.append(f'- triton {triton.__version__}')
    except ImportError:
        pass
    try:
        import timm
        lines.append(f'- timm {timm.__version__}')
    except ImportError:
        pass
    return '\n'.join(lines)


@contextlib.contextmanager
def attn_backend(name: Optional[str]) -> Iterator[None]:
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


def timm_features(name: str, size) -> Callable[[torch.Tensor], list]:
    import timm
    tname = TIMM_NAMES[name]
    kwargs = {}
    if tname.startswith('swin'):
        kwargs = dict(img_size=size)
    model = timm.create_model(tname, **kwargs)

    def run(x):
        return model.forward_intermediates(x, indices=4, intermediates_only=True)

    run.model = model
    return run


def _train_step(forward: Callable, params, x: torch.Tensor, iters: int, warmup: int):
    """(img/s, peak GiB) of forward + backward under bf16 autocast; on CPU (a smoke run of this
    code path only) wall-clock timing and no memory figure."""
    cuda = x.device.type == 'cuda'

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            outs = forward(x)
            loss = sum(o.float().mean() for o in outs)
        loss.backward()
        for p in params:
            p.grad = None

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds = seconds_per_call(step, x.device, iters, warmup=0)
    return x.shape[0] / seconds, torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else float('nan')


def bench_gpu(models, iters: int, warmup: int, device: str = 'cuda', sizes=None) -> list[str]:
    rows = ['| model | impl | input | batch | img/s (fwd+bwd) | peak mem (GiB) | vs timm |',
            '|---|---|---|---|---|---|---|']
    for name in models:
        if name not in list_backbones():
            rows.append(f'| {name} | - | - | - | not registered | - | - |')
            continue
        settings = sizes or (HALO_SETTINGS if name.startswith(HALO_FAMILY) else SETTINGS)
        for size, batch in settings:
            x = torch.randn(batch, 3, *size, device=device)
            results = {}
            for impl in ('densekit', 'reference', 'timm'):
                if device == 'cuda':
                    torch.cuda.empty_cache()
                try:
                    if impl == 'timm':
                        if name not in TIMM_NAMES:
                            continue
                        fwd = timm_features(name, size)
                        model = fwd.model.to(device).train()
                        results[impl] = _train_step(fwd, list(model.parameters()), x, iters, warmup)
                    else:
                        model = build_backbone(name, **family_kwargs(name, size)).to(device).train()
                        with attn_backend(None if impl == 'densekit' else 'reference'):
                            results[impl] = _train_step(model, list(model.parameters()), x, iters, warmup)
                except torch.cuda.OutOfMemoryError:
                    results[impl] = 'OOM'
                except Exception as e:  # a failing implementation is a row, not a crash
                    results[impl] = f'error: {type(e).__name__}: {str(e)[:80]}'
                finally:
                    model = None
            timm_ips = results.get('timm')[0] if isinstance(results.get('timm'), tuple) else None
            for impl, res in results.items():
                if isinstance(res, tuple):
                    ratio = f'{res[0] / timm_ips:.2f}x' if timm_ips else '-'
                    rows.append(f'| {name} | {impl} | {size[0]}x{size[1]} | {batch} | {res[0]:.4g} | '
                                f'{res[1]:.2f} | {ratio} |')
                else:
                    rows.append(f'| {name} | {impl} | {size[0]}x{size[1]} | {batch} | {res} | - | - |')
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def bench_cpu(repeats: int) -> list[str]:
    rows = ['| model | input | batch | forward ms (median) | min ms |', '|---|---|---|---|---|']
    for name in list_backbones('*_test'):
        torch.manual_seed(0)
        model = build_backbone(name).eval()
        for size in ((224, 224), (97, 131)):
            x = torch.randn(1, 3, *size)
            try:
                with torch.no_grad():
                    times = samples_ms(lambda: model(x), 'cpu', warmup=2, reps=repeats)
            except Exception as e:  # a failing model is a row, not a crash
                rows.append(f'| {name} | {size[0]}x{size[1]} | 1 | error: {type(e).__name__}: {str(e)[:60]} | - |')
                continue
            rows.append(f'| {name} | {size[0]}x{size[1]} | 1 | {statistics.median(times):.1f} | {min(times):.1f} |')
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description='densekit backbone benchmarks')
    sub = parser.add_subparsers(dest='mode', required=True)
    g = sub.add_parser('gpu', help='training throughput / memory on CUDA (bf16 autocast)')
    g.add_argument('--models', nargs='+', default=list(DEFAULT_GPU_MODELS))
    g.add_argument('--iters', type=int, default=10)
    g.add_argument('--warmup', type=int, default=3)
    g.add_argument('--smoke-cpu', action='store_true',
                   help='run this code path on CPU at 64x64 batch 2 (checks the script, no figures)')
    c = sub.add_parser('cpu', help='forward time of the tiny *_test variants')
    c.add_argument('--threads', type=int, default=1)
    c.add_argument('--repeats', type=int, default=10)
    args = parser.parse_args(argv)

    if args.mode == 'gpu' and args.smoke_cpu:
        print(header(argv, 'cpu') + '\n')
        rows = bench_gpu(args.models, 1, 1, device='cpu', sizes=(((64, 64), 2),))
    elif args.mode == 'gpu':
        if not torch.cuda.is_available():
            parser.error('gpu mode needs a CUDA device')
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        print(header(argv, 'cuda') + '\n')
        rows = bench_gpu(args.models, args.iters, args.warmup)
    else:
        torch.set_num_threads(args.threads)
        print(header(argv, 'cpu') + '\n')
        rows = bench_cpu(args.repeats)
    print('\n'.join(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
