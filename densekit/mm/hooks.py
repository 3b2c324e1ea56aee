"""Engine hooks, registered in mmengine's root ``HOOKS`` (seen from the mmdet and mmseg scopes).

``CheckpointCoversModelHook`` is not registered: ``tools/test.py`` adds it to the runner itself.
"""
from __future__ import annotations

import logging
import random
from typing import Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop

from densekit.mm.registry import register as _register


class RNGStateHook(Hook):
    """Saves the python / numpy / torch (CPU and CUDA) RNG states of every rank in each checkpoint
    and restores them on resume, so that a resumed run draws the same dropout / drop-path masks
    and random augmentations as the uninterrupted one (bit-identical weights in our tests, single
    process and two ranks).

    mmengine restores weights, optimizer, schedulers and the data position, but not the random
    generators. Two details make the restore exact:

    * Only rank 0 writes checkpoints, so in a distributed run every rank's state is gathered
      (one small collective) right after a train iteration / epoch at which a ``CheckpointHook``
      will save, and rank 0 stores the list. A resume restores rank ``r``'s own state when the
      world size is unchanged; otherwise it logs why it does not restore.
    * A resumed iteration-based loop replays the data loader over the batches already trained
      (mmengine's "advance dataloader"), which runs random transforms again when they run in the
      main process (``num_workers=0``), and it fetches each batch before the iteration's hooks.
      The loaded state is therefore applied right before the first new batch is fetched (for
      epoch-based loops: at the first epoch, before its data loader iterator is created), not
      when the checkpoint is read.
    """

    # HIGHEST: the restore runs before any other hook of the first iteration draws a random number,
    # and the state gathered after an iteration is taken before the CheckpointHook (VERY_LOW) saves
    priority = 'HIGHEST'

    def __init__(self) -> None:
        self._gathered: Optional[list] = None  # every rank's state at the coming checkpoint
        self._pending: Optional[dict] = None  # this rank's loaded state, applied when training starts

    # --------------------------------------------------------------------------------- saving
    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if get_world_size() > 1 and _checkpoint_follows(runner, by_epoch=False):
            self._gathered = all_gather_object(_capture())

    def after_train_epoch(self, runner) -> None:
        if get_world_size() > 1 and _checkpoint_follows(runner, by_epoch=True):
            self._gathered = all_gather_object(_capture())

    def gather_states(self) -> None:
        """Gathers every rank's state for a checkpoint saved outside the ``CheckpointHook``'s
        schedule (a collective: every rank calls it, right before that save)."""
        if get_world_size() > 1:
            self._gathered = all_gather_object(_capture())

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # runs on rank 0 only (mmengine's Runner.save_checkpoint is master_only)
        state = _capture()
        world_size = get_world_size()
        ranks = None
        if world_size > 1:
            if self._gathered is not None and _same_state(self._gathered[get_rank()], state):
                ranks = self._gathered
            else:
                print_log('RNGStateHook: this checkpoint was not written right after a train iteration / '
                          'epoch whose RNG states were gathered; a distributed resume from it will not '
                          'restore RNG states', logger='current', level=logging.WARNING)
        self._gathered = None
        checkpoint.setdefault('meta', {})['rng_state'] = dict(state, world_size=world_size, ranks=ranks)

    # -------------------------------------------------------------------------------- loading
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('meta', {}).get('rng_state')
        if not runner._resume or state is None:
            return
        world_size, saved = get_world_size(), state.get('world_size', 1)
        if world_size == 1 and saved == 1:
            self._pending = state
        elif state.get('ranks') is not None and len(state['ranks']) == world_size:
            self._pending = state['ranks'][get_rank()]
        else:
            why = (f'the checkpoint holds the states of {saved} rank(s), this run has {world_size}'
                   if saved != world_size else 'the checkpoint holds no per-rank states')
            print_log(f'RNGStateHook: RNG states are not restored: {why}', logger='current',
                      level=logging.WARNING)

    def before_train_epoch(self, runner) -> None:
        if self._pending is None:
            return
        loop = runner.train_loop
        if not isinstance(loop, IterBasedTrainLoop):
            self._apply()  # before the epoch's data loader iterator exists
        elif hasattr(loop, 'dataloader_iterator'):
            # the loop now skips loop.iter batches, then fetches the first new batch (its random
            # transforms run before any iteration hook): apply the state right before that fetch
            loop.dataloader_iterator = _ApplyBeforeFetch(loop, loop.iter, self._apply)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending is not None:  # a loop that has no dataloader_iterator to hook
            self._apply()

    def _apply(self) -> None:
        state, self._pending = self._pending, None
        random.setstate(_as_python_state(state['python']))
        np.random.set_state(state['numpy'])
        torch.set_rng_state(state['torch'])
        if state.get('cuda') is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])


class NumClassesCheckHook(Hook):
    """Refuses a model whose heads' ``num_classes`` differ from the number of dataset classes.

    Pointing a config at another dataset without changing the heads otherwise fails late and far
    from the cause: an 80-class Mask R-CNN on a one-class COCO json trains a whole epoch, then
    mmdet's ``CocoMetric`` stops with ``IndexError: list index out of range``; mmseg's
    ``IoUMetric`` silently ignores predicted labels beyond its class count. The check runs before
    training (for the train and validation sets), before validation and before testing.
    mmdet's ``NumClassCheckHook`` does the same with ``assert``s, for mmdet models only and not
    before testing.

    The same hook checks the backbone's output channels against the neck's (or head's)
    ``in_channels`` (:func:`check_channels`), which would otherwise be a conv2d shape error in the
    first step.
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        check_channels(_unwrap(runner.model))

    def before_train(self, runner) -> None:
        self._check(runner, 'train_dataloader', runner.train_loop)
        self._check(runner, 'val_dataloader', getattr(runner, '_val_loop', None))

    def before_val(self, runner) -> None:
        self._check(runner, 'val_dataloader', runner.val_loop)

    def before_test(self, runner) -> None:
        self._check(runner, 'test_dataloader', runner.test_loop)

    @staticmethod
    def _check(runner, which: str, loop) -> None:
        dataloader = getattr(loop, 'dataloader', None)
        classes = getattr(getattr(dataloader, 'dataset', None), 'metainfo', {}).get('classes')
        if classes is None:
            return
        if isinstance(classes, str):
            raise ValueError(f"{which}.dataset.metainfo.classes is the string {classes!r}; it "
                             f"must be a tuple of names (one class: classes=({classes!r},))")
        model = getattr(runner.model, 'module', runner.model)  # (Distributed)DataParallel
        wrong = [(name, module.num_classes) for name, module in _class_heads(model)
                 if module.num_classes != len(classes)]
        if wrong:
            heads = ', '.join(f'model.{name}.num_classes={n}' for name, n in wrong)
            raise ValueError(
                f'{heads} but {which}.dataset has {len(classes)} '
                f"{'class' if len(classes) == 1 else 'classes'} {_short_names(classes)}; set "
                f'num_classes={len(classes)} in every head of the config')


def _class_heads(model):
    """The (name, module) pairs of ``model`` whose ``num_classes`` counts the dataset classes:
    not an RPN (class-agnostic proposals) nor a panoptic FPN's semantic head (stuff + 1)."""
    for name, module in model.named_modules():
        n = getattr(module, 'num_classes', None)
        if not isinstance(n, int) or isinstance(n, bool) or not name:
            continue
        if name.split('.')[-1] == 'rpn_head' or type(module).__name__ in (
                'RPNHead', 'FusedSemanticHead', 'PanopticFPNHead'):
            continue
        yield name, module


def _short_names(classes, limit: int = 4) -> str:
    names = tuple(classes)
    return repr(names) if len(names) <= limit else f"({', '.join(map(repr, names[:limit]))}, ...)"


def backbone_out_channels(backbone) -> list[int] | None:
    """The channels of the maps ``backbone`` returns, from its ``feature_info`` (``None`` when it
    has none). densekit backbones describe every stage (selected by ``out_indices``);
    ``TimmBackbone`` describes the returned levels only."""
    info = getattr(backbone, 'feature_info', None)
    out = getattr(backbone, 'out_indices', None)
    if not isinstance(info, (list, tuple)) or not info or not all(isinstance(i, dict) for i in info):
        return None
    channels = [int(i['num_chs']) for i in info]
    if out is None or len(out) == len(channels):
        return channels
    if max(out) < len(channels):
        return [channels[i] for i in out]
    return None


def check_channels(model) -> None:
    """Compares the backbone's output channels with ``model.neck.in_channels`` (the first neck of
    a list), or without a neck with the decode / panoptic head's; raises ``ValueError``."""
    backbone = getattr(model, 'backbone', None)
    channels = backbone_out_channels(backbone) if backbone is not None else None
    if channels is None:
        return
    neck = getattr(model, 'neck', None)
    if isinstance(neck, (torch.nn.Sequential, torch.nn.ModuleList)) and len(neck):
        neck, field = neck[0], 'model.neck[0].in_channels'
    else:
        field = 'model.neck.in_channels'
    if neck is not None:
        takes = getattr(neck, 'in_channels', None)
        given = channels
    else:
        for name in ('decode_head', 'panoptic_head'):
            head = getattr(model, name, None)
            if head is not None:
                break
        else:
            return
        field = f'model.{name}.in_channels'
        takes = getattr(head, 'in_channels', None)
        index = getattr(head, 'in_index', None)  # mmseg heads pick their inputs by index
        given = channels
        if isinstance(index, (list, tuple)) and max(index) < len(channels):
            given = [channels[i] for i in index]
        elif isinstance(index, int) and -len(channels) <= index < len(channels):
            given = channels[index]
    if isinstance(takes, (list, tuple)):
        takes = [int(c) for c in takes]
    elif not isinstance(takes, int):
        return
    if takes != given:
        raise ValueError(
            f'{type(backbone).__name__} backbone outputs {given} channels '
            f'(out_indices={tuple(getattr(backbone, "out_indices", ()))}) but {field}={takes}; '
            f'set {field}={given} in the config')


class BackboneCheckpointHook(Hook):
    """Converts the backbone part of a ``load_from`` checkpoint (``tools/test.py CKPT`` too) to
    densekit's keys, as ``init_cfg`` does: an official / timm backbone release, or an mmdet /
    mmseg zoo model whose ``backbone.*`` keys use that codebase's names.

    mmengine loads ``load_from`` with ``strict=False``: without this, such a checkpoint loaded no
    backbone weight at all and only logged the key names. A bare backbone checkpoint (no key of
    the model, no ``backbone.`` prefix) is loaded into the model's backbone. densekit's own
    checkpoints pass through unchanged (converters keep densekit keys); resuming is not touched.
    """

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if getattr(runner, '_resume', False):
            return
        from densekit.engine.checkpoint import checkpoint_family
        model = _unwrap(runner.model)
        backbone = getattr(model, 'backbone', None)
        family = checkpoint_family(backbone) if backbone is not None else None
        if family is None:
            return
        from densekit.models.convert import convert_checkpoint, unwrap_state_dict
        tensors = {k: v for k, v in unwrap_state_dict(checkpoint).items() if isinstance(v, torch.Tensor)}
        if any(k.startswith('backbone.') for k in tensors):
            rest = {k: v for k, v in tensors.items() if not k.startswith('backbone.')}
            bb = {k[len('backbone.'):]: v for k, v in tensors.items() if k.startswith('backbone.')}
        elif tensors and not set(tensors) & set(model.state_dict()):
            rest, bb = {}, tensors  # an ImageNet release of the backbone alone
        else:
            return
        converted = convert_checkpoint(family, bb)
        new = {**rest, **{f'backbone.{k}': v for k, v in converted.items()}}
        if new.keys() == tensors.keys() and all(new[k] is tensors[k] for k in new):
            return  # densekit's own keys
        # mmengine loads checkpoint['state_dict'] (else the dict itself): drop the tensors of a bare
        # state dict and the other wrappers, keep the rest (meta, ...)
        for key in [k for k, v in checkpoint.items()
                    if isinstance(v, torch.Tensor) or k in ('model', 'module', 'model_state')]:
            del checkpoint[key]
        checkpoint['state_dict'] = new
        print_log(f'BackboneCheckpointHook: converted the {len(bb)} backbone tensors of the '
                  f'checkpoint ({family} family) to {len(converted)} densekit tensors',
                  logger='current')


class CheckpointCoversModelHook(Hook):
    """``tools/test.py``: refuses a checkpoint that leaves weights of the model unloaded or whose
    weights differ in shape from the model's.

    mmengine loads ``load_from`` with ``strict=False``: a checkpoint of another model (or a
    backbone-only release) was evaluated with randomly initialised heads, reporting mAP 0 with the
    missing keys in one log line. Runs after :class:`BackboneCheckpointHook` converted the
    backbone; extra keys in the checkpoint are allowed.
    """

    priority = 'LOW'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = _unwrap(runner.model)
        sd = checkpoint.get('state_dict', checkpoint)
        have = {k[len('module.'):] if k.startswith('module.') else k for k in sd}
        own = model.state_dict()
        expected = list(own)
        missing = [k for k in expected if k not in have]
        if missing:
            raise ValueError(
                f'checkpoint {runner._load_from} lacks {len(missing)} of the {len(expected)} '
                f'weights of the model in {runner.cfg.filename} (e.g. {missing[:3]}); it was not '
                'trained with this config, and testing would use untrained weights for them')
        # mmengine skips a tensor whose shape differs (a "size mismatch" log line) and keeps the
        # random initialisation: a 5-class checkpoint under a 1-class config was evaluated so
        mismatched = []
        for k, v in sd.items():
            k = k[len('module.'):] if k.startswith('module.') else k
            if k in own and hasattr(v, 'shape') and tuple(v.shape) != tuple(own[k].shape):
                mismatched.append(f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}')
        if mismatched:
            raise ValueError(
                f'checkpoint {runner._load_from} does not fit the model in {runner.cfg.filename}: '
                f'{len(mismatched)} weights differ in shape (e.g. {mismatched[:3]}); a different '
                'num_classes / classes or another model size than the config, and testing would use '
                'untrained weights for them')


def _unwrap(model):
    """The detector / segmentor inside (Distributed)DataParallel and TTA wrappers."""
    while not hasattr(model, 'backbone') and hasattr(model, 'module'):
        model = model.module
    return model


class _ApplyBeforeFetch:
    """Stands in for an iteration-based loop's data loader iterator: passes ``skip`` fetches
    through, then calls ``apply`` before the next one and puts the original iterator back."""

    def __init__(self, loop, skip: int, apply) -> None:
        self._loop, self._it, self._skip, self._apply = loop, loop.dataloader_iterator, skip, apply

    def __iter__(self):
        return self

    def __next__(self):
        if self._skip == 0:
            self._apply()
            self._loop.dataloader_iterator = self._it
        self._skip -= 1
        return next(self._it)

    def __getattr__(self, name):
        return getattr(self._it, name)


def _capture() -> dict:
    return dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def _same_state(a: dict, b: dict) -> bool:
    """Whether two captured states are equal (nothing drew a random number in between)."""
    na, nb = a['numpy'], b['numpy']
    return (a['python'] == b['python'] and torch.equal(a['torch'], b['torch'])
            and na[0] == nb[0] and np.array_equal(na[1], nb[1]) and tuple(na[2:]) == tuple(nb[2:]))


def _checkpoint_follows(runner, by_epoch: bool) -> bool:
    """Whether a ``CheckpointHook`` of the runner saves after the current train iteration
    (``by_epoch=False``) or epoch, by that hook's own rule."""
    for hook in runner.hooks:
        if not isinstance(hook, CheckpointHook) or hook.by_epoch != by_epoch:
            continue
        if by_epoch:
            if hook.every_n_epochs(runner, hook.interval, hook.save_begin) or (
                    hook.save_last and hook.is_last_train_epoch(runner)):
                return True
        elif hook.every_n_train_iters(runner, hook.interval, hook.save_begin) or (
                hook.save_last and hook.is_last_train_iter(runner)):
            return True
    return False


def _as_python_state(state):
    # A weights_only load returns tuples as tuples but nested lists may come back as lists.
    version, internal, gauss = state
    return version, tuple(internal), gauss


def register() -> None:
    from mmengine.registry import HOOKS
    for cls in (RNGStateHook, NumClassesCheckHook, BackboneCheckpointHook):
        _register(HOOKS, cls)
    from densekit.mm import reliability
    reliability.register()
