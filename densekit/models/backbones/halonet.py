"""HaloNet family as dense-prediction backbones, on densekit's blocked halo-attention op.

Paper: A. Vaswani, P. Ramachandran, A. Srinivas, N. Parmar, B. Hechtman, J. Shlens, "Scaling Local
Self-Attention for Parameter Efficient Visual Backbones", CVPR 2021, https://arxiv.org/abs/2103.12731.

There is no official code release; the definitions with public weights are timm's ("bring your own
attention" networks, ``timm/models/byoanet.py``): ResNet-like stages of bottleneck blocks and
self-attention blocks whose 3x3 convolution is replaced by halo attention. This file builds those
networks natively (parameter names equal timm's, so timm checkpoints load through an identity
mapping) and runs the attention through :func:`densekit.ops.halo_attention`.

Dense-prediction extensions (timm requires every attention input to be a multiple of the block
size): the projected keys / values / queries are zero-padded at the bottom / right to a multiple of
the block size, which is exactly what timm's halo does at the map border (zero keys and values that
take part in the softmax), and the padded query rows are cropped. For inputs where timm runs,
the result is identical.

Not built: ``halo2botnet50ts`` / ``lamhalobotnet50ts`` (their last stages use global BoTNet
attention / lambda layers whose position embeddings are tied to one input size) and the paper's
H2-H7 (their exact widths are not public in code; ``halonet_h1`` follows timm's definition).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from densekit.layers import (BatchNormAct2d, ConvBnAct, DropPath, create_act, create_channel_attn,
                             drop_path_schedule, init_conv_bn_, make_divisible, run_blocks)
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone
from densekit.ops.halo import halo_attention

__all__ = ['HaloNet', 'HaloStage', 'HaloAttention', 'checkpoint_filter_fn']


class HaloPosEmbed(nn.Module):
    """Relative position embeddings along height and width, ``[2*win-1, dim_head]`` each."""

    def __init__(self, win_size: int, dim_head: int, *, scale: float) -> None:
        super().__init__()
        self.height_rel = nn.Parameter(torch.empty(2 * win_size - 1, dim_head))
        self.width_rel = nn.Parameter(torch.empty(2 * win_size - 1, dim_head))
        nn.init.trunc_normal_(self.height_rel, std=scale)
        nn.init.trunc_normal_(self.width_rel, std=scale)


class HaloAttention(nn.Module):
    """Multi-head blocked halo self-attention on an NCHW map.

    Queries in ``block_size x block_size`` blocks attend to the ``(block + 2*halo)^2`` window
    around their block. With ``stride=2`` the queries are subsampled (strided 1x1 projection,
    ``block_size / 2`` queries per block side) or, when the block size is odd (or ``avg_down``),
    the full-resolution output is average-pooled.

    Args:
        dim: input channels.
        dim_out: output channels (= value channels), default ``dim``.
        stride: 1 or 2.
        num_heads: attention heads.
        dim_head: query / key channels per head; default ``make_divisible(dim_out * qk_ratio) //
            num_heads``.
        block_size: query block side.
        halo_size: halo around each block.
        qk_ratio: query / key width relative to ``dim_out`` when ``dim_head`` is not given.
        qkv_bias: bias on the projections.
        avg_down: downsample by average pooling even when the block size is even.
        scale_pos_embed: scale the relative logits as well.
    """

    def __init__(self, dim: int, dim_out: Optional[int] = None, *, stride: int = 1, num_heads: int = 8,
                 dim_head: Optional[int] = None, block_size: int = 8, halo_size: int = 3,
                 qk_ratio: float = 1.0, qkv_bias: bool = False, avg_down: bool = False,
                 scale_pos_embed: bool = False) -> None:
        super().__init__()
        dim_out = dim_out or dim
        if dim_out % num_heads:
            raise ValueError(f"HaloAttention: dim_out={dim_out} is not divisible by num_heads={num_heads}")
        if stride not in (1, 2):
            raise ValueError(f"HaloAttention: stride must be 1 or 2, got {stride}")
        self.num_heads = num_heads
        self.dim_head_qk = dim_head or make_divisible(dim_out * qk_ratio) // num_heads
        self.dim_head_v = dim_out // num_heads
        self.scale = self.dim_head_qk ** -0.5
        self.scale_pos_embed = scale_pos_embed
        self.block_size = block_size
        self.halo_size = halo_size
        self.stride = stride
        use_pool = stride > 1 and (avg_down or block_size % stride != 0)
        self.block_stride = stride if stride > 1 and not use_pool else 1
        self.q = nn.Conv2d(dim, num_heads * self.dim_head_qk, 1, stride=self.block_stride, bias=qkv_bias)
        self.kv = nn.Conv2d(dim, num_heads * (self.dim_head_qk + self.dim_head_v), 1, bias=qkv_bias)
        self.pos_embed = HaloPosEmbed(block_size + 2 * halo_size, self.dim_head_qk, scale=self.scale)
        # ceil_mode: odd maps keep their last row / column, matching the strided shortcut branch.
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) if use_pool else nn.Identity()
        std = dim ** -0.5
        nn.init.trunc_normal_(self.q.weight, std=std)
        nn.init.trunc_normal_(self.kv.weight, std=std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, dim, H, W]`` -> ``[B, dim_out, ceil(H / stride), ceil(W / stride)]``."""
        B, _, H, W = x.shape
        b, s, h = self.block_size, self.block_stride, self.num_heads
        dqk, dv = self.dim_head_qk, self.dim_head_v
        nbh, nbw = -(-H // b), -(-W // b)
        Hp, Wp = nbh * b, nbw * b

        q = self.q(x)
        Hq, Wq = q.shape[2:]
        # Zero-pad the *projected* maps: out-of-map keys / values are then zero, as at the halo
        # border (timm numerics), and padded queries are cropped below.
        q = F.pad(q, (0, Wp // s - Wq, 0, Hp // s - Hq))
        kv = F.pad(self.kv(x), (0, Wp - W, 0, Hp - H))
        q = q.view(B, h, dqk, Hp // s, Wp // s).permute(0, 3, 4, 1, 2)
        # timm's kv channels are grouped per head: [head][k (dqk) | v (dv)]
        kv = kv.view(B, h, dqk + dv, Hp, Wp).permute(0, 3, 4, 1, 2)
        k, v = kv[..., :dqk], kv[..., dqk:]
        rel_h, rel_w = self.pos_embed.height_rel, self.pos_embed.width_rel

        # strided queries (s > 1): (b/s)^2 per block, each attending to its block's full window;
        # v may have its own head size (dim_head_v)
        out = halo_attention(q.contiguous(), k.contiguous(), v.contiguous(), b, self.halo_size,
                             rel_h=rel_h, rel_w=rel_w, scale=self.scale,
                             scale_pos_embed=self.scale_pos_embed, query_stride=s)
        out = out[:, :Hq, :Wq]
        out = out.permute(0, 3, 4, 1, 2).reshape(B, h * dv, Hq, Wq)
        return self.pool(out)


class BottleneckBlock(nn.Module):
    """ResNet bottleneck: 1x1 -> kxk (grouped, strided) -> channel attention -> 1x1, residual.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        stride: stride of the kxk convolution (and of the projection shortcut).
        mid_chs: bottleneck width.
        groups: groups of the kxk convolution.
        act: activation name.
        attn_layer: channel attention after the kxk convolution: ``''``, ``'se'`` or ``'eca'``.
        se_rd_ratio: squeeze-excite reduction ratio.
        downsample: 1x1 conv + BN projection shortcut where shapes change (otherwise no residual
            for those blocks).
        linear_out: no activation after the residual sum.
        drop_path: drop-path probability of the residual branch.
    """

    def __init__(self, in_chs: int, out_chs: int, *, stride: int, mid_chs: int, groups: int, act: str,
                 attn_layer: str, se_rd_ratio: float, downsample: bool, linear_out: bool,
                 drop_path: float) -> None:
        super().__init__()
        self.shortcut = _shortcut(in_chs, out_chs, stride=stride, downsample=downsample, act=act)
        self.conv1_1x1 = ConvBnAct(in_chs, mid_chs, 1, act=act)
        self.conv2_kxk = ConvBnAct(mid_chs, mid_chs, 3, stride=stride, groups=groups, act=act)
        self.attn = create_channel_attn(attn_layer, mid_chs, se_rd_ratio)
        self.conv3_1x1 = ConvBnAct(mid_chs, out_chs, 1, act=act, apply_act=False)
        self.act = nn.Identity() if linear_out else create_act(act)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chs, H, W]`` -> ``[B, out_chs, H', W']``."""
        y = self.drop_path(self.conv3_1x1(self.attn(self.conv2_kxk(self.conv1_1x1(x)))))
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.act(y)


class SelfAttnBlock(nn.Module):
    """Bottleneck whose kxk convolution is halo attention (+ BatchNorm/act after it).

    Args:
        in_chs, out_chs, stride, mid_chs, act, downsample, linear_out, drop_path: as
            :class:`BottleneckBlock`.
        num_heads, dim_head, block_size, halo_size, qk_ratio: of :class:`HaloAttention`.
    """

    def __init__(self, in_chs: int, out_chs: int, *, stride: int, mid_chs: int, act: str, downsample: bool,
                 linear_out: bool, drop_path: float, num_heads: int, dim_head: Optional[int],
                 block_size: int, halo_size: int, qk_ratio: float) -> None:
        super().__init__()
        self.shortcut = _shortcut(in_chs, out_chs, stride=stride, downsample=downsample, act=act)
        self.conv1_1x1 = ConvBnAct(in_chs, mid_chs, 1, act=act)
        self.self_attn = HaloAttention(mid_chs, stride=stride, num_heads=num_heads, dim_head=dim_head,
                                       block_size=block_size, halo_size=halo_size, qk_ratio=qk_ratio)
        self.post_attn = BatchNormAct2d(mid_chs, act)
        self.conv3_1x1 = ConvBnAct(mid_chs, out_chs, 1, act=act, apply_act=False)
        self.act = nn.Identity() if linear_out else create_act(act)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chs, H, W]`` -> ``[B, out_chs, H', W']``."""
        y = self.drop_path(self.conv3_1x1(self.post_attn(self.self_attn(self.conv1_1x1(x)))))
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.act(y)


def _shortcut(in_chs: int, out_chs: int, *, stride: int, downsample: bool, act: str) -> Optional[nn.Module]:
    if in_chs == out_chs and stride == 1:
        return nn.Identity()
    # Without a projection shortcut (RegNetZ-style 'downsample=False') the block has no residual.
    return ConvBnAct(in_chs, out_chs, 1, stride=stride, act=act, apply_act=False) if downsample else None


class HaloNetStage(nn.Sequential):
    """The blocks of one stage, run through :func:`~densekit.layers.checkpoint.run_blocks` (a
    ``Sequential``, so that the keys stay timm's ``stages.{i}.{j}``)."""

    def __init__(self, blocks: Sequence[nn.Module], *, with_cp: bool = False) -> None:
        super().__init__(*blocks)
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_blocks(self, x, self.with_cp)


@dataclass(frozen=True)
class HaloStage:
    """One stage of a HaloNet-family backbone.

    Attributes:
        blocks: block types in order, each ``'bottle'`` or ``'self_attn'``; the first block strides.
        out_chs: output channels of every block.
        stride: stride of the first block (1 or 2).
        bottle_ratio: bottleneck width relative to the output (or input, ``bottle_in``) channels.
        group_size: channels per group of the bottleneck's 3x3 conv (0: ungrouped).
        block_size: halo attention query block side.
        halo_size: halo around each block.
        num_heads: attention heads.
        dim_head: query / key channels per head (None: from ``qk_ratio``).
        qk_ratio: query / key width relative to the attention output when ``dim_head`` is None.
    """

    blocks: Tuple[str, ...]
    out_chs: int
    stride: int = 2
    bottle_ratio: float = 0.25
    group_size: int = 0
    block_size: int = 8
    halo_size: int = 3
    num_heads: int = 8
    dim_head: Optional[int] = None
    qk_ratio: float = 1.0


class HaloNet(BackboneMixin, nn.Module):
    """HaloNet-family backbone (ResNet-like stages of bottleneck and halo-attention blocks).

    Args:
        stages: the stage definitions (see :class:`HaloStage`).
        stem_type: ``'tiered'`` (three 3x3 convs, widths 3/8, 1/2, 1 of ``stem_chs``), ``'7x7'``
            (one 7x7 conv) or ``'3x3'`` (one 3x3 conv).
        stem_chs: stem output channels.
        stem_pool: 3x3 stride-2 max pooling after the stem convs (otherwise a ``'tiered'`` stem
            strides in its last conv as well).
        act: ``'relu'`` or ``'silu'``.
        attn_layer: channel attention inside bottleneck blocks: ``''``, ``'se'`` or ``'eca'``.
        se_rd_ratio: squeeze-excite reduction ratio.
        downsample: 1x1 conv + BN projection shortcut where shapes change; ``False`` drops the
            residual of those blocks (RegNetZ style).
        bottle_in: bottleneck width from the input instead of the output channels.
        linear_out: no activation after the residual sum.
        in_chans: input channels.
        out_indices: stages (0-based) whose output is returned.
        drop_path_rate: drop-path probability, rising linearly over all blocks to this value.
        frozen_stages: ``-1`` nothing, ``0`` the stem, ``k`` the stem and stages ``0..k-1``.
        norm_eval: keep every BatchNorm in eval mode while training (small-batch fine-tuning).
        with_cp: recompute each block in the backward pass (activation checkpointing).
    """

    size_divisibility = 0  # attention maps are padded to the block size internally

    def __init__(self, *,
                 stages: Sequence[HaloStage],
                 stem_type: str = 'tiered',
                 stem_chs: int = 64,
                 stem_pool: bool = True,
                 act: str = 'relu',
                 attn_layer: str = '',
                 se_rd_ratio: float = 1 / 16,
                 downsample: bool = True,
                 bottle_in: bool = False,
                 linear_out: bool = False,
                 in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.0,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        stages = tuple(stages)
        num_stages = len(stages)
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        for st in stages:
            bad = [t for t in st.blocks if t not in ('bottle', 'self_attn')]
            if bad or not st.blocks:
                raise ValueError(f"HaloNet: stage blocks must be 'bottle' / 'self_attn', got {st.blocks!r}")
        create_act(act)  # an unknown name is an error before anything is built

        self.stem, stride = self._make_stem(in_chans, stem_type=stem_type, chs=stem_chs, pool=stem_pool, act=act)
        dpr = drop_path_schedule(drop_path_rate, sum(len(st.blocks) for st in stages))
        self.stages = nn.ModuleList()
        reductions = []
        prev, n = stem_chs, 0
        for st in stages:
            blocks = []
            for j, kind in enumerate(st.blocks):
                common = dict(stride=st.stride if j == 0 else 1, act=act, downsample=downsample,
                              linear_out=linear_out, drop_path=dpr[n],
                              mid_chs=make_divisible((prev if bottle_in else st.out_chs) * st.bottle_ratio))
                if kind == 'bottle':
                    groups = common['mid_chs'] // st.group_size if st.group_size else 1
                    blocks.append(BottleneckBlock(prev, st.out_chs, groups=groups, attn_layer=attn_layer,
                                                  se_rd_ratio=se_rd_ratio, **common))
                else:
                    blocks.append(SelfAttnBlock(prev, st.out_chs, num_heads=st.num_heads, dim_head=st.dim_head,
                                                block_size=st.block_size, halo_size=st.halo_size,
                                                qk_ratio=st.qk_ratio, **common))
                prev, n = st.out_chs, n + 1
            stride *= st.stride
            reductions.append(stride)
            self.stages.append(HaloNetStage(blocks, with_cp=with_cp))
        self._init_feature_info([st.out_chs for st in stages], reductions)
        self.init_weights()
        self._freeze_stages()

    @staticmethod
    def _make_stem(in_chans: int, *, stem_type: str, chs: int, pool: bool, act: str) -> Tuple[nn.Module, int]:
        stem = nn.Sequential()
        if stem_type == 'tiered':
            widths, strides = (3 * chs // 8, chs // 2, chs), [2, 1, 1 if pool else 2]
            prev = in_chans
            for i, (w, s) in enumerate(zip(widths, strides)):
                stem.add_module(f'conv{i + 1}', ConvBnAct(prev, w, 3, stride=s, act=act))
                prev = w
            stride = 2 if pool else 4
        elif stem_type in ('7x7', '3x3'):
            k = int(stem_type[0])
            stem.add_module('conv1', ConvBnAct(in_chans, chs, k, stride=2, act=act))
            stride = 2
        else:
            raise ValueError(f"HaloNet: stem_type must be 'tiered', '7x7' or '3x3', got {stem_type!r}")
        if pool:
            stem.add_module('pool', nn.MaxPool2d(3, 2, padding=1))
            stride *= 2
        return stem, stride

    def init_weights(self) -> None:
        """He init for convs (the attention projections keep theirs), unit BatchNorm, zero last
        BatchNorm of every residual branch."""
        last_bns = [m.conv3_1x1.bn for m in self.modules()
                    if isinstance(m, (BottleneckBlock, SelfAttnBlock)) and m.shortcut is not None]
        init_conv_bn_(self, skip=('self_attn.q', 'self_attn.kv'), zero_last_bn=last_bns)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, C_i, ceil(H / s_i), ceil(W / s_i)]`` map per out index."""
        return self.forward_stages(self.stem(x))


# ------------------------------------------------------------------------------------------------
# Checkpoints (timm, the only public ones) -> densekit keys
# ------------------------------------------------------------------------------------------------

_HALO_PARAMS = ('q.weight', 'q.bias', 'kv.weight', 'kv.bias', 'pos_embed.height_rel', 'pos_embed.width_rel')


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm HaloNet-family checkpoint (``halonet26t``, ``sehalonet33ts``, ``halonet50ts``,
    ``eca_halonext26ts``, ``haloregnetz_b``, ``halonet_h1``) -> densekit keys.

    Parameter names are timm's, so this drops the classifier (``head.*``) and the classification
    ``final_conv`` (an extra 1x1 conv after the last stage of some models) and checks the rest.
    A single-conv stem stored by timm without a Sequential (``stem.conv.*``, RegNetZ-style) is
    renamed to ``stem.conv1.*``. HaloNet has no official checkpoint release.
    """
    sd = strip_wrapper_prefix(state_dict)
    out = {}
    for k, v in sd.items():
        if k.startswith(('head.', 'final_conv.', 'fc.')):
            continue
        if k.startswith(('stem.conv.', 'stem.bn.')):
            k = 'stem.conv1.' + k[len('stem.'):]
        if not k.startswith(('stem.', 'stages.')):
            raise KeyError(f"HaloNet converter: unexpected key {k!r} (not a HaloNet backbone key)")
        attn_param = k.split('.self_attn.', 1)[1] if '.self_attn.' in k else None
        if attn_param is not None and attn_param not in _HALO_PARAMS:
            raise KeyError(f"HaloNet converter: {k!r} is not a halo-attention parameter (BoTNet / lambda "
                           f"layers are not supported)")
        out[k] = v
    return out


register_converter('halonet', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants
# ------------------------------------------------------------------------------------------------

def _interleave(n: int, every: Sequence[int]) -> Tuple[str, ...]:
    """``n`` blocks with self-attention at the positions ``every`` (bottlenecks elsewhere)."""
    return tuple('self_attn' if i in every else 'bottle' for i in range(n))


def _alternate(n: int, every: int = 1) -> Tuple[str, ...]:
    """Self-attention at positions ``every, 2*every + 1, ...`` (timm ``interleave_blocks``)."""
    pos = list(range(every, n, every + 1)) or [n - 1]
    return _interleave(n, pos)


_FIXED = ('stages', 'stem_type', 'stem_chs', 'stem_pool', 'act', 'attn_layer', 'se_rd_ratio', 'downsample',
          'bottle_in', 'linear_out')


def _create_halonet(kwargs: dict, **arch) -> HaloNet:
    check_variant_kwargs(HaloNet, _FIXED, kwargs)
    return HaloNet(**arch, **kwargs)


@register_backbone(name='halonet_h1')
def halonet_h1(**kwargs) -> HaloNet:
    """HaloNet-H1 (b=8, h=3; attention in every block) as defined by timm (no public weights)."""
    attn = dict(bottle_ratio=1.0, block_size=8, halo_size=3)
    return _create_halonet(kwargs, stem_type='7x7', stem_chs=64, stem_pool=True, stages=(
        HaloStage(('self_attn',) * 3, 64, stride=1, **attn),
        HaloStage(('self_attn',) * 3, 128, **attn),
        HaloStage(('self_attn',) * 10, 256, **attn),
        HaloStage(('self_attn',) * 3, 512, **attn),
    ))


@register_backbone(name='halonet26t')
def halonet26t(**kwargs) -> HaloNet:
    """HaloNet-26T (timm ``halonet26t``; ResNet-26-T with halo attention, b=8, h=2)."""
    attn = dict(block_size=8, halo_size=2)
    return _create_halonet(kwargs, stem_type='tiered', stem_chs=64, stem_pool=True, stages=(
        HaloStage(('bottle',) * 2, 256, stride=1),
        HaloStage(('bottle',) * 2, 512),
        HaloStage(_alternate(2), 1024, **attn),
        HaloStage(('self_attn',) * 2, 2048, **attn),
    ))


@register_backbone(name='sehalonet33ts')
def sehalonet33ts(**kwargs) -> HaloNet:
    """SE-HaloNet-33-TS (timm ``sehalonet33ts``; SiLU, squeeze-excite, b=8, h=3)."""
    attn = dict(block_size=8, halo_size=3)
    return _create_halonet(kwargs, stem_type='tiered', stem_chs=64, stem_pool=False, act='silu', attn_layer='se', stages=(
        HaloStage(('bottle',) * 2, 256, stride=1),
        HaloStage(_interleave(3, [2]), 512, **attn),
        HaloStage(_interleave(3, [2]), 1024, **attn),
        HaloStage(('self_attn',) * 2, 1536, bottle_ratio=0.333, **attn),
    ))


@register_backbone(name='halonet50ts')
def halonet50ts(**kwargs) -> HaloNet:
    """HaloNet-50-TS (timm ``halonet50ts``; SiLU, b=8, h=3; 4 heads in stage 1)."""
    attn = dict(block_size=8, halo_size=3)
    return _create_halonet(kwargs, stem_type='tiered', stem_chs=64, stem_pool=True, act='silu', stages=(
        HaloStage(('bottle',) * 3, 256, stride=1),
        HaloStage(_alternate(4, every=4), 512, num_heads=4, **attn),
        HaloStage(_alternate(6), 1024, **attn),
        HaloStage(_alternate(3), 2048, **attn),
    ))


@register_backbone(name='eca_halonext26ts')
def eca_halonext26ts(**kwargs) -> HaloNet:
    """ECA-HaloNeXt-26-TS (timm ``eca_halonext26ts``; grouped convs of 16 channels, ECA, SiLU,
    b=8, h=2, 16-channel query/key heads)."""
    attn = dict(block_size=8, halo_size=2, dim_head=16, group_size=16)
    return _create_halonet(kwargs, stem_type='tiered', stem_chs=64, stem_pool=True, act='silu', attn_layer='eca', stages=(
        HaloStage(('bottle',) * 2, 256, stride=1, group_size=16),
        HaloStage(('bottle',) * 2, 512, group_size=16),
        HaloStage(_alternate(2), 1024, **attn),
        HaloStage(('self_attn',) * 2, 2048, **attn),
    ))


@register_backbone(name='haloregnetz_b')
def haloregnetz_b(**kwargs) -> HaloNet:
    """HaloRegNetZ-B (timm ``haloregnetz_b``; RegNetZ-style inverted bottlenecks without projection
    shortcuts, SE, SiLU, b=7, h=2, query/key at 1/3 width)."""
    attn = dict(bottle_ratio=3.0, group_size=16, block_size=7, halo_size=2, qk_ratio=0.33)
    return _create_halonet(kwargs, stem_type='3x3', stem_chs=32, stem_pool=False, act='silu', attn_layer='se',
                    se_rd_ratio=0.25, downsample=False, bottle_in=True, linear_out=True, stages=(
                        HaloStage(('bottle',) * 2, 48, bottle_ratio=3.0, group_size=16),
                        HaloStage(('bottle',) * 6, 96, bottle_ratio=3.0, group_size=16),
                        HaloStage(_alternate(12, every=3), 192, **attn),
                        HaloStage(('self_attn',) * 2, 288, **attn),
                    ))


@register_backbone(name='halonet_test')
def halonet_test(**kwargs) -> HaloNet:
    """A tiny HaloNet for tests (not a published model): both block types, SE, a strided attention
    block (stage 3) and an average-pooled one (stage 2, odd block size)."""
    return _create_halonet(kwargs, stem_chs=16, stem_type='tiered', stem_pool=True, act='silu', attn_layer='se', stages=(
        HaloStage(('bottle',), 16, stride=1, bottle_ratio=0.5),
        HaloStage(('bottle', 'self_attn'), 24, bottle_ratio=0.5, block_size=4, halo_size=1, num_heads=2),
        HaloStage(('self_attn',), 32, bottle_ratio=0.5, block_size=3, halo_size=1, num_heads=2, qk_ratio=0.5),
        HaloStage(('self_attn',), 48, bottle_ratio=0.5, block_size=4, halo_size=1, num_heads=2),
    ))
