"""RepLKNet: a ConvNet with 31x31 depthwise kernels trained beside re-parameterised small kernels.

Paper: X. Ding, X. Zhang, J. Han, G. Ding, "Scaling Up Your Kernels to 31x31: Revisiting Large
Kernel Design in CNNs", CVPR 2022, https://arxiv.org/abs/2203.06717.

The numerics follow the official DENSE backbone, ``RepLKNet`` of DingXiaoH/RepLKNet-pytorch
(``segmentation/replknet.py``, the ImageNet model with ``out_indices``): a stem of four conv + BN +
ReLU (3x3 stride 2, 3x3 depthwise, 1x1, 3x3 depthwise stride 2), a transition (1x1 conv + BN + ReLU,
3x3 depthwise stride-2 conv + BN + ReLU) at the start of every later stage, and stages alternating

    RepLK block: BN -> 1x1 conv-BN-ReLU -> (k x k depthwise conv-BN + 5x5 depthwise conv-BN) -> ReLU
                 -> 1x1 conv-BN, + residual
    ConvFFN:     BN -> 1x1 conv-BN -> GELU -> 1x1 conv-BN, + residual

The stage outputs are returned as they are (RepLKNet-XL's dense models add one BatchNorm per
output: ``out_norm=True``). :meth:`RepLKNet.reparameterize` folds the small kernel into the large
one and every conv-BN pair into one convolution, as the official ``structural_reparam`` and
``deep_fuse_BN``. The official SyncBN is a plain ``nn.BatchNorm2d`` here.

Every convolution pads by half its kernel, so a stride-``s`` map has ``ceil(H / s)`` rows and any
input size works (``size_divisibility = 0``). The large kernels (``lkb_origin.conv``,
``lkb_reparam``) are :class:`~densekit.layers.LargeKernelConv2d`
(:func:`densekit.ops.large_kernel.large_kernel_conv2d`: ``F.conv2d`` by default, the Triton kernels
by name); the small kernels stay ``nn.Conv2d``.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from densekit.layers import DropPath, LargeKernelConv2d, drop_path_schedule, run_blocks
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone

__all__ = ['RepLKNet', 'ReparamLargeKernelConv', 'checkpoint_filter_fn']


def _conv_bn(in_dim: int, out_dim: int, kernel_size: int, *, stride: int = 1, groups: int = 1,
             relu: bool = False, large: bool = False) -> nn.Sequential:
    """``conv`` (no bias, padded by half the kernel) -> ``bn`` [-> ``nonlinear`` ReLU]; ``large``:
    a depthwise ``conv`` through the large-kernel op (:class:`LargeKernelConv2d`)."""
    if large:
        conv: nn.Conv2d = LargeKernelConv2d(in_dim, kernel_size, bias=False)
    else:
        conv = nn.Conv2d(in_dim, out_dim, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups,
                         bias=False)
    layers = [('conv', conv), ('bn', nn.BatchNorm2d(out_dim))]
    if relu:
        layers.append(('nonlinear', nn.ReLU()))
    return nn.Sequential(OrderedDict(layers))


@torch.no_grad()
def _fuse_conv_bn(seq: nn.Sequential) -> None:
    """Replace ``seq.conv`` -> ``seq.bn`` by one convolution with bias (``seq.bn`` becomes Identity)."""
    if not isinstance(seq.bn, nn.BatchNorm2d):
        return
    conv, bn = seq.conv, seq.bn
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    bias = torch.zeros_like(scale) if conv.bias is None else conv.bias
    if isinstance(conv, LargeKernelConv2d):
        fused = LargeKernelConv2d.like(conv)
    else:
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                          padding=conv.padding, groups=conv.groups,
                          bias=True).to(conv.weight.device, conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    fused.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
    seq.conv = fused
    seq.bn = nn.Identity()


class ReparamLargeKernelConv(nn.Module):
    """Depthwise ``k x k`` conv-BN plus a ``small_kernel`` depthwise conv-BN, summed;
    :meth:`reparameterize` folds both into one ``k x k`` convolution with bias (``lkb_reparam``).

    Args:
        channels: channels (depthwise).
        kernel_size: the large kernel.
        small_kernel: the parallel small kernel (``None``: none).
    """

    def __init__(self, channels: int, *, kernel_size: int, small_kernel: Optional[int]) -> None:
        super().__init__()
        if small_kernel is not None and small_kernel > kernel_size:
            raise ValueError(f"ReparamLargeKernelConv: small_kernel={small_kernel} must not exceed "
                             f"kernel_size={kernel_size}")
        self.kernel_size = kernel_size
        self.small_kernel = small_kernel
        self.lkb_origin = _conv_bn(channels, channels, kernel_size, groups=channels, large=True)
        if small_kernel is not None:
            self.small_conv = _conv_bn(channels, channels, small_kernel, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        if hasattr(self, 'lkb_reparam'):
            return self.lkb_reparam(x)
        out = self.lkb_origin(x)
        if hasattr(self, 'small_conv'):
            out = out + self.small_conv(x)
        return out

    @torch.no_grad()
    def reparameterize(self) -> None:
        if hasattr(self, 'lkb_reparam'):
            return
        _fuse_conv_bn(self.lkb_origin)
        weight, bias = self.lkb_origin.conv.weight, self.lkb_origin.conv.bias
        if hasattr(self, 'small_conv'):
            _fuse_conv_bn(self.small_conv)
            pad = (self.kernel_size - self.small_kernel) // 2
            weight = weight + F.pad(self.small_conv.conv.weight, [pad] * 4)
            bias = bias + self.small_conv.conv.bias
            del self.small_conv
        self.lkb_reparam = LargeKernelConv2d.like(self.lkb_origin.conv)
        self.lkb_reparam.weight.copy_(weight)
        self.lkb_reparam.bias.copy_(bias)
        del self.lkb_origin


class RepLKBlock(nn.Module):
    """BN -> 1x1 conv-BN-ReLU -> large-kernel depthwise conv -> ReLU -> 1x1 conv-BN, + residual.

    Args:
        dim: channels.
        dw_dim: channels of the depthwise part.
        kernel_size: the large kernel.
        small_kernel: the re-parameterised small kernel.
        drop_path: drop-path probability of the residual branch.
    """

    def __init__(self, dim: int, *, dw_dim: int, kernel_size: int, small_kernel: Optional[int],
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.pw1 = _conv_bn(dim, dw_dim, 1, relu=True)
        self.pw2 = _conv_bn(dw_dim, dim, 1)
        self.large_kernel = ReparamLargeKernelConv(dw_dim, kernel_size=kernel_size,
                                                   small_kernel=small_kernel)
        self.lk_nonlinear = nn.ReLU()
        self.prelkb_bn = nn.BatchNorm2d(dim)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        out = self.lk_nonlinear(self.large_kernel(self.pw1(self.prelkb_bn(x))))
        return x + self.drop_path(self.pw2(out))


class ConvFFN(nn.Module):
    """BN -> 1x1 conv-BN -> GELU -> 1x1 conv-BN, + residual.

    Args:
        dim: channels.
        hidden_dim: hidden channels.
        drop_path: drop-path probability of the residual branch.
    """

    def __init__(self, dim: int, *, hidden_dim: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.preffn_bn = nn.BatchNorm2d(dim)
        self.pw1 = _conv_bn(dim, hidden_dim, 1)
        self.pw2 = _conv_bn(hidden_dim, dim, 1)
        self.nonlinear = nn.GELU()
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        return x + self.drop_path(self.pw2(self.nonlinear(self.pw1(self.preffn_bn(x)))))


class RepLKNetStage(nn.Module):
    """Optional transition (1x1 conv-BN-ReLU, 3x3 depthwise stride-2 conv-BN-ReLU), then ``depth``
    pairs of :class:`RepLKBlock` and :class:`ConvFFN`.

    Args:
        in_dim: input channels.
        dim: channels of the stage.
        depth: number of block pairs.
        kernel_size: the stage's large kernel.
        small_kernel: the re-parameterised small kernel.
        dw_ratio: depthwise channels relative to ``dim``.
        ffn_ratio: FFN hidden channels relative to ``dim``.
        drop_paths: drop-path probability of each pair.
        downsample: start with the transition (every stage but the first).
        with_cp: recompute each block in the backward pass.
    """

    def __init__(self, in_dim: int, dim: int, *, depth: int, kernel_size: int,
                 small_kernel: Optional[int], dw_ratio: float, ffn_ratio: float,
                 drop_paths: Sequence[float], downsample: bool, with_cp: bool = False) -> None:
        super().__init__()
        self.downsample = (nn.Sequential(_conv_bn(in_dim, dim, 1, relu=True),
                                         _conv_bn(dim, dim, 3, stride=2, groups=dim, relu=True))
                           if downsample else nn.Identity())
        blocks = []
        for i in range(depth):
            blocks.append(RepLKBlock(dim, dw_dim=int(dim * dw_ratio), kernel_size=kernel_size,
                                     small_kernel=small_kernel, drop_path=drop_paths[i]))
            blocks.append(ConvFFN(dim, hidden_dim=int(dim * ffn_ratio), drop_path=drop_paths[i]))
        self.blocks = nn.Sequential(*blocks)
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim, H, W]`` -> ``[B, dim, H', W']`` (``H' = ceil(H / 2)`` with downsampling)."""
        return run_blocks(self.blocks, self.downsample(x), self.with_cp)


class RepLKNet(BackboneMixin, nn.Module):
    """RepLKNet backbone returning NCHW maps at strides 4, 8, 16, 32.

    Args:
        channels: channels per stage.
        depths: RepLK block / ConvFFN pairs per stage.
        kernel_sizes: large kernel per stage.
        small_kernel: the re-parameterised small kernel (``None``: none, as RepLKNet-XL).
        dw_ratio: depthwise channels relative to the stage's.
        ffn_ratio: FFN hidden channels relative to the stage's.
        in_chans: input channels.
        out_indices: stages (0-based) whose output is returned.
        out_norm: one BatchNorm per returned map (RepLKNet-XL's ``norm_intermediate_features``).
        drop_path_rate: drop-path probability, rising linearly over all pairs to this value.
        frozen_stages: ``-1`` freezes nothing, ``0`` the stem, ``k`` the stem and stages
            ``0..k-1``; frozen modules stay in eval mode.
        norm_eval: keep every BatchNorm in eval mode while training.
        with_cp: recompute each block in the backward pass (activation checkpointing).
    """

    size_divisibility = 0

    def __init__(self, *,
                 channels: Sequence[int] = (128, 256, 512, 1024),
                 depths: Sequence[int] = (2, 2, 18, 2),
                 kernel_sizes: Sequence[int] = (31, 29, 27, 13),
                 small_kernel: Optional[int] = 5,
                 dw_ratio: float = 1.0,
                 ffn_ratio: float = 4.0,
                 in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: bool = False,
                 drop_path_rate: float = 0.0,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        if not len(channels) == len(depths) == len(kernel_sizes):
            raise ValueError(f"RepLKNet: channels={tuple(channels)}, depths={tuple(depths)} and "
                             f"kernel_sizes={tuple(kernel_sizes)} must have the same length")
        num_stages = len(depths)
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        self.dims = tuple(int(c) for c in channels)
        c0 = self.dims[0]
        self.stem = nn.Sequential(
            _conv_bn(in_chans, c0, 3, stride=2, relu=True),
            _conv_bn(c0, c0, 3, groups=c0, relu=True),
            _conv_bn(c0, c0, 1, relu=True),
            _conv_bn(c0, c0, 3, stride=2, groups=c0, relu=True))
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.stages.append(RepLKNetStage(
                self.dims[max(i - 1, 0)], self.dims[i], depth=depths[i], kernel_size=kernel_sizes[i],
                small_kernel=small_kernel, dw_ratio=dw_ratio, ffn_ratio=ffn_ratio,
                drop_paths=dpr[start:start + depths[i]], downsample=i > 0, with_cp=with_cp))
            start += depths[i]
        self._init_feature_info(self.dims, [4 * 2 ** i for i in range(num_stages)])
        self._init_out_norms(nn.BatchNorm2d if out_norm else None)
        self._freeze_stages()

    def init_weights(self) -> None:
        """PyTorch's default init, as the official code (which defines no init of its own);
        checkpoints load over it."""

    @torch.no_grad()
    def reparameterize(self) -> 'RepLKNet':
        """Fold every small kernel into its large kernel and every conv-BN pair into one conv
        (the pre-norm BatchNorms stay); eval-mode outputs are unchanged."""
        for m in list(self.modules()):
            if isinstance(m, ReparamLargeKernelConv):
                m.reparameterize()
        for m in list(self.modules()):
            if isinstance(m, nn.Sequential) and hasattr(m, 'conv') and hasattr(m, 'bn'):
                _fuse_conv_bn(m)
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, channels[i], ceil(H / s_i), ceil(W / s_i)]`` per out index."""
        return self.forward_stages(self.stem(x))


# ------------------------------------------------------------------------------------------------
# Official checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

_DENSEKIT_KEY = re.compile(r'^(stem|stages\.\d+\.(blocks|downsample)|out_norms)\.')
_CLASSIFIER_KEY = re.compile(r'^(head|norm)\.')
_TRANSITION = re.compile(r'^transitions\.(\d+)\.(.*)$')
_STAGE_NORM = re.compile(r'^stages\.(\d+)\.norm\.(.*)$')


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official RepLKNet checkpoint (ImageNet release, mmdet / mmseg checkpoints) -> densekit keys.

    ``transitions.{i}`` becomes the downsampling of stage ``i + 1`` and ``stages.{i}.norm`` (the
    XL models' output BatchNorm) ``out_norms.{i}``; stem and block keys are unchanged. The
    classifier's ``norm`` and ``head`` are dropped, a detector's ``backbone.`` prefix stripped;
    keys already in densekit's format pass through unchanged. Checkpoints of a re-parameterised
    model load into a model after :meth:`RepLKNet.reparameterize`.
    """
    out: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in strip_wrapper_prefix(state_dict).items():
        if _DENSEKIT_KEY.match(key):
            out[key] = value
        elif _CLASSIFIER_KEY.match(key):
            continue
        elif m := _TRANSITION.match(key):
            out[f'stages.{int(m.group(1)) + 1}.downsample.{m.group(2)}'] = value
        elif m := _STAGE_NORM.match(key):
            out[f'out_norms.{m.group(1)}.{m.group(2)}'] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"RepLKNet converter: unrecognised keys {unknown[:8]}"
                       f"{' ...' if len(unknown) > 8 else ''}")
    return out


register_converter('replknet', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants
# ------------------------------------------------------------------------------------------------

_ARCH = ('channels', 'depths', 'kernel_sizes', 'small_kernel', 'dw_ratio', 'ffn_ratio')


def _create_replknet(kwargs: dict, *, channels: Sequence[int], depths: Sequence[int],
                     kernel_sizes: Sequence[int], drop_path_rate: float,
                     small_kernel: Optional[int] = 5) -> RepLKNet:
    check_variant_kwargs(RepLKNet, _ARCH, kwargs)
    kwargs.setdefault('drop_path_rate', drop_path_rate)
    return RepLKNet(channels=channels, depths=depths, kernel_sizes=kernel_sizes,
                    small_kernel=small_kernel, **kwargs)


@register_backbone(name='replknet_31b')
def replknet_31b(**kwargs) -> RepLKNet:
    """RepLKNet-31B (79M params with the ImageNet head)."""
    return _create_replknet(kwargs, channels=(128, 256, 512, 1024), depths=(2, 2, 18, 2),
                            kernel_sizes=(31, 29, 27, 13), drop_path_rate=0.3)


@register_backbone(name='replknet_test')
def replknet_test(**kwargs) -> RepLKNet:
    """A tiny RepLKNet for tests (not a published model): large kernels wider than the maps of a
    small input, the 5x5 re-parameterised branch."""
    return _create_replknet(kwargs, channels=(8, 16, 24, 32), depths=(1, 1, 2, 1),
                            kernel_sizes=(13, 11, 9, 7), drop_path_rate=0.1)
