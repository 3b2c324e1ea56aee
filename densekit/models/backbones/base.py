"""The backbone contract shared by every densekit family.

A backbone is a plain ``nn.Module`` that

* returns a tuple of NCHW feature maps, one per entry of ``out_indices`` (stage indices, 0-based);
* describes *every* stage in ``feature_info``: ``dict(num_chs=..., reduction=..., module=...)``;
* has ``size_divisibility`` (0 when it pads internally and takes any input size);
* freezes its stem and the first ``frozen_stages`` stages (``-1``: nothing, ``0``: stem only),
  keeping them in eval mode while training (the ``train()`` override below).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn as nn


class BackboneMixin:
    """Freezing and ``out_indices`` validation shared by the families."""

    feature_info: list[dict]
    size_divisibility: int = 0

    def _check_out_indices(self, out_indices: Sequence[int], num_stages: int) -> tuple[int, ...]:
        out = tuple(int(i) for i in out_indices)
        bad = [i for i in out if not 0 <= i < num_stages]
        if bad or not out:
            raise ValueError(f"{type(self).__name__}: out_indices={tuple(out_indices)} must be a "
                             f"non-empty subset of 0..{num_stages - 1}")
        return out

    def frozen_modules(self) -> Iterable[nn.Module]:
        """Modules frozen by ``self.frozen_stages``; families override when their layout differs.

        Default layout: ``self.stem`` (may be absent) and ``self.stages[i]``.
        """
        k = getattr(self, 'frozen_stages', -1)
        if k < 0:
            return []
        mods = [self.stem] if getattr(self, 'stem', None) is not None else []
        return mods + list(self.stages[:k])

    def _freeze_stages(self) -> None:
        for m in self.frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def _channels_last_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Runs ``self.stages`` on a channels-last map ``[B, H, W, C]`` and returns the NCHW maps
        of ``self.out_indices``, each through its ``self.out_norms[str(i)]``."""
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(self.out_norms[str(i)](x).permute(0, 3, 1, 2).contiguous())
        return tuple(outs)

    def train(self, mode: bool = True):
        nn.Module.train(self, mode)
        self._freeze_stages()
        return self
