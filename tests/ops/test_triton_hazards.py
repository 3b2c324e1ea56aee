"""The GPU hazard checks of the interpreter (``tools/dev/triton_hazards.py``): each hazard is caught
in a small kernel written to have it, a correct kernel passes, and densekit's attention kernels
(which every ``triton_interpreter`` test runs under these checks) are really instrumented."""
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import triton
import triton.language as tl

from attn_parity import check_backend
from triton_hazards import INT_SENTINEL, HazardError, gpu_hazards

from densekit.ops import halo_attention, na2d, window_attention


@functools.lru_cache(maxsize=None)
def _kernels():
    """The kernels of these tests, defined on first use: ``triton.jit`` makes an interpreted
    function only when ``TRITON_INTERPRET`` is set at definition time (the
    ``triton_interpreter_unchecked`` fixture sets it first)."""
    @triton.jit
    def _copy(X, Y, N, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(Y + offs, tl.load(X + offs, mask=offs < N, other=0.0) * 2, mask=offs < N)

    @triton.jit
    def _same_block_everywhere(X, Y, N, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)  # forgot the program's offset: every program stores Y[:BLOCK]
        tl.store(Y + offs, tl.load(X + offs, mask=offs < N, other=0.0), mask=offs < N)

    @triton.jit
    def _reads_neighbour(X, Y, N, BLOCK: tl.constexpr):
        # each program scales its block in place and reads the first element of the next block,
        # which the next program overwrites: the order the interpreter runs them in hides it
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        nxt = tl.load(X + (pid + 1) * BLOCK, mask=(pid + 1) * BLOCK < N, other=0.0)
        tl.store(X + offs, tl.load(X + offs, mask=offs < N, other=0.0) * 2, mask=offs < N)
        tl.store(Y + pid, nxt)

    @triton.jit
    def _atomic_hist(X, H, N, BLOCK: tl.constexpr, READ_BACK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.atomic_add(H + (offs % 2), tl.load(X + offs, mask=offs < N, other=0.0), mask=offs < N)
        if READ_BACK:
            tl.store(X + offs, tl.load(H + (offs % 2)), mask=offs < N)

    @triton.jit
    def _shifted_view(X, Y, N, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(Y + offs, tl.load(X + offs + 1, mask=offs < N, other=0.0), mask=offs < N)

    @triton.jit
    def _no_other(X, Y, N, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        tl.store(Y + offs, tl.load(X + offs, mask=offs < N))

    return SimpleNamespace(copy=_copy, same_block_everywhere=_same_block_everywhere, reads_neighbour=_reads_neighbour,
                           atomic_hist=_atomic_hist, shifted_view=_shifted_view, no_other=_no_other)


def test_correct_kernel_passes_and_is_counted(triton_interpreter_unchecked):
    x = torch.randn(10)
    y = torch.empty(10)
    with gpu_hazards() as checker:
        _kernels().copy[(3,)](x, y, 10, BLOCK=4)
    assert torch.equal(y, 2 * x)
    assert checker.launches == 1 and checker.kernels['_copy'] == 1


def test_store_race_between_programs(triton_interpreter_unchecked):
    x = torch.randn(10)
    with gpu_hazards(), pytest.raises(HazardError, match=r"_same_block_everywhere: store / store race .*'Y'.*"
                                                           r"program \(0, 0, 0\) and program \(1, 0, 0\)"):
        _kernels().same_block_everywhere[(3,)](x, torch.empty(10), 10, BLOCK=4)


def test_read_of_another_programs_store(triton_interpreter_unchecked):
    x = torch.randn(12)
    with gpu_hazards(), pytest.raises(HazardError, match=r"store / load race .*'X'"):
        _kernels().reads_neighbour[(3,)](x, torch.empty(3), 12, BLOCK=4)


def test_atomics_may_share_bytes_but_not_with_plain_access(triton_interpreter_unchecked):
    x = torch.ones(12)
    h = torch.zeros(2)
    with gpu_hazards():
        _kernels().atomic_hist[(3,)](x, h, 12, BLOCK=4, READ_BACK=False)
    assert h.tolist() == [6.0, 6.0]
    with gpu_hazards(), pytest.raises(HazardError, match=r"atomic / load race .*'H'"):
        _kernels().atomic_hist[(3,)](x, h, 12, BLOCK=4, READ_BACK=True)


def test_access_outside_a_view_inside_its_storage(triton_interpreter_unchecked):
    """q as a view into packed [q | k]: reading one element past q's view stays inside the
    storage (no crash on CPU, garbage or another tensor's data on GPU) and is caught."""
    packed = torch.randn(2, 8)
    q = packed[0]
    with gpu_hazards(), pytest.raises(HazardError, match=r"load out of bounds .*program \(1, 0, 0\)"):
        _kernels().shifted_view[(2,)](q, torch.empty(8), 8, BLOCK=4)


def test_masked_lanes_without_other_and_fresh_memory_read_as_garbage(triton_interpreter_unchecked):
    x = torch.arange(3, dtype=torch.float32)
    y = torch.zeros(4)
    with gpu_hazards():
        _kernels().no_other[(1,)](x, y, 3, BLOCK=4)
        fresh = torch.empty(3), torch.empty_like(x), torch.empty(2, dtype=torch.int32), x.new_empty(2)
    assert y[:3].tolist() == [0.0, 1.0, 2.0] and y[3].isnan()
    assert fresh[0].isnan().all() and fresh[1].isnan().all() and fresh[3].isnan().all()
    assert (fresh[2] == INT_SENTINEL).all()


# ------------------------------------------------------------------ densekit's kernels
def _na(q, k, v, rpb, backend=None):  # small tiles: several programs per launch
    return na2d(q, k, v, (5, 3), (2, 1), rpb=rpb, backend=backend, triton_config=dict(tile_h=4, tile_w=4, block_n=16))


def _win(q, k, v, rpb, backend=None):  # 12x12 windows: several key chunks and image chunks
    return window_attention(q, k, v, 12, 6, rpb=rpb, backend=backend, triton_config=dict(min_programs=10))


def _halo(q, k, v, rel, backend=None):
    return halo_attention(q, k, v, 4, 1, rel_h=rel[0], rel_w=rel[1], padding='mask', backend=backend)


@pytest.mark.parametrize('op,shape,bias,kernels', [
    (_na, (2, 11, 9, 1, 16), (1, 9, 5), {'_na_fwd', '_na_bwd_dq', '_na_bwd_dkdv'}),
    (_win, (3, 12, 12, 1, 16), (1, 23, 23), {'_window_fwd', '_window_bwd_dkdv', '_window_bwd_dq'}),
    (_halo, (1, 8, 12, 2, 16), (2, 11, 16), {'_halo_fwd_or_dq', '_halo_dkdv'}),
])
def test_attention_kernels_run_under_the_checks(triton_interpreter_unchecked, op, shape, bias, kernels):
    """Several programs per launch (small tiles / chunks), so that races could occur; every
    kernel of the forward and backward is instrumented, and parity holds on poisoned memory."""
    with gpu_hazards() as checker:
        check_backend(op, 'triton', shape, bias, torch.float32)
    assert kernels <= set(checker.kernels), checker.kernels
    assert checker.launches == sum(checker.kernels.values())


def test_ms_deform_attn_atomics_run_under_the_checks(triton_interpreter_unchecked):
    """The MSDA parity check (its value gradient uses atomics) with its launches instrumented."""
    from test_ms_deform_attn_triton import CASES, _check
    with gpu_hazards() as checker:
        _check(CASES[0], 'cpu')
    assert {'_msda_fwd_kernel', '_msda_bwd_kernel'} <= set(checker.kernels), checker.kernels
    assert checker.launches == sum(checker.kernels.values())


def test_gpu_parity_cases_run_under_the_checks_through_the_tool(triton_interpreter_unchecked, tmp_path):
    """``tools/dev/triton_compile.py parity-cases --interpret`` runs a CUDA parity case's own body on
    CPU under these checks (a child process: ``triton.jit`` picks the interpreter at definition)."""
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / 'interp.json'
    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    proc = subprocess.run([sys.executable, str(root / 'tools/dev/triton_compile.py'), 'parity-cases', '--interpret',
                           '--only', 'halo', '-k', 'test_cuda_parity and shape0 and dtype1', '--json', str(out)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result['summary']['tests'] == 1 and result['summary']['failures'] == []
    # forward, delta, dQ and dK / dV launches, each checked
    assert {r['kernel'] for r in result['rows']} == {'_halo_fwd_or_dq', '_row_dot_kernel', '_halo_dkdv'}
    assert result['summary']['launches'] == 4
