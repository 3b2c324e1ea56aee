"""The Triton kernels compile for real GPUs (Hopper sm_90, Ampere sm_80), checked without a GPU.

The interpreter tests (``TRITON_INTERPRET=1``) check what the kernels compute; these check what
only the real compiler knows: every kernel of every op compiles, with the wrapper's own launch
arguments, for the target; it fits the per-block shared-memory limit (exceeding it fails only at
launch time, on a GPU); no register spills to local memory; and half-precision inputs reach the
tensor cores (``HGMMA`` on Hopper, ``HMMA`` on Ampere) while float32 stays on exact FMA dots,
which the fp32 parity tolerances assume.

The compilation runs in a child process (``tools/dev/triton_sm90_report.py --small``) because
``@triton.jit`` fixes at import time whether kernels are compiled or interpreted, and this test
session imports them for the interpreter.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from densekit.ops import _triton_aot

ok, why = _triton_aot.available()
pytestmark = pytest.mark.skipif(not ok, reason=f'no ahead-of-time Triton compilation here: {why}')

ROOT = Path(__file__).resolve().parents[2]
# opt-in shared memory per block: H100/H200 227 KiB, A100 163 KiB
SHARED_LIMIT = {90: _triton_aot.SM90_MAX_SHARED_BYTES, 80: 166912}
TENSOR_CORE_OP = {90: 'HGMMA', 80: 'HMMA'}
# kernels launched by forward + backward of each op
EXPECTED = {
    'na2d': ['_na_fwd', '_row_dot_kernel', '_na_bwd_dq', '_na_bwd_dkdv'],
    'na1d': ['_na_fwd', '_row_dot_kernel', '_na_bwd_dq', '_na_bwd_dkdv'],
    'window': ['_window_fwd', '_row_dot_kernel', '_window_bwd'],
    'halo': ['_halo_fwd_or_dq', '_row_dot_kernel', '_halo_fwd_or_dq', '_halo_dkdv'],
    'msda': ['_msda_fwd_kernel', '_msda_bwd_kernel'],
}
# no dot products: no MMA expected
ELEMENTWISE_KERNELS = {'_msda_fwd_kernel', '_msda_bwd_kernel', '_row_dot_kernel'}


def _compile(dtype: str, arch: int, tmp_path) -> list:
    out = tmp_path / 'report.json'
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env['PYTHONPATH'] = str(ROOT) + os.pathsep + env.get('PYTHONPATH', '')
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'dev' / 'triton_sm90_report.py'), '--small',
                           '--dtype', dtype, '--arch', str(arch), '--json', str(out)],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())['rows']


# bf16 (the benchmark dtype) and fp32 (slowest to compile: FMA dots) on Hopper in the default run,
# fp16 and Ampere in the slow tier
@pytest.mark.parametrize('dtype,arch', [('bfloat16', 90), ('float32', 90),
                                        pytest.param('float16', 90, marks=pytest.mark.slow),
                                        pytest.param('bfloat16', 80, marks=pytest.mark.slow)])
def test_kernels_compile_for_gpu(dtype, arch, tmp_path):
    rows = _compile(dtype, arch, tmp_path)
    for op, kernels in EXPECTED.items():
        assert [r['kernel'] for r in rows if r['case'] == op] == kernels, op
    for r in rows:
        where = f"{r['case']}: {r['kernel']} ({dtype}, sm_{arch}, constants {r['constants']})"
        assert r['shared_bytes'] <= SHARED_LIMIT[arch], f"{where}: {r['shared_bytes']} B of shared memory"
        assert r['local_bytes'] == 0, f"{where}: {r['local_bytes']} B spilled to local memory"
        if r['kernel'] in ELEMENTWISE_KERNELS:
            continue
        if dtype == 'float32':
            assert r['mma'] is None, f"{where}: fp32 dots must stay exact (no TF32), got {r['sass_ops']}"
        else:
            assert r['mma'] == TENSOR_CORE_OP[arch], f"{where}: expected {TENSOR_CORE_OP[arch]}, got {r['sass_ops']}"


def test_compile_only_restores_launching():
    """Leaving the block restores normal launches (the interpreter or a real GPU)."""
    from triton.runtime.jit import JITFunction
    before = JITFunction.run
    with _triton_aot.compile_only(90):
        assert JITFunction.run is not before
    assert JITFunction.run is before
