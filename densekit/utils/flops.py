"""FLOP counting that knows densekit's attention ops.

A generic counter (``torch.utils.flop_counter.FlopCounterMode``, fvcore, mmengine's) counts the
aten operators a forward pass runs. Inside densekit's attention ops that is wrong both ways: the
Triton and flex backends are opaque to it (counted as nothing), and the pure-PyTorch reference
computes padded tiles and gathered copies (counted as more than the op's cost). :func:`count_flops`
therefore counts every other operator with ``FlopCounterMode`` and each call of ``na1d`` / ``na2d``
/ ``window_attention`` / ``halo_attention`` / ``local_global_attention`` / ``routed_attention`` /
``deform_sampled_attention`` / ``window_extra_attention`` / ``kmeans_attention`` by its analytic
cost, with the counter suspended while the op runs.

The convention is torch's: a multiply-add is 2 FLOPs (a matmul of ``[m, k] x [k, n]`` is ``2mkn``).
Papers and fvcore usually report multiply-adds and call them FLOPs; :attr:`FlopCount.macs` gives
that number. Softmax, normalisation and elementwise work are not counted, as in both conventions.
"""
from __future__ import annotations

import contextlib
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator

import torch
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils.flop_counter import FlopCounterMode

import densekit.ops as _ops

__all__ = ['FlopCount', 'count_flops', 'attention_flops']


def _na_flops(q, k, v, kernel_size, *args, **kwargs) -> int:
    taps = math.prod(kernel_size) if isinstance(kernel_size, (tuple, list)) else kernel_size ** (q.dim() - 3)
    queries = math.prod(q.shape[:-1])  # batch * spatial * heads
    return 2 * queries * taps * (q.shape[-1] + v.shape[-1])


def _window_flops(q, k, v, window_size, *args, **kwargs) -> int:
    taps = math.prod(window_size) if isinstance(window_size, (tuple, list)) else window_size ** 2
    queries = math.prod(q.shape[:-1])
    return 2 * queries * taps * (q.shape[-1] + v.shape[-1])


def _halo_flops(q, k, v, block_size, halo_size, rel_h=None, rel_w=None, *args, **kwargs) -> int:
    win = block_size + 2 * halo_size
    queries = math.prod(q.shape[:-1])
    flops = 2 * queries * win * win * (q.shape[-1] + v.shape[-1])
    # Relative logits: each query meets the (2 * win - 1) embeddings of each axis once (timm's
    # rel_logits_1d), then the per-axis terms are broadcast over the window.
    for rel in (kwargs.get('rel_h', rel_h), kwargs.get('rel_w', rel_w)):
        if rel is not None:
            flops += 2 * queries * (2 * win - 1) * q.shape[-1]
    return flops


def _local_global_flops(q, k, v, k_extra, v_extra, kernel_size, *args, **kwargs) -> int:
    taps = math.prod(kernel_size) if isinstance(kernel_size, (tuple, list)) else kernel_size ** 2
    queries = math.prod(q.shape[:-1])
    return 2 * queries * (taps + k_extra.shape[1]) * (q.shape[-1] + v.shape[-1])


def _routed_flops(q, k, v, index, regions, *args, **kwargs) -> int:
    # Every query meets all tokens of its ``topk`` routed regions (region size H * W / R).
    B, H, W = q.shape[:3]
    num_regions = index.shape[1]
    keys = index.shape[2] * (H * W // num_regions)
    queries = math.prod(q.shape[:-1])
    return 2 * queries * keys * (q.shape[-1] + v.shape[-1])


def _deform_sampled_flops(q, k, v, pos, table, *args, **kwargs) -> int:
    # Every query meets the N sampled keys; the bias interpolation is elementwise work.
    queries = math.prod(q.shape[:-1])
    return 2 * queries * k.shape[1] * (q.shape[-1] + v.shape[-1])


def _window_extra_flops(q, k, v, *args, **kwargs) -> int:
    # Every token of a window (its carrier tokens included) meets the window's T = P + N tokens.
    tokens = q.shape[2]
    queries = math.prod(q.shape[:-1])
    return 2 * queries * tokens * (q.shape[-1] + v.shape[-1])


def _kmeans_flops(mask_logits, value, *args, **kwargs) -> int:
    # The one-hot matmul ``[C, HW] x [HW, Q]`` per image that the op is defined as (the official
    # einsum) and that the Triton kernel runs on its one-hot tiles; the CPU index form adds each
    # value once, but the count does not depend on the backend.
    B, Q, HW = mask_logits.shape
    return 2 * B * Q * HW * value.shape[1]


# The public op function objects, by name, with their analytic cost.
_COSTS: Dict[str, Callable[..., int]] = {
    'na1d': _na_flops,
    'na2d': _na_flops,
    'window_attention': _window_flops,
    'halo_attention': _halo_flops,
    'local_global_attention': _local_global_flops,
    'routed_attention': _routed_flops,
    'deform_sampled_attention': _deform_sampled_flops,
    'window_extra_attention': _window_extra_flops,
    'kmeans_attention': _kmeans_flops,
}


def attention_flops(op: str, *args, **kwargs) -> int:
    """Analytic FLOPs (multiply-add = 2) of one call of the densekit attention op ``op``."""
    return _COSTS[op](*args, **kwargs)


@dataclass
class FlopCount:
    """Result of :func:`count_flops`: ``total`` FLOPs (multiply-add = 2) and its parts."""

    by_op: Dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: Dict[str, int] = field(default_factory=lambda: defaultdict(int))
    generic: int = 0

    @property
    def attention(self) -> int:
        return sum(self.by_op.values())

    @property
    def total(self) -> int:
        return self.generic + self.attention

    @property
    def macs(self) -> int:
        """Multiply-adds: what papers (and fvcore) report as "FLOPs"."""
        return self.total // 2


def _wrap(name: str, fn: Callable, result: FlopCount) -> Callable:
    cost = _COSTS[name]

    def counted(*args, **kwargs):
        flops = cost(*args, **kwargs)
        with _disable_current_modes():  # the op's own aten calls are not its cost
            out = fn(*args, **kwargs)
        result.by_op[name] += flops
        result.calls[name] += 1
        return out

    counted.__wrapped__ = fn
    return counted


@contextlib.contextmanager
def count_flops() -> Iterator[FlopCount]:
    """Count the FLOPs of the forward passes run inside the block.

    Example::

        with count_flops() as c:
            model(x)
        print(c.total / 1e9, 'GFLOPs', dict(c.by_op))

    Every imported module that holds one of the attention op functions as a global (``from
    densekit.ops import na2d``, as the backbone families and user backbones do) sees the counted
    version inside the block; the originals are restored on exit. A reference kept elsewhere (an
    instance attribute set to the function) is not seen and is counted by the generic counter.
    """
    result = FlopCount()
    originals = {name: getattr(_ops, name) for name in _COSTS}
    wrapped = {id(fn): _wrap(name, fn, result) for name, fn in originals.items()}
    patched = []
    for mod in list(sys.modules.values()):
        try:
            names = list(vars(mod).items())
        except TypeError:  # a module stand-in without a __dict__
            continue
        for attr, value in names:
            if callable(value) and id(value) in wrapped:
                patched.append((mod, attr, value))
                setattr(mod, attr, wrapped[id(value)])
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            yield result
    finally:
        for mod, attr, value in patched:
            setattr(mod, attr, value)
        result.generic = counter.get_total_flops()


def count_model_flops(model: torch.nn.Module, *inputs, **kwargs) -> FlopCount:
    """FLOPs of one ``model(*inputs, **kwargs)`` forward pass, without gradients."""
    with torch.no_grad(), count_flops() as c:
        model(*inputs, **kwargs)
    return c
