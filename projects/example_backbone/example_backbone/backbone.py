"""A minimal user backbone: a plain 4-stage conv net following densekit's backbone contract."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from densekit.models import register_backbone
from densekit.models.backbones.base import BackboneMixin


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


@register_backbone(name='ExampleConvNet')
class ExampleConvNet(BackboneMixin, nn.Module):
    """Stem (stride 4) + four stages (strides 4, 8, 16, 32).

    Args:
        widths: channels of the four stages.
        out_indices: stages to return.
        frozen_stages: -1 nothing, 0 the stem, k the stem and the first k stages.
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256),
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = -1) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn(3, widths[0], 2), _conv_bn(widths[0], widths[0], 2))
        cins = [widths[0], *widths[:-1]]
        self.stages = nn.ModuleList(
            _conv_bn(cin, cout, 1 if i == 0 else 2) for i, (cin, cout) in enumerate(zip(cins, widths)))
        self.out_indices = self._check_out_indices(out_indices, len(widths))
        self.frozen_stages = frozen_stages
        self.feature_info = [dict(num_chs=c, reduction=4 * 2 ** i, module=f'stages.{i}')
                             for i, c in enumerate(widths)]
        self._freeze_stages()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
