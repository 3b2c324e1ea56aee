"""benchmarks/kernel_sweep.py: the per-kernel selection and combination logic (fast), and every
configuration it times computing correctly through the interpreter on tiny shapes (slow tier;
the GPU run re-checks each configuration before timing it)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def sweep():
    sys.path.insert(0, str(ROOT / 'benchmarks'))
    try:
        import kernel_sweep
        yield kernel_sweep
    finally:
        sys.path.remove(str(ROOT / 'benchmarks'))


def _row(config, fwd, bwd, **extra):
    return dict(family='na', case='a', config=config, kernels_fwd_us=fwd, kernels_bwd_us=bwd, **extra)


def test_best_per_kernel_and_combination(sweep):
    rows = [
        _row('default', {'_na_fwd': 100.0}, {'_na_bwd_dq': 300.0, '_na_bwd_dkdv': 500.0, 'aten::zero_': 9.0}),
        _row({'num_warps': 8}, {'_na_fwd': 90.0}, {'_na_bwd_dq': 350.0, '_na_bwd_dkdv': 400.0}),
        _row({'block_n': 32}, {'_na_fwd': 120.0}, {'_na_bwd_dq': 250.0, '_na_bwd_dkdv': 450.0}),
        _row({'tile_h': 16}, {'_na_fwd': 1.0}, {}, error='wrong result: max error 3'),  # never picked
    ]
    best = sweep.best_per_kernel('na', rows)
    assert best['fwd'] == {'config': {'num_warps': 8}, 'us': 90.0, 'default_us': 100.0}
    assert best['dq']['config'] == {'block_n': 32} and best['dq']['us'] == 250.0
    assert best['dkdv']['config'] == {'num_warps': 8} and best['dkdv']['default_us'] == 500.0
    assert sweep.combine('na', best) == {'fwd': {'num_warps': 8}, 'dq': {'block_n': 32}, 'dkdv': {'num_warps': 8}}

    halo = [dict(r, family='halo') for r in [
        _row('default', {'_halo_fwd_or_dq': 50.0}, {'_halo_fwd_or_dq': 80.0, '_halo_dkdv': 90.0}),
        _row({'fwd_warps': 4, 'dq_warps': 4, 'dkdv_warps': 4}, {'_halo_fwd_or_dq': 40.0},
             {'_halo_fwd_or_dq': 95.0, '_halo_dkdv': 70.0}),
    ]]
    best = sweep.best_per_kernel('halo', halo)
    assert best['fwd']['us'] == 40.0 and best['dq']['config'] == 'default'
    # each slot contributes only its own keys: the dq slot's default adds nothing
    assert sweep.combine('halo', best) == {'fwd_warps': 4, 'dkdv_warps': 4}
    # all defaults: nothing to combine
    assert sweep.combine('na', sweep.best_per_kernel('na', rows[:1])) is None


@pytest.mark.slow
def test_sweep_configurations_compute_correctly_in_the_interpreter(tmp_path):
    from conftest import triton_interpreter_unusable
    if triton_interpreter_unusable():
        pytest.skip(triton_interpreter_unusable())
    out = tmp_path / 'sweep.json'
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'kernel_sweep.py'), '--smoke', '--json', str(out)],
                          env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())['rows']
    assert {r['family'] for r in rows} == {'na', 'window', 'halo'}
    assert len(rows) >= 10
    for r in rows:
        assert 'error' not in r, r
        assert r['max_err'] < 1e-5, r
        assert r['kernels_fwd_us'] and r['kernels_bwd_us'], r  # the profiler path ran
