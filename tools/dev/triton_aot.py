"""Compile densekit's Triton kernels for a GPU target on a machine without one.

The CPU interpreter (``TRITON_INTERPRET=1``) checks what a kernel computes, but not whether it
compiles: it accepts dot shapes, layouts and shared-memory footprints that the real compiler
rejects, and it widens bf16 to fp32, so it says nothing about the tensor-core path. This module
runs a densekit op's Python wrapper as usual, but every Triton launch inside it is replaced by an
ahead-of-time compilation for the target (default: Hopper, ``sm_90``) with exactly the
arguments, constexprs and launch options the wrapper would use; nothing is launched. The result
is the compiler's resource report per kernel: registers, the stack frame (where ptxas spills), shared memory,
and which matrix instructions the machine code uses (``HGMMA`` = Hopper warpgroup MMA, ``HMMA``
= the older warp MMA, none = the dot runs on the FMA units).

A developer tool (used by ``tools/dev/triton_compile.py``, ``tests/ops/test_triton_compile.py``
and ``benchmarks/attention_memory.py``, which put ``tools/dev`` on ``sys.path``); it relies on
private triton APIs of the 3.x series; :func:`available` says whether this triton supports it.

Example::

    with compile_only() as reports:
        densekit.ops.na2d(q, k, v, 7, backend='triton')  # q: a CPU tensor of the real shape
    for r in reports:
        print(r.kernel, r.registers, r.shared_bytes, r.mma)
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

# opt-in shared-memory limit per block: Hopper (H100 / H200) 227 KiB, Ampere (A100) 163 KiB
SM90_MAX_SHARED_BYTES = 232448
SHARED_LIMIT = {90: SM90_MAX_SHARED_BYTES, 80: 166912}


@dataclass
class KernelReport:
    """What the compiler says about one kernel specialisation."""
    kernel: str
    constants: Dict[str, object]
    num_warps: int
    num_stages: int
    shared_bytes: int
    registers: int
    local_bytes: int  # cuobjdump's LOCAL figure (stays 0 even when ptxas spills; see stack_bytes)
    mma: Optional[str]  # 'HGMMA', 'HMMA' or None
    compile_s: float
    sass_ops: Dict[str, int] = field(default_factory=dict)
    # the per-thread stack frame: where ptxas puts spilled registers ('spill stores' in ptxas -v)
    # and register arrays it cannot keep in registers; 0 is the goal
    stack_bytes: int = 0
    # static SASS instruction counts by class (the code's size, not what runs: a loop body counts
    # once): 'total', global loads / stores 'LDG' / 'STG', async global-to-shared copies 'LDGSTS',
    # shared 'LDS' / 'STS', 'MUFU' (exp, ...),
    # atomics 'ATOM'/'RED', and the matrix instructions
    sass_classes: Dict[str, int] = field(default_factory=dict)


def _triton_bin(name: str) -> str:
    import triton
    return os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin', name)


def available() -> Tuple[bool, str]:
    """Whether this triton can compile for CUDA here (private APIs present, cuobjdump shipped)."""
    try:
        import triton
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource, make_backend  # noqa: F401
        from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the triton version
        return False, f'triton private compile API missing ({e})'
    if not hasattr(JITFunction, '_pack_args'):
        return False, f'triton {triton.__version__} has no JITFunction._pack_args'
    for tool in ('ptxas', 'cuobjdump'):
        if not os.access(_triton_bin(tool), os.X_OK):
            return False, f'triton {triton.__version__} ships no {tool}'
    return True, ''


def _resources(cubin: bytes, name: str) -> Tuple[int, int, Dict[str, int], int, Dict[str, int]]:
    """Registers, local bytes, a count of matrix instructions, the stack frame (bytes) and the
    static instruction classes, read off the cubin."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, f'{name}.cubin')
        with open(path, 'wb') as f:
            f.write(cubin)
        usage = subprocess.run([_triton_bin('cuobjdump'), '--dump-resource-usage', path],
                               capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([_triton_bin('cuobjdump'), '--dump-sass', path],
                              capture_output=True, text=True, check=True).stdout
    m = re.search(r'REG:(\d+).*?STACK:(\d+).*?LOCAL:(\d+)', usage)
    if m is None:
        raise RuntimeError(f'cannot read the resource usage of {name}: {usage!r}')
    ops: Dict[str, int] = {}
    for op in re.findall(r'\b(HGMMA|HMMA|QGMMA|IMMA)\.', sass):
        ops[op] = ops.get(op, 0) + 1
    return int(m.group(1)), int(m.group(3)), ops, int(m.group(2)), sass_classes(sass)


_SASS_CLASSES = ('LDG', 'LDGSTS', 'STG', 'LDS', 'STS', 'MUFU', 'ATOM', 'RED', 'HGMMA', 'HMMA')


def sass_classes(sass: str) -> Dict[str, int]:
    """Static instruction counts by class in a ``cuobjdump --dump-sass`` listing."""
    # one instruction per line: "/*0120*/   @!P0 LDG.E.128 R4, desc[UR6][R2.64] ;"
    opcodes = re.findall(r'/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9]*)', sass)
    out = {'total': len(opcodes)}
    for c in _SASS_CLASSES:
        out[c] = sum(1 for o in opcodes if o == c)
    return out


@contextlib.contextmanager
def compile_only(arch: int = 90, constants_shown: Optional[Tuple[str, ...]] = None) -> Iterator[List[KernelReport]]:
    """Within the block, Triton launches compile for ``sm_<arch>`` instead of running.

    Yields the list that receives one :class:`KernelReport` per launch. The ``UPCAST``
    constexpr (a CPU-interpreter workaround, see ``_triton_utils.dot``) is forced off, so the
    kernels compile exactly as they would for CUDA tensors. Tensors may live on the CPU: only
    their dtypes, strides' divisibility and the scalar values matter to the compiler.
    """
    ok, why = available()
    if not ok:
        raise RuntimeError(f'cannot compile Triton kernels ahead of time: {why}')
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    target = GPUTarget('cuda', arch, 32)
    backend = make_backend(target)
    reports: List[KernelReport] = []
    original_run = JITFunction.run
    binders = {}

    def run(self, *args, grid, warmup, **kwargs):
        names = [p.name for p in self.params]
        if 'UPCAST' in names:
            kwargs['UPCAST'] = False
        kwargs['debug'] = False
        if self not in binders:
            binders[self] = create_function_from_signature(self.signature, self.params, backend)
        bound_args, specialization, options = binders[self](*args, **kwargs)
        options, signature, constexprs, attrs = self._pack_args(backend, kwargs, bound_args, specialization,
                                                                options)
        t0 = time.perf_counter()
        kernel = triton.compile(ASTSource(self, signature, constexprs, attrs), target=target,
                                options=options.__dict__)
        dt = time.perf_counter() - t0
        name = self.fn.__name__
        regs, local, ops, stack, classes = _resources(kernel.asm['cubin'], name)
        consts = {p.name: bound_args[p.name] for p in self.params if p.is_constexpr
                  and (constants_shown is None or p.name in constants_shown)}
        mma = next((op for op in ('HGMMA', 'HMMA') if ops.get(op)), None)
        reports.append(KernelReport(name, consts, kernel.metadata.num_warps, kernel.metadata.num_stages,
                                    kernel.metadata.shared, regs, local, mma, dt, ops, stack, classes))
        return kernel

    JITFunction.run = run
    try:
        yield reports
    finally:
        JITFunction.run = original_run
