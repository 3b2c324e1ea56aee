"""HorNet: a ConvNeXt-like backbone whose spatial mixing is the recursive gated convolution gnConv.

Paper: Y. Rao, W. Zhao, Y. Tang, J. Zhou, S.-N. Lim, J. Lu, "HorNet: Efficient High-Order Spatial
Interactions with Recursive Gated Convolutions", NeurIPS 2022, https://arxiv.org/abs/2207.14284.

The numerics follow the official dense backbone (``object_detection/models/hornet.py`` and
``semantic_segmentation/models/hornet.py`` of raoyongming/HorNet, identical apart from logging):
ConvNeXt's layout (4x4 stride-4 stem + LayerNorm, LayerNorm + 2x2 stride-2 downsampling, a
LayerNorm on every returned map) with blocks ``x + gamma1 * gnConv(LN(x))``, ``x + gamma2 *
MLP(LN(x))``. The gnConv of stage ``i`` has order ``i + 2`` and filters its gates either with a
7x7 depthwise convolution or, in the ``_gf`` models' last two stages, with the global-local filter
(half the channels through a 3x3 depthwise convolution, half through a learnable filter in the 2-D
real FFT domain). The FFT filter has a fixed size tied to the pretraining resolution
(``gf_sizes``: 14x8 and 7x4 for 224x224 ImageNet, 24x13 and 12x7 in the official ADE20K configs):
in the forward pass it is bilinearly resized (``align_corners=True``) to the spectrum of the
current map, and a checkpoint whose filter size differs from the model's is resized the same way
when it is loaded, as the official ``load_checkpoint`` does.

Like ConvNeXt, HorNet does not pad: a stride-``s`` map has ``floor(H / s)`` rows, so the maps of
different stages align exactly only for inputs divisible by 32 (``size_divisibility``).
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp

from densekit.layers import DropPath, LayerNorm2d, drop_path_schedule, init_trunc_normal_, run_blocks
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone

__all__ = ['HorNet', 'GnConv', 'GlobalLocalFilter', 'checkpoint_filter_fn']


def _resize_filter(weight: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``[C, h, w, 2]`` (real, imaginary) filter -> ``[C, size[0], size[1], 2]``, bilinear with
    aligned corners on the real and imaginary parts (the official resize, in forward and loading)."""
    w = F.interpolate(weight.permute(3, 0, 1, 2), size=tuple(size), mode='bilinear', align_corners=True)
    return w.permute(1, 2, 3, 0)


class GlobalLocalFilter(nn.Module):
    """LayerNorm, then half the channels through a 3x3 depthwise conv and half through a global
    filter in the real-FFT domain (``rfft2`` -> complex product -> ``irfft2``, orthonormal),
    interleaved channel by channel, then LayerNorm.

    Args:
        dim: channels (even).
        size: ``(h, w)`` of the learnable spectrum, ``[dim // 2, h, w, 2]``; ``w`` is the rfft
            width ``W // 2 + 1`` of the map it was trained on. Other map sizes resize it.
    """

    def __init__(self, dim: int, *, size: Tuple[int, int] = (14, 8)) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"GlobalLocalFilter: dim={dim} must be even")
        self.dw = nn.Conv2d(dim // 2, dim // 2, kernel_size=3, padding=1, bias=False, groups=dim // 2)
        self.complex_weight = nn.Parameter(torch.empty(dim // 2, size[0], size[1], 2))
        nn.init.trunc_normal_(self.complex_weight, std=0.02)
        self.pre_norm = LayerNorm2d(dim, eps=1e-6)
        self.post_norm = LayerNorm2d(dim, eps=1e-6)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + 'complex_weight'
        if key in state_dict and state_dict[key].shape[1:3] != self.complex_weight.shape[1:3]:
            state_dict[key] = _resize_filter(state_dict[key], self.complex_weight.shape[1:3])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        x = self.pre_norm(x)
        x1, x2 = torch.chunk(x, 2, dim=1)
        x1 = self.dw(x1)
        B, C, H, W = x2.shape
        # The FFT runs in fp32 (also under autocast), as the official code.
        x2 = torch.fft.rfft2(x2.float(), dim=(2, 3), norm='ortho')
        weight = self.complex_weight
        if weight.shape[1:3] != x2.shape[2:4]:
            weight = _resize_filter(weight, x2.shape[2:4])
        x2 = x2 * torch.view_as_complex(weight.contiguous())
        x2 = torch.fft.irfft2(x2, s=(H, W), dim=(2, 3), norm='ortho')
        x = torch.stack([x1, x2], dim=2).reshape(B, 2 * C, H, W)  # channels x1[0], x2[0], x1[1], ...
        return self.post_norm(x)


class GnConv(nn.Module):
    """Recursive gated convolution of order ``n``: a 1x1 projection splits into a gate ``p_0`` and
    filtered features ``q_0..q_{n-1}`` (widths ``dim / 2^(n-1) .. dim``); then
    ``p_{k+1} = pw_k(p_k) * q_k`` and a 1x1 output projection.

    Args:
        dim: channels.
        order: interaction order ``n``.
        gf_size: ``None`` filters with a 7x7 depthwise conv, ``(h, w)`` with a
            :class:`GlobalLocalFilter` of that spectrum size.
        scale: factor on the filtered features (1/3 in every published model).
    """

    def __init__(self, dim: int, *, order: int = 5, gf_size: Optional[Tuple[int, int]] = None,
                 scale: float = 1.0) -> None:
        super().__init__()
        if order < 1 or dim % 2 ** (order - 1):
            raise ValueError(f"GnConv: dim={dim} must be divisible by 2 ** (order - 1) (order={order})")
        self.order = order
        self.dims = [dim // 2 ** i for i in range(order)][::-1]
        self.proj_in = nn.Conv2d(dim, 2 * dim, 1)
        if gf_size is None:
            self.dwconv = nn.Conv2d(sum(self.dims), sum(self.dims), kernel_size=7, padding=3,
                                    groups=sum(self.dims))
        else:
            self.dwconv = GlobalLocalFilter(sum(self.dims), size=tuple(gf_size))
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.pws = nn.ModuleList([nn.Conv2d(self.dims[i], self.dims[i + 1], 1) for i in range(order - 1)])
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        pwa, abc = torch.split(self.proj_in(x), (self.dims[0], sum(self.dims)), dim=1)
        dw_list = torch.split(self.dwconv(abc) * self.scale, self.dims, dim=1)
        x = pwa * dw_list[0]
        for i in range(self.order - 1):
            x = self.pws[i](x) * dw_list[i + 1]
        return self.proj_out(x)


class HorNetBlock(nn.Module):
    """``x + gamma1 * gnConv(LN(x))``, then ``x + gamma2 * MLP(LN(x))`` (MLP channels-last).

    Args:
        dim: channels.
        order: gnConv order.
        gf_size: gnConv filter (see :class:`GnConv`).
        gnconv_scale: gnConv's ``scale``.
        drop_path: drop-path probability of both residual branches.
        layer_scale_init_value: initial layer scale; ``<= 0`` disables it.
        mlp_ratio: MLP width relative to ``dim``.
    """

    def __init__(self, dim: int, *, order: int, gf_size: Optional[Tuple[int, int]] = None,
                 gnconv_scale: float = 1.0 / 3.0, drop_path: float = 0.0,
                 layer_scale_init_value: float = 1e-6, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.gnconv = GnConv(dim, order=order, gf_size=gf_size, scale=gnconv_scale)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))
        if layer_scale_init_value > 0:
            self.gamma1 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
            self.gamma2 = nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
        else:
            self.gamma1 = self.gamma2 = None
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        y = self.gnconv(self.norm1(x))
        if self.gamma1 is not None:
            y = self.gamma1[:, None, None] * y
        x = x + self.drop_path(y)
        y = self.mlp(self.norm2(x.permute(0, 2, 3, 1)))
        if self.gamma2 is not None:
            y = self.gamma2 * y
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class HorNetStage(nn.Module):
    """Optional downsampling (LayerNorm + 2x2 stride-2 conv) followed by ``depth`` blocks.

    Args:
        in_dim: input channels.
        dim: channels of the stage.
        depth: number of blocks.
        order: gnConv order of its blocks.
        gf_size: gnConv filter of its blocks (``None``: 7x7 depthwise).
        gnconv_scale: gnConv's ``scale``.
        drop_paths: drop-path probability of each block.
        layer_scale_init_value: initial layer scale.
        downsample: start with the downsampling layer (every stage but the first).
        with_cp: recompute each block in the backward pass.
    """

    def __init__(self, in_dim: int, dim: int, *, depth: int, order: int,
                 gf_size: Optional[Tuple[int, int]], gnconv_scale: float,
                 drop_paths: Sequence[float], layer_scale_init_value: float, downsample: bool,
                 with_cp: bool = False) -> None:
        super().__init__()
        if downsample:
            self.downsample = nn.Sequential(LayerNorm2d(in_dim, eps=1e-6),
                                            nn.Conv2d(in_dim, dim, kernel_size=2, stride=2))
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[
            HorNetBlock(dim, order=order, gf_size=gf_size, gnconv_scale=gnconv_scale,
                        drop_path=drop_paths[i], layer_scale_init_value=layer_scale_init_value)
            for i in range(depth)])
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_blocks(self.blocks, self.downsample(x), self.with_cp)


class HorNet(BackboneMixin, nn.Module):
    """HorNet backbone returning NCHW maps at strides 4, 8, 16, 32.

    Args:
        base_dim: channels of the first stage (doubling per stage).
        depths: blocks per stage.
        orders: gnConv order per stage.
        gf_sizes: per stage ``None`` (7x7 depthwise gnConv filter) or the ``(h, w)`` spectrum size
            of its global-local filter.
        gnconv_scale: gnConv's ``scale``.
        in_chans: input channels.
        out_indices: stages (0-based) whose output is returned.
        out_norm: a LayerNorm on every returned map, as the official dense backbone.
        drop_path_rate: drop-path probability, rising linearly over all blocks to this value.
        layer_scale_init_value: initial layer scale (``<= 0`` disables it).
        frozen_stages: ``-1`` freezes nothing, ``0`` the stem, ``k`` the stem and stages
            ``0..k-1`` (with their output norms); frozen modules stay in eval mode.
        norm_eval: keep BatchNorms in eval mode while training (HorNet has none; accepted for the
            common contract).
        with_cp: recompute each block in the backward pass (activation checkpointing).
    """

    size_divisibility = 32

    def __init__(self, *,
                 base_dim: int = 64,
                 depths: Sequence[int] = (2, 3, 18, 2),
                 orders: Sequence[int] = (2, 3, 4, 5),
                 gf_sizes: Sequence[Optional[Tuple[int, int]]] = (None, None, None, None),
                 gnconv_scale: float = 1.0 / 3.0,
                 in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: bool = True,
                 drop_path_rate: float = 0.0,
                 layer_scale_init_value: float = 1e-6,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        if not len(depths) == len(orders) == len(gf_sizes):
            raise ValueError(f"HorNet: depths={tuple(depths)}, orders={tuple(orders)} and "
                             f"gf_sizes={tuple(gf_sizes)} must have the same length")
        num_stages = len(depths)
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        self.dims = tuple(base_dim * 2 ** i for i in range(num_stages))

        self.stem = nn.Sequential(nn.Conv2d(in_chans, self.dims[0], kernel_size=4, stride=4),
                                  LayerNorm2d(self.dims[0], eps=1e-6))
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.stages.append(HorNetStage(
                self.dims[max(i - 1, 0)], self.dims[i], depth=depths[i], order=orders[i],
                gf_size=gf_sizes[i], gnconv_scale=gnconv_scale,
                drop_paths=dpr[start:start + depths[i]],
                layer_scale_init_value=layer_scale_init_value, downsample=i > 0, with_cp=with_cp))
            start += depths[i]
        self._init_feature_info(self.dims, [4 * 2 ** i for i in range(num_stages)])
        self._init_out_norms((lambda c: LayerNorm2d(c, eps=1e-6)) if out_norm else None)
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """Random init of the paper (truncated normal, std 0.02, for convolutions, linear layers
        and the FFT filters; unit LayerNorms); checkpoints load over it."""
        init_trunc_normal_(self, conv=True)
        for m in self.modules():
            if isinstance(m, GlobalLocalFilter):
                nn.init.trunc_normal_(m.complex_weight, std=0.02)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, dims[i], H // s_i, W // s_i]`` map per out index."""
        return self.forward_stages(self.stem(x))


# ------------------------------------------------------------------------------------------------
# Official checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

_OFFICIAL_RULES = (
    (re.compile(r'^downsample_layers\.0\.'), 'stem.'),
    (re.compile(r'^downsample_layers\.(\d+)\.'), r'stages.\1.downsample.'),
    (re.compile(r'^stages\.(\d+)\.(\d+)\.pwconv([12])\.'), r'stages.\1.blocks.\2.mlp.fc\3.'),
    (re.compile(r'^stages\.(\d+)\.(\d+)\.'), r'stages.\1.blocks.\2.'),
    (re.compile(r'^norm(\d+)\.'), r'out_norms.\1.'),
)
_DENSEKIT_KEY = re.compile(r'^(stem|stages\.\d+\.(downsample|blocks)|out_norms)\.')
# The classifier's final ``norm`` (after global pooling) is not one of the per-output norms.
_CLASSIFIER_KEY = re.compile(r'^(head|norm)\.')


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official HorNet checkpoint (ImageNet release, mmdet / mmseg checkpoint) -> densekit keys.

    ``downsample_layers.0`` becomes the stem, ``downsample_layers.{i}`` the downsampling of stage
    ``i``, ``stages.{i}.{j}`` its blocks (``pwconv1/2`` -> ``mlp.fc1/fc2``) and the dense
    checkpoints' ``norm{i}`` the output norms. The classifier (``head``, final ``norm``) is
    dropped, a detector's ``backbone.`` prefix stripped; densekit keys pass through unchanged.
    FFT filters keep their size: loading resizes them to the model's ``gf_sizes``.
    """
    out: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in strip_wrapper_prefix(state_dict).items():
        if _DENSEKIT_KEY.match(key):
            out[key] = value
            continue
        if _CLASSIFIER_KEY.match(key):
            continue
        for pattern, repl in _OFFICIAL_RULES:
            if pattern.match(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"HorNet converter: unrecognised keys {unknown[:8]}"
                       f"{' ...' if len(unknown) > 8 else ''}")
    return out


register_converter('hornet', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants
# ------------------------------------------------------------------------------------------------

_ARCH = ('base_dim', 'depths', 'orders', 'gnconv_scale')
# Spectrum sizes of the ImageNet-224 models (maps 14x14 and 7x7); the official ADE20K configs
# use ((24, 13), (12, 7)) and mmdet's COCO configs the ImageNet sizes.
GF_SIZES_224 = (None, None, (14, 8), (7, 4))


def _create_hornet(kwargs: dict, *, base_dim: int, gf: bool, drop_path_rate: float) -> HorNet:
    """The published depths (2, 3, 18, 2) and orders 2..5; ``drop_path_rate`` defaults to the
    official UPerNet ADE20K config's."""
    check_variant_kwargs(HorNet, _ARCH if gf else _ARCH + ('gf_sizes',), kwargs)
    kwargs.setdefault('drop_path_rate', drop_path_rate)
    if gf:
        sizes = kwargs.setdefault('gf_sizes', GF_SIZES_224)
        if len(sizes) != 4 or any(s is not None for s in sizes[:2]) or any(s is None for s in sizes[2:]):
            raise ValueError(f"HorNet _gf variants filter the last two stages globally: "
                             f"gf_sizes={kwargs['gf_sizes']} must be (None, None, (h, w), (h, w))")
    return HorNet(base_dim=base_dim, depths=(2, 3, 18, 2), orders=(2, 3, 4, 5), **kwargs)


@register_backbone(name='hornet_tiny_7x7')
def hornet_tiny_7x7(**kwargs) -> HorNet:
    """HorNet-T (7x7), 22M params with the ImageNet head."""
    return _create_hornet(kwargs, base_dim=64, gf=False, drop_path_rate=0.4)


@register_backbone(name='hornet_tiny_gf')
def hornet_tiny_gf(**kwargs) -> HorNet:
    """HorNet-T (GF), 23M."""
    return _create_hornet(kwargs, base_dim=64, gf=True, drop_path_rate=0.4)


@register_backbone(name='hornet_small_7x7')
def hornet_small_7x7(**kwargs) -> HorNet:
    """HorNet-S (7x7), 50M."""
    return _create_hornet(kwargs, base_dim=96, gf=False, drop_path_rate=0.3)


@register_backbone(name='hornet_small_gf')
def hornet_small_gf(**kwargs) -> HorNet:
    """HorNet-S (GF), 50M."""
    return _create_hornet(kwargs, base_dim=96, gf=True, drop_path_rate=0.3)


@register_backbone(name='hornet_base_7x7')
def hornet_base_7x7(**kwargs) -> HorNet:
    """HorNet-B (7x7), 87M."""
    return _create_hornet(kwargs, base_dim=128, gf=False, drop_path_rate=0.4)


@register_backbone(name='hornet_base_gf')
def hornet_base_gf(**kwargs) -> HorNet:
    """HorNet-B (GF), 88M."""
    return _create_hornet(kwargs, base_dim=128, gf=True, drop_path_rate=0.5)


@register_backbone(name='hornet_large_7x7')
def hornet_large_7x7(**kwargs) -> HorNet:
    """HorNet-L (7x7) (ImageNet-22k weights)."""
    return _create_hornet(kwargs, base_dim=192, gf=False, drop_path_rate=0.4)


@register_backbone(name='hornet_large_gf')
def hornet_large_gf(**kwargs) -> HorNet:
    """HorNet-L (GF) (ImageNet-22k weights)."""
    return _create_hornet(kwargs, base_dim=192, gf=True, drop_path_rate=0.4)


@register_backbone(name='hornet_test')
def hornet_test(**kwargs) -> HorNet:
    """A tiny HorNet for tests (not a published model): orders 2..5, 7x7 filters in the first
    two stages and global-local filters (resized to every map) in the last two."""
    check_variant_kwargs(HorNet, _ARCH, kwargs)
    kwargs.setdefault('drop_path_rate', 0.1)
    kwargs.setdefault('gf_sizes', (None, None, (4, 3), (2, 2)))
    return HorNet(base_dim=16, depths=(1, 1, 2, 1), orders=(2, 3, 4, 5), **kwargs)
