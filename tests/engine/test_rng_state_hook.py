"""RNGStateHook's decisions, without a training run (the runs are in test_tools.py)."""
from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip('mmengine')
from mmengine.hooks import CheckpointHook  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

from densekit.mm.hooks import RNGStateHook, _ApplyBeforeFetch, _capture, _checkpoint_follows, _same_state  # noqa: E402


def _runner(it=0, hooks=(), resume=True):
    return SimpleNamespace(iter=it, epoch=0, max_iters=8, max_epochs=1, hooks=list(hooks), _resume=resume,
                           train_loop=SimpleNamespace(max_iters=8, max_epochs=1))


def test_saved_state_restores_single_process():
    hook = RNGStateHook()
    ckpt = {}
    torch.manual_seed(3)
    hook.before_save_checkpoint(_runner(), ckpt)
    want = (torch.rand(3), np.random.rand(2), random.random())
    assert ckpt['meta']['rng_state']['world_size'] == 1 and ckpt['meta']['rng_state']['ranks'] is None
    torch.rand(100)
    hook.after_load_checkpoint(_runner(), ckpt)
    hook.before_train_iter(_runner(), 0)  # a loop without a data loader iterator to hook
    got = (torch.rand(3), np.random.rand(2), random.random())
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


def test_world_size_change_is_logged_not_restored(capsys):
    MMLogger.get_instance('rng_test')
    hook = RNGStateHook()
    state = dict(_capture(), world_size=2, ranks=[_capture(), _capture()])
    hook.after_load_checkpoint(_runner(), {'meta': {'rng_state': state}})
    assert hook._pending is None
    out = capsys.readouterr()
    assert 'checkpoint holds the states of 2 rank(s), this run has 1' in out.out + out.err


def test_not_a_resume_does_nothing():
    hook = RNGStateHook()
    hook.after_load_checkpoint(_runner(resume=False), {'meta': {'rng_state': dict(_capture(), world_size=1)}})
    assert hook._pending is None


def test_apply_before_the_first_new_batch():
    """The iteration loop's skipped fetches pass through; the state is applied before the next."""
    calls = []
    loop = SimpleNamespace(dataloader_iterator=iter(range(10)))
    original = loop.dataloader_iterator
    loop.dataloader_iterator = _ApplyBeforeFetch(loop, 3, lambda: calls.append('apply'))
    got = [next(loop.dataloader_iterator) for _ in range(3)]
    assert got == [0, 1, 2] and calls == []
    assert next(loop.dataloader_iterator) == 3 and calls == ['apply']
    assert loop.dataloader_iterator is original  # unhooked after use
    assert next(loop.dataloader_iterator) == 4 and calls == ['apply']


@pytest.mark.parametrize('it,interval,save_last,expect', [(3, 2, True, True), (2, 2, False, False),
                                                          (7, 5, True, True), (7, 5, False, False)])
def test_checkpoint_follows_the_checkpoint_hooks_rule(it, interval, save_last, expect):
    """runner.iter is the 0-based iteration that just ended; max_iters 8."""
    hook = CheckpointHook(interval=interval, by_epoch=False, save_last=save_last)
    runner = _runner(it, [hook])
    assert _checkpoint_follows(runner, by_epoch=False) is expect
    assert _checkpoint_follows(runner, by_epoch=True) is False
    assert _checkpoint_follows(_runner(it, []), by_epoch=False) is False


def test_same_state_detects_a_draw():
    a = _capture()
    assert _same_state(a, _capture())
    np.random.rand()
    assert not _same_state(a, _capture())
