"""The Triton kernels compile for real GPUs (Hopper sm_90, Ampere sm_80), checked without a GPU.

The interpreter tests (``TRITON_INTERPRET=1``) check what the kernels compute; these check what
only the real compiler knows: each kernel of each op compiles, with the wrapper's own launch
arguments, for the target; it fits the per-block shared-memory limit (exceeding it fails only at
launch time, on a GPU); no register spills to local memory; and half-precision inputs reach the
tensor cores (``HGMMA`` on Hopper, ``HMMA`` on Ampere) while float32 stays on exact FMA dots,
which the fp32 parity tolerances assume.
"""
import pytest
import torch

from densekit.ops import _triton_aot

ok, why = _triton_aot.available()
pytestmark = pytest.mark.skipif(not ok, reason=f'no ahead-of-time Triton compilation here: {why}')

# opt-in shared memory per block: H100/H200 227 KiB, A100 163 KiB
SHARED_LIMIT = {90: _triton_aot.SM90_MAX_SHARED_BYTES, 80: 166912}
TENSOR_CORE_OP = {90: 'HGMMA', 80: 'HMMA'}
ATTENTION_KERNELS = {'_na_fwd', '_na_bwd_dq', '_na_bwd_dkdv', '_window_fwd', '_window_bwd', '_halo_fwd_or_dq',
                     '_halo_dkdv'}


def _leaf(*shape, dtype):
    return torch.randn(*shape).to(dtype).requires_grad_()


def _na2d(dtype):
    from densekit.ops.neighborhood.triton import na_triton
    q, k, v = (_leaf(1, 16, 18, 2, 32, dtype=dtype) for _ in range(3))
    return na_triton(q, k, v, (7, 5), (2, 1), _leaf(2, 13, 9, dtype=dtype), 0.2)


def _na1d(dtype):
    from densekit.ops.neighborhood.triton import na_triton
    q, k, v = (_leaf(2, 40, 2, 64, dtype=dtype) for _ in range(3))
    return na_triton(q, k, v, (9,), (1,), _leaf(2, 17, dtype=dtype), 0.125)


def _window(dtype):
    from densekit.ops.window.triton import window_triton
    q, k, v = (_leaf(1, 14, 14, 3, 32, dtype=dtype) for _ in range(3))
    return window_triton(q, k, v, (7, 7), (3, 3), _leaf(3, 13, 13, dtype=dtype), 32 ** -0.5)


def _halo(dtype):
    from densekit.ops.halo.triton import halo_triton
    q, k, v = (_leaf(1, 16, 16, 2, 32, dtype=dtype) for _ in range(3))
    rel_h, rel_w = (_leaf(27, 32, dtype=dtype) for _ in range(2))
    return halo_triton(q, k, v, 8, 3, rel_h, rel_w, 32 ** -0.5, False, 'zeros')


def _msda(dtype):
    from densekit.ops.ms_deform_attn.triton import ms_deform_attn_triton
    shapes = torch.tensor([[6, 8], [3, 4]])
    starts = torch.tensor([0, 48])
    value = _leaf(1, 60, 2, 32, dtype=dtype)
    loc = torch.rand(1, 5, 2, 2, 4, 2).to(dtype).requires_grad_()
    attn = torch.rand(1, 5, 2, 2, 4).to(dtype).requires_grad_()
    return ms_deform_attn_triton(value, shapes, starts, loc, attn)


OPS = {'na2d': (_na2d, 3), 'na1d': (_na1d, 3), 'window': (_window, 2), 'halo': (_halo, 3), 'msda': (_msda, 2)}
# bf16 (the benchmark dtype) and fp32 (slowest to compile: FMA dots) on Hopper in the default run;
# fp16 and Ampere in the slow tier (about 1 CPU-minute each set)
_slow = pytest.mark.slow
CASES = [(op, dtype, 90) for op in OPS for dtype in (torch.bfloat16, torch.float32)]
CASES += [pytest.param(op, torch.float16, 90, marks=_slow) for op in OPS]
CASES += [pytest.param(op, torch.bfloat16, 80, marks=_slow) for op in OPS]


@pytest.mark.parametrize('op,dtype,arch', CASES, ids=lambda x: str(x).replace('torch.', ''))
def test_kernels_compile_for_gpu(op, dtype, arch):
    fn, n_kernels = OPS[op]
    with _triton_aot.compile_only(arch) as reports:
        y = fn(dtype)
        y.backward(torch.ones_like(y))
    assert len(reports) == n_kernels, [r.kernel for r in reports]
    for r in reports:
        where = f'{r.kernel} ({dtype}, sm_{arch}, constants {r.constants})'
        assert r.shared_bytes <= SHARED_LIMIT[arch], f'{where}: {r.shared_bytes} B of shared memory'
        assert r.local_bytes == 0, f'{where}: {r.local_bytes} B spilled to local memory'
        if r.kernel not in ATTENTION_KERNELS:
            continue
        if dtype == torch.float32:
            assert r.mma is None, f'{where}: fp32 dots must stay exact (no TF32), got {r.sass_ops}'
        else:
            assert r.mma == TENSOR_CORE_OP[arch], f'{where}: expected {TENSOR_CORE_OP[arch]}, got {r.sass_ops}'


def test_compile_only_restores_launching():
    """Leaving the block restores normal launches (here: the interpreter or a real GPU)."""
    from triton.runtime.jit import JITFunction
    before = JITFunction.run
    with _triton_aot.compile_only(90):
        assert JITFunction.run is not before
    assert JITFunction.run is before
