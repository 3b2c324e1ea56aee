"""Distributed faults in real training runs (``tools/slurm_train.sh``-style launch: one process
per rank, gloo on CPU, ``--launcher slurm`` with stand-in ``srun`` / ``scontrol``): a rank that
dies, and a resume on another number of ranks."""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / 'engine'))
from test_faults import FAKE_SCONTROL, FAKE_SRUN, FAULT_HOOKS, _free_port, _run, _train  # noqa: E402
from tiny_seg import REPO, make_tiny_ade, write_config  # noqa: E402

pytest.importorskip('mmseg')

WATCHDOG = "custom_hooks = custom_hooks + [dict(type='RankWatchdogHook', timeout=20, interval=0.5)]\n"


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('dist')
    data = make_tiny_ade(tmp / 'ade')
    cfg = write_config(tmp, data, FAULT_HOOKS + WATCHDOG)
    bin_dir = tmp / 'bin'
    bin_dir.mkdir()
    for name, text in (('srun', FAKE_SRUN.format(python=sys.executable)), ('scontrol', FAKE_SCONTROL.format())):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', 'FAKE_SLURM_LOG': str(tmp / 'slurm.jsonl')}
    return cfg, env


def _srun_train(setup, ranks, work_dir, *extra, env=None, expect=0):
    cfg, base_env = setup
    cmd = ['srun', '--ntasks', str(ranks), '--job-name', 'dk', sys.executable, '-u',
           str(REPO / 'tools' / 'train.py'), str(cfg), '--work-dir', str(work_dir), '--launcher', 'slurm',
           *extra]
    return _run(cmd, work_dir.parent, env={**base_env, 'MASTER_PORT': str(_free_port()), **(env or {})},
                expect=expect)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_rank_is_named_by_the_other(setup, tmp_path):
    """2 ranks, rank 1 SIGKILLed after iteration 3: rank 0's next collective (the preemption
    check's all-reduce at the end of iteration 3) fails and it stops
    with RankLostError naming rank 1 (its pid is gone), well within the watchdog's timeout;
    the launcher (which waits for every task) returns instead of hanging."""
    start = time.monotonic()
    r, log = _srun_train(setup, 2, tmp_path / 'dies', env={'TEST_KILL_RANK_AT': '1:3'}, expect=None)
    elapsed = time.monotonic() - start
    assert r.returncode != 0
    assert re.search(r'rank 0 of 2 lost contact: rank 1 \(pid \d+ on \S+\) has exited', log), log[-4000:]
    m = re.search(r'RankLostError: .* stopping at iteration (\d+)', log)
    # the failed all-reduce raises RankLostError, unless the watchdog's own check (the pid is
    # gone) ended the process first, which a heavily loaded machine allows
    assert (m and int(m.group(1)) == 3) or 'exiting with status 1' in log, log[-4000:]
    assert 'Iter(train) [8/8]' not in log
    assert elapsed < 600, elapsed


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_resume_on_another_number_of_ranks_says_what_is_restored(setup, tmp_path):
    """A checkpoint of 2 ranks resumed on 1, and one of 1 rank resumed on 2: the resumed run
    logs what it restores and what it does not (RNG states, sampler position, effective batch
    size with the figures), continues from the checkpoint's iteration and finishes."""
    cfg, _ = setup
    two = tmp_path / 'two'
    _srun_train(setup, 2, two, '--cfg-options', 'train_cfg.max_iters=4')
    one = tmp_path / 'one'
    one.mkdir()
    _, log = _train(cfg, one, '--resume', str(two / 'iter_4.pth'))
    assert ('resuming a checkpoint written by 2 rank(s) on 1 rank(s) (iteration 4, epoch 0). '
            'Restored: model weights, optimizer state') in log, log[-4000:]
    assert 'Not restored: per-rank RNG states' in log and 'the data sampler position' in log
    assert 'the effective batch size changes from 4 (2 x 2) to 2 (1 x 2)' in log
    assert 'resumed epoch: 0, iter: 4' in log and 'Iter(train) [8/8]' in log

    single = tmp_path / 'single'
    _train(cfg, single, '--cfg-options', 'train_cfg.max_iters=4')
    again = tmp_path / 'again'
    again.mkdir()
    _, log = _srun_train(setup, 2, again, '--resume', str(single / 'iter_4.pth'))
    assert 'resuming a checkpoint written by 1 rank(s) on 2 rank(s)' in log, log[-4000:]
    assert 'the effective batch size changes from 2 (1 x 2) to 4 (2 x 2)' in log
    assert 'resumed epoch: 0, iter: 4' in log and 'Iter(train) [8/8]' in log
    # an unchanged number of ranks resumes silently (and exactly, see test_faults)
    _, log = _train(cfg, single, '--resume', '--cfg-options', 'train_cfg.max_iters=6')
    assert 'resuming a checkpoint written by' not in log and 'resumed epoch: 0, iter: 4' in log
