"""Test-only hooks (imported through ``custom_imports`` by the tiny tool-test config)."""
import os
import signal

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)
class DumpWeightsHook(Hook):
    """After training, each rank writes its parameters and buffers to ``work_dir/weights_rank{RANK}.pt``."""

    def after_train(self, runner) -> None:
        from mmengine.dist import get_rank
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        # Parameters are what DDP keeps in sync; BN running statistics stay per rank unless
        # SyncBN is used (mmengine wraps with broadcast_buffers=False), so they are kept apart.
        torch.save(dict(params={k: v.detach().cpu() for k, v in model.named_parameters()},
                        buffers={k: v.detach().cpu() for k, v in model.named_buffers()}),
                   os.path.join(runner.work_dir, f'weights_rank{get_rank()}.pt'))


@HOOKS.register_module(force=True)
class KillAfterIterHook(Hook):
    """Simulates a crash: SIGKILLs the process after train iteration ``$TEST_KILL_AT`` (1-based)."""

    def __init__(self) -> None:
        self.kill_at = int(os.environ.get('TEST_KILL_AT', '0'))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
