"""Benchmark local + global attention (TransNeXt's aggregated attention) against the official
PyTorch formulation.

The official path (the attention core of ``AggregatedAttention.forward`` in TransNeXt's
``transnext_native.py``, from the scaled queries on; restated here, the code is not copied)
unfolds the zero-padded key / value map (``nn.Unfold``: a ``[B, 2 * heads * D, k * k, H * W]``
copy), masks the padded window slots, concatenates the window and pooled logits, one softmax,
splits them, adds the learnable-token weights to the window probabilities and sums both parts.
densekit's op (:func:`densekit.ops.local_global.local_global_attention`) takes the same inputs on
the reference backend and, on CUDA, on compiled FlexAttention and the fused Triton kernels. The
official output is checked against each one before timing.

Shapes: TransNeXt-T (heads of 24 channels, 3 x 3 window, 7 x 7 = 49 pooled tokens as its 224 px
configuration pools them; a per-query pooled-token bias, a window bias by slot, local weights)
at an 800x1333 image: stage 1 200x334 with 3 heads, stage 2 100x167 with 6 heads.

Usage::

    python benchmarks/local_global.py --device cuda                   # stages 1, 2; fwd and fwd+bwd
    python benchmarks/local_global.py --device cpu --stages 1 --batch 1 --reps 5
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
from densekit.ops.local_global import local_global_attention  # noqa: E402

# stage -> (H, W, heads) of TransNeXt-T at 800x1333
STAGES = {1: (200, 334, 3), 2: (100, 167, 6)}
HEAD_DIM, KERNEL, POOL = 24, 3, 49


def make_inputs(stage: int, batch: int, device, dtype):
    H, W, h = STAGES[stage]
    g = torch.Generator().manual_seed(stage)
    mk = lambda *s: torch.randn(*s, generator=g).to(device=device, dtype=dtype)  # noqa: E731
    kk = KERNEL * KERNEL
    return dict(q=mk(batch, H, W, h, HEAD_DIM), k=mk(batch, H, W, h, HEAD_DIM), v=mk(batch, H, W, h, HEAD_DIM),
                k_extra=mk(batch, POOL, h, HEAD_DIM), v_extra=mk(batch, POOL, h, HEAD_DIM),
                rpb=mk(h, KERNEL, KERNEL) * 0.1, extra_bias=mk(h, H, W, POOL) * 0.1,
                local_weights=mk(batch, H, W, h, kk) * 0.1)


def official(q, k, v, k_extra, v_extra, rpb, extra_bias, local_weights):
    """The official formulation on the op's layouts (``scale = 1``: TransNeXt's queries arrive
    scaled). The layout changes into the official ``[B, heads, N, ...]`` tensors are part of
    the cost here; the official module gets its q / k / v from linear layers in those layouts."""
    B, H, W, h, D = q.shape
    N, kk, P = H * W, KERNEL * KERNEL, k_extra.shape[1]
    qo = q.reshape(B, N, h, D).transpose(1, 2)  # [B, h, N, D]
    kv = torch.cat([k, v], dim=3).reshape(B, N, 2 * h * D).transpose(1, 2).reshape(B, 2 * h * D, H, W)
    unfold = F.unfold(kv, KERNEL, padding=KERNEL // 2)  # [B, 2 h D kk, N]
    k_loc, v_loc = unfold.reshape(B, 2 * h, D, kk, N).permute(0, 1, 4, 2, 3).chunk(2, dim=1)  # [B, h, N, D, kk]
    ones = torch.ones(1, 1, H, W, device=q.device, dtype=q.dtype)
    pad = F.unfold(ones, KERNEL, padding=KERNEL // 2).reshape(1, 1, kk, N).permute(0, 1, 3, 2) == 0  # [1,1,N,kk]
    attn_loc = (qo.unsqueeze(-2) @ k_loc).squeeze(-2) + rpb.reshape(h, 1, kk)
    attn_loc = attn_loc.masked_fill(pad, float('-inf'))
    attn_pool = qo @ k_extra.permute(0, 2, 3, 1) + extra_bias.reshape(h, N, P)
    attn = torch.cat([attn_loc, attn_pool], dim=-1).softmax(dim=-1)
    attn_loc, attn_pool = torch.split(attn, [kk, P], dim=-1)
    lw = local_weights.reshape(B, N, h, kk).transpose(1, 2)
    x_loc = ((lw + attn_loc).unsqueeze(-2) @ v_loc.transpose(-2, -1)).squeeze(-2)
    x = x_loc + attn_pool @ v_extra.transpose(1, 2)  # [B, h, N, D]
    return x.transpose(1, 2).reshape(B, H, W, h, D)


def _impl(name):
    if name == 'official':
        return official
    return lambda **a: local_global_attention(**a, kernel_size=KERNEL, border='mask', scale=1.0, backend=name)


def run_case(stage, batch, impl, device, dtype, reps):
    inputs = make_inputs(stage, batch, device, dtype)
    fn = _impl(impl)
    leaves = {n: t.clone().requires_grad_(True) for n, t in inputs.items()}
    go = torch.randn_like(inputs['q'])

    def fwd():
        with torch.no_grad():
            return fn(**inputs)

    def fwdbwd():
        fn(**leaves).backward(go)

    row = dict(stage=stage, batch=batch, impl=impl, dtype=str(dtype).replace('torch.', ''), device=str(device))
    for name, f in (('fwd', fwd), ('fwdbwd', fwdbwd)):
        if device.type == 'cuda':
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        row[f'{name}_ms'] = median_ms(f, device, warmup=2, reps=reps)
        if device.type == 'cuda':
            row[f'{name}_peak_MiB'] = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    return row


def check(stage, batch, impl, device, dtype):
    """Max |official - impl| of one case's forward (inputs as in the timing)."""
    inputs = make_inputs(stage, batch, device, dtype)
    with torch.no_grad():
        ref = official(**inputs).float()
        out = _impl(impl)(**inputs).float()
    return (ref - out).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--dtype', default=None, help='default: bfloat16 on CUDA, float32 on CPU')
    parser.add_argument('--stages', default='1,2')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--reps', type=int, default=20)
    parser.add_argument('--impls', default=None, help='default: official,reference (+ flex,triton on CUDA)')
    parser.add_argument('--json', default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ('bfloat16' if device.type == 'cuda' else 'float32'))
    impls = (args.impls or ('official,reference,flex,triton' if device.type == 'cuda'
                            else 'official,reference')).split(',')
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
