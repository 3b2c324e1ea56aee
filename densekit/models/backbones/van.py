"""VAN: the Visual Attention Network, a convolutional backbone built on large-kernel attention.

Paper: M.-H. Guo, C.-Z. Lu, Z.-N. Liu, M.-M. Cheng, S.-M. Hu, "Visual Attention Network",
Computational Visual Media 2023, https://arxiv.org/abs/2202.09741.

The numerics follow the official DENSE backbone, ``van.py`` of
Visual-Attention-Network/VAN-Segmentation (the classification model of VAN-Classification has the
same parameters): every stage is an overlapping strided convolution + BatchNorm (7x7 stride 4,
then 3x3 stride 2), blocks of BatchNorm -> large-kernel attention (5x5 depthwise, 7x7 depthwise
with dilation 3, 1x1) and BatchNorm -> convolutional MLP (1x1, 3x3 depthwise, GELU, 1x1), each with
a per-channel layer scale, and a LayerNorm over the channels (eps 1e-5, the segmentation code's
``nn.LayerNorm`` default; the classification model uses 1e-6). That stage norm is part of the
chain: the next stage reads the normalised map, and it is also what the backbone returns, so VAN
has no separate output norms. The official SyncBN is a plain ``nn.BatchNorm2d`` here (convert a
model with ``nn.SyncBatchNorm.convert_sync_batchnorm`` for synchronised statistics).

Every convolution pads by half its kernel, so a stride-``s`` map has ``ceil(H / s)`` rows and any
input size works (``size_divisibility = 0``). The 7x7 dilation-3 kernel (19x19 taps apart) is a
:class:`~densekit.layers.LargeKernelConv2d` (:func:`densekit.ops.large_kernel.large_kernel_conv2d`:
``F.conv2d`` by default, the Triton kernels by name); the 5x5 and 3x3 kernels stay ``nn.Conv2d``.
"""
from __future__ import annotations

import math
import re
from typing import Dict, Mapping, Sequence

import torch
import torch.nn as nn

from densekit.layers import DropPath, LargeKernelConv2d, LayerNorm2d, drop_path_schedule, run_blocks
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone

__all__ = ['VAN', 'LargeKernelAttention', 'checkpoint_filter_fn']


class LargeKernelAttention(nn.Module):
    """LKA: ``x * conv1x1(dwconv7x7_dilated3(dwconv5x5(x)))`` (a 21x21 receptive field).

    Args:
        dim: channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = LargeKernelConv2d(dim, 7, dilation=3)  # padding 9
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        return x * self.conv1(self.conv_spatial(self.conv0(x)))


class SpatialAttention(nn.Module):
    """1x1 -> GELU -> LKA -> 1x1, plus its own residual connection (as the official code).

    Args:
        dim: channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LargeKernelAttention(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class ConvMlp(nn.Module):
    """1x1 conv -> 3x3 depthwise conv -> GELU -> 1x1 conv on NCHW maps.

    Args:
        dim: input and output channels.
        hidden_dim: channels of the hidden layer.
    """

    def __init__(self, dim: int, *, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class VANBlock(nn.Module):
    """BatchNorm -> spatial attention and BatchNorm -> MLP, each scaled per channel and residual.

    Args:
        dim: channels.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        drop_path: drop-path probability of both residual branches.
        layer_scale_init_value: initial value of ``layer_scale_1`` / ``layer_scale_2``.
    """

    def __init__(self, dim: int, *, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 layer_scale_init_value: float = 1e-2) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = SpatialAttention(dim)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, hidden_dim=int(dim * mlp_ratio))
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class OverlapPatchEmbed(nn.Module):
    """Strided convolution padded by half its kernel, then BatchNorm.

    Args:
        in_chans: input channels.
        embed_dim: output channels.
        patch_size: kernel size (7 for the stem, 3 between stages).
        stride: stride (4 for the stem, 2 between stages).
    """

    def __init__(self, in_chans: int, embed_dim: int, *, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.BatchNorm2d(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, embed_dim, ceil(H / stride), ceil(W / stride)]``."""
        return self.norm(self.proj(x))


class VANStage(nn.Module):
    """Optional downsampling (3x3 stride-2 patch embedding), ``depth`` blocks, the stage LayerNorm.

    Args:
        in_dim: input channels.
        dim: channels of the stage.
        depth: number of blocks.
        mlp_ratio: MLP width relative to ``dim``.
        drop_paths: drop-path probability of each block.
        downsample: start with a stride-2 patch embedding (every stage but the first).
        norm_eps: eps of the stage LayerNorm.
        with_cp: recompute each block in the backward pass.
    """

    def __init__(self, in_dim: int, dim: int, *, depth: int, mlp_ratio: float,
                 drop_paths: Sequence[float], downsample: bool, norm_eps: float = 1e-5,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.downsample = (OverlapPatchEmbed(in_dim, dim, patch_size=3, stride=2) if downsample
                           else nn.Identity())
        self.blocks = nn.Sequential(*[
            VANBlock(dim, mlp_ratio=mlp_ratio, drop_path=drop_paths[i]) for i in range(depth)])
        self.norm = LayerNorm2d(dim, eps=norm_eps)
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim, H, W]`` -> ``[B, dim, H', W']`` (``H' = ceil(H / 2)`` with downsampling)."""
        x = run_blocks(self.blocks, self.downsample(x), self.with_cp)
        return self.norm(x)


class VAN(BackboneMixin, nn.Module):
    """VAN backbone returning the stage-normalised NCHW maps at strides 4, 8, 16, 32.

    Args:
        embed_dims: channels per stage.
        depths: blocks per stage.
        mlp_ratios: MLP width per stage, relative to its channels.
        in_chans: input channels.
        out_indices: stages (0-based) whose output is returned.
        drop_path_rate: drop-path probability, rising linearly over all blocks to this value.
        norm_eps: eps of the stage LayerNorms (1e-5 in the official segmentation code).
        frozen_stages: ``-1`` freezes nothing, ``0`` the stem, ``k`` the stem and stages
            ``0..k-1``; frozen modules stay in eval mode.
        norm_eval: keep every BatchNorm in eval mode while training.
        with_cp: recompute each block in the backward pass (activation checkpointing).
    """

    size_divisibility = 0

    def __init__(self, *,
                 embed_dims: Sequence[int] = (64, 128, 320, 512),
                 depths: Sequence[int] = (3, 3, 12, 3),
                 mlp_ratios: Sequence[float] = (8, 8, 4, 4),
                 in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.0,
                 norm_eps: float = 1e-5,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        if not len(embed_dims) == len(depths) == len(mlp_ratios):
            raise ValueError(f"VAN: embed_dims={tuple(embed_dims)}, depths={tuple(depths)} and "
                             f"mlp_ratios={tuple(mlp_ratios)} must have the same length")
        num_stages = len(depths)
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        self.dims = tuple(int(d) for d in embed_dims)

        self.stem = OverlapPatchEmbed(in_chans, self.dims[0], patch_size=7, stride=4)
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.stages.append(VANStage(
                self.dims[max(i - 1, 0)], self.dims[i], depth=depths[i], mlp_ratio=mlp_ratios[i],
                drop_paths=dpr[start:start + depths[i]], downsample=i > 0, norm_eps=norm_eps,
                with_cp=with_cp))
            start += depths[i]
        self._init_feature_info(self.dims, [4 * 2 ** i for i in range(num_stages)])
        self._init_out_norms(None)  # the stage LayerNorms already normalise every output
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """Random init of the official code: normal convolutions with std ``sqrt(2 / fan_out)``,
        ``fan_out = k * k * out_channels / groups`` (so depthwise kernels get std
        ``sqrt(2 / k^2)``), zero biases, unit norms; checkpoints load over it."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, std=math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, dims[i], ceil(H / s_i), ceil(W / s_i)]`` per out index."""
        return self.forward_stages(self.stem(x))


# ------------------------------------------------------------------------------------------------
# Official checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

_DENSEKIT_KEY = re.compile(r'^(stem|stages)\.')
_CLASSIFIER_KEY = re.compile(r'^head\.')
_PATCH_EMBED = re.compile(r'^patch_embed(\d+)\.(.*)$')
_BLOCK = re.compile(r'^block(\d+)\.(\d+)\.(.*)$')
_STAGE_NORM = re.compile(r'^norm(\d+)\.(.*)$')


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official VAN checkpoint (VAN-Classification ImageNet release, VAN-Segmentation mmseg
    checkpoint) -> densekit keys.

    ``patch_embed1`` becomes the stem, ``patch_embed{i}`` (``i >= 2``) the downsampling of stage
    ``i - 1``, ``block{i}.{j}`` its blocks and ``norm{i}`` its LayerNorm; the MLP's
    ``dwconv.dwconv`` wrapper is flattened. The classifier ``head`` is dropped, a segmentor's
    ``backbone.`` prefix stripped; keys already in densekit's format pass through unchanged.
    """
    out: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in strip_wrapper_prefix(state_dict).items():
        if _DENSEKIT_KEY.match(key):
            out[key] = value
            continue
        if _CLASSIFIER_KEY.match(key):
            continue
        if m := _PATCH_EMBED.match(key):
            i = int(m.group(1)) - 1
            out[f'stem.{m.group(2)}' if i == 0 else f'stages.{i}.downsample.{m.group(2)}'] = value
        elif m := _BLOCK.match(key):
            rest = m.group(3).replace('mlp.dwconv.dwconv.', 'mlp.dwconv.')
            out[f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.{rest}'] = value
        elif m := _STAGE_NORM.match(key):
            out[f'stages.{int(m.group(1)) - 1}.norm.{m.group(2)}'] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"VAN converter: unrecognised keys {unknown[:8]}"
                       f"{' ...' if len(unknown) > 8 else ''}")
    return out


register_converter('van', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants
# ------------------------------------------------------------------------------------------------

_ARCH = ('embed_dims', 'depths', 'mlp_ratios')


def _create_van(kwargs: dict, *, embed_dims: Sequence[int], depths: Sequence[int],
                drop_path_rate: float, mlp_ratios: Sequence[float] = (8, 8, 4, 4)) -> VAN:
    check_variant_kwargs(VAN, _ARCH, kwargs)
    kwargs.setdefault('drop_path_rate', drop_path_rate)
    return VAN(embed_dims=embed_dims, depths=depths, mlp_ratios=mlp_ratios, **kwargs)


@register_backbone(name='van_b0')
def van_b0(**kwargs) -> VAN:
    """VAN-B0 (VAN-Tiny, 4.1M params with the ImageNet head)."""
    return _create_van(kwargs, embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2),
                       drop_path_rate=0.1)


@register_backbone(name='van_b1')
def van_b1(**kwargs) -> VAN:
    """VAN-B1 (VAN-Small, 13.9M)."""
    return _create_van(kwargs, embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2),
                       drop_path_rate=0.1)


@register_backbone(name='van_b2')
def van_b2(**kwargs) -> VAN:
    """VAN-B2 (VAN-Base, 26.6M)."""
    return _create_van(kwargs, embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3),
                       drop_path_rate=0.1)


@register_backbone(name='van_b3')
def van_b3(**kwargs) -> VAN:
    """VAN-B3 (VAN-Large, 44.8M)."""
    return _create_van(kwargs, embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3),
                       drop_path_rate=0.1)


@register_backbone(name='van_test')
def van_test(**kwargs) -> VAN:
    """A tiny VAN for tests (not a published model): every block type, the dilated 7x7 kernel
    wider than the deepest maps of a small input."""
    return _create_van(kwargs, embed_dims=(8, 16, 24, 32), depths=(1, 1, 2, 1),
                       mlp_ratios=(2, 2, 2, 2), drop_path_rate=0.1)
