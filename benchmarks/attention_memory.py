"""Peak tensor memory of forward + backward of case (d) (Swin-T stage 1 window attention with its
qkv / output projections), counted without a GPU.

A ``TorchDispatchMode`` adds up the bytes of every storage an operator creates and subtracts them
when the storage is freed; the peak of that sum is the peak of live tensor memory (the CUDA caching
allocator's ``max_memory_allocated`` counts the same allocations, rounded to its block sizes). The
baselines (timm's Swin attention, eager and fused) really run on the CPU; densekit's Triton
backend runs its Python wrapper with every kernel compiled for sm_90 instead of launched
(``tools/dev/triton_aot.py``), so its allocations are exactly those of a GPU run. The fused-SDPA
row is CPU-specific (the CPU math fallback for a masked SDPA) and says nothing about CUDA.

    python benchmarks/attention_memory.py [--batch 32]
"""
from __future__ import annotations

import argparse
import os
import sys
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'tools', 'dev')]


class LiveBytes(TorchDispatchMode):
    """Live bytes of storages created inside the mode; ``peak`` is their maximum."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != 'meta':
                st = t.untyped_storage()
                key, n = st.data_ptr(), st.nbytes()
                if n and key not in self._seen:
                    self._seen.add(key)
                    self.live += n
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(st, self._free, key, n)
        return out

    def _free(self, key, n):
        self.live -= n
        self._seen.discard(key)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--batch', type=int, default=32)
    args = ap.parse_args()
    from timm.models.swin_transformer import SwinTransformerBlock

    from densekit.layers.window import rpb_table_to_dense
    import triton_aot  # tools/dev
    from densekit.ops.window.triton import window_triton

    B, H, W, C, h, ws, shift = args.batch, 56, 56, 96, 3, 7, 3
    torch.manual_seed(0)
    blk = SwinTransformerBlock(C, (H, W), num_heads=h, window_size=ws, shift_size=shift).to(torch.bfloat16)
    attn = blk.attn
    x = torch.randn(B, H, W, C, dtype=torch.bfloat16).requires_grad_()
    # the input's own storage is counted by every row (a view of it is an op output): subtract it
    x_mib = x.untyped_storage().nbytes() / 2 ** 20

    def peak_mib(fn):
        x.grad = None
        for p in attn.parameters():
            p.grad = None
        mode = LiveBytes()
        with mode:
            y = fn()
            y.backward(torch.ones_like(y))
            del y
        return mode.peak / 2 ** 20 - x_mib

    def ours():
        q, k, v = attn.qkv(x).view(B, H, W, 3, h, C // h).unbind(3)
        out = window_triton(q, k, v, (ws, ws), (shift, shift),
                            rpb_table_to_dense(attn.relative_position_bias_table, ws), attn.scale)
        return attn.proj(out.reshape(B, H, W, C))

    rows = {}
    for fused in (False, True):
        attn.fused_attn = fused
        rows[f'timm Swin _attn ({"fused SDPA, CPU fallback" if fused else "eager"})'] = peak_mib(lambda: blk._attn(x))
    with triton_aot.compile_only(90):
        rows['qkv + densekit.window_attention[triton] + proj (kernels compiled, not run)'] = peak_mib(ours)
    print(f'case (d) B={B}, 56x56, C=96, 3 heads, window 7, shift 3, bf16, fwd+bwd, torch {torch.__version__}')
    print('| implementation | peak extra MiB | vs timm eager |')
    print('|---|---|---|')
    eager = next(iter(rows.values()))
    for name, mib in rows.items():
        print(f'| {name} | {mib:.1f} | {mib / eager:.2f} |')


if __name__ == '__main__':
    main()
