"""Faults injected into real training runs (``tools/train.py`` / ``tools/slurm_train.sh`` in
subprocesses, as a user runs them, on the tiny seg config of ``tests/engine``): preemption,
failed and corrupted checkpoints, non-finite losses and gradients. docs/reliability.md lists
what each test proves."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / 'engine'))  # tiny_seg / tiny_hooks
from tiny_seg import REPO, env_with_hooks, make_tiny_ade, write_config  # noqa: E402

pytest.importorskip('mmseg')

EXIT_PREEMPTED = 75
FAULT_HOOKS = """
custom_imports = dict(imports=['densekit', 'tiny_hooks', 'fault_hooks'], allow_failed_imports=False)
custom_hooks = custom_hooks + [dict(type='SendSignalHook'), dict(type='FailCheckpointWriteHook'),
                               dict(type='NaNInputHook'), dict(type='DamageImagesHook'),
                               dict(type='KillProcessHook')]
"""


def _env(extra=None) -> dict:
    env = env_with_hooks()
    env['PYTHONPATH'] = os.pathsep.join([str(HERE), env['PYTHONPATH']])
    return {**env, **(extra or {})}


def _run(args, cwd, env=None, expect=0):
    r = subprocess.run(args, cwd=cwd, env=_env(env), capture_output=True, text=True, timeout=600)
    if expect is not None and r.returncode != expect:
        raise AssertionError(f'{args} exited {r.returncode}, expected {expect}:\n'
                             f'{r.stdout[-4000:]}\n{r.stderr[-4000:]}')
    return r, r.stdout + r.stderr


def _train(cfg, work_dir, *extra, env=None, expect=0):
    return _run([sys.executable, str(REPO / 'tools' / 'train.py'), str(cfg), '--work-dir', str(work_dir),
                 *extra], work_dir.parent, env=env, expect=expect)


def _weights(work_dir, rank=0):
    return torch.load(Path(work_dir) / f'weights_rank{rank}.pt')['params']


def _assert_same_weights(a, b):
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5, msg=k)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('rel')
    data = make_tiny_ade(tmp / 'ade')
    return write_config(tmp, data, FAULT_HOOKS)


@pytest.fixture(scope='module')
def full(tiny):
    """The uninterrupted 8-iteration run (checkpoints at 2, 4, 6, 8)."""
    wd = tiny.parent / 'full'
    _train(tiny, wd)
    return wd


# ------------------------------------------------------------------------------ preemption
def test_sigterm_checkpoints_exits_75_and_resume_matches(tiny, full):
    """SIGTERM during iteration 3 (no checkpoint scheduled there): the run finishes iteration 3,
    writes iter_3.pth and exits 75; --resume continues from it and ends with the uninterrupted
    run's weights."""
    wd = tiny.parent / 'preempted'
    _, log = _train(tiny, wd, env={'TEST_SIGNAL_AT': '3'}, expect=EXIT_PREEMPTED)
    assert 'received SIGTERM' in log and 'stopped after iteration 3' in log
    assert (wd / 'iter_3.pth').is_file() and not (wd / 'iter_4.pth').exists()
    assert (wd / 'last_checkpoint').read_text().strip() == str(wd / 'iter_3.pth')
    ckpt = torch.load(wd / 'iter_3.pth', weights_only=False)
    assert ckpt['meta']['iter'] == 3 and 'rng_state' in ckpt['meta']
    _, log = _train(tiny, wd, '--resume')
    assert 'resumed epoch: 0, iter: 3' in log
    _assert_same_weights(_weights(full), _weights(wd))


FAKE_SRUN = r'''#!{python}
import json, os, subprocess, sys
args, opts = sys.argv[1:], {{}}
while args and args[0].startswith('-'):
    a = args.pop(0)
    if '=' in a:
        k, v = a.split('=', 1)
    else:
        k, v = a, args.pop(0)
    opts[k] = v
with open(os.environ['FAKE_SLURM_LOG'], 'a') as f:
    f.write(json.dumps(dict(tool='srun', opts=opts, cmd=args)) + '\n')
n = int(opts['--ntasks'])
procs = [subprocess.Popen(args, env=dict(os.environ, SLURM_PROCID=str(i), SLURM_LOCALID=str(i), SLURM_NTASKS=str(n),
                                         SLURM_NODELIST='node[001]', SLURM_JOB_NAME=opts['--job-name']))
         for i in range(n)]
sys.exit(max(p.wait() for p in procs))
'''
FAKE_SCONTROL = '''#!/usr/bin/env bash
if [[ "$1 $2 $3" == "show hostname node[001]" ]]; then echo 127.0.0.1; exit 0; fi
if [[ "$1" == requeue ]]; then echo "{{\\"tool\\": \\"scontrol\\", \\"requeue\\": \\"$2\\"}}" >> "$FAKE_SLURM_LOG"; exit 0; fi
exit 1
'''


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_slurm_preemption_requeues_and_resumes_two_ranks(tiny, tmp_path):
    """tools/slurm_train.sh in a batch job, 2 gloo ranks (stand-in srun / scontrol): SIGUSR1 that
    reaches rank 1 only during iteration 3 stops both ranks after iteration 3 with a checkpoint
    holding both RNG states; the script requeues the job; the restarted job (SLURM_RESTART_COUNT=1)
    resumes by itself and ends with the uninterrupted 2-rank run's weights."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, text in (('srun', FAKE_SRUN.format(python=sys.executable)), ('scontrol', FAKE_SCONTROL.format())):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log_file = tmp_path / 'slurm.jsonl'
    env = {'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', 'FAKE_SLURM_LOG': str(log_file),
           'GPUS': '2', 'GPUS_PER_NODE': '2', 'CPUS_PER_TASK': '1', 'SLURM_JOB_ID': '4242'}

    def slurm_train(wd, expect=0, **extra):
        return _run(['bash', str(REPO / 'tools' / 'slurm_train.sh'), 'gpu', 'dk', str(tiny), str(wd),
                     '--cfg-options', 'randomness.diff_rank_seed=True'], tmp_path,
                    env={**env, 'MASTER_PORT': str(_free_port()), **extra}, expect=expect)

    ref = tmp_path / 'ref'
    slurm_train(ref)
    wd = tmp_path / 'job'
    _, log = slurm_train(wd, expect=EXIT_PREEMPTED, TEST_SIGNAL_AT='3', TEST_SIGNAL='SIGUSR1',
                         TEST_SIGNAL_RANK='1')
    assert 'requeueing job 4242' in log
    calls = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert {'tool': 'scontrol', 'requeue': '4242'} in calls
    ranks = torch.load(wd / 'iter_3.pth', weights_only=False)['meta']['rng_state']['ranks']
    assert len(ranks) == 2 and not (wd / 'iter_4.pth').exists()

    _, log = slurm_train(wd, SLURM_RESTART_COUNT='1')
    last = [json.loads(line) for line in log_file.read_text().splitlines()][-1]
    assert last['tool'] == 'srun' and last['cmd'][-1] == '--resume'
    assert 'resumed epoch: 0, iter: 3' in log and 'RNG states are not restored' not in log
    for rank in (0, 1):
        _assert_same_weights(_weights(ref, rank), _weights(wd, rank))


# ------------------------------------------------------------------------ checkpoint faults
def test_failed_checkpoint_write_keeps_the_previous_one(tiny, tmp_path):
    """The disk fills while iter_4.pth is written (max_keep_ckpts=1, so mmengine alone would
    already have deleted iter_2.pth): training stops naming the path and the cause; iter_2.pth,
    its checksum and last_checkpoint are intact; no temporary file is left."""
    wd = tmp_path / 'enospc'
    r, log = _train(tiny, wd, '--cfg-options', 'default_hooks.checkpoint.max_keep_ckpts=1',
                    env={'TEST_FAIL_WRITE_AT': '4', 'TEST_FAIL_ERRNO': 'ENOSPC'}, expect=None)
    assert r.returncode not in (0, EXIT_PREEMPTED)
    assert f'could not write checkpoint {wd / "iter_4.pth"}: No space left on device' in log
    assert not (wd / 'iter_4.pth').exists()
    assert (wd / 'last_checkpoint').read_text().strip() == str(wd / 'iter_2.pth')
    from densekit.engine.checkpoint import verify_checkpoint
    assert verify_checkpoint(wd / 'iter_2.pth') is None
    assert not [p.name for p in wd.iterdir() if p.name.endswith('.tmp')]


@pytest.mark.slow
def test_killed_during_checkpoint_write_resumes_from_the_previous_one(tiny, full, tmp_path):
    """SIGKILL half-way through writing iter_4.pth: iter_2.pth and last_checkpoint stay valid and
    --resume continues from iter 2 to the uninterrupted run's weights."""
    wd = tmp_path / 'killed'
    r, _ = _train(tiny, wd, env={'TEST_FAIL_WRITE_AT': '4', 'TEST_FAIL_ERRNO': 'KILL'}, expect=None)
    assert r.returncode == -9
    assert not (wd / 'iter_4.pth').exists()
    assert (wd / 'last_checkpoint').read_text().strip() == str(wd / 'iter_2.pth')
    _, log = _train(tiny, wd, '--resume')
    assert 'resumed epoch: 0, iter: 2' in log
    _assert_same_weights(_weights(full), _weights(wd))


def _truncated_work_dir(full, wd):
    """A work dir whose last_checkpoint names a truncated iter_8.pth (iter_4 and iter_6 intact)."""
    wd.mkdir()
    for name in ('iter_4.pth', 'iter_6.pth', 'iter_8.pth'):
        for suffix in ('', '.sha256'):
            shutil.copy(full / (name + suffix), wd / (name + suffix))
    (wd / 'last_checkpoint').write_text(str(wd / 'iter_8.pth'))
    with open(wd / 'iter_8.pth', 'r+b') as f:
        f.truncate(os.path.getsize(wd / 'iter_8.pth') // 2)
    return wd


def test_resume_refuses_a_truncated_checkpoint(tiny, full, tmp_path):
    """--resume from a truncated iter_8.pth stops before training, naming the file, the reason
    and the newest intact checkpoint."""
    wd = _truncated_work_dir(full, tmp_path / 'corrupt')
    r, log = _train(tiny, wd, '--resume', expect=None)
    assert r.returncode != 0 and 'Iter(train)' not in log
    assert f'cannot resume from {wd / "iter_8.pth"}' in log and 'truncated or corrupted' in log
    assert f'the newest intact checkpoint is {wd / "iter_6.pth"}' in log


@pytest.mark.slow
def test_resume_fallback_takes_the_newest_intact_checkpoint(tiny, full, tmp_path):
    """--resume --resume-fallback resumes from iter_6.pth instead of the truncated iter_8.pth and
    ends with the uninterrupted run's weights."""
    wd = _truncated_work_dir(full, tmp_path / 'corrupt')
    _, log = _train(tiny, wd, '--resume', '--resume-fallback')
    assert 'resuming from the newest intact checkpoint' in log and 'resumed epoch: 0, iter: 6' in log
    _assert_same_weights(_weights(full), _weights(wd))


# ------------------------------------------------------------------------ numerical faults
def test_non_finite_loss_stops_naming_iteration_term_and_images(tiny, tmp_path):
    wd = tmp_path / 'nan'
    r, log = _train(tiny, wd, env={'TEST_NAN_AT': '3'}, expect=None)
    assert r.returncode != 0
    m = re.search(r"NonFiniteLossError: non-finite value at iteration 3: loss term 'decode.loss_ce' "
                  r"is nan \(batch images: \[([^\]]*)\]\)", log)
    assert m, log[-3000:]
    images = re.findall(r"'([^']+)'", m.group(1))
    assert len(images) == 2 and all(p.endswith('.jpg') and os.path.isfile(p) for p in images)


@pytest.mark.slow
def test_non_finite_steps_are_skipped_up_to_the_cap(tiny, tmp_path):
    """action='skip', max_skips=1: the NaN-loss step of iteration 3 is skipped (the weights of
    iter_4.pth are finite), the NaN-gradient step of iteration 5 is the second and stops the run
    naming the parameter."""
    cfg = write_config(tmp_path, tiny.parent / 'ade', FAULT_HOOKS + (
        "custom_hooks = custom_hooks + [dict(type='NonFiniteCheckHook', action='skip', max_skips=1)]\n"))
    wd = tmp_path / 'skip'
    r, log = _train(cfg, wd, env={'TEST_NAN_AT': '3', 'TEST_NAN_GRAD_AT': '5'}, expect=None)
    assert r.returncode != 0
    assert "skipped the step of iteration 3: loss term 'decode.loss_ce' is nan" in log
    assert ('non-finite value at iteration 5: the gradient of parameter decode_head.conv_seg.weight '
            'is not finite') in log and '2 steps skipped, more than max_skips=1' in log
    state = torch.load(wd / 'iter_4.pth', weights_only=False)['state_dict']
    assert all(torch.isfinite(v).all() for k, v in state.items() if v.is_floating_point() and 'running' not in k)


# ------------------------------------------------------------------------------ determinism
@pytest.mark.slow
def test_two_runs_with_the_same_seed_give_identical_weights(tiny, full, tmp_path):
    wd = tmp_path / 'again'
    _train(tiny, wd)
    a, b = _weights(full), _weights(wd)
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------ data faults
@pytest.mark.slow
def test_damaged_images_mid_run_are_skipped_and_counted(tiny, tmp_path):
    """After iteration 4 one training image is overwritten with garbage and another deleted; the
    second pass over the data (iterations 5-8) meets both: with action='skip' each is logged
    with its file and cause, another sample is drawn, and the run finishes."""
    data = tmp_path / 'ade'
    shutil.copytree(tiny.parent / 'ade', data)
    cfg = write_config(tmp_path, data, FAULT_HOOKS + (
        "custom_hooks = custom_hooks + [dict(type='DataFaultHook', action='skip', max_skips=50)]\n"))
    _, log = _train(cfg, tmp_path / 'skip', env={'TEST_DAMAGE_AT': '4'})
    skipped = re.findall(r'DataFaultHook: skipped training sample \d+ \(img_path=(\S+?),', log)
    assert {Path(p).name for p in skipped} == {'000.jpg', '001.jpg'}, log[-3000:]
    assert 'Iter(train) [8/8]' in log


@pytest.mark.slow
def test_a_killed_data_loader_worker_is_an_error_not_a_hang(tiny, tmp_path):
    import time
    start = time.monotonic()
    r, log = _train(tiny, tmp_path / 'worker', '--cfg-options', 'train_dataloader.num_workers=1',
                    'train_dataloader.persistent_workers=True', env={'TEST_KILL_WORKER_AT': '3'},
                    expect=None)
    assert r.returncode not in (0, EXIT_PREEMPTED)
    killed = r'DataLoader worker \(pid\(?s?\)? ?\d+\) (is killed by signal: Killed|exited unexpectedly)'
    assert re.search(killed, log), log[-3000:]
    assert time.monotonic() - start < 300


# ----------------------------------------------------------------------- distributed faults
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_dying_rank_ends_the_run_naming_it(tiny, tmp_path):
    """tools/dist_train.sh, 2 gloo ranks: rank 1 is SIGKILLed after iteration 3; the run ends in
    bounded time (no hang in the surviving rank's collectives) and the report names rank 1."""
    import time
    start = time.monotonic()
    r, log = _run(['bash', str(REPO / 'tools' / 'dist_train.sh'), str(tiny), '2', '--work-dir',
                   str(tmp_path / 'dist')], tmp_path,
                  env={'PORT': str(_free_port()), 'TEST_KILL_RANK_AT': '1:3'}, expect=None)
    elapsed = time.monotonic() - start
    assert r.returncode != 0
    assert re.search(r'rank\s*:\s*1 \(local_rank: 1\)\s*\n\s*exitcode\s*:\s*-9', log), log[-3000:]
    assert elapsed < 240, elapsed
