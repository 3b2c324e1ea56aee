"""benchmarks/attention.py --smoke: every row the GPU run produces, on tiny shapes through the
Triton interpreter, so the script the GPU check spends its device minutes on cannot rot unseen.
Times are not looked at (rule 6); only that each row ran and computed the right answer."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def smoke_rows(tmp_path_factory):
    from conftest import triton_interpreter_unusable
    if triton_interpreter_unusable():
        pytest.skip(triton_interpreter_unusable())
    pytest.importorskip('timm')
    out = tmp_path_factory.mktemp('bench') / 'attention.json'
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=str(ROOT), BENCH_THREADS='1')
    proc = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'attention.py'), '--smoke', '--json', str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    return data['meta'], {(r['case'], r['impl']): r for r in data['rows']}


def test_every_case_has_every_row(smoke_rows):
    _, rows = smoke_rows
    expected = {
        'smoke_na': ['densekit.na2d[triton]', 'densekit.na2d[flex]', 'densekit.na2d[reference]',
                     'compiled flex + NA mask, no bias (baseline)', 'densekit.na2d[triton] no bias',
                     'dense SDPA + mask (baseline)'],
        'smoke_na_d2': ['densekit.na2d[triton]', 'densekit.na2d[flex]', 'densekit.na2d[reference]',
                        'dense SDPA + mask (baseline)'],
        'smoke_win': ['timm Swin _attn (eager)', 'timm Swin _attn (fused SDPA)',
                      'qkv + densekit.window_attention[triton] + proj',
                      'qkv + densekit.window_attention[flex] + proj',
                      'qkv + densekit.window_attention[reference] + proj'],
        'smoke_halo': ['timm HaloAttn', 'q/kv conv + densekit.halo_attention[triton]',
                       'q/kv conv + densekit.halo_attention[flex]',
                       'q/kv conv + densekit.halo_attention[reference]'],
    }
    assert {c for c, _ in rows} == set(expected)
    for case, impls in expected.items():
        assert sorted(i for c, i in rows if c == case) == sorted(impls), case


def test_rows_ran_and_agree_with_the_fp32_reference(smoke_rows):
    _, rows = smoke_rows
    for (case, impl), r in rows.items():
        if '[flex]' in impl or impl.startswith('compiled flex'):
            # flex_attention has no CPU backward in this torch: an error row must say that, and
            # nothing else; a row that ran (a torch with one) must have run forward and backward
            if 'error' in r:
                assert 'CPU' in r['error'], r
            else:
                assert r['fwd_ms'] > 0 and r['fwdbwd_ms'] > 0, r
            continue
        assert 'error' not in r, r
        assert r['fwd_ms'] > 0 and r['fwdbwd_ms'] > 0, r
        if 'max_abs_err_vs_fp32_ref' in r:  # fp32 on CPU: the Triton kernels match the reference
            assert r['max_abs_err_vs_fp32_ref'] < 1e-5, r
    for case in ('smoke_na', 'smoke_na_d2'):
        assert 'max_abs_err_vs_fp32_ref' in rows[(case, 'densekit.na2d[triton]')]


def test_ratios_and_floors_are_attached(smoke_rows):
    meta, rows = smoke_rows
    assert meta['device'] == 'cpu' and meta['copy_GBps'] > 0 and meta['matmul_TFLOPs'] > 0
    tri = rows[('smoke_na', 'densekit.na2d[triton]')]
    assert 'speedup_fwdbwd_vs[dense SDPA + mask (baseline)]' in tri
    assert tri['fwdbwd_x_floor'] > 0
    win = rows[('smoke_win', 'qkv + densekit.window_attention[triton] + proj')]
    assert 'speedup_fwdbwd_vs[timm Swin _attn (fused SDPA)]' in win
    halo = rows[('smoke_halo', 'q/kv conv + densekit.halo_attention[triton]')]
    assert 'speedup_fwdbwd_vs[timm HaloAttn]' in halo
