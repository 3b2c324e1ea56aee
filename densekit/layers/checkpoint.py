"""Activation checkpointing of a backbone stage's blocks (``with_cp``), written once for every family."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _needs_recompute(block: nn.Module, x: torch.Tensor) -> bool:
    """Checkpointing pays only when autograd records this block: its input or one of its
    parameters needs a gradient. The non-reentrant form is used, so a stage after frozen stages
    (input without gradient, trainable parameters) is still checkpointed; a frozen block under a
    frozen input is not (nothing of it is saved for backward anyway)."""
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or any(p.requires_grad for p in block.parameters())


def run_blocks(blocks: Iterable[nn.Module], x: torch.Tensor, with_cp: bool = False, *args) -> torch.Tensor:
    """Apply ``blocks`` in order (``x = blk(x, *args)``: ``args`` is per-stage context shared by
    the blocks, e.g. TransNeXt's position tables); with ``with_cp``, each block's activations are
    recomputed in the backward instead of stored (the ``with_cp`` option of mmdet / mmseg backbones)."""
    for blk in blocks:
        if with_cp and _needs_recompute(blk, x):
            x = checkpoint(blk, x, *args, use_reentrant=False)
        else:
            x = blk(x, *args)
    return x
