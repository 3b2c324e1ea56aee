"""GPU hazards of Triton launches, checked on CPU through the interpreter.

The interpreter (``TRITON_INTERPRET=1``) runs the programs of a launch one after another, on
memory that is mostly fresh zeroed pages, and gives the masked-off lanes of a load without
``other`` the value 0. A kernel can pass every interpreter parity test and still be wrong on a
GPU, where the programs of a launch run concurrently, the caching allocator hands out used
blocks and masked-off lanes are undefined. ``gpu_hazards()`` instruments the interpreter while
it is active, so the interpreter parity tests also check:

* **races** -- per launch, the bytes each program stores, loads and updates atomically are
  recorded. A byte stored by two programs, stored by one and loaded by another, or updated
  atomically by one and read or stored plainly by another is an error naming the kernel, both
  programs and the argument the byte belongs to (atomics among themselves are fine).
* **out-of-bounds access** -- every byte a program touches must belong to an element of one of
  the launch's tensor arguments (exact element sets of the views, so an offset that leaves a
  view into a packed ``qkv`` is caught although it stays inside the storage).
* **undefined lanes** -- masked-off lanes of a load without ``other`` read NaN (floating point)
  or a large sentinel (integers) instead of 0.
* **uninitialised memory** -- ``torch.empty*`` results created while active are filled with NaN
  (floating point) or the sentinel (integers), as a reused allocator block could be.

It cannot see what the interpreter does not model: warp-level scheduling inside a program,
compiler bugs, resource limits (``triton_aot`` checks those) or speed.
"""
from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

INT_SENTINEL = 0x5A5A5A5A  # what "garbage" integers read as (fits int32; a huge index if used)

_EMPTY_OPS = {
    torch.ops.aten.empty.memory_format,
    torch.ops.aten.empty_strided.default,
    torch.ops.aten.empty_like.default,
    torch.ops.aten.new_empty.default,
    torch.ops.aten.new_empty_strided.default,
}


def _poison_(t: torch.Tensor) -> torch.Tensor:
    if t.numel():
        if t.is_floating_point() or t.is_complex():
            t.fill_(float('nan'))
        elif t.dtype == torch.bool:
            t.fill_(True)
        else:
            t.fill_(INT_SENTINEL if t.element_size() >= 4 else -1)
    return t


def _garbage(ty, np_dtype) -> np.ndarray:
    """A 0-d array of ``np_dtype`` holding what an undefined ``ty`` value reads as."""
    np_dtype = np.dtype(np_dtype)
    if ty.is_floating():
        if np.issubdtype(np_dtype, np.floating):
            return np.array(np.nan, dtype=np_dtype)
        return np.array(0x7FC0, dtype=np_dtype)  # bfloat16 (held as uint16): a quiet NaN
    if np_dtype == np.bool_:
        return np.array(True)
    if np_dtype.itemsize >= 4:
        return np.array(INT_SENTINEL, dtype=np_dtype)
    return np.array(np.iinfo(np_dtype).max, dtype=np_dtype)


class _PoisonEmpty(TorchDispatchMode):
    """Fills every ``empty*`` allocation with NaN / the integer sentinel."""

    supports_higher_order_operators = True  # flex_attention passes through unchanged

    @classmethod
    def ignore_compile_internals(cls) -> bool:
        # off while torch.compile traces (dynamo refuses frames under other dispatch modes), on
        # for the compiled code's own allocations at run time
        return True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _EMPTY_OPS:
            _poison_(out)
        return out


class HazardError(AssertionError):
    """A Triton launch that would race, read out of bounds or read undefined memory on a GPU."""


@dataclass
class _Launch:
    kernel: str
    grid: Tuple[int, int, int] = (1, 1, 1)
    regions: List[Tuple[str, np.ndarray]] = field(default_factory=list)  # (argument, sorted bytes)
    # program -> list of byte-address arrays, per kind of access
    loads: Dict[int, list] = field(default_factory=lambda: defaultdict(list))
    stores: Dict[int, list] = field(default_factory=lambda: defaultdict(list))
    atomics: Dict[int, list] = field(default_factory=lambda: defaultdict(list))


def _element_bytes(t: torch.Tensor) -> np.ndarray:
    """Sorted byte addresses of every element of the view ``t``."""
    offs = torch.zeros((), dtype=torch.int64)
    for size, stride in zip(t.shape, t.stride()):
        offs = offs.unsqueeze(-1) + torch.arange(size, dtype=torch.int64) * stride
    start = t.data_ptr() + offs.reshape(-1).numpy().astype(np.uint64) * np.uint64(t.element_size())
    return np.unique((start[:, None] + np.arange(t.element_size(), dtype=np.uint64)).reshape(-1))


def _bytes(ptrs: np.ndarray, mask: np.ndarray, itemsize: int) -> np.ndarray:
    mask = np.asarray(mask).astype(bool)  # a mask may come as an integer array
    addrs = np.broadcast_to(ptrs, np.broadcast_shapes(ptrs.shape, mask.shape))
    addrs = addrs[np.broadcast_to(mask, addrs.shape)].astype(np.uint64)
    return (addrs[:, None] + np.arange(itemsize, dtype=np.uint64)).reshape(-1)


def _pairs(per_program: Dict[int, list]) -> Tuple[np.ndarray, np.ndarray]:
    """(byte, program) pairs, unique per program, sorted by byte."""
    addrs, progs = [], []
    for prog, chunks in per_program.items():
        a = np.unique(np.concatenate(chunks)) if chunks else np.empty(0, np.uint64)
        addrs.append(a)
        progs.append(np.full(a.shape, prog, dtype=np.int64))
    if not addrs:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    a, p = np.concatenate(addrs), np.concatenate(progs)
    order = np.argsort(a, kind='stable')
    return a[order], p[order]


class _Checker:
    def __init__(self):
        self.launch: _Launch | None = None
        self.launches = 0  # launches checked to the end
        self.kernels: Counter = Counter()  # launches started, by kernel name

    # -- naming ---------------------------------------------------------------------------------
    def _program(self, prog: int) -> str:
        gx, gy, _ = self.launch.grid
        return f'program {(prog % gx, (prog // gx) % gy, prog // (gx * gy))}'

    def _owner(self, byte: int) -> str:
        for name, region in self.launch.regions:
            i = np.searchsorted(region, np.uint64(byte))
            if i < len(region) and region[i] == byte:
                return f'argument {name!r}'
        return 'no tensor argument'

    def _fail(self, what: str, byte: int, first: int, second: int):
        raise HazardError(f'{self.launch.kernel}: {what} at byte {byte:#x} ({self._owner(byte)}) by '
                          f'{self._program(first)} and {self._program(second)} of grid {self.launch.grid}')

    # -- recording --------------------------------------------------------------------------------
    @staticmethod
    def _prog_id(builder) -> int:
        x, y, z = builder.grid_idx
        gx, gy, _ = builder.grid_dim
        return int(x + gx * (y + gy * z))

    def record(self, builder, kind: str, ptrs, mask: np.ndarray):
        itemsize = ptrs.get_element_ty().primitive_bitwidth // 8
        getattr(self.launch, kind)[self._prog_id(builder)].append(_bytes(ptrs.data, mask, itemsize))

    # -- checks at the end of a launch ------------------------------------------------------------
    def finish(self):
        launch, self.launches = self.launch, self.launches + 1
        pairs = {kind: _pairs(getattr(launch, kind)) for kind in ('loads', 'stores', 'atomics')}
        allowed = np.unique(np.concatenate([r for _, r in launch.regions] + [np.empty(0, np.uint64)]))
        for kind, (addr, prog) in pairs.items():
            i = np.minimum(np.searchsorted(allowed, addr), max(len(allowed) - 1, 0))
            bad = np.flatnonzero(allowed[i] != addr) if len(allowed) else np.arange(len(addr))
            if bad.size:
                j = int(bad[0])
                raise HazardError(f'{launch.kernel}: {kind[:-1]} out of bounds at byte {int(addr[j]):#x} by '
                                  f'{self._program(int(prog[j]))} of grid {launch.grid} (in no element of '
                                  f'the tensor arguments {[n for n, _ in launch.regions]})')
        (l_addr, l_prog), (s_addr, s_prog), (a_addr, a_prog) = pairs.values()
        dup = np.flatnonzero((s_addr[1:] == s_addr[:-1]) & (s_prog[1:] != s_prog[:-1]))
        if dup.size:
            j = int(dup[0])
            self._fail('store / store race', int(s_addr[j]), int(s_prog[j]), int(s_prog[j + 1]))
        self._cross(l_addr, l_prog, *_writers(s_addr, s_prog), 'store / load race')
        if a_addr.size:
            # atomics of different programs may update the same bytes; a plain access to a byte
            # that another program updates atomically races with that update
            writers = _writers(a_addr, a_prog)
            self._cross(l_addr, l_prog, *writers, 'atomic / load race')
            self._cross(s_addr, s_prog, *writers, 'atomic / store race')

    def _cross(self, r_addr, r_prog, w_addr, w_min, w_max, what):
        """Fail when a byte written by the programs ``w_min..w_max`` is accessed in ``r_addr`` by a
        program other than its only writer."""
        if not (r_addr.size and w_addr.size):
            return
        i = np.minimum(np.searchsorted(w_addr, r_addr), len(w_addr) - 1)
        conflict = (w_addr[i] == r_addr) & ~((w_min[i] == r_prog) & (w_max[i] == r_prog))
        if conflict.any():
            j = int(np.flatnonzero(conflict)[0])
            other = w_min[i[j]] if w_min[i[j]] != r_prog[j] else w_max[i[j]]
            self._fail(what, int(r_addr[j]), int(other), int(r_prog[j]))


def _writers(addr: np.ndarray, prog: np.ndarray):
    """Unique bytes of sorted (byte, program) pairs with the lowest and highest writing program."""
    if not addr.size:
        return addr, prog, prog
    first = np.flatnonzero(np.concatenate(([True], addr[1:] != addr[:-1])))
    return addr[first], np.minimum.reduceat(prog, first), np.maximum.reduceat(prog, first)


@contextlib.contextmanager
def gpu_hazards():
    """Instrument the Triton interpreter (see the module docstring) inside the ``with`` block."""
    from triton.runtime import interpreter as I

    checker = _Checker()
    builder = I.interpreter_builder
    orig_call, orig_init = I.GridExecutor.__call__, I.GridExecutor._init_args_hst
    orig_load, orig_store = builder.create_masked_load, builder.create_masked_store
    orig_rmw, orig_cas = builder.create_atomic_rmw, builder.create_atomic_cas

    def call(self, *args, **kwargs):
        checker.launch = _Launch(kernel=getattr(self.fn, '__name__', str(self.fn)))
        checker.kernels[checker.launch.kernel] += 1
        try:
            out = orig_call(self, *args, **kwargs)
            checker.launch.grid = tuple(builder.grid_dim)
            checker.finish()
            return out
        finally:
            checker.launch = None

    def init_args(self, args_dev, kwargs):
        args_hst, kwargs_hst = orig_init(self, args_dev, kwargs)
        named = list(zip(self.arg_names, args_hst)) + list(kwargs_hst.items())
        launch = checker.launch
        if launch is not None:
            launch.regions = [(name, _element_bytes(t)) for name, t in named
                              if isinstance(t, torch.Tensor) and t.numel()]
        return args_hst, kwargs_hst

    def load(ptrs, mask, other, cache_modifier, eviction_policy, is_volatile):
        if checker.launch is not None:
            checker.record(builder, 'loads', ptrs, mask.data)
            if other is None:
                ty = ptrs.get_element_ty()
                other = I.TensorHandle(np.full(ptrs.data.shape, _garbage(ty, I._get_np_dtype(ty))), ty)
        return orig_load(ptrs, mask, other, cache_modifier, eviction_policy, is_volatile)

    def store(ptrs, value, mask, cache_modifier, eviction_policy):
        if checker.launch is not None:
            checker.record(builder, 'stores', ptrs, mask.data)
        return orig_store(ptrs, value, mask, cache_modifier, eviction_policy)

    def rmw(rmw_op, ptr, val, mask, sem, scope):
        if checker.launch is not None:
            checker.record(builder, 'atomics', ptr, mask.data)
        return orig_rmw(rmw_op, ptr, val, mask, sem, scope)

    def cas(ptr, cmp, val, sem, scope):
        if checker.launch is not None:
            checker.record(builder, 'atomics', ptr, np.ones(ptr.data.shape, bool))
        return orig_cas(ptr, cmp, val, sem, scope)

    patched = dict(create_masked_load=load, create_masked_store=store, create_atomic_rmw=rmw, create_atomic_cas=cas)
    shadowed = {name: builder.__dict__[name] for name in patched if name in builder.__dict__}  # when nested
    I.GridExecutor.__call__, I.GridExecutor._init_args_hst = call, init_args
    builder.__dict__.update(patched)
    try:
        with _PoisonEmpty():
            yield checker
    finally:
        I.GridExecutor.__call__, I.GridExecutor._init_args_hst = orig_call, orig_init
        for name in patched:
            builder.__dict__.pop(name)
        builder.__dict__.update(shadowed)
