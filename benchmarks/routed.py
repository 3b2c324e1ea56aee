#!/usr/bin/env python
"""BiFormer: densekit's routed attention vs the official bi-level routing attention, same run.

    python benchmarks/routed.py [--official /path/to/BiFormer] [--deps DIR] [--device cpu|cuda] \
        [--size 800 1333] [--stages 1,2] [--backbone-size H W] [--reps 7] [--threads 1] [--json FILE]

The official code (``ops/bra_legacy.py`` and ``object_detection/models_mm/biformer_mm.py`` of a
local clone of https://github.com/rayleizhu/BiFormer) is imported at run time through
``tools/dev/make_biformer_fixture.py``'s loader (inert stand-ins for its mmcv 1.x / mmdet 2.x /
fairscale imports; ``einops`` must be importable, ``--deps`` adds a directory holding it);
nothing of it is copied here. Without ``--official`` the official rows are skipped and densekit's
backends are timed against each other. Two comparisons, same random weights, outputs checked
first (the max |difference| to the official output, or to the reference backend, is reported):

* ``attention``: the whole bi-level routing attention module (``auto_pad``, qkv, region routing,
  attention, local-context conv, output projection) at BiFormer-S stage 1 (stride 4, C=64,
  2 heads, top-1) and stage 2 (stride 8, C=128, 4 heads, top-4) of a ``--size`` image, with the
  detection configs' ``n_win=16``: the maps (200x334 and 100x167 for 800x1333) are padded to
  multiples of 16 (208x336, 112x176) exactly as the official ``auto_pad``. The official module
  gathers the routed regions' keys / values into a ``topk``-times larger tensor, and its backward
  scatters into a zero tensor of every region's view of every region (``n_win**4 * tokens``).
  densekit: :class:`densekit.models.backbones.biformer.BiLevelRoutingAttention` on
  :func:`densekit.ops.routed_attention` with each backend (reference on CPU; reference, flex
  (compiled FlexAttention with a BlockMask from the routing table) and Triton on CUDA).
  Forward and forward + backward (gradient of a fixed random output gradient).
* ``backbone``: the training step (forward + backward of the sum of the four maps, train mode,
  the detection configs' ``norm_eval=True`` and ``drop_path_rate=0.2``) of ``biformer_small``
  vs the official ``BiFormer_mm`` with BiFormer-S's detection config, at ``--backbone-size``.

Times are medians of ``--reps`` runs after two warm-ups, the implementations alternating within
each repetition (:func:`_timing.alternating`); on CUDA the peak extra allocated memory of one
call. Output: a markdown table on stdout after a stamp line, and ``--json`` (rewritten after
every row). ``--smoke``: tiny sizes (``n_win=4``, ``biformer_test``), one repetition, to check the
code paths on a CPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE), str(HERE.parent / 'tools' / 'dev')]

from _timing import alternating  # noqa: E402  (benchmarks/_timing.py)
from densekit.models import build_backbone, convert_checkpoint  # noqa: E402
from densekit.models.backbones.biformer import BiLevelRoutingAttention  # noqa: E402

SMALL = dict(embed_dims=(64, 128, 256, 512), depths=(4, 4, 18, 4), topks=(1, 4, 16, -2), head_dim=32)
# The official detection config of BiFormer-S (object_detection/configs/coco/maskrcnn.1x.biformer_small.py).
OFFICIAL_SMALL = dict(
    depth=[4, 4, 18, 4], embed_dim=[64, 128, 256, 512], mlp_ratios=[3, 3, 3, 3], n_win=16,
    kv_downsample_mode='identity', kv_per_wins=[-1, -1, -1, -1], topks=[1, 4, 16, -2], side_dwconv=5,
    before_attn_dwconv=3, layer_scale_init_value=-1, qk_dims=[64, 128, 256, 512], head_dim=32,
    param_routing=False, diff_routing=False, soft_routing=False, pre_norm=True, pe=None, auto_pad=True,
    use_checkpoint_stages=[], drop_path_rate=0.2, norm_eval=True)


def stage_map(size, stage: int):
    """Map size of 1-based ``stage`` (stride ``2 ** (stage + 1)``): the stem's two and each
    downsampler's stride-2, padding-1, 3x3 convs round up."""
    h, w = size
    for _ in range(stage + 1):
        h, w = -(-h // 2), -(-w // 2)
    return h, w


def padded(hw, n_win: int):
    """The official ``auto_pad``: bottom / right zero padding to multiples of ``n_win``."""
    return tuple(-(-s // n_win) * n_win for s in hw)


def load_official(path: Path):
    """``(BiLevelRoutingAttention, BiFormer_mm)`` classes of the official clone."""
    from make_biformer_fixture import load_official_biformer  # tools/dev
    official_mm = load_official_biformer(path)
    return sys.modules['ops.bra_legacy'].BiLevelRoutingAttention, official_mm


def backends_for(device: str, requested) -> list:
    if requested:
        return requested.split(',')
    return ['reference', 'flex', 'triton'] if device == 'cuda' else ['reference']


def device_name(dev: str) -> str:
    if dev == 'cuda':
        return torch.cuda.get_device_name()
    return f'{platform.machine()} CPU, {torch.get_num_threads()} thread(s)'


def max_diff(a, b) -> float:
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b))


def step_fn(forward, x, backward: bool, grads=None):
    """One call: forward (no autograd graph) or forward + backward of ``grads`` (default: the sum
    of the outputs) into a fresh leaf input and the parameters."""
    def fn():
        if not backward:
            with torch.no_grad():
                return forward(x)
        xi = x.detach().requires_grad_(True)
        outs = forward(xi)
        if grads is None:
            sum(o.float().sum() for o in outs).backward()
        else:
            torch.autograd.backward(outs, grads)
    return fn


def attention_rows(args, dev, dtype, official_bra, emit) -> None:
    n_win = args.n_win
    for stage in (int(s) for s in args.stages.split(',')):
        dim, topk = SMALL['embed_dims'][stage - 1], SMALL['topks'][stage - 1]
        heads = dim // SMALL['head_dim']
        hw = stage_map(args.size, stage)
        hp = padded(hw, n_win)
        torch.manual_seed(stage)
        ours = BiLevelRoutingAttention(dim, num_heads=heads, n_win=n_win, topk=topk, side_dwconv=5)
        impls = {}
        if official_bra is not None:
            off = official_bra(dim=dim, num_heads=heads, n_win=n_win, qk_dim=dim, kv_per_win=-1,
                               kv_downsample_mode='identity', topk=topk, param_attention='qkvo',
                               side_dwconv=5, auto_pad=True)
            ours.load_state_dict({k.replace('qkv.qkv.', 'qkv.'): v for k, v in off.state_dict().items()},
                                 strict=True)
            off.to(dev, dtype)
            impls['official bra_legacy'] = (lambda t, m=off: [m(t)], None)
        ours.to(dev, dtype)
        for b in backends_for(dev, args.backends):
            impls[f'densekit [{b}]'] = (lambda t: [ours(t)], b)
        gen = torch.Generator().manual_seed(100 + stage)
        x = torch.randn(args.batch, *hw, dim, generator=gen).to(dev, dtype)
        go = [torch.randn(args.batch, *hw, dim, generator=gen).to(dev, dtype)]
        shape = (f'stage {stage}: {args.batch}x{hw[0]}x{hw[1]} (padded {hp[0]}x{hp[1]}), C={dim}, '
                 f'{heads} heads, n_win {n_win}, top-{topk}')
        diffs, errors = check(impls, x, dev)
        for k, e in errors.items():
            emit(dict(comparison='attention', stage=stage, shape=shape, impl=k, error=e))
        fwd = alternating({k: (step_fn(f, x, False), b) for k, (f, b) in impls.items()}, dev, args.reps)
        both = alternating({k: (step_fn(f, x, True, go), b) for k, (f, b) in impls.items()}, dev, args.reps)
        for k in impls:
            emit(dict(comparison='attention', stage=stage, shape=shape, impl=k, max_abs_diff=diffs[k],
                      fwd_ms=fwd[k][0], fwdbwd_ms=both[k][0], fwd_peak_MiB=fwd[k][1], fwdbwd_peak_MiB=both[k][1]))
        del impls, ours
        if dev == 'cuda':
            torch.cuda.empty_cache()


def check(impls, x, dev):
    """``(diffs, errors)``: the max |difference| of each implementation's outputs to the first
    one's (the official, if given). An implementation that fails (a backend that cannot run, out
    of memory) is taken out of ``impls`` and reported in ``errors`` instead of ending the run."""
    from _timing import attn_backend
    outs, errors = {}, {}
    with torch.no_grad():
        for k, (f, b) in list(impls.items()):
            try:
                with attn_backend(b):
                    outs[k] = [o.detach() for o in f(x)]
            except (RuntimeError, ValueError) as e:  # torch.OutOfMemoryError is a RuntimeError
                errors[k] = f'{type(e).__name__}: {str(e)[:160]}'
                del impls[k]
                if dev == 'cuda':
                    torch.cuda.empty_cache()
    first = next(iter(outs.values()), None)
    return {k: max_diff(o, first) for k, o in outs.items()}, errors


def backbone_rows(args, dev, dtype, official_mm, emit) -> None:
    torch.manual_seed(0)
    if args.smoke:
        ours = build_backbone('biformer_test', norm_eval=True)
        official = None
    else:
        ours = build_backbone('biformer_small', n_win=args.n_win, norm_eval=True, drop_path_rate=0.2)
        official = official_mm(**OFFICIAL_SMALL) if official_mm is not None else None
    impls = {}
    if official is not None:
        ours.load_state_dict(convert_checkpoint('biformer', official.state_dict()), strict=True)
        official.to(dev, dtype)
        impls['official BiFormer_mm'] = (official, None)
    ours.to(dev, dtype)
    for b in backends_for(dev, args.backends):
        impls[f'densekit [{b}]'] = (ours, b)
    size = args.backbone_size or args.size
    img = torch.randn(args.batch, 3, *size, generator=torch.Generator().manual_seed(1)).to(dev, dtype)
    for m, _ in impls.values():
        m.eval()
    diffs, errors = check(impls, img, dev)
    name = 'biformer_test' if args.smoke else f'biformer_small, n_win {args.n_win}'
    for k, e in errors.items():
        emit(dict(comparison=f'backbone train step ({name})', shape=f'{args.batch}x3x{size[0]}x{size[1]}',
                  impl=k, error=e))
    for m, _ in impls.values():
        m.train()
    both = alternating({k: (step_fn(m, img, True), b) for k, (m, b) in impls.items()}, dev, args.reps)
    for k in impls:
        emit(dict(comparison=f'backbone train step ({name})', shape=f'{args.batch}x3x{size[0]}x{size[1]}',
                  impl=k, max_abs_diff=diffs[k], fwd_ms=None, fwdbwd_ms=both[k][0], fwd_peak_MiB=None,
                  fwdbwd_peak_MiB=both[k][1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, default=None, help='clone of rayleizhu/BiFormer')
    parser.add_argument('--deps', type=Path, default=None, help='directory holding einops (if not installed)')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16', 'float16'))
    parser.add_argument('--size', type=int, nargs=2, default=(800, 1333), help='image size of the attention shapes')
    parser.add_argument('--backbone-size', type=int, nargs=2, default=None, help='default: --size')
    parser.add_argument('--stages', default='1,2', help='1-based BiFormer-S stages of the attention rows (1-3)')
    parser.add_argument('--n-win', type=int, default=16)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--reps', type=int, default=7)
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (default: torch default)')
    parser.add_argument('--backends', default=None, help='densekit backends (default: reference on CPU; '
                        'reference,flex,triton on CUDA)')
    parser.add_argument('--skip-attention', action='store_true')
    parser.add_argument('--skip-backbone', action='store_true')
    parser.add_argument('--json', type=Path, default=None)
    parser.add_argument('--smoke', action='store_true', help='tiny sizes, 1 repetition (checks the code paths)')
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.backbone_size, args.n_win, args.reps = (64, 96), (48, 80), 4, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.deps is not None:
        sys.path.insert(0, str(args.deps))
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device')
    if any(not 1 <= int(s) <= 3 for s in args.stages.split(',')):
        parser.error(f'--stages={args.stages!r}: the routed stages are 1, 2 and 3')
    dev, dtype = args.device, getattr(torch, args.dtype)
    official_bra = official_mm = None
    if args.official is not None:
        if not (args.official / 'ops' / 'bra_legacy.py').is_file():
            parser.error(f'--official={args.official}: no ops/bra_legacy.py there (a clone of rayleizhu/BiFormer?)')
        official_bra, official_mm = load_official(args.official)
    name = device_name(dev)
    cmd = ' '.join(argv if argv is not None else sys.argv[1:])
    print(f'Stamp: {datetime.date.today()} · {name} · load avg {os.getloadavg()[0]:.1f} · torch {torch.__version__} · '
          f'{args.dtype} · `python benchmarks/routed.py {cmd}`')
    if official_bra is None:
        print('official rows skipped: no --official clone of rayleizhu/BiFormer given')
    print('\n| comparison | shape | impl | max abs diff | fwd ms | fwd+bwd ms | fwd peak MiB | fwd+bwd peak MiB |')
    print('|---|---|---|---|---|---|---|---|')
    rows = []
    meta = dict(device=name, dtype=args.dtype, torch=torch.__version__, command=cmd, date=str(datetime.date.today()),
                load_avg=os.getloadavg()[0], official=official_bra is not None)

    def emit(row):
        rows.append(row)
        def f(k):
            if row.get(k) is None:
                return '-'
            return f'{row[k]:.3g}' if k == 'max_abs_diff' else f'{row[k]:.1f}'
        diff = row['error'][:100] if 'error' in row else f('max_abs_diff')
        print(f"| {row['comparison']} | {row['shape']} | {row['impl']} | {diff} | {f('fwd_ms')} | "
              f"{f('fwdbwd_ms')} | {f('fwd_peak_MiB')} | {f('fwdbwd_peak_MiB')} |", flush=True)
        if args.json:
            args.json.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))

    if not args.skip_attention:
        attention_rows(args, dev, dtype, official_bra, emit)
    if not args.skip_backbone:
        backbone_rows(args, dev, dtype, official_mm, emit)
    return 0


if __name__ == '__main__':
    sys.exit(main())
