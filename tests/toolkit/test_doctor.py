"""``python -m densekit.doctor`` run as a user runs it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def _doctor(*args, **env) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, '-m', 'densekit.doctor', *args], capture_output=True,
                       text=True, cwd=REPO, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(REPO), **env))
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_json_report_matches_this_process():
    rep = json.loads(_doctor('--json').stdout)
    assert rep['versions']['torch'] == torch.__version__
    import densekit  # noqa: F401
    from densekit.compat import using_portable_ops
    ext = rep['mmcv_ops']['extension']
    assert ext.startswith('densekit portable' if using_portable_ops() else 'compiled'), ext
    if using_portable_ops():
        assert {'nms', 'roi_align_forward', 'ms_deform_attn_forward'} <= set(rep['mmcv_ops']['portable_ops'])
    assert rep['accelerators']['cuda_available'] == torch.cuda.is_available()
    cpu = rep['attention_backends']['cpu float32']
    assert set(cpu) == {'na2d (NAT / DiNAT)', 'na1d', 'window_attention (Swin)',
                        'halo_attention (HaloNet)'}
    for op, choice in cpu.items():
        name = choice.split()[0]
        assert name in ('flex', 'reference'), f'{op}: {choice}'  # Triton needs CUDA
        assert 'skipped triton' in choice, f'{op}: the skipped backends and why are listed'


def test_forced_backend_and_text_report():
    out = _doctor(DENSEKIT_ATTN_BACKEND='reference').stdout
    for section in ('versions', 'mmcv ops', 'accelerators', 'attention backend per op',
                    'checkpoint cache'):
        assert section in out, out
    assert 'forced: reference (DENSEKIT_ATTN_BACKEND)' in out
