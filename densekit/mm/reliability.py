"""Hooks that keep a training run from being lost to preemption, failed checkpoint writes and
non-finite losses, and the resume check of ``tools/train.py``. ``docs/reliability.md`` lists
each fault, what these do about it and the test that proves it.

* :class:`PreemptionHook`: SIGTERM / SIGUSR1 (what Slurm sends before preempting or requeueing a
  job) makes every rank finish the current iteration, write a checkpoint and exit with
  :data:`EXIT_PREEMPTED`.
* :class:`CheckpointSafetyHook`: checkpoints are written atomically with a ``.sha256`` sidecar
  (:func:`densekit.engine.checkpoint.write_checkpoint_bytes`); a failed write stops training
  with the path and the cause and leaves the previous checkpoint and ``last_checkpoint`` as they
  were; ``max_keep_ckpts`` prunes only after a newer checkpoint is complete.
* :class:`NonFiniteCheckHook`: a non-finite loss term or gradient stops training naming the
  iteration, the term and the batch's images, or (``action='skip'``) skips the step, counted
  and capped.
* :class:`DataFaultHook`: a sample that fails to load mid-run stops training naming its files
  and the cause, or (``action='skip'``) is skipped, counted and capped.
* :class:`RankWatchdogHook`: a lost rank ends the other ranks within a bounded time with an
  error naming it (:class:`RankLostError`).
* :class:`ResumeReportHook`: a resume on another number of ranks logs what is and is not
  restored.
* :func:`check_resume`: a resume from a truncated or corrupted checkpoint says so and names the
  newest intact one, or takes it (``--resume-fallback``).
"""
from __future__ import annotations

import logging
import os
import os.path as osp
import signal
from typing import Optional

import torch
from mmengine.dist import all_reduce, barrier, get_rank, get_world_size, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log

from densekit.engine.checkpoint import (CorruptCheckpointError, list_training_checkpoints,
                                        newest_valid_checkpoint, verify_checkpoint,
                                        write_checkpoint_bytes)
from densekit.mm.registry import register as _register

#: exit status of a run stopped by :class:`PreemptionHook` after writing its checkpoint
#: (``EX_TEMPFAIL`` of sysexits.h: a temporary failure, retrying is expected to succeed)
EXIT_PREEMPTED = 75

_SIGNALS = ('SIGTERM', 'SIGUSR1')


def _unwrap(model):
    return getattr(model, 'module', model)


# ------------------------------------------------------------------------------ preemption
class PreemptionHook(Hook):
    """Stops at the end of the current train iteration after SIGTERM or SIGUSR1, writes a
    checkpoint (``iter_{N}.pth``, with every rank's RNG state) and exits with
    :data:`EXIT_PREEMPTED`; ``tools/slurm_train.sh`` then requeues the job, which resumes.

    In a distributed run the ranks agree on the stop with one small all-reduce per iteration, so
    a signal that reaches one rank only stops all of them at the same iteration. A signal during
    the last iteration lets the run finish normally (exit 0). An iteration-based loop resumes
    bit-exactly from the checkpoint; an epoch-based loop resumes at the start of the interrupted
    epoch (mmengine's epoch loops cannot skip part of an epoch), repeating that epoch's first
    batches.
    """

    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW), which may already save this iteration

    def __init__(self, signals: tuple = _SIGNALS) -> None:
        self.signals = tuple(signals)
        self._received: Optional[int] = None
        self._previous: dict = {}

    def _handler(self, signum, frame) -> None:
        # only a flag: logging from a signal handler could interleave with a log write
        if self._received is None:
            self._received = signum

    def before_train(self, runner) -> None:
        for name in self.signals:
            sig = getattr(signal, name)
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave the signal alone
                print_log(f'PreemptionHook: cannot handle {name} outside the main thread',
                          logger='current', level=logging.WARNING)

    def after_train(self, runner) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def _stop_requested(self) -> bool:
        flag = 0 if self._received is None else 1
        if get_world_size() > 1:
            t = torch.tensor([flag], dtype=torch.int64)
            all_reduce(t, op='max')
            flag = int(t.item())
        return bool(flag)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not self._stop_requested():
            return
        if self._received is not None:
            print_log(f'PreemptionHook: received {signal.Signals(self._received).name} during '
                      f'iteration {runner.iter + 1}', logger='current', level=logging.WARNING)
        if runner.iter + 1 >= runner.max_iters:
            return  # the last iteration: the run ends normally and saves as configured
        path = self._save(runner)
        barrier()
        print_log(f'PreemptionHook: stopped after iteration {runner.iter + 1} with checkpoint {path}; '
                  f'exiting with status {EXIT_PREEMPTED} (resume with --resume)', logger='current',
                  level=logging.WARNING)
        self._restore()
        raise SystemExit(EXIT_PREEMPTED)

    @staticmethod
    def _save(runner) -> str:
        step = runner.iter + 1
        ckpt_hook = next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
        out_dir = getattr(ckpt_hook, 'out_dir', None) or runner.work_dir
        tmpl = ckpt_hook.filename_tmpl if ckpt_hook is not None and not ckpt_hook.by_epoch \
            else 'iter_{}.pth'
        path = osp.join(out_dir, tmpl.format(step))
        from densekit.mm.hooks import RNGStateHook, _checkpoint_follows
        if _checkpoint_follows(runner, by_epoch=False):
            return path  # the CheckpointHook wrote this iteration's checkpoint already
        for hook in runner.hooks:
            if isinstance(hook, RNGStateHook):
                hook.gather_states()  # a collective: every rank
        kwargs = {}
        if ckpt_hook is not None:
            kwargs = dict(save_optimizer=ckpt_hook.save_optimizer,
                          save_param_scheduler=ckpt_hook.save_param_scheduler,
                          backend_args=ckpt_hook.backend_args)
        runner.save_checkpoint(out_dir, osp.basename(path), by_epoch=False, **kwargs)
        if is_main_process():
            from densekit.engine.checkpoint import _write_atomic
            _write_atomic(path.encode(), osp.join(runner.work_dir, 'last_checkpoint'))
        return path


# ----------------------------------------------------------------------- checkpoint writes
def _save_checkpoint(checkpoint: dict, filename: str, file_client_args=None,
                     backend_args=None) -> None:
    """mmengine's ``save_checkpoint`` for local files through
    :func:`~densekit.engine.checkpoint.write_checkpoint_bytes`; other backends unchanged."""
    if '://' in str(filename) or file_client_args is not None or backend_args:
        return _ORIGINAL_SAVE[0](checkpoint, filename, file_client_args=file_client_args,
                                 backend_args=backend_args)
    import io
    with io.BytesIO() as f:
        torch.save(checkpoint, f)
        write_checkpoint_bytes(f.getvalue(), filename)


_ORIGINAL_SAVE: list = []


def install_checkpoint_writer() -> None:
    """Routes ``Runner.save_checkpoint``'s local writes through :func:`_save_checkpoint`."""
    import mmengine.runner.runner as runner_module
    if getattr(runner_module.save_checkpoint, '__densekit__', False):
        return
    _ORIGINAL_SAVE.append(runner_module.save_checkpoint)
    _save_checkpoint.__densekit__ = True
    runner_module.save_checkpoint = _save_checkpoint


class CheckpointSafetyHook(Hook):
    """Checkpoint writes that cannot lose the last good checkpoint.

    * Local checkpoints are written by :func:`densekit.engine.checkpoint.write_checkpoint_bytes`:
      atomically, with the permissions the umask allows (0644 by default) and a ``.sha256``
      sidecar. A write that fails (disk full, no permission, interrupted) raises
      :class:`~densekit.engine.checkpoint.CheckpointWriteError` naming the path and the cause;
      mmengine writes ``last_checkpoint`` only after a successful save, so it still names the
      previous, intact checkpoint.
    * ``max_keep_ckpts``: mmengine deletes the oldest checkpoint *before* writing the new one, so
      a failed write with ``max_keep_ckpts=1`` left no checkpoint. This hook takes the pruning
      over (the ``CheckpointHook``'s own is switched off) and deletes old ``iter_N`` /
      ``epoch_N`` checkpoints of the hook's folder only once a newer one is complete.
    """

    priority = 'LOWEST'

    def __init__(self) -> None:
        self._keep: dict = {}  # CheckpointHook -> its max_keep_ckpts

    def before_run(self, runner) -> None:
        install_checkpoint_writer()

    def before_train(self, runner) -> None:
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook) and hook.max_keep_ckpts > 0:
                self._keep[hook] = hook.max_keep_ckpts
                hook.max_keep_ckpts = -1

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._prune(runner)

    def after_train_epoch(self, runner) -> None:
        self._prune(runner)

    def _prune(self, runner) -> None:
        if not is_main_process():
            return
        for hook, keep in self._keep.items():
            out_dir = getattr(hook, 'out_dir', None)
            if not out_dir or '://' in str(out_dir):
                continue
            kind = 'epoch_' if hook.by_epoch else 'iter_'
            ckpts = [p for p in list_training_checkpoints(out_dir) if osp.basename(p).startswith(kind)]
            if len(ckpts) <= keep:
                continue
            kept = ckpts[:keep]
            if all(verify_checkpoint(p) is not None for p in kept):
                # none of the newest is intact: keep the newest intact older one as well
                valid = next((p for p in ckpts[keep:] if verify_checkpoint(p) is None), None)
                kept = kept + ([valid] if valid else [])
            for path in ckpts:
                if path not in kept:
                    for p in (path, path + '.sha256'):
                        if osp.isfile(p):
                            os.remove(p)


# -------------------------------------------------------------------------- non-finite
class NonFiniteLossError(FloatingPointError):
    """Training stopped on a non-finite loss term or gradient."""


class NonFiniteCheckHook(Hook):
    """Stops training on a non-finite loss term or gradient, or skips the step.

    Every loss term (``loss*`` entries of the model's loss dict) is checked before backward, and
    with a plain ``OptimWrapper`` every gradient before the optimizer step. AMP's
    ``AmpOptimWrapper`` is left to its loss scaler (which skips overflowing steps and lowers the
    scale): its gradients are not checked, so its behaviour is unchanged.

    Args:
        action: ``'stop'`` raises :class:`NonFiniteLossError` naming the iteration, the loss term
            (or parameter) and the batch's images; ``'skip'`` drops the step (no backward / no
            optimizer update; the schedulers and the iteration count move on), logs it and
            counts it.
        max_skips: with ``'skip'``, the number of skipped steps after which training stops.

    A skipped step still ran its forward pass, so BatchNorm running statistics may have taken a
    non-finite batch in. In a distributed run with ``'skip'`` the ranks agree on each skip (one
    all-reduce per iteration); with ``'stop'`` the failing rank raises and the launcher (torchrun,
    ``srun --kill-on-bad-exit``) ends the others.
    """

    priority = 'VERY_HIGH'

    def __init__(self, action: str = 'stop', max_skips: int = 10) -> None:
        if action not in ('stop', 'skip'):
            raise ValueError(f"NonFiniteCheckHook: action must be 'stop' or 'skip', got {action!r}")
        self.action = action
        self.max_skips = int(max_skips)
        self.skipped = 0
        self._iter = 0
        self._images: list = []
        self._bad: Optional[str] = None

    # wrap the model's parse_losses and the optim wrapper's backward / step once
    def before_train(self, runner) -> None:
        model = _unwrap(runner.model)
        parse = model.parse_losses

        def parse_losses(losses):
            self._bad = self._check_losses(losses)
            return parse(losses)

        model.parse_losses = parse_losses
        wrappers = getattr(runner.optim_wrapper, 'optim_wrappers', None) or {'': runner.optim_wrapper}
        named = list(model.named_parameters())
        for wrapper in (wrappers.values() if isinstance(wrappers, dict) else [runner.optim_wrapper]):
            wrapper._densekit_named_params = named
            self._wrap(wrapper)

    def _wrap(self, wrapper) -> None:
        from mmengine.optim import AmpOptimWrapper
        backward, step = wrapper.backward, wrapper.step
        check_grads = not isinstance(wrapper, AmpOptimWrapper)

        def guarded_backward(loss, **kwargs):
            if self._decide():
                return None
            return backward(loss, **kwargs)

        def guarded_step(**kwargs):
            if self._bad is None and check_grads:
                self._bad = self._check_grads(wrapper)  # gradients are all-reduced: same on all ranks
                if self._bad is not None:
                    self._handle()
            if self._bad is not None:
                return None
            return step(**kwargs)

        wrapper.backward, wrapper.step = guarded_backward, guarded_step

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._iter = runner.iter + 1
        self._bad = None
        self._images = _image_ids(data_batch)

    def _decide(self) -> bool:
        """Whether this iteration's backward is skipped (its loss is non-finite)."""
        bad = self._bad is not None
        if self.action == 'skip' and get_world_size() > 1:
            t = torch.tensor([int(bad)], dtype=torch.int64)
            all_reduce(t, op='max')
            if t.item() and not bad:
                self._bad = 'a loss term on another rank'
            bad = bool(t.item())
        if bad:
            self._handle()
        return bad

    def _handle(self) -> None:
        where = (f'iteration {self._iter}: {self._bad} (batch images: '
                 f'{self._images if self._images else "unknown"})')
        if self.action == 'stop':
            raise NonFiniteLossError(
                f'non-finite value at {where}. Stopping; set custom_hooks '
                "dict(type='NonFiniteCheckHook', action='skip', max_skips=N) to skip such steps")
        self.skipped += 1
        if self.skipped > self.max_skips:
            raise NonFiniteLossError(f'non-finite value at {where}: {self.skipped} steps skipped, '
                                     f'more than max_skips={self.max_skips}; stopping')
        print_log(f'NonFiniteCheckHook: skipped the step of {where} ({self.skipped} of at most '
                  f'{self.max_skips})', logger='current', level=logging.WARNING)

    @staticmethod
    def _check_losses(losses: dict) -> Optional[str]:
        for name, value in losses.items():
            if 'loss' not in name:
                continue
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                v = torch.as_tensor(v)
                if not torch.isfinite(v).all():
                    shown = v.item() if v.numel() == 1 else 'non-finite elements'
                    return f"loss term '{name}' is {shown}"
        return None

    @staticmethod
    def _check_grads(wrapper) -> Optional[str]:
        grads = [p.grad for group in wrapper.optimizer.param_groups for p in group['params']
                 if p.grad is not None]
        if not grads or torch.stack([torch.isfinite(g).all() for g in grads]).all():
            return None  # one host sync for all gradients
        model_names = {id(p): n for n, p in _named_params(wrapper)}
        for group in wrapper.optimizer.param_groups:
            for p in group['params']:
                if p.grad is not None and not torch.isfinite(p.grad).all():
                    name = model_names.get(id(p), f'of shape {tuple(p.grad.shape)}')
                    return f'the gradient of parameter {name} is not finite'
        return None


def _named_params(wrapper):
    return getattr(wrapper, '_densekit_named_params', [])


def _image_ids(data_batch) -> list:
    samples = data_batch.get('data_samples') if isinstance(data_batch, dict) else None
    ids = []
    for s in samples or []:
        meta = getattr(s, 'metainfo', {}) or {}
        ident = meta.get('img_id', meta.get('img_path'))
        if ident is not None:
            ids.append(ident if isinstance(ident, (int, str)) else str(ident))
    return ids


# -------------------------------------------------------------------------------- data
class DataFaultError(RuntimeError):
    """A training sample could not be loaded during training."""


class DataFaultHook(Hook):
    """A training sample that fails to load mid-run (an image deleted or corrupted after the
    dataset's build-time checks) stops training with :class:`DataFaultError` naming the sample
    index, its files and the cause; with ``action='skip'`` the sample is skipped (mmengine's
    ``BaseDataset`` then draws another one), logged and counted, and training stops once more
    than ``max_skips`` samples were skipped.

    The count is kept per process: with ``num_workers > 0`` each data-loader worker counts the
    samples it skipped, so ``max_skips`` applies per worker.
    """

    priority = 'VERY_HIGH'

    def __init__(self, action: str = 'stop', max_skips: int = 100) -> None:
        if action not in ('stop', 'skip'):
            raise ValueError(f"DataFaultHook: action must be 'stop' or 'skip', got {action!r}")
        self.action = action
        self.max_skips = int(max_skips)

    def before_train(self, runner) -> None:
        dataloader = getattr(runner.train_loop, 'dataloader', None)
        for dataset in _leaf_datasets(getattr(dataloader, 'dataset', None)):
            if hasattr(dataset, 'prepare_data') and hasattr(dataset, 'get_data_info'):
                guard_prepare_data(dataset, self.action, self.max_skips)


def _leaf_datasets(dataset):
    if dataset is None:
        return
    inner = getattr(dataset, 'datasets', None)
    if inner is not None:  # ConcatDataset
        for d in inner:
            yield from _leaf_datasets(d)
    elif hasattr(dataset, 'dataset') and not hasattr(dataset, 'prepare_data'):
        yield from _leaf_datasets(dataset.dataset)  # RepeatDataset, ClassBalancedDataset
    else:
        yield dataset


def guard_prepare_data(dataset, action: str = 'stop', max_skips: int = 100) -> None:
    """Wraps ``dataset.prepare_data`` (mmengine ``BaseDataset``) as :class:`DataFaultHook` says."""
    if getattr(dataset.prepare_data, '__densekit__', False):
        return
    prepare = dataset.prepare_data
    state = {'skipped': 0}

    def prepare_data(idx):
        try:
            return prepare(idx)
        except Exception as e:  # noqa: BLE001 (any failure of the pipeline on this sample)
            info = dataset.get_data_info(idx)
            files = {k: v for k, v in info.items() if k.endswith('_path') and isinstance(v, str)}
            cause = f'{type(e).__name__}: {e}'.strip()
            where = f'training sample {idx} ({", ".join(f"{k}={v}" for k, v in files.items())})'
            if action == 'stop':
                raise DataFaultError(
                    f'{where} failed to load: {cause}. Fix or remove the file, or skip such samples '
                    "with custom_hooks dict(type='DataFaultHook', action='skip', max_skips=N)") from e
            state['skipped'] += 1
            if state['skipped'] > max_skips:
                raise DataFaultError(f'{where} failed to load: {cause}; {state["skipped"]} samples '
                                     f'skipped, more than max_skips={max_skips}; stopping') from e
            print_log(f'DataFaultHook: skipped {where}: {cause} ({state["skipped"]} of at most '
                      f'{max_skips})', logger='current', level=logging.WARNING)
            return None  # BaseDataset draws another sample

    prepare_data.__densekit__ = True
    dataset.prepare_data = prepare_data


# ----------------------------------------------------------------------- distributed
class RankLostError(RuntimeError):
    """A rank of a distributed run was lost (its process exited, froze or its node went away)."""


_COMM_FAILURE = ('gloo', 'nccl', 'connection', 'socket', 'broken pipe', 'timed out', 'timeout',
                 'peer', 'store', 'distributed')


class RankWatchdogHook(Hook):
    """Ends a distributed run within a bounded time when a rank is lost, naming that rank.

    Without it, a rank killed (OOM killer, a failing node) leaves the others with gloo's
    ``Connection closed by peer [addr]:port`` (no rank named), NCCL's own timeout, or, for a
    frozen rank, a wait as long as the process group's timeout (30 minutes). This hook runs a
    :class:`~densekit.engine.watchdog.RankWatchdog` in every rank (heartbeats through the
    rendezvous store, one small store write and ``world_size - 1`` reads every ``interval``
    seconds):

    * a train iteration whose collective fails raises :class:`RankLostError` naming the lost
      rank (``rank 1 (pid N on HOST) has exited``), with the communication error as its cause;
    * a rank blocked elsewhere (a collective that never returns, validation) is ended by the
      watchdog with status 1 after logging the same message, at most ``timeout`` seconds after
      the peer stopped.

    Nothing runs in a single process.

    Args:
        timeout: seconds without a heartbeat after which a rank on another host (or a frozen
            one) is declared lost; a dead rank on the same host is found within ``interval``.
        interval: seconds between heartbeats.
    """

    priority = 'VERY_HIGH'

    def __init__(self, timeout: float = 120.0, interval: float = 2.0) -> None:
        self.timeout, self.interval = float(timeout), float(interval)
        self.watchdog = None

    def before_train(self, runner) -> None:
        if get_world_size() < 2:
            return
        import torch.distributed as dist
        from densekit.engine.watchdog import RankWatchdog
        store = dist.distributed_c10d._get_default_store()
        host = ('the launcher' if os.environ.get('TORCHELASTIC_USE_AGENT_STORE') == 'True'
                else 'rank 0')
        self.watchdog = RankWatchdog(
            store, get_rank(), get_world_size(), timeout=self.timeout, interval=self.interval,
            prefix=f'densekit/watchdog/{runner.timestamp}/', store_host=host,
            on_lost=self._on_lost).start()
        loop = runner.train_loop
        run_iter = loop.run_iter

        def guarded_run_iter(*args, **kwargs):
            try:
                return run_iter(*args, **kwargs)
            except Exception as e:
                why = self._explain(e)
                if why is None:
                    raise
                raise RankLostError(f'{why}; stopping at iteration {runner.iter + 1}') from e

        loop.run_iter = guarded_run_iter

    def _explain(self, error: Exception) -> Optional[str]:
        if self.watchdog is None:
            return None
        text = f'{type(error).__name__} {error}'.lower()
        comm = any(word in text for word in _COMM_FAILURE)
        # a communication failure waits for the heartbeat verdict; any other error only for the
        # pid check (a peer that died first may be why this rank's data is odd)
        return self.watchdog.explain(self.timeout + 2 * self.interval if comm else self.interval)

    @staticmethod
    def _on_lost(message: str) -> None:
        print_log(f'RankWatchdogHook: {message}; exiting with status 1', logger='current',
                  level=logging.ERROR)
        from densekit.engine.watchdog import _exit_on_lost
        _exit_on_lost(message)

    def after_train(self, runner) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None


class ResumeReportHook(Hook):
    """Says what a resume restores when the number of ranks changed.

    Each checkpoint records the run's world size and per-rank batch size
    (``meta['densekit_world']``). A resume on another number of ranks (mmengine allows it)
    restores the model, the optimizer state (with the checkpoint's learning rates), the parameter
    schedulers, the iteration / epoch counters and the message hub, but not what belongs to the
    ranks: each rank's RNG state, the data sampler's position (the resumed sampler splits the
    data among a different number of ranks, so the batches differ from a continuation on the old
    ranks) and the effective batch size (per-rank batch size x ranks). This hook logs that list
    at resume, with the old and new figures; with an unchanged world size it logs nothing.
    """

    priority = 'NORMAL'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['densekit_world'] = dict(
            world_size=get_world_size(), batch_size_per_rank=_batch_size(runner))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not runner._resume:
            return
        meta = checkpoint.get('meta', {})
        saved = meta.get('densekit_world') or {}
        old = saved.get('world_size', (meta.get('rng_state') or {}).get('world_size'))
        new = get_world_size()
        if old is None or old == new:
            return
        print_log(resume_report(old, new, saved.get('batch_size_per_rank'), _batch_size(runner),
                                meta.get('iter'), meta.get('epoch')),
                  logger='current', level=logging.WARNING)


def _batch_size(runner) -> Optional[int]:
    loop = getattr(runner, '_train_loop', None)  # built before a resume loads the checkpoint
    loader = getattr(loop, 'dataloader', None)
    return getattr(loader, 'batch_size', None)


def resume_report(old: int, new: int, old_bs: Optional[int], new_bs: Optional[int],
                  iteration=None, epoch=None) -> str:
    """The resume message of :class:`ResumeReportHook` (checkpoint of ``old`` ranks resumed on
    ``new``)."""
    at = f' (iteration {iteration}, epoch {epoch})' if iteration is not None else ''
    if old_bs and new_bs:
        batch = (f'the effective batch size changes from {old_bs * old} ({old} x {old_bs}) to '
                 f'{new_bs * new} ({new} x {new_bs}); the learning rate is not rescaled for it')
    else:
        batch = ('the effective batch size (per-rank batch size x ranks) changes; the learning '
                 'rate is not rescaled for it')
    return (f'ResumeReportHook: resuming a checkpoint written by {old} rank(s) on {new} '
            f'rank(s){at}. Restored: model weights, optimizer state (with its learning rates), '
            f'parameter schedulers, iteration and epoch counters, message hub. Not restored: '
            f'per-rank RNG states (dropout masks and random augmentations differ from a '
            f'continuation on {old} rank(s)); the data sampler position (the data is split among '
            f'{new} rank(s) instead of {old}, so the coming batches differ); {batch}. The run '
            f'continues, but does not reproduce a {old}-rank run')


# ------------------------------------------------------------------------------ resume
def check_resume(work_dir: str, load_from: Optional[str], fallback: bool = False) -> Optional[str]:
    """Verifies the checkpoint a resume would load; returns the path to resume from.

    ``load_from=None`` means "the latest in ``work_dir``" (``--resume`` without a path): the file
    named by ``work_dir/last_checkpoint``, or ``None`` if there is none (a fresh start). A
    truncated or corrupted checkpoint raises :class:`CorruptCheckpointError` naming it, the
    reason and the newest intact checkpoint of its folder; with ``fallback`` that one is
    returned instead (logged).
    """
    if load_from is None:
        last = osp.join(work_dir, 'last_checkpoint')
        if not osp.isfile(last):
            return None
        with open(last) as f:
            load_from = f.read().strip()
        if not load_from:
            load_from = last  # an empty last_checkpoint: report it as the broken file
    why = verify_checkpoint(load_from) if load_from != osp.join(work_dir, 'last_checkpoint') \
        else 'last_checkpoint is empty'
    if why is None:
        return load_from
    folder = osp.dirname(load_from) if load_from != osp.join(work_dir, 'last_checkpoint') else work_dir
    valid = newest_valid_checkpoint(folder, exclude=(load_from,))
    if fallback and valid is not None:
        print_log(f'check_resume: {load_from} is unusable ({why}); resuming from the newest intact '
                  f'checkpoint {valid} (--resume-fallback)', logger='current', level=logging.WARNING)
        return valid
    offer = (f'the newest intact checkpoint is {valid}: resume from it with --resume {valid} or '
             f'with --resume-fallback' if valid else f'no intact checkpoint found in {folder}')
    raise CorruptCheckpointError(f'cannot resume from {load_from}: {why}; {offer}')


# added to every training run by tools/train.py (not by tools/test.py: they act on training)
RELIABILITY_HOOKS = ('PreemptionHook', 'CheckpointSafetyHook', 'NonFiniteCheckHook', 'DataFaultHook',
                     'RankWatchdogHook', 'ResumeReportHook')


def add_reliability_hooks(cfg) -> list[str]:
    """Appends to ``cfg.custom_hooks`` each of :data:`RELIABILITY_HOOKS` it lacks (a config that
    lists one keeps its own settings); returns their names. ``densekit_hooks = False`` opts out."""
    if not cfg.get('densekit_hooks', True):
        return []
    hooks = list(cfg.get('custom_hooks') or [])
    present = set()
    for h in hooks:
        kind = h.get('type') if hasattr(h, 'get') else h
        if not isinstance(kind, str):  # a Hook class or instance
            kind = kind.__name__ if isinstance(kind, type) else type(kind).__name__
        present.add(kind.rsplit('.', 1)[-1])
    missing = [name for name in RELIABILITY_HOOKS if name not in present]
    if missing:
        cfg.custom_hooks = hooks + [dict(type=name) for name in missing]
    return missing


def register() -> None:
    from mmengine.registry import HOOKS
    for cls in (PreemptionHook, CheckpointSafetyHook, NonFiniteCheckHook, DataFaultHook,
                RankWatchdogHook, ResumeReportHook):
        _register(HOOKS, cls)


__all__ = ['EXIT_PREEMPTED', 'RELIABILITY_HOOKS', 'add_reliability_hooks', 'PreemptionHook',
           'CheckpointSafetyHook', 'NonFiniteCheckHook', 'NonFiniteLossError', 'DataFaultHook',
           'DataFaultError', 'RankWatchdogHook', 'RankLostError', 'ResumeReportHook',
           'resume_report', 'check_resume', 'install_checkpoint_writer']
