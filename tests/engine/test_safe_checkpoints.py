"""Checkpoints are untrusted input: safe loading with an allow-list, and atomic writes."""
from __future__ import annotations

import io
import os
import subprocess

import numpy as np
import pytest
import torch

import densekit  # noqa: F401
from densekit.compat.safe_load import UnsafeCheckpointError, atomic_write_bytes, safe_load


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return safe_load(buf)


def test_mmengine_style_checkpoint_loads_weights_only():
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('safe-load-test')
    hub.update_scalar('train/loss', 0.5)
    hub.update_scalar('train/np', np.float64(2.0))
    hub.update_info('iter', 3)
    ckpt = dict(meta=dict(seed=np.int64(3), arr=np.arange(3, dtype=np.int32), f=np.float32(1.5),
                          rng=np.random.get_state()),
                message_hub=hub.state_dict(), state_dict={'w': torch.ones(2)})
    out = _roundtrip(ckpt)
    assert out['meta']['seed'] == 3 and out['meta']['arr'].tolist() == [0, 1, 2]
    assert out['message_hub']['log_scalars']['train/loss'].mean() == 0.5
    torch.testing.assert_close(out['state_dict']['w'], torch.ones(2))


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


class _GetattrGadget:
    def __reduce__(self):
        return (getattr, (subprocess.Popen, '__init__'))


@pytest.mark.parametrize('payload', ['system', 'getattr'])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload):
    marker = tmp_path / 'pwned'
    evil = _RunsCode(marker) if payload == 'system' else _GetattrGadget()
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': evil}, path)
    with pytest.raises(UnsafeCheckpointError, match=r'refusing to load checkpoint .*evil\.pth'):
        safe_load(path)
    assert not marker.exists()


def test_mmengine_loader_uses_safe_load(tmp_path):
    from mmengine.runner.checkpoint import CheckpointLoader
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save({'x': _RunsCode(marker)}, path)
    with pytest.raises(UnsafeCheckpointError):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert not marker.exists()


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / 'latest.pth'
    atomic_write_bytes(b'old checkpoint', target)

    def crash(fd):
        raise KeyboardInterrupt  # stands for a kill between write and rename

    monkeypatch.setattr(os, 'fsync', crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(b'new but never finished', target)
    assert target.read_bytes() == b'old checkpoint'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['latest.pth']


def test_mmengine_backend_writes_atomically(tmp_path, monkeypatch):
    from mmengine.fileio import get_file_backend
    target = tmp_path / 'last_checkpoint'
    backend = get_file_backend(str(target))
    backend.put_text('iter_2.pth', str(target))
    monkeypatch.setattr(os, 'replace', lambda *a: (_ for _ in ()).throw(OSError('killed')))
    with pytest.raises(OSError):
        backend.put(b'iter_4.pth', str(target))
    assert target.read_text() == 'iter_2.pth'


def test_one_cycle_scheduler_state_survives_weights_only_roundtrip():
    from mmengine.optim.scheduler import OneCycleLR
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = OneCycleLR(opt, eta_max=0.1, total_steps=10, by_epoch=False)
    for _ in range(3):
        opt.step()
        sched.step()
    state = _roundtrip({'param_schedulers': [sched.state_dict()]})['param_schedulers'][0]
    assert 'anneal_func' not in state
    fresh = OneCycleLR(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
                       eta_max=0.1, total_steps=10, by_epoch=False)
    fresh.load_state_dict(state)
    assert fresh.last_step == sched.last_step
    assert fresh.anneal_func is sched.anneal_func
