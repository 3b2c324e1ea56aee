"""UniRepLKNet: a large-kernel ConvNet with dilated re-parameterised depthwise convolutions.

Paper: X. Ding, Y. Zhang, Y. Ge, S. Zhao, L. Song, X. Yue, Y. Shan, "UniRepLKNet: A Universal
Perception Large-Kernel ConvNet for Audio, Video, Point Cloud, Time-Series and Image Recognition",
CVPR 2024, https://arxiv.org/abs/2311.15599.

The numerics follow the official DENSE backbone, ``UniRepLKNetBackbone`` of AILab-CVC/UniRepLKNet
(``detection/mmdet_custom/models/backbones/unireplknet.py``, the same model as the core
``unireplknet.py`` in feature mode): a two-convolution stem (3x3 stride 2, LayerNorm, GELU, 3x3
stride 2, LayerNorm), a 3x3 stride-2 convolution + LayerNorm at the start of every later stage,
and blocks of

    depthwise conv (3x3, or 13x13 with parallel dilated branches) -> BatchNorm -> SE ->
    Linear -> GELU -> GRN -> Linear -> BatchNorm -> layer scale -> + residual

with one channels-first LayerNorm (eps 1e-6) per returned map. A 13x13 block trains the large
kernel and five small dilated depthwise kernels side by side, each with its own BatchNorm
(``DilatedReparamBlock``); :meth:`UniRepLKNet.reparameterize` folds the branches, every BatchNorm,
the GRN bias and the layer scale into the convolutions and linears for inference, as the official
``reparameterize_unireplknet``. The official SyncBN is a plain ``nn.BatchNorm2d`` here (convert a
model with ``nn.SyncBatchNorm.convert_sync_batchnorm`` for synchronised statistics).

Every convolution pads by half its (dilated) kernel, so a stride-``s`` map has ``ceil(H / s)`` rows
and any input size works (``size_divisibility = 0``). The large kernel and its dilated branches are
:class:`~densekit.layers.LargeKernelConv2d` (:func:`densekit.ops.large_kernel.large_kernel_conv2d`:
``F.conv2d`` by default, the Triton kernels by name), fused kernels too.
"""
from __future__ import annotations

import re
from functools import partial
from typing import Dict, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from densekit.layers import (DropPath, LargeKernelConv2d, LayerNorm2d, drop_path_schedule, init_trunc_normal_,
                             run_blocks)
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone

__all__ = ['UniRepLKNet', 'DilatedReparamBlock', 'UniRepLKNetBlock', 'checkpoint_filter_fn']

# Dilated branches (kernel sizes, dilations) next to a large kernel of the given size, as the
# official ``DilatedReparamBlock``.
_DILATED_BRANCHES = {
    17: ((5, 9, 3, 3, 3), (1, 2, 4, 5, 7)),
    15: ((5, 7, 3, 3, 3), (1, 2, 3, 5, 7)),
    13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5)),
    11: ((5, 5, 3, 3, 3), (1, 2, 3, 4, 5)),
    9: ((5, 5, 3, 3), (1, 2, 3, 4)),
    7: ((5, 3, 3), (1, 2, 3)),
    5: ((3, 3), (1, 2)),
}


def _fuse_bn(weight: torch.Tensor, bias: Optional[torch.Tensor],
             bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution (eval-mode statistics)."""
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    bias = torch.zeros_like(bn.running_mean) if bias is None else bias
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias + (bias - bn.running_mean) * scale


def _dilate_kernel(kernel: torch.Tensor, dilation: int) -> torch.Tensor:
    """``[C, 1, k, k]`` depthwise kernel -> the equivalent undilated ``[C, 1, d(k-1)+1, d(k-1)+1]``."""
    if dilation == 1:
        return kernel
    c, _, k, _ = kernel.shape
    out = kernel.new_zeros(c, 1, dilation * (k - 1) + 1, dilation * (k - 1) + 1)
    out[:, :, ::dilation, ::dilation] = kernel
    return out


class DilatedReparamBlock(nn.Module):
    """Depthwise ``k x k`` convolution + BatchNorm plus dilated depthwise branches with their own
    BatchNorms, summed; :meth:`reparameterize` folds all of it into one ``k x k`` conv with bias.

    Args:
        channels: channels (depthwise).
        kernel_size: the large kernel (5, 7, 9, 11, 13, 15 or 17).
    """

    def __init__(self, channels: int, *, kernel_size: int) -> None:
        super().__init__()
        if kernel_size not in _DILATED_BRANCHES:
            raise ValueError(f"DilatedReparamBlock: kernel_size={kernel_size} must be one of "
                             f"{sorted(_DILATED_BRANCHES)}")
        self.kernel_sizes, self.dilates = _DILATED_BRANCHES[kernel_size]
        self.lk_origin = LargeKernelConv2d(channels, kernel_size, bias=False)
        self.origin_bn = nn.BatchNorm2d(channels)
        for k, r in zip(self.kernel_sizes, self.dilates):
            setattr(self, f'dil_conv_k{k}_{r}', LargeKernelConv2d(channels, k, dilation=r, bias=False))
            setattr(self, f'dil_bn_k{k}_{r}', nn.BatchNorm2d(channels))
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        if self.fused:
            return self.lk_origin(x)
        out = self.origin_bn(self.lk_origin(x))
        for k, r in zip(self.kernel_sizes, self.dilates):
            out = out + getattr(self, f'dil_bn_k{k}_{r}')(getattr(self, f'dil_conv_k{k}_{r}')(x))
        return out

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by one ``k x k`` depthwise convolution with bias (``lk_origin``)."""
        if self.fused:
            return
        weight, bias = _fuse_bn(self.lk_origin.weight, None, self.origin_bn)
        large = weight.shape[-1]
        for k, r in zip(self.kernel_sizes, self.dilates):
            w, b = _fuse_bn(getattr(self, f'dil_conv_k{k}_{r}').weight, None,
                            getattr(self, f'dil_bn_k{k}_{r}'))
            w = _dilate_kernel(w, r)
            pad = large // 2 - w.shape[-1] // 2
            weight = weight + F.pad(w, [pad] * 4)
            bias = bias + b
            delattr(self, f'dil_conv_k{k}_{r}')
            delattr(self, f'dil_bn_k{k}_{r}')
        conv = LargeKernelConv2d.like(self.lk_origin)
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
        self.lk_origin = conv
        del self.origin_bn
        self.fused = True


class SEBlock(nn.Module):
    """Squeeze-and-excitation with a ReLU bottleneck and sigmoid gate (``down`` / ``up`` 1x1 convs).

    Args:
        dim: channels.
        hidden_dim: bottleneck channels.
    """

    def __init__(self, dim: int, *, hidden_dim: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(dim, hidden_dim, 1)
        self.up = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.up(F.relu(self.down(s))))


class GRN(nn.Module):
    """Global response normalisation (ConvNeXt V2) on ``[B, H, W, C]``: ``(gamma * N(x) + 1) * x
    + beta`` with ``N(x) = ||x||_HW / (mean_C ||x||_HW + 1e-6)``; ``beta`` is absent after fusion.

    Args:
        dim: channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta: Optional[nn.Parameter] = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        out = (self.gamma * nx + 1) * x
        return out if self.beta is None else out + self.beta


class UniRepLKNetBlock(nn.Module):
    """Depthwise conv -> BatchNorm -> SE -> Linear -> GELU -> GRN -> Linear -> BatchNorm -> layer
    scale, added to the input.

    Args:
        dim: channels.
        kernel_size: depthwise kernel; ``>= 7`` uses :class:`DilatedReparamBlock`, 3 or 5 a plain
            depthwise convolution.
        drop_path: drop-path probability of the residual branch.
        ffn_ratio: hidden width of the FFN relative to ``dim``.
        layer_scale_init_value: initial value of ``gamma``.
    """

    def __init__(self, dim: int, *, kernel_size: int, drop_path: float = 0.0, ffn_ratio: float = 4.0,
                 layer_scale_init_value: float = 1e-6) -> None:
        super().__init__()
        if kernel_size >= 7:
            self.dwconv: nn.Module = DilatedReparamBlock(dim, kernel_size=kernel_size)
        elif kernel_size in (3, 5):
            self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim,
                                    bias=False)
        else:
            raise ValueError(f"UniRepLKNetBlock: kernel_size={kernel_size} must be 3, 5 or >= 7")
        self.norm: nn.Module = nn.BatchNorm2d(dim)
        self.se = SEBlock(dim, hidden_dim=dim // 4)
        hidden = int(ffn_ratio * dim)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.grn = GRN(hidden)
        self.pwconv2 = nn.Linear(hidden, dim, bias=False)
        self.ffn_norm: nn.Module = nn.BatchNorm2d(dim)
        self.gamma: Optional[nn.Parameter] = nn.Parameter(
            torch.full((dim,), float(layer_scale_init_value)))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        y = self.se(self.norm(self.dwconv(x)))
        y = self.grn(self.act(self.pwconv1(y.permute(0, 2, 3, 1))))
        y = self.ffn_norm(self.pwconv2(y).permute(0, 3, 1, 2))
        if self.gamma is not None:
            y = self.gamma.view(1, -1, 1, 1) * y
        return x + self.drop_path(y)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the dilated branches and the depthwise BatchNorm into ``dwconv``, the GRN bias, the
        FFN BatchNorm and the layer scale into ``pwconv2`` (eval-mode numerics unchanged)."""
        if isinstance(self.dwconv, DilatedReparamBlock):
            self.dwconv.reparameterize()
            conv = self.dwconv.lk_origin
        else:
            conv = self.dwconv
        if isinstance(self.norm, nn.BatchNorm2d):
            weight, bias = _fuse_bn(conv.weight, conv.bias, self.norm)
            if isinstance(conv, LargeKernelConv2d):
                fused = LargeKernelConv2d.like(conv)
            else:
                fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                                  padding=conv.padding, groups=conv.groups,
                                  bias=True).to(weight.device, weight.dtype)
            fused.weight.copy_(weight)
            fused.bias.copy_(bias)
            if isinstance(self.dwconv, DilatedReparamBlock):
                self.dwconv.lk_origin = fused
            else:
                self.dwconv = fused
            self.norm = nn.Identity()
        if isinstance(self.ffn_norm, nn.BatchNorm2d):
            bn = self.ffn_norm
            scale = bn.weight / (bn.running_var + bn.eps).sqrt()
            gamma = self.gamma if self.gamma is not None else torch.ones_like(scale)
            lin = self.pwconv2
            bias = torch.zeros_like(scale) if lin.bias is None else lin.bias
            if self.grn.beta is not None:
                bias = bias + lin.weight @ self.grn.beta.reshape(-1)
                self.grn.beta = None
            fused = nn.Linear(lin.in_features, lin.out_features, bias=True).to(scale.device, scale.dtype)
            fused.weight.copy_(lin.weight * (scale * gamma)[:, None])
            fused.bias.copy_((bn.bias + (bias - bn.running_mean) * scale) * gamma)
            self.pwconv2 = fused
            self.ffn_norm = nn.Identity()
            self.gamma = None


class UniRepLKNetStage(nn.Module):
    """Optional downsampling (3x3 stride-2 conv + LayerNorm), then the blocks.

    Args:
        in_dim: input channels.
        dim: channels of the stage.
        kernel_sizes: depthwise kernel of each block.
        drop_paths: drop-path probability of each block.
        downsample: start with the stride-2 convolution (every stage but the first).
        layer_scale_init_value: initial layer scale.
        with_cp: recompute each block in the backward pass.
    """

    def __init__(self, in_dim: int, dim: int, *, kernel_sizes: Sequence[int],
                 drop_paths: Sequence[float], downsample: bool,
                 layer_scale_init_value: float = 1e-6, with_cp: bool = False) -> None:
        super().__init__()
        self.downsample = (nn.Sequential(nn.Conv2d(in_dim, dim, 3, stride=2, padding=1),
                                         LayerNorm2d(dim, eps=1e-6))
                           if downsample else nn.Identity())
        self.blocks = nn.Sequential(*[
            UniRepLKNetBlock(dim, kernel_size=k, drop_path=drop_paths[i],
                             layer_scale_init_value=layer_scale_init_value)
            for i, k in enumerate(kernel_sizes)])
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim, H, W]`` -> ``[B, dim, H', W']`` (``H' = ceil(H / 2)`` with downsampling)."""
        return run_blocks(self.blocks, self.downsample(x), self.with_cp)


class UniRepLKNet(BackboneMixin, nn.Module):
    """UniRepLKNet backbone returning LayerNorm-ed NCHW maps at strides 4, 8, 16, 32.

    Args:
        dims: channels per stage.
        kernel_sizes: depthwise kernel of every block, per stage (the length of each entry is the
            stage's depth).
        in_chans: input channels.
        out_indices: stages (0-based) whose output is returned.
        drop_path_rate: drop-path probability, rising linearly over all blocks to this value.
        layer_scale_init_value: initial layer scale.
        frozen_stages: ``-1`` freezes nothing, ``0`` the stem, ``k`` the stem and stages
            ``0..k-1``; frozen modules stay in eval mode.
        norm_eval: keep every BatchNorm in eval mode while training.
        with_cp: recompute each block in the backward pass (activation checkpointing).
    """

    size_divisibility = 0

    def __init__(self, *,
                 dims: Sequence[int] = (80, 160, 320, 640),
                 kernel_sizes: Sequence[Sequence[int]] = ((3,) * 3, (13,) * 3, (13, 3) * 9, (13,) * 3),
                 in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        if len(dims) != len(kernel_sizes):
            raise ValueError(f"UniRepLKNet: dims={tuple(dims)} and kernel_sizes (one tuple per "
                             f"stage, {len(kernel_sizes)} given) must have the same length")
        num_stages = len(dims)
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        self.dims = tuple(int(d) for d in dims)
        depths = [len(k) for k in kernel_sizes]

        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, self.dims[0] // 2, 3, stride=2, padding=1),
            LayerNorm2d(self.dims[0] // 2, eps=1e-6),
            nn.GELU(),
            nn.Conv2d(self.dims[0] // 2, self.dims[0], 3, stride=2, padding=1),
            LayerNorm2d(self.dims[0], eps=1e-6))
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.stages.append(UniRepLKNetStage(
                self.dims[max(i - 1, 0)], self.dims[i], kernel_sizes=tuple(kernel_sizes[i]),
                drop_paths=dpr[start:start + depths[i]], downsample=i > 0,
                layer_scale_init_value=layer_scale_init_value, with_cp=with_cp))
            start += depths[i]
        self._init_feature_info(self.dims, [4 * 2 ** i for i in range(num_stages)])
        self._init_out_norms(partial(LayerNorm2d, eps=1e-6))
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """Random init of the official code: truncated-normal (std 0.02) convolutions and linears,
        zero biases, unit norms, zero GRN; checkpoints load over it."""
        init_trunc_normal_(self, conv=True)

    @torch.no_grad()
    def reparameterize(self) -> 'UniRepLKNet':
        """Fuse every block for inference (see :meth:`UniRepLKNetBlock.reparameterize`); eval-mode
        outputs are unchanged. A fused model loads the official deploy-mode checkpoints."""
        for m in self.modules():
            if isinstance(m, UniRepLKNetBlock):
                m.reparameterize()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, dims[i], ceil(H / s_i), ceil(W / s_i)]`` per out index."""
        return self.forward_stages(self.stem(x))


# ------------------------------------------------------------------------------------------------
# Official checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

_DENSEKIT_KEY = re.compile(r'^(stem|stages|out_norms)\.')
_CLASSIFIER_KEY = re.compile(r'^(head|norm)\.')
_DOWNSAMPLE = re.compile(r'^downsample_layers\.(\d+)\.(.*)$')
_BLOCK = re.compile(r'^stages\.(\d+)\.(\d+)\.(.*)$')
_OUT_NORM = re.compile(r'^norm(\d+)\.(.*)$')
_BLOCK_RENAMES = (('pwconv1.1.', 'pwconv1.'), ('act.1.', 'grn.'), ('pwconv2.0.', 'pwconv2.'),
                  ('pwconv2.2.', 'ffn_norm.'))


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official UniRepLKNet checkpoint (ImageNet release, mmdet / mmseg ``UniRepLKNetBackbone``
    checkpoints, training or deploy mode) -> densekit keys.

    ``downsample_layers.0`` becomes the stem, ``downsample_layers.{i}`` (``i >= 1``) the
    downsampling of stage ``i``, ``stages.{i}.{j}`` its blocks (the FFN's ``Sequential`` indices
    become ``pwconv1`` / ``grn`` / ``pwconv2`` / ``ffn_norm``) and ``norm{i}`` the output norm of
    stage ``i``. The classifier's ``norm`` and ``head`` are dropped, a detector's ``backbone.``
    prefix stripped; keys already in densekit's format pass through unchanged. Deploy-mode
    checkpoints load into a model after :meth:`UniRepLKNet.reparameterize`.
    """
    out: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in strip_wrapper_prefix(state_dict).items():
        if m := _BLOCK.match(key):
            rest = m.group(3)
            for old, new in _BLOCK_RENAMES:
                if rest.startswith(old):
                    rest = new + rest[len(old):]
            out[f'stages.{m.group(1)}.blocks.{m.group(2)}.{rest}'] = value
        elif _DENSEKIT_KEY.match(key):
            out[key] = value
        elif _CLASSIFIER_KEY.match(key):
            continue
        elif m := _DOWNSAMPLE.match(key):
            i = int(m.group(1))
            out[f'stem.{m.group(2)}' if i == 0 else f'stages.{i}.downsample.{m.group(2)}'] = value
        elif m := _OUT_NORM.match(key):
            out[f'out_norms.{m.group(1)}.{m.group(2)}'] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"UniRepLKNet converter: unrecognised keys {unknown[:8]}"
                       f"{' ...' if len(unknown) > 8 else ''}")
    return out


register_converter('unireplknet', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants
# ------------------------------------------------------------------------------------------------

_ARCH = ('dims', 'kernel_sizes')

# The official default kernels (``default_UniRepLKNet_*_kernel_sizes``).
_KERNELS_T = ((3,) * 3, (13,) * 3, (13, 3) * 9, (13,) * 3)
_KERNELS_S_B = ((3,) * 3, (13,) * 3, (13, 3, 3) * 9, (13,) * 3)


def _create_unireplknet(kwargs: dict, *, dims: Sequence[int],
                        kernel_sizes: Sequence[Sequence[int]], drop_path_rate: float) -> UniRepLKNet:
    check_variant_kwargs(UniRepLKNet, _ARCH, kwargs)
    kwargs.setdefault('drop_path_rate', drop_path_rate)
    return UniRepLKNet(dims=dims, kernel_sizes=kernel_sizes, **kwargs)


@register_backbone(name='unireplknet_t')
def unireplknet_t(**kwargs) -> UniRepLKNet:
    """UniRepLKNet-T (31M params with the ImageNet head); drop path 0.2 of the UPerNet config."""
    return _create_unireplknet(kwargs, dims=(80, 160, 320, 640), kernel_sizes=_KERNELS_T,
                               drop_path_rate=0.2)


@register_backbone(name='unireplknet_s')
def unireplknet_s(**kwargs) -> UniRepLKNet:
    """UniRepLKNet-S (56M)."""
    return _create_unireplknet(kwargs, dims=(96, 192, 384, 768), kernel_sizes=_KERNELS_S_B,
                               drop_path_rate=0.3)


@register_backbone(name='unireplknet_b')
def unireplknet_b(**kwargs) -> UniRepLKNet:
    """UniRepLKNet-B (98M)."""
    return _create_unireplknet(kwargs, dims=(128, 256, 512, 1024), kernel_sizes=_KERNELS_S_B,
                               drop_path_rate=0.4)


@register_backbone(name='unireplknet_test')
def unireplknet_test(**kwargs) -> UniRepLKNet:
    """A tiny UniRepLKNet for tests (not a published model): 3x3 and 13x13 dilated blocks, the
    13x13 kernel (and its dilation-5 branch) wider than the deepest maps of a small input."""
    return _create_unireplknet(kwargs, dims=(8, 16, 24, 32),
                               kernel_sizes=((3,), (13,), (13, 3), (13,)), drop_path_rate=0.1)
