"""Benchmark deformable sampled-key attention (DAT++) against the official PyTorch formulation.

The official path (``DAttentionBaseline.forward`` of LeapLabTHU/DAT-Detection from the projected
q / k / v on, restated here: the code is not copied) builds the whole ``[B * heads, H * W, N]``
bias with ``grid_sample`` of the group-expanded table at every query-to-sample displacement, adds
it to the ``einsum`` logits, softmax, ``einsum``. densekit's op
(:func:`densekit.ops.deform_sampled_attention`) on the reference backend (chunked rows) and, on
CUDA, the Triton kernels (bias interpolated inside the kernel). Both get the same inputs; the
official output is checked against ours before timing.

Shapes: DAT-T++ stages at an 800x1333 image padded to 800x1344 (maps 200x336 ... 25x42; every
stage samples a 25x42 grid, ``N = 1050`` keys; heads 2 / 4 / 8 / 16 of 32 channels; groups
1 / 2 / 4 / 8; tables 111 / 55 / 27 / 13 per side).

``--backbone``: the training step instead (forward + backward of the sum of the four maps, train
mode, the detection config's ``drop_path_rate=0``) of ``dat_pp_tiny`` vs the official DAT-T++
detection backbone (the ``DAT`` class of ``models/backbones/dat.py`` of a local clone of
https://github.com/LeapLabTHU/DAT-Detection given by ``--official``, loaded through
``tools/dev/make_dat_pp_fixture.py``'s loader with its stand-ins for the mmcv 1.x / mmdet 2.x
imports; ``einops`` must be importable, ``--deps`` adds a directory holding it), same random
weights through the converter, outputs checked first, the implementations alternating within each
repetition (:func:`_timing.alternating`), at ``--size``. The official neighborhood-attention
blocks call the compiled NATTEN 0.14 functions, which the loader replaces by the fixture's
gather-based stand-ins: the official row's ``N`` blocks are that stand-in, not NATTEN's kernels.
Without ``--official`` only densekit's backends are timed (reference on CPU; reference and Triton
on CUDA, for both of the backbone's attention ops).

Usage::

    python benchmarks/deform_sampled.py --device cuda                   # all stages, fwd and fwd+bwd
    python benchmarks/deform_sampled.py --device cpu --stages 3 --dtype float32 --reps 5
    python benchmarks/deform_sampled.py --backbone --official /path/to/DAT-Detection --device cuda \
        [--deps DIR] [--size 800 1333] [--reps 7] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

from _timing import median_ms  # noqa: E402  (benchmarks/_timing.py)
from densekit.ops.deform_sampled import deform_sampled_attention  # noqa: E402

# stage -> (H, W, heads, groups, table side)
STAGES = {0: (200, 336, 2, 1, 111), 1: (100, 168, 4, 2, 55), 2: (50, 84, 8, 4, 27), 3: (25, 42, 16, 8, 13)}
HK, WK, HEAD_DIM = 25, 42, 32


def make_inputs(stage: int, batch: int, device, dtype):
    H, W, heads, groups, side = STAGES[stage]
    g = torch.Generator().manual_seed(stage)
    n = HK * WK
    mk = lambda *s: torch.randn(*s, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    pos = (torch.rand(batch, groups, n, 2, generator=g) * 2 - 1).to(device=device, dtype=dtype)
    return dict(q=mk(batch, H, W, heads, HEAD_DIM), k=mk(batch, n, heads, HEAD_DIM), v=mk(batch, n, heads, HEAD_DIM),
                pos=pos, table=mk(heads, side, side) * 0.1)


def official(q, k, v, pos, table, scale):
    """The official formulation on the op's layouts (the layout changes are outside its cost: the
    official module holds q / k / v as ``[B * heads, head_dim, tokens]``)."""
    B, H, W, h, D = q.shape
    G, n = pos.shape[1], k.shape[1]
    qo = q.reshape(B, H * W, h, D).permute(0, 2, 3, 1).reshape(B * h, D, H * W)
    ko = k.permute(0, 2, 3, 1).reshape(B * h, D, n)
    vo = v.permute(0, 2, 3, 1).reshape(B * h, D, n)
    attn = torch.einsum('b c m, b c n -> b m n', qo, ko).mul(scale)
    ys = torch.arange(H, dtype=q.dtype, device=q.device).div(H - 1.0).mul(2.0).sub(1.0)
    xs = torch.arange(W, dtype=q.dtype, device=q.device).div(W - 1.0).mul(2.0).sub(1.0)
    grid = torch.stack(torch.meshgrid(ys, xs, indexing='ij'), -1).reshape(1, H * W, 1, 2)
    disp = (grid - pos.reshape(B * G, 1, n, 2)).mul(0.5)
    rpe = table[None].expand(B, -1, -1, -1).reshape(B * G, h // G, *table.shape[1:])
    bias = F.grid_sample(rpe, disp[..., (1, 0)], mode='bilinear', align_corners=True)
    attn = (attn + bias.reshape(B * h, H * W, n)).softmax(2)
    return torch.einsum('b m n, b c n -> b c m', attn, vo)  # [B * heads, D, H * W]


def _to_official_layout(out):
    B, H, W, h, D = out.shape
    return out.reshape(B, H * W, h, D).permute(0, 2, 3, 1).reshape(B * h, D, H * W)


def run_case(stage, batch, impl, device, dtype, reps):
    inputs = make_inputs(stage, batch, device, dtype)
    scale = HEAD_DIM ** -0.5
    if impl == 'official':
        fn = lambda **a: official(**a, scale=scale)  # noqa: E731
    else:
        fn = lambda **a: _to_official_layout(deform_sampled_attention(**a, scale=scale, backend=impl))  # noqa: E731
    leaves = {n: t.clone().requires_grad_(True) for n, t in inputs.items()}
    go = torch.randn_like(fn(**inputs))

    def fwd():
        with torch.no_grad():
            return fn(**inputs)

    def fwdbwd():
        out = fn(**leaves)
        out.backward(go)

    row = dict(stage=stage, batch=batch, impl=impl, dtype=str(dtype).replace('torch.', ''), device=str(device))
    for name, f in (('fwd', fwd), ('fwdbwd', fwdbwd)):
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        row[f'{name}_ms'] = median_ms(f, device, warmup=1, reps=reps)
        if device.type == 'cuda':
            row[f'{name}_peak_MiB'] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    return row


def check(stage, batch, impl, device, dtype):
    """Max |official - impl| on one case's forward (inputs as in the timing)."""
    inputs = make_inputs(stage, batch, device, dtype)
    with torch.no_grad():
        ref = official(**inputs, scale=HEAD_DIM ** -0.5).float()
        out = _to_official_layout(deform_sampled_attention(**inputs, scale=HEAD_DIM ** -0.5, backend=impl)).float()
    return (ref - out).abs().max().item()


# DAT-T++ in the official detection config (configs/dat/mrcn_tiny_1x_4n_dp00_lr4.py of DAT-Detection).
OFFICIAL_TINY = dict(
    img_size=224, patch_size=4, expansion=4, dim_stem=64, dims=[64, 128, 256, 512], depths=[2, 4, 18, 2],
    stage_spec=[['N', 'D'], ['N', 'D'] * 2, ['N', 'D'] * 9, ['D', 'D']], heads=[2, 4, 8, 16], groups=[1, 2, 4, 8],
    use_pes=[True] * 4, strides=[8, 4, 2, 1], offset_range_factor=[-1] * 4, use_dwc_mlps=[True] * 4,
    use_lpus=[True] * 4, use_conv_patches=True, ksizes=[9, 7, 5, 3], nat_ksizes=[7] * 4, drop_path_rate=0.0,
    use_checkpoint=False)


def backbone_main(args) -> None:
    """The ``dat_pp_tiny`` training step vs the official DAT-T++ backbone (module docstring)."""
    import datetime
    from pathlib import Path

    from _timing import alternating
    from densekit.models import build_backbone, convert_checkpoint
    from routed import check, device_name, step_fn  # benchmarks/routed.py
    dev, dtype = args.device, getattr(torch, args.dtype or 'float32')
    if args.deps:
        sys.path.insert(0, args.deps)
    torch.manual_seed(0)
    ours = build_backbone('dat_pp_tiny', drop_path_rate=0.0)
    impls = {}
    if args.official:
        official_dir = Path(args.official)
        if not (official_dir / 'models' / 'backbones' / 'dat.py').is_file():
            raise SystemExit(f'--official={args.official}: no models/backbones/dat.py there '
                             '(a clone of LeapLabTHU/DAT-Detection?)')
        sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tools', 'dev'))
        from make_dat_pp_fixture import load_official_dat
        official = load_official_dat(official_dir)(**OFFICIAL_TINY)
        ours.load_state_dict(convert_checkpoint('dat_pp', official.state_dict()), strict=True)
        official.to(dev, dtype)
        impls['official DAT (NA: stand-in)'] = (official, None)
    ours.to(dev, dtype)
    backends = (args.impls or ('reference,triton' if dev == 'cuda' else 'reference')).split(',')
    for b in backends:
        impls[f'densekit [{b}]'] = (ours, b)
    img = torch.randn(args.batch, 3, *args.size, generator=torch.Generator().manual_seed(1)).to(dev, dtype)
    name = device_name(dev)
    print(f'Stamp: {datetime.date.today()} · {name} · load avg {os.getloadavg()[0]:.1f} · torch {torch.__version__} · '
          f'{dtype} · `python benchmarks/deform_sampled.py {" ".join(sys.argv[1:])}`')
    if not args.official:
        print('official rows skipped: no --official clone of LeapLabTHU/DAT-Detection given')
    for m, _ in impls.values():
        m.eval()
    diffs, errors = check(impls, img, dev)
    for m, _ in impls.values():
        m.train()
    both = alternating({k: (step_fn(m, img, True), b) for k, (m, b) in impls.items()}, dev, args.reps)
    print('\n| comparison | shape | impl | max abs diff | fwd+bwd ms | fwd+bwd peak MiB |\n|---|---|---|---|---|---|')
    rows = []
    for k, e in errors.items():
        rows.append(dict(comparison='backbone train step (dat_pp_tiny)', impl=k, error=e))
        print(f'| backbone train step (dat_pp_tiny) | - | {k} | {e[:100]} | - | - |')
    for k in impls:
        rows.append(dict(comparison='backbone train step (dat_pp_tiny)',
                         shape=f'{args.batch}x3x{args.size[0]}x{args.size[1]}', impl=k, max_abs_diff=diffs[k],
                         fwdbwd_ms=both[k][0], fwdbwd_peak_MiB=both[k][1]))
        peak = '-' if both[k][1] is None else f'{both[k][1]:.0f}'
        print(f"| {rows[-1]['comparison']} | {rows[-1]['shape']} | {k} | {diffs[k]:.3g} | {both[k][0]:.1f} | {peak} |")
    if args.json:
        with open(args.json, 'w') as fh:
            json.dump(dict(device=name, dtype=str(dtype), official=bool(args.official), rows=rows), fh, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--dtype', default=None, help='default: bfloat16 on CUDA, float32 on CPU')
    parser.add_argument('--stages', default='0,1,2,3')
    parser.add_argument('--batch', type=int, default=None, help='default: 2 (1 with --backbone)')
    parser.add_argument('--reps', type=int, default=None, help='default: 20 (7 with --backbone)')
    parser.add_argument('--impls', default=None, help='default: official,reference (+ triton on CUDA); '
                        '--backbone: densekit backends, default reference (+ triton on CUDA)')
    parser.add_argument('--json', default=None)
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (default: torch default)')
    parser.add_argument('--backbone', action='store_true',
                        help='the dat_pp_tiny training step vs the official backbone')
    parser.add_argument('--official', default=None, help='--backbone: clone of LeapLabTHU/DAT-Detection')
    parser.add_argument('--deps', default=None, help='--backbone: directory holding einops (if not installed)')
    parser.add_argument('--size', type=int, nargs=2, default=(800, 1333), help='--backbone: input size')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.backbone:
        args.batch, args.reps = args.batch or 1, args.reps or 7
        backbone_main(args)
        return
    args.batch, args.reps = args.batch or 2, args.reps or 20
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ('bfloat16' if device.type == 'cuda' else 'float32'))
    impls = (args.impls or ('official,reference,triton' if device.type == 'cuda' else 'official,reference')).split(',')
    rows = []
    print(f'# {device} {dtype} batch {args.batch} torch {torch.__version__} threads {torch.get_num_threads()}')
    print('| stage | impl | max abs diff vs official | fwd ms | fwd+bwd ms | fwd peak MiB | fwd+bwd peak MiB |')
    print('|---|---|---|---|---|---|---|')
    for stage in (int(s) for s in args.stages.split(',')):
        for impl in impls:
            try:
                diff = 0.0 if impl == 'official' else check(stage, args.batch, impl, device, dtype)
                row = run_case(stage, args.batch, impl, device, dtype, args.reps)
                row['max_abs_diff'] = diff
            except (RuntimeError, torch.OutOfMemoryError) as e:  # OOM or an unavailable backend
                row = dict(stage=stage, impl=impl, error=f'{type(e).__name__}: {str(e)[:120]}')
                if device.type == 'cuda':
                    torch.cuda.empty_cache()
            rows.append(row)
            f = lambda k: f'{row[k]:.3g}' if isinstance(row.get(k), float) else row.get('error', '-')[:60]  # noqa: E731
            print(f"| {stage} | {impl} | {f('max_abs_diff')} | {f('fwd_ms')} | {f('fwdbwd_ms')} | "
                  f"{f('fwd_peak_MiB')} | {f('fwdbwd_peak_MiB')} |", flush=True)
            if args.json:
                with open(args.json, 'w') as fh:
                    json.dump(dict(device=str(device), dtype=str(dtype), rows=rows), fh, indent=1)


if __name__ == '__main__':
    main()
