"""The Triton kernels compile for real GPUs (Hopper sm_90, Ampere sm_80), checked without a GPU.

The interpreter tests (``TRITON_INTERPRET=1``) check what the kernels compute; these check what
only the real compiler knows: every kernel of every op compiles, with the wrapper's own launch
arguments, for the target; it fits the per-block shared-memory limit (exceeding it fails only at
launch time, on a GPU); no register spills (the stack frame; a few kernels have known, bounded
spills listed in ``KNOWN_SM90_STACK``); and half-precision inputs reach the
tensor cores (``HGMMA`` on Hopper, ``HMMA`` on Ampere) while float32 stays on exact FMA dots,
which the fp32 parity tolerances assume.

The compilation runs in a child process (``tools/dev/triton_compile.py shapes --small``) because
``@triton.jit`` fixes at import time whether kernels are compiled or interpreted, and this test
session imports them for the interpreter.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import triton_aot  # tools/dev, on sys.path through tests/conftest.py

ok, why = triton_aot.available()
pytestmark = pytest.mark.skipif(not ok, reason=f'no ahead-of-time Triton compilation here: {why}')

ROOT = Path(__file__).resolve().parents[2]
SHARED_LIMIT = triton_aot.SHARED_LIMIT
TENSOR_CORE_OP = {90: 'HGMMA', 80: 'HMMA'}
# kernels launched by forward + backward of each op
EXPECTED = {
    'na2d': ['_na_fwd', '_row_dot_kernel', '_na_bwd_dq', '_na_bwd_dkdv'],
    'na1d': ['_na_fwd', '_row_dot_kernel', '_na_bwd_dq', '_na_bwd_dkdv'],
    'window': ['_window_fwd', '_row_dot_kernel', '_window_bwd_dkdv'],
    'halo': ['_halo_fwd_or_dq', '_row_dot_kernel', '_halo_fwd_or_dq', '_halo_dkdv'],
    'halo_s2': ['_halo_fwd_or_dq', '_row_dot_kernel', '_halo_fwd_or_dq', '_halo_dkdv'],
    'halo_dv': ['_halo_fwd_or_dq', '_row_dot_kernel', '_halo_fwd_or_dq', '_halo_dkdv'],
    'msda': ['_msda_fwd_kernel', '_msda_bwd_kernel'],
    'routed': ['_routed_fwd', '_routed_dq', '_routed_dkdv'],
    'deform_sampled': ['_ds_fwd', '_ds_dq', '_ds_dkdv'],
    'window_extra': ['_window_extra_fwd', '_row_dot_kernel', '_window_extra_dkdv'],
    # forward, input gradient (the same kernel, flipped weight), weight gradient
    'large_kernel': ['_dw_conv_kernel', '_dw_conv_kernel', '_dw_wgrad_kernel'],
    'local_global': ['_lg_fwd', '_lg_dq', '_lg_dkdv', '_lg_dextra'],
    'local_global_clamp': ['_lg_fwd', '_lg_dq', '_lg_dkdv', '_lg_dextra'],
    # the fused argmax + one-hot matmul; the backward is a torch gather
    'kmeans': ['_kmeans_fwd'],
}
# The window backward computes dQ inside its dK / dV kernel when a window is one token chunk (7x7
# in half precision); with several chunks (fp32 takes 32-token chunks) a separate kernel does.
WINDOW_CHUNKED = EXPECTED['window'] + ['_window_bwd_dq']
# The same for windows with carrier tokens: FasterViT's 53 tokens are one chunk in half precision
# only; the 384-token carrier-token attention is several chunks in every precision.
WINDOW_EXTRA_CHUNKED = EXPECTED['window_extra'] + ['_window_extra_dq']
# Spills (the per-thread stack frame, bytes) known at sm_90; everything else must compile with no
# stack. With the precomputed bias tiles (the NA default) only the half-precision NA dQ of the 1-D
# case keeps 16 B (it also writes dS); the per-pair path keeps the NA backward kernels at the
# 255-register cap with 8-48 B. The fp32 NA kernels need their 16-wide chunks (64 keep 7-14 KB),
# and the halo forward / dQ kernel its [queries, window rows / columns] table gathers and row
# chunks (per-pair gathers keep 184-288 B in half precision and 1.7-7.9 KB in fp32).
KNOWN_SM90_STACK = {
    ('_na_bwd_dq', 'half'): 32,
    # fp32 halo dK / dV with 64-wide value heads (halo_dv): 208 B with 8 warps (4 warps: 1.5 KB;
    # fewer stages: the same). Its FMA dots hold [64, 64] fp32 operands in registers (half
    # precision: none).
    ('_halo_dkdv', 'float32'): 208,
    # fp32 routed attention with BiFormer's 32-wide heads: the dQ kernel 8 B, the dK / dV kernel
    # (two [32, 32] fp32 accumulators plus the recomputed probabilities, FMA dots) 40 B at the
    # 255-register cap; half precision none.
    ('_routed_dq', 'float32'): 8,
    ('_routed_dkdv', 'float32'): 40,
    # DAT++ deformable attention dK / dV / bias kernel: the two accumulators plus the four
    # interpolated table corners, their derivatives and the per-key position-gradient sums at the
    # 255-register cap: 16 B (fp32) / 32 B (half precision).
    ('_ds_dkdv', 'float32'): 16,
    ('_ds_dkdv', 'half'): 32,
    # local + global attention dQ: with local_weights it walks the window slots and the extra
    # tokens twice (delta as sum P dP, then dQ), and the 3 x 3 slot loop is unrolled: 32 B (fp32,
    # 8 warps; 48 B with 4) and 8 B (half precision, the clamped 5 x 5 case).
    ('_lg_dq', 'float32'): 32,
    ('_lg_dq', 'half'): 8,
}
# no dot products: no MMA expected (local_global's window dK / dV: per-slot products and row sums)
ELEMENTWISE_KERNELS = {'_msda_fwd_kernel', '_msda_bwd_kernel', '_row_dot_kernel', '_lg_dkdv'}
# strided halo queries: a block's 4x4 queries are a 16-row tile, fewer than Hopper's warpgroup MMA
# (HGMMA) takes, so the forward / dQ kernel uses the warp-level MMA (the dK / dV key tile is 64)
WARP_MMA_KERNELS = {('halo_s2', '_halo_fwd_or_dq')}
# routed attention: 32-row query / key tiles (BiFormer's regions hold 1 - 300 tokens; a 64-row
# tile would mostly be padding in the deeper stages), below the warpgroup MMA's 64 rows
WARP_MMA_KERNELS |= {('routed', k) for k in ('_routed_fwd', '_routed_dq', '_routed_dkdv')}
# deformable sampled-key attention: the same 32-row tiles (DAT++ samples 50 - 1100 keys)
WARP_MMA_KERNELS |= {('deform_sampled', k) for k in ('_ds_fwd', '_ds_dq', '_ds_dkdv')}
# large-kernel weight gradient: a [taps, positions] x [positions, taps] product, 32 rows for a
# 31-tap kernel (16 for 13 taps)
WARP_MMA_KERNELS |= {('large_kernel', '_dw_wgrad_kernel')}
# local + global attention: 32-query blocks against the extra tokens (forward, dQ); the extra-token
# gradient kernel's rows are a 32-token block when P <= 32 (the clamped case's 20 tokens)
WARP_MMA_KERNELS |= {(c, k) for c in ('local_global', 'local_global_clamp') for k in ('_lg_fwd', '_lg_dq')}
WARP_MMA_KERNELS |= {('local_global_clamp', '_lg_dextra')}


def _compile(dtype: str, arch: int, tmp_path) -> list:
    out = tmp_path / 'report.json'
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env['PYTHONPATH'] = str(ROOT) + os.pathsep + env.get('PYTHONPATH', '')
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'dev' / 'triton_compile.py'), 'shapes', '--small',
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
    expected = dict(EXPECTED, window=WINDOW_CHUNKED if dtype == 'float32' else EXPECTED['window'],
                    window_extra=WINDOW_EXTRA_CHUNKED if dtype == 'float32' else EXPECTED['window_extra'])
    for op, kernels in expected.items():
        assert [r['kernel'] for r in rows if r['case'] == op] == kernels, op
    _check_rows(rows, dtype, arch)


def _check_rows(rows, dtype, arch, mma=None):
    for r in rows:
        warp_mma = arch == 90 and (r['case'], r['kernel']) in WARP_MMA_KERNELS
        want = mma or ('HMMA' if warp_mma else TENSOR_CORE_OP[arch])
        where = f"{r['case']}: {r['kernel']} ({dtype}, sm_{arch}, constants {r['constants']})"
        assert r['shared_bytes'] <= SHARED_LIMIT[arch], f"{where}: {r['shared_bytes']} B of shared memory"
        assert r['local_bytes'] == 0, f"{where}: {r['local_bytes']} B spilled to local memory"
        if arch == 90:  # the stack frame is where ptxas spills (cuobjdump's LOCAL stays 0)
            allowed = KNOWN_SM90_STACK.get((r['kernel'], 'float32' if dtype == 'float32' else 'half'), 0)
            assert r['stack_bytes'] <= allowed, f"{where}: {r['stack_bytes']} B of stack (spills), {allowed} known"
        if r['kernel'] in ELEMENTWISE_KERNELS:
            continue
        if dtype == 'float32':
            assert r['mma'] is None, f"{where}: fp32 dots must stay exact (no TF32), got {r['sass_ops']}"
        else:
            assert r['mma'] == want, f"{where}: expected {want}, got {r['sass_ops']}"


# Window attention beyond one token chunk, as (B, H, W, C, heads, window, shift) for
# triton_compile._window. One tile per window would need 324 KiB of shared memory for 12x12 (bf16
# backward; fp32 already in the forward).
LARGE_WINDOWS = {
    'w12': (2, 24, 24, 96, 3, 12, 6),  # Swin-B/L at 384 px, UPerNet Swin-L on ADE20K: 144 tokens
    'w14': (1, 28, 28, 96, 3, 14, 7),  # 196 tokens
    'w16_d64': (1, 16, 16, 128, 2, 16, 8),  # 256 tokens, the largest window the op sends to Triton
    'w12_d128': (1, 12, 12, 256, 2, 12, 6),  # the largest head_dim
    # CSWin stripes, no bias (MAX_TRITON_WINDOW_NO_BIAS): stage 3 at 640 px and a 1024-token stripe
    'stripe_7x40': (1, 14, 40, 96, 3, (7, 40), 0, False),
    'stripe_1x1024': (1, 2, 1024, 64, 2, (1, 1024), 0, False),
}
# head_dim 128 takes 32-token chunks, fewer rows than Hopper's warpgroup MMA (HGMMA) needs
WARP_MMA_CASES = {'w12_d128'}

# Child process (see the module docstring): compile forward + backward of one window case.
_WINDOW_CHILD = '''
import json, os, sys
import torch
sys.path.insert(0, os.path.join(sys.argv[1], 'tools', 'dev'))
import triton_compile as report
import triton_aot
with triton_aot.compile_only(int(sys.argv[3])) as reports:
    y = report._window(getattr(torch, sys.argv[2]), *json.loads(sys.argv[4]))
    y.backward(torch.ones_like(y))
print(json.dumps([dict(r.__dict__, case='window') for r in reports], default=str))
'''


@pytest.mark.parametrize('case,dtype,arch', [
    ('w12', 'bfloat16', 90), ('w12', 'float32', 90), ('stripe_7x40', 'bfloat16', 90),
    *(pytest.param(c, d, a, marks=pytest.mark.slow) for c, d, a in [
        ('stripe_1x1024', 'bfloat16', 90), ('stripe_1x1024', 'float32', 90), ('stripe_7x40', 'float32', 90),
        ('w12', 'float16', 90), ('w12', 'bfloat16', 80), ('w12', 'float32', 80),
        ('w14', 'bfloat16', 90), ('w14', 'float32', 90), ('w16_d64', 'bfloat16', 90),
        ('w16_d64', 'float32', 90), ('w12_d128', 'bfloat16', 90), ('w12_d128', 'float32', 90)])])
def test_large_windows_compile_within_limits(case, dtype, arch):
    """Windows of several token chunks: forward, dK / dV and dQ kernels fit the shared memory of
    the target, spill nothing, and use the expected dot units."""
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env['PYTHONPATH'] = str(ROOT) + os.pathsep + env.get('PYTHONPATH', '')
    proc = subprocess.run([sys.executable, '-c', _WINDOW_CHILD, str(ROOT), dtype, str(arch),
                           json.dumps(LARGE_WINDOWS[case])], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r['kernel'] for r in rows] == WINDOW_CHUNKED
    # on sm_80 (triton 3.8) the 12x12 dK / dV kernel keeps a stack frame (144 B bf16, 16 B fp32):
    # the launch configuration is tuned for sm_90, so _check_rows checks stacks there only
    _check_rows(rows, dtype, arch, mma='HMMA' if case in WARP_MMA_CASES else None)


@pytest.mark.slow
@pytest.mark.parametrize('dtype', ['bfloat16', 'float32'])
def test_fastervit_shapes_compile_within_limits(dtype, tmp_path):
    """window_extra at FasterViT-2's 800x1333 calls (``shapes`` cases ``fastervit_s2``: 96 windows
    of 4 carrier + 7x7 tokens; ``fastervit_ct``: the carrier-token attention, one window of 384
    tokens, several chunks in every precision): within the sm_90 limits, no spills."""
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env['PYTHONPATH'] = str(ROOT) + os.pathsep + env.get('PYTHONPATH', '')
    out = tmp_path / 'report.json'
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'dev' / 'triton_compile.py'), 'shapes', '--only',
                           'fastervit', '--dtype', dtype, '--arch', '90', '--json', str(out)],
                          env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())['rows']
    s2 = WINDOW_EXTRA_CHUNKED if dtype == 'float32' else EXPECTED['window_extra']
    assert [r['kernel'] for r in rows if r['case'] == 'fastervit_s2'] == s2
    assert [r['kernel'] for r in rows if r['case'] == 'fastervit_ct'] == WINDOW_EXTRA_CHUNKED
    _check_rows(rows, dtype, 90)


def test_compile_only_restores_launching():
    """Leaving the block restores normal launches (the interpreter or a real GPU)."""
    from triton.runtime.jit import JITFunction
    before = JITFunction.run
    with triton_aot.compile_only(90):
        assert JITFunction.run is not before
    assert JITFunction.run is before


def test_sass_instruction_classes_are_counted():
    """The static counts of the report: opcodes with or without a predicate, modifiers ignored,
    the encoding comments not mistaken for instructions."""
    sass = '\n'.join([
        '        /*0120*/                   MUFU.RCP R0, R0 ;                  /* 0x0000000000007308 */',
        '        /*02c0*/              @!P3 IADD3 R4, R4, -R17.reuse, RZ ;     /* 0x800000110404b210 */',
        '        /*0c40*/              @!P4 LDG.E.128 R16, desc[UR16][R34.64] ; /* 0x000000102210c981 */',
        '        /*0c60*/               @P0 LDG.E.128 R36, desc[UR16][R20.64] ; /* 0x0000001014240981 */',
        '        /*0c70*/                   LDGSTS.E.BYPASS.128 [R3], desc[UR16][R8.64] ; /* 0x00000000 */',
        '        /*0d00*/                   HGMMA.64x64x16.F32.BF16 R24, gdesc[UR4], R24 ; /* 0x0 */',
        '        /*0d10*/               @PT STG.E [R2.64], R5 ;                 /* 0x0 */',
        '                                                                       /* 0x000fe20000000000 */',
    ])
    c = triton_aot.sass_classes(sass)
    assert c['total'] == 7
    assert (c['MUFU'], c['LDG'], c['LDGSTS'], c['HGMMA'], c['STG'], c['LDS']) == (1, 2, 1, 1, 1, 0)


def _compile_tool(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    env['PYTHONPATH'] = str(ROOT) + os.pathsep + env.get('PYTHONPATH', '')
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'dev' / 'triton_compile.py'), 'parity-cases', *args],
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_gpu_parity_compile_tool_lists_the_triton_cases():
    """``tools/dev/triton_compile.py parity-cases`` takes its cases from pytest's collection of the
    ``gpu`` tests: every Triton case, and none that runs only the reference or flex."""
    listed = [line for line in _compile_tool('--list').splitlines() if '::test_' in line]
    assert len(listed) == len(set(listed)) >= 90
    for nodeid in listed:
        assert 'flex' not in nodeid and 'reference' not in nodeid, nodeid
    for name in ('test_attn_neighborhood.py::test_cuda_parity[', 'test_cuda_triton_per_pair_bias_parity[',
                 'test_attn_window.py::test_cuda_parity[', 'test_attn_halo.py::test_cuda_parity[',
                 'test_cuda_strided_parity[', 'test_attention_backends_agree_cuda[swin_test]'):
        assert any(name in nodeid for nodeid in listed), name
    # the parity tests' reference cases are the other half of each parametrization
    ops = [n for n in listed if '/ops/' in n and 'per_pair' not in n and 'strided' not in n]
    assert all(n.endswith('-triton]') for n in ops), [n for n in ops if not n.endswith('-triton]')][:3]


def test_gpu_parity_compile_tool_compiles_a_case(tmp_path):
    """One case end to end: the test's own body (its launch configuration too)
    with every launch compiled for sm_90 and recorded."""
    out = tmp_path / 'report.json'
    _compile_tool('--only', 'neighborhood', '-k', 'per_pair_bias_parity and shape0 and dtype1', '--json', str(out))
    report = json.loads(out.read_text())
    assert report['summary']['failures'] == [] and report['summary']['tests'] == 1
    assert [r['kernel'] for r in report['rows']] == EXPECTED['na2d']
    for r in report['rows']:
        assert 0 < r['shared_bytes'] <= SHARED_LIMIT[90], r
        assert r['mma'] == (None if r['kernel'] in ELEMENTWISE_KERNELS else 'HGMMA'), r  # bf16 case
