"""The one timing helper of ``benchmarks/``: every benchmark script times through these functions.

* :func:`median_ms` — the median time of one call of a kernel-sized function: on CUDA
  ``triton.testing.do_bench`` (it flushes the L2 cache between calls and times with CUDA events;
  CUDA events when triton is missing), on CPU ``time.perf_counter`` around each call;
* :func:`samples_ms` — the time of every call (after warm-up), synchronised per call, for callers
  that report more than a median (e.g. the minimum);
* :func:`seconds_per_call` — the mean time of calls run back to back (training steps, a model's
  inference), synchronised once around the loop;
* :func:`peak_mem_mb` — the extra peak CUDA memory of one call;
* :func:`alternating` — several implementations of one computation, timed in turn within every
  repetition (same-run ratios on a shared machine), each under its own densekit attention
  backend (:func:`attn_backend`).
"""
from __future__ import annotations

import contextlib
import os
import statistics
import time
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch


def sync(device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()


def samples_ms(fn: Callable[[], object], device, warmup: int = 3, reps: int = 20) -> List[float]:
    """Milliseconds of each of ``reps`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def median_ms(fn: Callable[[], object], device, warmup: int = 3, reps: int = 20) -> float:
    """Median milliseconds of one call of ``fn``. On CUDA ``warmup`` / ``reps`` are replaced by
    ``do_bench``'s own budget (25 ms of warm-up, 100 ms of repetitions)."""
    if torch.device(device).type == 'cuda':
        try:
            from triton.testing import do_bench
        except ImportError:
            return _cuda_event_median_ms(fn, warmup, reps)
        return float(do_bench(fn, warmup=25, rep=100, return_mode='median'))
    return statistics.median(samples_ms(fn, device, warmup, reps))


def _cuda_event_median_ms(fn, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def seconds_per_call(fn: Callable[[], object], device, iters: int, warmup: int = 1) -> float:
    """Mean seconds per call of ``iters`` back-to-back calls after ``warmup`` untimed ones (on CUDA
    timed with events around the loop, so host and device overlap as in training)."""
    for _ in range(warmup):
        fn()
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3 / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def peak_mem_mb(fn: Callable[[], object], device) -> Optional[float]:
    """Peak extra memory of one ``fn()`` call in MiB (CUDA allocator statistics; ``None`` on CPU)."""
    if torch.device(device).type != 'cuda':
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


@contextlib.contextmanager
def attn_backend(name: Optional[str]):
    """Run the block with ``DENSEKIT_ATTN_BACKEND=name`` (``None``: unset, automatic choice)."""
    from densekit.ops._backend import ENV_VAR
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


def alternating(fns: Mapping[str, Tuple[Callable[[], object], Optional[str]]], device, reps: int = 7,
                warmup: int = 2) -> Dict[str, Tuple[float, Optional[float]]]:
    """``name -> (median ms, peak extra CUDA MiB of one call or None on CPU)`` for each
    ``name -> (fn, densekit attention backend)``. After ``warmup`` calls of each (compilation,
    autotuning), every repetition calls each implementation once in turn, so load from other
    processes spreads over all of them alike: their ratios are same-run ratios."""
    peaks = {}
    for name, (fn, backend) in fns.items():
        with attn_backend(backend):
            for _ in range(warmup):
                fn()
            peaks[name] = peak_mem_mb(fn, device)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, (fn, backend) in fns.items():
            with attn_backend(backend):
                times[name].append(samples_ms(fn, device, warmup=0, reps=1)[0])
    return {name: (statistics.median(t), peaks[name]) for name, t in times.items()}
