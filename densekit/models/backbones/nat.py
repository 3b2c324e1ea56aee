"""NAT and DiNAT: hierarchical transformers built on (dilated) neighborhood attention.

* Hassani, Walton, Li, Li, Shi, "Neighborhood Attention Transformer", CVPR 2023
  (arXiv:2204.07143).
* Hassani, Shi, "Dilated Neighborhood Attention Transformer", arXiv:2209.15001.

DiNAT is NAT with a per-layer dilation, so both families share this file (as in the official
code, where ``DiNAT`` subclasses ``NAT``). Attention runs on :func:`densekit.ops.na2d`
(NATTEN <= 0.17 semantics, relative positional bias ``[heads, 2k-1, 2k-1]``).

The model follows the official dense-prediction backbone (SHI-Labs/Neighborhood-Attention-
Transformer, ``detection/nat.py``): a two-conv tokenizer (stride 4), four stages of NA blocks
separated by strided-conv downsamplers, and a LayerNorm on every returned stage. Inputs of any
size are accepted: feature maps smaller than the (dilated) neighborhood are zero-padded on the
bottom/right before the qkv projection and cropped afterwards, exactly as NATTEN's
``NeighborhoodAttention2D`` module does.
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp
from torch.nn.init import trunc_normal_

from densekit.layers import DropPath, drop_path_schedule, init_trunc_normal_, run_blocks
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone
from densekit.ops.neighborhood import na2d

__all__ = ['NAT', 'NeighborhoodAttention', 'checkpoint_filter_fn', 'dinat_dilations']


class ConvTokenizer(nn.Module):
    """Two overlapping 3x3 stride-2 convolutions (stride 4 in total), then a LayerNorm."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1),
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` image -> ``[B, H/4, W/4, embed_dim]`` tokens (channels last)."""
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvDownsampler(nn.Module):
    """3x3 stride-2 convolution doubling the channels (no bias, as the official code), then LN."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class NeighborhoodAttention(nn.Module):
    """Multi-head 2-D neighborhood attention with relative positional bias.

    Args:
        dim: channels of the input tokens.
        num_heads: attention heads (``dim`` must be divisible by it).
        kernel_size: odd neighborhood size ``k`` (each query sees ``k x k`` keys).
        dilation: spacing between neighbors; DiNAT's sparse global layers use large values.
        qkv_bias: bias in the qkv projection.
        qk_scale: overrides the default ``head_dim ** -0.5`` scale.
        proj_drop: dropout after the output projection.
        backend: :func:`densekit.ops.na2d` backend (``None``: its automatic choice).
    """

    def __init__(self, dim: int, *, num_heads: int, kernel_size: int = 7, dilation: int = 1,
                 qkv_bias: bool = True, qk_scale: float | None = None, proj_drop: float = 0.0,
                 backend: str | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"NeighborhoodAttention: dim={dim} is not divisible by "
                             f"num_heads={num_heads}")
        if kernel_size < 2 or kernel_size % 2 == 0:
            raise ValueError(f"NeighborhoodAttention: kernel_size={kernel_size} must be odd and > 1")
        if dilation < 1:
            raise ValueError(f"NeighborhoodAttention: dilation={dilation} must be >= 1")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.backend = backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
        trunc_normal_(self.rpb, std=0.02, mean=0.0, a=-2.0, b=2.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        B, H, W, C = x.shape
        # A dilated neighborhood needs kernel_size * dilation positions along each axis. NATTEN's
        # module zero-pads the *input* of the qkv projection (so padded keys carry the qkv bias
        # and do take part in the softmax); the official checkpoints were trained that way.
        window = self.kernel_size * self.dilation
        pad_b, pad_r = max(0, window - H), max(0, window - W)
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        q, k, v = self.qkv(x).reshape(B, Hp, Wp, 3, self.num_heads, self.head_dim).unbind(3)
        x = na2d(q, k, v, kernel_size=self.kernel_size, dilation=self.dilation, rpb=self.rpb,
                 scale=self.scale, backend=self.backend)
        x = x.reshape(B, Hp, Wp, C)
        if pad_b or pad_r:
            x = x[:, :H, :W].contiguous()
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return (f"num_heads={self.num_heads}, head_dim={self.head_dim}, "
                f"kernel_size={self.kernel_size}, dilation={self.dilation}")


class NATBlock(nn.Module):
    """Pre-norm transformer block: NA + MLP, optional layer scale (NAT-S/B, DiNAT-B).

    Args:
        dim: channels.
        num_heads: attention heads.
        kernel_size: neighborhood size.
        dilation: neighborhood dilation.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        qkv_bias: bias in the qkv projection.
        qk_scale: overrides the attention scale.
        drop: dropout after the attention projection and in the MLP.
        drop_path: drop-path probability of this block.
        layer_scale: initial value of the per-channel residual scales; ``None`` disables them.
        attn_backend: :func:`densekit.ops.na2d` backend.
    """

    def __init__(self, dim: int, *, num_heads: int, kernel_size: int = 7, dilation: int = 1,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: float | None = None,
                 drop: float = 0.0, drop_path: float = 0.0, layer_scale: float | None = None,
                 attn_backend: str | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = NeighborhoodAttention(dim, num_heads=num_heads, kernel_size=kernel_size,
                                          dilation=dilation, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                          proj_drop=drop, backend=attn_backend)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(float(layer_scale) * torch.ones(dim))
            self.gamma2 = nn.Parameter(float(layer_scale) * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        a = self.attn(self.norm1(x))
        if self.layer_scale:
            x = x + self.drop_path(self.gamma1 * a)
            return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))
        x = x + self.drop_path(a)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class NATStage(nn.Module):
    """An optional downsampler (every stage but the first) followed by ``depth`` NA blocks.

    The official code attaches the downsampler to the *end* of the previous level; we put it at
    the start of the stage it feeds, so that stage ``i`` produces the stride ``4 * 2**i`` map and
    ``frozen_stages`` freezes whole resolutions (the converter moves the keys).
    """

    def __init__(self, in_dim: int, dim: int, *, depth: int, num_heads: int, kernel_size: int,
                 dilations: Sequence[int], mlp_ratio: float, qkv_bias: bool,
                 qk_scale: float | None, drop: float, drop_paths: Sequence[float],
                 layer_scale: float | None, attn_backend: str | None, with_cp: bool) -> None:
        super().__init__()
        if in_dim != dim and dim != 2 * in_dim:
            raise ValueError(f"NATStage: the downsampler doubles channels; got {in_dim} -> {dim}")
        self.downsample = ConvDownsampler(in_dim) if in_dim != dim else None
        self.with_cp = with_cp
        self.blocks = nn.ModuleList(
            NATBlock(dim, num_heads=num_heads, kernel_size=kernel_size, dilation=dilations[j],
                     mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop,
                     drop_path=drop_paths[j], layer_scale=layer_scale, attn_backend=attn_backend)
            for j in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return run_blocks(self.blocks, x, self.with_cp)


class NAT(BackboneMixin, nn.Module):
    """NAT / DiNAT backbone returning NCHW maps at strides 4, 8, 16, 32.

    Args:
        embed_dim: channels of stage 0 (doubled at every stage).
        depths: blocks per stage.
        num_heads: heads per stage.
        mlp_ratio: MLP hidden width relative to the channels.
        kernel_size: neighborhood size of every layer.
        dilations: per stage, one dilation per block (DiNAT); ``None`` is NAT (all ones).
        in_chans: input channels.
        out_indices: stages to return (0-based).
        out_norm: apply a LayerNorm to each returned map, as the official dense-prediction code.
        qkv_bias: bias in the qkv projections.
        qk_scale: overrides the attention scale.
        drop_rate: dropout after attention projections and in MLPs.
        drop_path_rate: drop-path probability, rising linearly over all blocks to this value.
        layer_scale: initial layer-scale value, ``None`` to disable.
        frozen_stages: -1 freezes nothing, 0 the stem, ``k`` the stem and stages ``0..k-1`` (with
            their output norms).
        norm_eval: keep BatchNorms in eval mode while training (NAT has none; accepted for the
            common contract).
        with_cp: activation checkpointing of every block (saves memory, costs a re-forward).
        attn_backend: :func:`densekit.ops.na2d` backend for every layer (``None``: automatic).
    """

    size_divisibility = 0  # any input size: maps smaller than the neighborhood are padded
    channels_last = True

    def __init__(self, *,
                 embed_dim: int = 64,
                 depths: Sequence[int] = (3, 4, 6, 5),
                 num_heads: Sequence[int] = (2, 4, 8, 16),
                 mlp_ratio: float = 3.0,
                 kernel_size: int = 7,
                 dilations: Sequence[Sequence[int]] | None = None,
                 in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: bool = True,
                 qkv_bias: bool = True,
                 qk_scale: float | None = None,
                 drop_rate: float = 0.0,
                 drop_path_rate: float = 0.2,
                 layer_scale: float | None = None,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 attn_backend: str | None = None) -> None:
        super().__init__()
        num_stages = len(depths)
        if len(num_heads) != num_stages:
            raise ValueError(f"NAT: depths={tuple(depths)} and num_heads={tuple(num_heads)} "
                             f"differ in length")
        if dilations is None:
            dilations = [[1] * d for d in depths]
        bad = [(i, len(dil), d) for i, (dil, d) in enumerate(zip(dilations, depths)) if len(dil) != d]
        if len(dilations) != num_stages or bad:
            raise ValueError(f"NAT: dilations={[list(d) for d in dilations]} must give one value "
                             f"per block of depths={tuple(depths)}")
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        self.dims = [embed_dim * 2 ** i for i in range(num_stages)]

        self.stem = ConvTokenizer(in_chans, embed_dim)
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.stages.append(NATStage(
                self.dims[max(i - 1, 0)], self.dims[i], depth=depths[i], num_heads=num_heads[i],
                kernel_size=kernel_size, dilations=list(dilations[i]), mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                drop_paths=dpr[start:start + depths[i]], layer_scale=layer_scale,
                attn_backend=attn_backend, with_cp=with_cp))
            start += depths[i]
        self._init_feature_info(self.dims, [4 * 2 ** i for i in range(num_stages)])
        self._init_out_norms(nn.LayerNorm if out_norm else None)
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """The official random init (truncated normal, std 0.02); checkpoints load over it."""
        init_trunc_normal_(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, C_i, ceil(H / s_i), ceil(W / s_i)]`` per out index."""
        return self.forward_stages(self.stem(x))


# ------------------------------------------------------------------------------------------------
# Official checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

_OFFICIAL_RULES = (
    (re.compile(r'^patch_embed\.(proj\.[01]|norm)\.'), r'stem.\1.'),
    (re.compile(r'^levels\.(\d+)\.blocks\.'), r'stages.\1.blocks.'),
    (re.compile(r'^norm(\d+)\.'), r'out_norms.\1.'),
)
_DENSEKIT_KEY = re.compile(r'^(stem|stages|out_norms)\.')
# Classification heads have no counterpart in a backbone. The classifier's final ``norm`` is not
# one of the per-output norms either: the official dense-prediction code leaves those at their
# initial values when loading ImageNet weights, and so do we.
_CLASSIFIER_KEY = re.compile(r'^(head|norm)\.')


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official NAT / DiNAT checkpoint (classification, mmdet or mmseg) -> densekit keys.

    Accepts SHI-Labs' ImageNet releases (``levels.i.blocks.j...``, ``norm``, ``head``) and their
    detection / segmentation checkpoints (``backbone.`` prefix, per-output ``norm{i}``); keys
    already in densekit's format pass through unchanged.
    """
    out: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in strip_wrapper_prefix(state_dict).items():
        if _DENSEKIT_KEY.match(key):
            out[key] = value
            continue
        if _CLASSIFIER_KEY.match(key):
            continue
        m = re.match(r'^levels\.(\d+)\.downsample\.(.*)$', key)
        if m:  # the official level i ends with the downsampler that starts our stage i + 1
            out[f'stages.{int(m.group(1)) + 1}.downsample.{m.group(2)}'] = value
            continue
        for pattern, repl in _OFFICIAL_RULES:
            if pattern.match(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"NAT converter: unrecognised keys {unknown[:8]}"
                       f"{' ...' if len(unknown) > 8 else ''}")
    return out


register_converter('nat', checkpoint_filter_fn)
register_converter('dinat', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants
# ------------------------------------------------------------------------------------------------

def _tile(cycle: Sequence[int], depth: int) -> list[int]:
    return [cycle[i % len(cycle)] for i in range(depth)]


def dinat_dilations(schedule: str, depths: Sequence[int]) -> list[list[int]]:
    """The DiNAT paper's dilation schedules, one list per stage.

    Args:
        schedule: ``'imagenet'`` (224² classification), ``'imagenet_384'`` (DiNAT-L at 384²),
            ``'coco'`` (the official Mask / Cascade Mask R-CNN configs, ~800x1333 inputs),
            ``'ade20k'`` (UPerNet at 512²) or ``'ade20k_640'`` (UPerNet DiNAT-L at 640²).
        depths: blocks per stage (the official models use (3, 4, 6, 5) or (3, 4, 18, 5)).

    The stage-2 schedule is a repeated cycle, cut to the stage depth; stages 0, 1 and 3 use
    the official values, tiled likewise for non-official depths.
    """
    cycles = {
        'imagenet': ([1, 8, 1], [1, 4, 1, 4], [1, 2], [1]),
        'imagenet_384': ([1, 13, 1], [1, 6, 1, 6], [1, 3], [1]),
        'coco': ([1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7], [1, 3, 1, 3, 1]),
        'ade20k': ([1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4], [1, 2, 1, 2, 1]),
        'ade20k_640': ([1, 20, 1], [1, 5, 1, 10], [1, 2, 1, 3, 1, 4, 1, 5], [1, 2, 1, 2, 1]),
    }
    if schedule not in cycles:
        raise ValueError(f"dinat_dilations: unknown schedule '{schedule}'; known: {sorted(cycles)}")
    if len(depths) != 4:
        raise ValueError(f"dinat_dilations: the schedules have four stages, got depths={tuple(depths)}")
    out = [_tile(c, d) for c, d in zip(cycles[schedule], depths)]
    if schedule == 'ade20k_640' and depths[2] == 18:
        out[2][-2:] = [1, 5]  # the official DiNAT-L 640² config ends its stage-2 cycle early
    return out


_ARCH = ('embed_dim', 'depths', 'num_heads', 'mlp_ratio', 'layer_scale')


def _create_nat(kwargs: dict, *, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int],
                mlp_ratio: float, layer_scale: float | None, drop_path_rate: float,
                dilations: str | Sequence[Sequence[int]] | None = None) -> NAT:
    """``kwargs`` may override ``drop_path_rate`` and ``dilations`` (a :func:`dinat_dilations`
    schedule name or explicit lists), not the architecture."""
    check_variant_kwargs(NAT, _ARCH, kwargs)
    kwargs = dict(kwargs)
    dilations = kwargs.pop('dilations', dilations)
    if isinstance(dilations, str):
        dilations = dinat_dilations(dilations, depths)
    kwargs.setdefault('drop_path_rate', drop_path_rate)
    return NAT(embed_dim=embed_dim, depths=depths, num_heads=num_heads, mlp_ratio=mlp_ratio,
               layer_scale=layer_scale, dilations=dilations, **kwargs)


# The official ImageNet definitions; drop_path_rate defaults are the official classification
# values (the dense-prediction configs set their own).

@register_backbone(name='nat_mini')
def nat_mini(**kwargs) -> NAT:
    """NAT-Mini (20M params)."""
    return _create_nat(kwargs, embed_dim=64, depths=(3, 4, 6, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0,
                       layer_scale=None, drop_path_rate=0.2)


@register_backbone(name='nat_tiny')
def nat_tiny(**kwargs) -> NAT:
    """NAT-Tiny (28M params)."""
    return _create_nat(kwargs, embed_dim=64, depths=(3, 4, 18, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0,
                       layer_scale=None, drop_path_rate=0.2)


@register_backbone(name='nat_small')
def nat_small(**kwargs) -> NAT:
    """NAT-Small (51M params)."""
    return _create_nat(kwargs, embed_dim=96, depths=(3, 4, 18, 5), num_heads=(3, 6, 12, 24), mlp_ratio=2.0,
                       layer_scale=1e-5, drop_path_rate=0.3)


@register_backbone(name='nat_base')
def nat_base(**kwargs) -> NAT:
    """NAT-Base (90M params)."""
    return _create_nat(kwargs, embed_dim=128, depths=(3, 4, 18, 5), num_heads=(4, 8, 16, 32), mlp_ratio=2.0,
                       layer_scale=1e-5, drop_path_rate=0.5)


@register_backbone(name='nat_test')
def nat_test(**kwargs) -> NAT:
    """A tiny NAT for tests (not a published model)."""
    return _create_nat(kwargs, embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), mlp_ratio=2.0,
                       layer_scale=None, drop_path_rate=0.0)


# DiNAT builders take ``dilations``: a schedule name of :func:`dinat_dilations` (default
# ``'coco'``, the detection schedule; use ``'ade20k'`` for 512² segmentation) or explicit lists.

@register_backbone(name='dinat_mini')
def dinat_mini(**kwargs) -> NAT:
    """DiNAT-Mini."""
    return _create_nat(kwargs, embed_dim=64, depths=(3, 4, 6, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0,
                       layer_scale=None, drop_path_rate=0.2, dilations='coco')


@register_backbone(name='dinat_tiny')
def dinat_tiny(**kwargs) -> NAT:
    """DiNAT-Tiny."""
    return _create_nat(kwargs, embed_dim=64, depths=(3, 4, 18, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0,
                       layer_scale=None, drop_path_rate=0.2, dilations='coco')


@register_backbone(name='dinat_small')
def dinat_small(**kwargs) -> NAT:
    """DiNAT-Small."""
    return _create_nat(kwargs, embed_dim=96, depths=(3, 4, 18, 5), num_heads=(3, 6, 12, 24), mlp_ratio=2.0,
                       layer_scale=None, drop_path_rate=0.3, dilations='coco')


@register_backbone(name='dinat_base')
def dinat_base(**kwargs) -> NAT:
    """DiNAT-Base."""
    return _create_nat(kwargs, embed_dim=128, depths=(3, 4, 18, 5), num_heads=(4, 8, 16, 32), mlp_ratio=2.0,
                       layer_scale=1e-5, drop_path_rate=0.5, dilations='coco')


@register_backbone(name='dinat_large')
def dinat_large(**kwargs) -> NAT:
    """DiNAT-Large (ImageNet-22k pre-trained in the paper)."""
    return _create_nat(kwargs, embed_dim=192, depths=(3, 4, 18, 5), num_heads=(6, 12, 24, 48), mlp_ratio=2.0,
                       layer_scale=None, drop_path_rate=0.35, dilations='coco')


@register_backbone(name='dinat_test')
def dinat_test(**kwargs) -> NAT:
    """A tiny DiNAT for tests: dilations that force both padding and dilated neighborhoods."""
    return _create_nat(kwargs, embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), mlp_ratio=2.0,
                       layer_scale=None, drop_path_rate=0.0, dilations=[[2], [1], [1, 2], [1]])
