"""Test-only hooks that inject faults into a real training run (imported through
``custom_imports`` by the tiny config of the reliability tests); each reads its setting from
the environment so that one config serves every test."""
import errno
import os
import signal

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def _iters(name):
    return {int(i) for i in os.environ.get(name, '').split(',') if i}


@HOOKS.register_module(force=True)
class SendSignalHook(Hook):
    """Sends ``$TEST_SIGNAL`` (default SIGTERM) to this process while train iteration
    ``$TEST_SIGNAL_AT`` (1-based) runs, on rank ``$TEST_SIGNAL_RANK`` only if set."""

    priority = 'HIGHEST'

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        rank = os.environ.get('TEST_SIGNAL_RANK')
        if runner.iter + 1 in _iters('TEST_SIGNAL_AT') and (rank is None or int(rank) == get_rank()):
            os.kill(os.getpid(), getattr(signal, os.environ.get('TEST_SIGNAL', 'SIGTERM')))


@HOOKS.register_module(force=True)
class FailCheckpointWriteHook(Hook):
    """Makes the checkpoint write after iteration ``$TEST_FAIL_WRITE_AT`` fail half-way:
    ``os.write`` writes half of its first chunk, then raises ``OSError($TEST_FAIL_ERRNO)``
    (``ENOSPC``, ``EACCES``), or with ``KILL`` the process is SIGKILLed in the middle of it."""

    priority = 'HIGHEST'

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 not in _iters('TEST_FAIL_WRITE_AT'):
            return
        real_write = os.write
        how = os.environ.get('TEST_FAIL_ERRNO', 'ENOSPC')

        def failing_write(fd, data):
            os.write = real_write
            real_write(fd, bytes(data[: len(data) // 2]))
            if how == 'KILL':
                os.kill(os.getpid(), signal.SIGKILL)
            code = getattr(errno, how)
            raise OSError(code, os.strerror(code))

        os.write = failing_write


@HOOKS.register_module(force=True)
class NaNInputHook(Hook):
    """Turns the backbone's input of train iterations ``$TEST_NAN_AT`` into NaN (a corrupt
    batch: its loss is NaN and so would be every gradient), and the gradient of the head's
    classifier weight in iterations ``$TEST_NAN_GRAD_AT`` (a finite loss)."""

    def before_train(self, runner) -> None:
        self._armed = False
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model

        def pre_hook(module, args):
            if self._armed:
                return (args[0] * float('nan'),) + tuple(args[1:])
            return None

        model.backbone.register_forward_pre_hook(pre_hook)

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._armed = runner.iter + 1 in _iters('TEST_NAN_AT')
        if runner.iter + 1 in _iters('TEST_NAN_GRAD_AT'):
            # a finite loss whose backward yields a NaN gradient for one parameter
            model = runner.model.module if hasattr(runner.model, 'module') else runner.model
            param = model.decode_head.conv_seg.weight
            handle = []
            handle.append(param.register_hook(lambda g: (handle.pop().remove(), g * float('nan'))[1]))


@HOOKS.register_module(force=True)
class DamageImagesHook(Hook):
    """After train iteration ``$TEST_DAMAGE_AT``: overwrites the training image 000.jpg with
    bytes that are no JPEG and deletes 001.jpg (the dataset was checked when it was built)."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 not in _iters('TEST_DAMAGE_AT'):
            return
        dataset = runner.train_loop.dataloader.dataset
        paths = sorted(info['img_path'] for info in (dataset.get_data_info(i) for i in range(len(dataset))))
        with open(paths[0], 'wb') as f:
            f.write(b'this is not a jpeg')
        os.remove(paths[1])


@HOOKS.register_module(force=True)
class KillProcessHook(Hook):
    """After train iteration ``$TEST_KILL_RANK_AT`` = ``RANK:ITER``, SIGKILLs that rank; after
    iteration ``$TEST_KILL_WORKER_AT`` SIGKILLs this process's data-loader workers."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        at = os.environ.get('TEST_KILL_RANK_AT')
        if at and tuple(map(int, at.split(':'))) == (get_rank(), runner.iter + 1):
            os.kill(os.getpid(), signal.SIGKILL)
        if runner.iter + 1 in _iters('TEST_KILL_WORKER_AT'):
            loader_iter = runner.train_loop.dataloader_iterator._iterator
            for worker in loader_iter._workers:
                os.kill(worker.pid, signal.SIGKILL)
