"""The backbone contract shared by every densekit family, and the mixin that implements it.

A backbone is an ``nn.Module`` that

* returns a tuple of NCHW feature maps, one per entry of ``out_indices`` (stage indices, 0-based,
  increasing);
* describes *every* stage in ``feature_info``: ``dict(num_chs=..., reduction=..., module=...)``,
  ``module`` naming the stage in ``named_modules()``;
* has ``size_divisibility`` (0 when it pads internally and takes any input size);
* freezes its stem, the first ``frozen_stages`` stages and their output norms (``-1``: nothing,
  ``0``: stem only), keeping them in eval mode while training;
* with ``norm_eval``, keeps every BatchNorm in eval mode while training;
* with ``with_cp``, recomputes each block in the backward pass
  (:func:`densekit.layers.checkpoint.run_blocks`).

:class:`BackboneMixin` implements all of it once. A family sets ``self.stem`` and ``self.stages``
(an ``nn.ModuleList``; other attribute names through ``stem_attr`` / ``stages_attr``), calls
:meth:`~BackboneMixin._init_contract`, :meth:`~BackboneMixin._init_feature_info` and
:meth:`~BackboneMixin._init_out_norms` in its constructor, :meth:`~BackboneMixin._freeze_stages`
at its end, and forwards ``self.forward_stages(self.stem(x))``.
"""
from __future__ import annotations

from typing import Callable, ClassVar, Iterable, Sequence

import torch
import torch.nn as nn

__all__ = ['BackboneMixin', 'check_variant_kwargs']


class BackboneMixin:
    """``out_indices``, ``feature_info``, output norms, the stage loop, freezing and ``norm_eval``.

    Class attributes a family may set:

    * ``size_divisibility``: input multiple needed for aligned maps (0: any size);
    * ``channels_last``: the stages run on ``[B, H, W, C]`` maps (outputs are permuted to NCHW);
    * ``stem_attr`` / ``stages_attr``: attribute names of the stem and of the stage list, when
      checkpoint key names require others than ``stem`` / ``stages``.
    """

    feature_info: list[dict]
    out_indices: tuple[int, ...]
    frozen_stages: int = -1
    norm_eval: bool = False
    size_divisibility: int = 0
    channels_last: ClassVar[bool] = False
    stem_attr: ClassVar[str] = 'stem'
    stages_attr: ClassVar[str] = 'stages'

    # ------------------------------------------------------------------ construction helpers

    def _check_out_indices(self, out_indices: Sequence[int], num_stages: int) -> tuple[int, ...]:
        out = tuple(int(i) for i in out_indices)
        bad = [i for i in out if not 0 <= i < num_stages]
        if bad or not out or list(out) != sorted(set(out)):
            raise ValueError(f"{type(self).__name__}: out_indices={tuple(out_indices)} must be a "
                             f"non-empty, increasing subset of 0..{num_stages - 1}")
        return out

    def _init_contract(self, *, num_stages: int, out_indices: Sequence[int], frozen_stages: int = -1,
                       norm_eval: bool = False) -> None:
        """Validates and stores ``out_indices``, ``frozen_stages`` and ``norm_eval``."""
        self.out_indices = self._check_out_indices(out_indices, num_stages)
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f"{type(self).__name__}: frozen_stages={frozen_stages} must be in "
                             f"-1..{num_stages}")
        self.frozen_stages = int(frozen_stages)
        self.norm_eval = bool(norm_eval)

    def _init_feature_info(self, channels: Sequence[int], reductions: Sequence[int]) -> None:
        """One ``feature_info`` entry per stage; ``module`` is ``'{stages_attr}.{i}'``."""
        self.feature_info = [dict(num_chs=int(c), reduction=int(r), module=f'{self.stages_attr}.{i}')
                             for i, (c, r) in enumerate(zip(channels, reductions))]

    def _init_out_norms(self, norm_layer: Callable[[int], nn.Module] | None) -> None:
        """``self.out_norms[str(i)] = norm_layer(channels of stage i)`` for every ``i`` in
        ``out_indices``; ``None`` adds none (the raw stage outputs are returned).

        Norms exist only for returned maps: an unused norm would be a parameter without gradient,
        which DDP (``find_unused_parameters=False``) rejects.
        """
        self.out_norms = nn.ModuleDict(
            {str(i): norm_layer(self.feature_info[i]['num_chs']) for i in self.out_indices}
            if norm_layer is not None else {})

    # ------------------------------------------------------------------ forward

    def stage_modules(self) -> Sequence[nn.Module]:
        return getattr(self, self.stages_attr)

    def stem_module(self) -> nn.Module | None:
        return getattr(self, self.stem_attr, None)

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Runs the stages on the stem output ``x`` and returns the NCHW maps of ``out_indices``,
        each through its output norm if it has one. Stages after the last returned one are not run.
        """
        outs = []
        norms = getattr(self, 'out_norms', {})
        last = self.out_indices[-1]
        for i, stage in enumerate(self.stage_modules()):
            x = stage(x)
            if i in self.out_indices:
                y = norms[str(i)](x) if str(i) in norms else x
                outs.append(y.permute(0, 3, 1, 2).contiguous() if self.channels_last else y)
            if i == last:
                break
        return tuple(outs)

    # ------------------------------------------------------------------ freezing / train mode

    def frozen_modules(self) -> Iterable[nn.Module]:
        """The stem, stages ``0..frozen_stages-1`` and their output norms (``[]`` for ``-1``)."""
        k = self.frozen_stages
        if k < 0:
            return []
        stem = self.stem_module()
        mods = [stem] if stem is not None else []
        mods += list(self.stage_modules()[:k])
        norms = getattr(self, 'out_norms', {})
        return mods + [m for i, m in norms.items() if int(i) < k]

    def _freeze_stages(self) -> None:
        for m in self.frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        nn.Module.train(self, mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def check_variant_kwargs(cls: type, fixed: Sequence[str], kwargs: dict) -> None:
    """A registered variant fixes its architecture: passing one of ``fixed`` is an error (build
    ``cls(...)`` directly for another architecture)."""
    for name in fixed:
        if name in kwargs:
            raise TypeError(f"'{name}' is fixed by the variant; build {cls.__name__}(...) directly "
                            f"to change it (got {name}={kwargs[name]!r})")
