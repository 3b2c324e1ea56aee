"""ConvNeXt as a dense-prediction backbone.

Paper: Z. Liu, H. Mao, C.-Y. Wu, C. Feichtenhofer, T. Darrell, S. Xie,
"A ConvNet for the 2020s", CVPR 2022, https://arxiv.org/abs/2201.03545.

The layout follows the paper's detection / segmentation code: a stride-4 patchify stem, four
stages separated by LayerNorm + 2x2 stride-2 convolutions, and (optionally) one LayerNorm per
returned feature map. Parameter names follow timm's ``convnext.py`` so that timm checkpoints
load with an almost-identity mapping; :func:`checkpoint_filter_fn` also accepts the official
release (``facebookresearch/ConvNeXt``) classification and detection/segmentation checkpoints.

Like the official code, ConvNeXt does not pad: every stride-``s`` map has ``floor(H / s)`` rows,
so feature maps of different stages align exactly only for inputs divisible by 32
(``size_divisibility``).
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Sequence

import torch
import torch.nn as nn
from timm.layers import Mlp

from densekit.layers import DropPath, LayerNorm2d, drop_path_schedule, init_trunc_normal_, run_blocks
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
from densekit.models.convert import register_converter
from densekit.models.registry import register_backbone

__all__ = ['ConvNeXt', 'checkpoint_filter_fn']


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv -> LayerNorm -> MLP (4x) -> layer scale, with a residual connection.

    Args:
        dim: channels.
        drop_path: drop-path probability of the residual branch.
        layer_scale_init_value: initial value of the per-channel layer scale ``gamma``;
            ``<= 0`` disables it (no ``gamma`` parameter).
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        kernel_size: depthwise kernel size.
    """

    def __init__(self, dim: int, *, drop_path: float = 0.0, layer_scale_init_value: float = 1e-6,
                 mlp_ratio: float = 4.0, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))  # inverted bottleneck, channels-last
        self.gamma = (nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
                      if layer_scale_init_value > 0 else None)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        shortcut = x
        # The MLP runs channels-last: nn.Linear on [B, H, W, C] is faster than 1x1 convs.
        x = self.conv_dw(x).permute(0, 2, 3, 1)
        x = self.mlp(self.norm(x))
        if self.gamma is not None:
            x = x * self.gamma
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))


class ConvNeXtStage(nn.Module):
    """Optional downsampling (LayerNorm + 2x2 stride-2 conv) followed by ``depth`` blocks."""

    def __init__(self, in_dim: int, dim: int, *, depth: int, drop_paths: Sequence[float],
                 layer_scale_init_value: float, downsample: bool, with_cp: bool = False) -> None:
        super().__init__()
        if downsample:
            self.downsample = nn.Sequential(LayerNorm2d(in_dim, eps=1e-6),
                                            nn.Conv2d(in_dim, dim, kernel_size=2, stride=2))
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[
            ConvNeXtBlock(dim, drop_path=drop_paths[i], layer_scale_init_value=layer_scale_init_value)
            for i in range(depth)])
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        return run_blocks(self.blocks, x, self.with_cp)


class ConvNeXt(BackboneMixin, nn.Module):
    """ConvNeXt backbone returning NCHW maps at strides 4, 8, 16, 32.

    Args:
        depths: blocks per stage.
        dims: channels per stage.
        in_chans: input channels.
        out_indices: stages (0-based) whose output is returned.
        out_norm: add a LayerNorm to every returned map, as the official detection /
            segmentation code does (its ``norm{i}``); ``False`` returns the raw stage outputs
            (timm's ``features_only``).
        drop_path_rate: drop-path probability, rising linearly over all blocks to this value.
        layer_scale_init_value: initial layer-scale value (``<= 0`` disables layer scale).
        frozen_stages: ``-1`` freezes nothing, ``0`` the stem, ``k`` the stem and stages
            ``0..k-1`` (with their output norms); frozen modules stay in eval mode.
        norm_eval: keep BatchNorms in eval mode while training (ConvNeXt has none; accepted for
            the common contract).
        with_cp: recompute each block in the backward pass (activation checkpointing) to save
            memory.
    """

    size_divisibility = 32

    def __init__(self, *,
                 depths: Sequence[int] = (3, 3, 9, 3),
                 dims: Sequence[int] = (96, 192, 384, 768),
                 in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: bool = True,
                 drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(f"ConvNeXt: depths={tuple(depths)} and dims={tuple(dims)} must have "
                             f"the same length")
        num_stages = len(depths)
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        self.dims = tuple(int(d) for d in dims)

        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4),
                                  LayerNorm2d(dims[0], eps=1e-6))
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.stages.append(ConvNeXtStage(
                self.dims[max(i - 1, 0)], self.dims[i], depth=depths[i],
                drop_paths=dpr[start:start + depths[i]],
                layer_scale_init_value=layer_scale_init_value, downsample=i > 0, with_cp=with_cp))
            start += depths[i]
        self._init_feature_info(self.dims, [4 * 2 ** i for i in range(num_stages)])
        self._init_out_norms((lambda c: LayerNorm2d(c, eps=1e-6)) if out_norm else None)
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """Random init of the paper (truncated normal, std 0.02); checkpoints load over it."""
        init_trunc_normal_(self, conv=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, dims[i], H // s_i, W // s_i]`` map per out index."""
        return self.forward_stages(self.stem(x))


# ------------------------------------------------------------------------------------------------
# Official / timm checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

def _official_to_densekit(key: str) -> str:
    """facebookresearch/ConvNeXt (classification, mmdet/mmseg code of the paper) or mmpretrain
    ``ConvNeXt`` key -> densekit key."""
    key = key.replace('downsample_layers.0.', 'stem.')
    key = re.sub(r'^downsample_layers\.(\d+)\.', r'stages.\1.downsample.', key)
    key = re.sub(r'^stages\.(\d+)\.(\d+)\.', r'stages.\1.blocks.\2.', key)
    key = key.replace('.dwconv.', '.conv_dw.').replace('.depthwise_conv.', '.conv_dw.')
    key = key.replace('.pwconv1.', '.mlp.fc1.').replace('.pwconv2.', '.mlp.fc2.')
    key = key.replace('.pointwise_conv1.', '.mlp.fc1.').replace('.pointwise_conv2.', '.mlp.fc2.')
    key = re.sub(r'^norm(\d)\.', r'out_norms.\1.', key)
    return key


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official (classification or detection/segmentation) or timm ConvNeXt -> densekit keys.

    Accepted layouts:

    * official: ``downsample_layers.*``, ``stages.{i}.{j}.dwconv``, ``pwconv1/2``, ``norm{i}``
      (the dense-prediction checkpoints, usually under a ``backbone.`` prefix beside heads);
    * mmpretrain (used by mmseg's ConvNeXt configs): the official layout with
      ``depthwise_conv`` / ``pointwise_conv1/2`` names;
    * timm: ``stem.*``, ``stages.{i}.downsample.*``, ``stages.{i}.blocks.{j}.conv_dw``,
      ``mlp.fc1/fc2`` (2-D or, for ``conv_mlp`` models, 1x1-conv 4-D weights);
    * densekit's own keys (returned unchanged).

    Classification heads (``head.*``, ``norm.*``, ``norm_pre.*``) and any non-backbone entries of
    a detector checkpoint are dropped. ConvNeXt-V2 checkpoints (GRN) are rejected.
    """
    sd = dict(state_dict)
    if any(k.startswith('backbone.') for k in sd):
        sd = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    if any('grn' in k for k in sd):
        raise ValueError("ConvNeXt converter: this is a ConvNeXt-V2 checkpoint (GRN parameters, e.g. "
                         f"{next(k for k in sd if 'grn' in k)!r}); densekit's ConvNeXt is V1")
    official = any(k.startswith('downsample_layers.') for k in sd)
    out = {}
    for k, v in sd.items():
        if k.startswith(('head.', 'norm.', 'norm_pre.', 'fc_norm.')):
            continue
        if official:
            k = _official_to_densekit(k)
        if re.search(r'\.mlp\.fc[12]\.weight$', k) and v.ndim == 4:
            v = v.flatten(1)  # timm conv_mlp variants store the MLP as 1x1 convolutions
        if not k.startswith(('stem.', 'stages.', 'out_norms.')):
            raise KeyError(f"ConvNeXt converter: unexpected key {k!r} (not a ConvNeXt backbone key)")
        out[k] = v
    return out


register_converter('convnext', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants
# ------------------------------------------------------------------------------------------------

def _create_convnext(kwargs: dict, *, depths: Sequence[int], dims: Sequence[int]) -> ConvNeXt:
    check_variant_kwargs(ConvNeXt, ('depths', 'dims'), kwargs)
    return ConvNeXt(depths=depths, dims=dims, **kwargs)


@register_backbone(name='convnext_tiny')
def convnext_tiny(**kwargs) -> ConvNeXt:
    """ConvNeXt-T (28M)."""
    return _create_convnext(kwargs, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))


@register_backbone(name='convnext_small')
def convnext_small(**kwargs) -> ConvNeXt:
    """ConvNeXt-S (50M)."""
    return _create_convnext(kwargs, depths=(3, 3, 27, 3), dims=(96, 192, 384, 768))


@register_backbone(name='convnext_base')
def convnext_base(**kwargs) -> ConvNeXt:
    """ConvNeXt-B (89M)."""
    return _create_convnext(kwargs, depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024))


@register_backbone(name='convnext_large')
def convnext_large(**kwargs) -> ConvNeXt:
    """ConvNeXt-L (198M)."""
    return _create_convnext(kwargs, depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536))


@register_backbone(name='convnext_xlarge')
def convnext_xlarge(**kwargs) -> ConvNeXt:
    """ConvNeXt-XL (350M; ImageNet-22k weights only)."""
    return _create_convnext(kwargs, depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048))


@register_backbone(name='convnext_test')
def convnext_test(**kwargs) -> ConvNeXt:
    """A tiny ConvNeXt for tests (not a published model)."""
    return _create_convnext(kwargs, depths=(1, 1, 2, 1), dims=(16, 24, 32, 48))
