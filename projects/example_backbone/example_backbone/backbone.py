"""A minimal user backbone: a plain 4-stage conv net following densekit's backbone convention.

Not a published model; the layout follows ``docs/adding_a_backbone.md`` (blocks -> stage -> model
-> builder), without ``checkpoint_filter_fn`` (there are no official weights to convert).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from densekit.layers import ConvBnAct, run_blocks
from densekit.models import register_backbone
from densekit.models.backbones.base import BackboneMixin

__all__ = ['ExampleConvNet']


class ExampleStage(nn.Module):
    """``depth`` 3x3 conv-BN-ReLU blocks, the first one strided."""

    def __init__(self, in_chs: int, out_chs: int, *, stride: int, depth: int = 1,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[
            ConvBnAct(in_chs if i == 0 else out_chs, out_chs, 3, stride=stride if i == 0 else 1)
            for i in range(depth)])
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_blocks(self.blocks, x, self.with_cp)


@register_backbone(name='ExampleConvNet')
class ExampleConvNet(BackboneMixin, nn.Module):
    """Stem (stride 4) + four stages (strides 4, 8, 16, 32).

    Args:
        widths: channels of the four stages.
        in_chans: input channels.
        out_indices: stages to return.
        frozen_stages: -1 nothing, 0 the stem, k the stem and the first k stages.
        norm_eval: keep BatchNorms in eval mode while training.
        with_cp: recompute each block in the backward pass.
    """

    size_divisibility = 0  # padded 3x3 convolutions: any input size

    def __init__(self, *, widths: Sequence[int] = (32, 64, 128, 256), in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False) -> None:
        super().__init__()
        self._init_contract(num_stages=len(widths), out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        self.stem = nn.Sequential(ConvBnAct(in_chans, widths[0], 3, stride=2),
                                  ConvBnAct(widths[0], widths[0], 3, stride=2))
        cins = [widths[0], *widths[:-1]]
        self.stages = nn.ModuleList(
            ExampleStage(cin, cout, stride=1 if i == 0 else 2, with_cp=with_cp)
            for i, (cin, cout) in enumerate(zip(cins, widths)))
        self._init_feature_info(widths, [4 * 2 ** i for i in range(len(widths))])
        self._init_out_norms(None)
        self._freeze_stages()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, widths[i], ceil(H / s_i), ceil(W / s_i)]`` per out index."""
        return self.forward_stages(self.stem(x))
