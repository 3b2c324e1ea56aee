"""Engine hooks, registered in mmengine's root ``HOOKS`` (seen from the mmdet and mmseg scopes)."""
from __future__ import annotations

import random

import numpy as np
import torch
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Saves the python / numpy / torch RNG states in each checkpoint and restores them on resume.

    mmengine restores weights, optimizer, schedulers and the data position, but not the random
    generators, so dropout / drop-path / random augmentation after a resume differ from the
    uninterrupted run. With this hook a single-process resume is bit-identical. In a
    distributed run only rank 0 writes checkpoints, so the states are not restored there
    (logged): each rank would otherwise get rank 0's stream.
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['rng_state'] = dict(
            python=random.getstate(),
            numpy=np.random.get_state(),
            torch=torch.get_rng_state(),
            cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            world_size=get_world_size())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('meta', {}).get('rng_state')
        if not runner._resume or state is None:
            return
        if get_world_size() != 1 or state.get('world_size', 1) != 1:
            print_log('RNGStateHook: RNG states are not restored in distributed runs',
                      logger='current')
            return
        random.setstate(_as_python_state(state['python']))
        np.random.set_state(state['numpy'])
        torch.set_rng_state(state['torch'])
        if state.get('cuda') is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])


def _as_python_state(state):
    # A weights_only load returns tuples as tuples but nested lists may come back as lists.
    version, internal, gauss = state
    return version, tuple(internal), gauss
