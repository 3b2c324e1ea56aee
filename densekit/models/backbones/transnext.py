"""TransNeXt: aggregated attention (sliding window + pooled tokens in one softmax) and ConvGLU.

Shi, "TransNeXt: Robust Foveal Visual Perception for Vision Transformers", CVPR 2024
(arXiv:2311.17132).

The numerics follow the official dense-prediction backbone (DaiShiResearch/TransNeXt,
``segmentation/upernet/transnext_native.py``, its pure-PyTorch path): stages 0-2 use aggregated
attention — length-scaled cosine attention of every query over its zero-padded, masked 3x3
window and over ``(H // sr) x (W // sr)`` pooled tokens under one softmax, plus the learnable-token
term on the window — on :func:`densekit.ops.local_global.local_global_attention`; stage 3 uses
full cosine attention. The pooled tokens' position bias comes from a per-block MLP over log-spaced
relative coordinates: with ``is_extrapolation=False`` (the official default) its table is built
for ``img_size`` once and bilinearly resized to each input's maps, with ``True`` it is built for
the actual maps every forward. ``pretrain_size`` scales the coordinates (224 for ImageNet-1k
weights). Overlapping strided convolutions (``ceil(H / 2)`` per level) accept any input size; a
level smaller than its pooling ratio is pooled to one token (where the official code fails).
"""
from __future__ import annotations

import math
import re
from functools import partial
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from densekit.layers import DropPath, drop_path_schedule, run_blocks
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone
from densekit.ops.local_global import local_global_attention
from densekit.ops.local_global.reference import window_index

__all__ = ['TransNeXt', 'AggregatedAttention', 'checkpoint_filter_fn', 'relative_position_cpb']


@torch.no_grad()
def relative_position_cpb(query_size: Tuple[int, int], key_size: Tuple[int, int],
                          pretrain_size: Tuple[int, int], device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Index ``[Lq * Lk]`` into a table of unique log-spaced relative coordinates ``[T, 2]``.

    Key positions are the adaptive-average-pooled query positions; offsets are scaled by
    ``8 / (pretrain_size - 1)`` and mapped by ``sign(x) * log2(|x| + 1) / 3`` (as the official code).
    """
    def axis(n_q, n_k, pre):
        qa = torch.arange(n_q, dtype=torch.float32, device=device)
        ka = F.adaptive_avg_pool1d(qa[None], n_k)[0]
        rel = (qa[:, None] - ka[None, :]) / (pre - 1) * 8  # [n_q, n_k]
        values, inverse = torch.unique(rel.reshape(-1), return_inverse=True)
        return values, inverse.view(n_q, n_k)

    # The two axes' offsets vary independently over the grids, so the unique (h, w) pairs are the
    # product of each axis' unique values, in the lexicographic order a 2-d unique would give:
    # one 1-d unique per axis instead of a sort of all Lq * Lk pairs.
    vh, ih = axis(query_size[0], key_size[0], pretrain_size[0])
    vw, iw = axis(query_size[1], key_size[1], pretrain_size[1])
    index = (ih[:, None, :, None] * len(vw) + iw[None, :, None, :]).reshape(-1)  # [qh, qw, kh, kw]
    table = torch.stack(torch.meshgrid(vh, vw, indexing='ij'), dim=-1).view(-1, 2)
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return index, table


class ConvolutionalGLU(nn.Module):
    """``fc1`` to a gate and a value half, 3x3 depth-wise conv + GELU on the gate, product, ``fc2``."""

    def __init__(self, dim: int, *, hidden_dim: int) -> None:
        super().__init__()
        hidden = int(2 * hidden_dim / 3)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.dwconv = nn.Module()  # keeps the official key ``mlp.dwconv.dwconv``
        self.dwconv.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        x, v = self.fc1(x).chunk(2, dim=-1)
        x = self.dwconv.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(self.act(x) * v)


class _PoolBias(nn.Module):
    """The continuous position bias MLP (``cpb_fc1`` / ``cpb_fc2``) and its resizing."""

    def _init_cpb(self, num_heads: int, trained: Optional[Tuple[int, int]], sr_ratio: int) -> None:
        self.cpb_fc1 = nn.Linear(2, 512)
        self.cpb_act = nn.ReLU()
        self.cpb_fc2 = nn.Linear(512, num_heads)
        self.trained = trained
        self.trained_pool = None if trained is None else (trained[0] // sr_ratio, trained[1] // sr_ratio)

    def position_bias(self, index: torch.Tensor, table: torch.Tensor, size: Tuple[int, int],
                      pool: Tuple[int, int]) -> torch.Tensor:
        """``[heads, H*W, pool_h*pool_w]`` bias of every query for every key token."""
        n, p = size[0] * size[1], pool[0] * pool[1]
        bias = self.cpb_fc2(self.cpb_act(self.cpb_fc1(table))).transpose(0, 1)[:, index.view(-1)]
        if self.trained is None:
            return bias.view(-1, n, p)
        (th, tw), (tph, tpw) = self.trained, self.trained_pool
        t_len = th * tw
        bias = bias.view(-1, t_len, tph, tpw)
        bias = F.interpolate(bias, pool, mode='bilinear')
        bias = bias.reshape(-1, t_len, p).transpose(-1, -2).reshape(-1, p, th, tw)
        return F.interpolate(bias, size, mode='bilinear').reshape(-1, p, n).transpose(-1, -2)


class AggregatedAttention(_PoolBias):
    """Pixel-focused attention: 3x3 masked sliding window + pooled tokens, one softmax.

    Args:
        dim: channels.
        num_heads: attention heads.
        window_size: odd sliding-window size.
        sr_ratio: pooling ratio of the pooled tokens (``H // sr_ratio`` rows).
        trained_size: map size of the bias table (``img_size`` at this stride), ``None`` when the
            table is built per forward (``is_extrapolation``).
        qkv_bias: biases of ``q`` and ``kv``.
    """

    def __init__(self, dim: int, *, num_heads: int, window_size: int = 3, sr_ratio: int = 2,
                 trained_size: Optional[Tuple[int, int]] = None, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'AggregatedAttention: dim {dim} is not divisible by num_heads {num_heads}')
        if window_size % 2 != 1:
            raise ValueError(f'AggregatedAttention: window_size must be odd, got {window_size}')
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.window_size, self.sr_ratio = window_size, sr_ratio
        kk = window_size ** 2
        # softplus(temperature) starts at 1 / 0.24
        self.temperature = nn.Parameter(torch.log((torch.ones(num_heads, 1, 1) / 0.24).exp() - 1))
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.query_embedding = nn.Parameter(nn.init.trunc_normal_(torch.empty(num_heads, 1, self.head_dim), std=0.02))
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr = nn.Conv2d(dim, dim, kernel_size=1)
        self.norm = nn.LayerNorm(dim)
        self.act = nn.GELU()
        self._init_cpb(num_heads, trained_size, sr_ratio)
        self.relative_pos_bias_local = nn.Parameter(nn.init.trunc_normal_(torch.empty(num_heads, kk), std=0.0004))
        self.learnable_tokens = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(num_heads, self.head_dim, kk), std=0.02))
        self.learnable_bias = nn.Parameter(torch.zeros(num_heads, 1, kk))

    def forward(self, x: torch.Tensor, index: torch.Tensor, table: torch.Tensor,
                length_scale: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``; ``length_scale`` ``[H, W, 1, 1]``."""
        B, H, W, C = x.shape
        h, d, ws = self.num_heads, self.head_dim, self.window_size
        pool = (max(H // self.sr_ratio, 1), max(W // self.sr_ratio, 1))
        q_norm = F.normalize(self.q(x).reshape(B, H, W, h, d), dim=-1)
        q = ((q_norm + self.query_embedding.reshape(h, d)) * F.softplus(self.temperature).reshape(h, 1)
             * length_scale)
        k, v = self.kv(x).chunk(2, dim=-1)
        k = F.normalize(k.reshape(B, H, W, h, d), dim=-1)
        v = v.reshape(B, H, W, h, d)

        xp = F.adaptive_avg_pool2d(self.act(self.sr(x.permute(0, 3, 1, 2))), pool).flatten(2).transpose(1, 2)
        k_pool, v_pool = self.kv(self.norm(xp)).reshape(B, -1, 2 * h, d).chunk(2, dim=2)
        pool_bias = self.position_bias(index, table, (H, W), pool).reshape(h, H, W, -1)
        local_weights = (torch.einsum('bhwnd,ndk->bhwnk', q_norm, self.learnable_tokens)
                         + self.learnable_bias.reshape(h, ws * ws))
        out = local_global_attention(q, k, v, F.normalize(k_pool, dim=-1), v_pool, ws, border='mask',
                                     rpb=self.relative_pos_bias_local.reshape(h, ws, ws),
                                     extra_bias=pool_bias, local_weights=local_weights, scale=1.0)
        return self.proj(out.reshape(B, H, W, C))


class Attention(_PoolBias):
    """Full cosine attention of the last stage, with the MLP position bias over all pairs."""

    def __init__(self, dim: int, *, num_heads: int, trained_size: Optional[Tuple[int, int]] = None,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'Attention: dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.temperature = nn.Parameter(torch.log((torch.ones(num_heads, 1, 1) / 0.24).exp() - 1))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.query_embedding = nn.Parameter(nn.init.trunc_normal_(torch.empty(num_heads, 1, self.head_dim), std=0.02))
        self.proj = nn.Linear(dim, dim)
        self._init_cpb(num_heads, trained_size, 1)

    def forward(self, x: torch.Tensor, index: torch.Tensor, table: torch.Tensor,
                length_scale: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``; ``length_scale`` a scalar tensor."""
        B, H, W, C = x.shape
        n = H * W
        q, k, v = self.qkv(x).reshape(B, n, 3 * self.num_heads, self.head_dim).permute(0, 2, 1, 3).chunk(3, dim=1)
        bias = self.position_bias(index, table, (H, W), (H, W))
        q = (F.normalize(q, dim=-1) + self.query_embedding) * F.softplus(self.temperature) * length_scale
        attn = (q @ F.normalize(k, dim=-1).transpose(-2, -1) + bias).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, H, W, C))


class TransNeXtBlock(nn.Module):
    """Pre-norm attention and ConvGLU, each with a residual and drop path."""

    def __init__(self, dim: int, *, num_heads: int, window_size: Optional[int], sr_ratio: int,
                 mlp_ratio: float, trained_size: Optional[Tuple[int, int]], qkv_bias: bool = True,
                 drop_path: float = 0.0, norm_layer=nn.LayerNorm) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        if sr_ratio == 1:
            self.attn = Attention(dim, num_heads=num_heads, trained_size=trained_size, qkv_bias=qkv_bias)
        else:
            self.attn = AggregatedAttention(dim, num_heads=num_heads, window_size=window_size, sr_ratio=sr_ratio,
                                            trained_size=trained_size, qkv_bias=qkv_bias)
        self.norm2 = norm_layer(dim)
        self.mlp = ConvolutionalGLU(dim, hidden_dim=int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, index: torch.Tensor, table: torch.Tensor,
                length_scale: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), index, table, length_scale))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class OverlapPatchEmbed(nn.Module):
    """Strided convolution with padding ``k // 2`` (``ceil(H / stride)`` rows), then LayerNorm."""

    def __init__(self, in_chans: int, dim: int, *, patch_size: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, H', W', dim]``."""
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class TransNeXtStage(nn.Module):
    """Optional stride-2 patch embedding, blocks sharing one position table and length scale, and
    the stage's LayerNorm (eps 1e-6; in the trunk: the next stage embeds the normalised map, so it
    is not an optional output norm).

    Args:
        in_dim: input channels.
        dim: stage channels.
        depth: blocks.
        stride: stride of this stage's maps (4, 8, 16, 32).
        img_size: input size the bias table is built for (``None``: built per forward).
        pretrain_size: input size that scales the relative coordinates.
        downsample: start with a 3x3 stride-2 patch embedding.
    """

    def __init__(self, in_dim: int, dim: int, *, depth: int, num_heads: int, window_size: Optional[int],
                 sr_ratio: int, mlp_ratio: float, stride: int, img_size: Optional[int], pretrain_size: int,
                 downsample: bool, qkv_bias: bool = True, drop_paths: Sequence[float] = (),
                 norm_layer=nn.LayerNorm, with_cp: bool = False) -> None:
        super().__init__()
        self.downsample = OverlapPatchEmbed(in_dim, dim, patch_size=3, stride=2) if downsample else None
        self.sr_ratio, self.window_size, self.with_cp = sr_ratio, window_size, with_cp
        self.pretrain = (pretrain_size // stride,) * 2
        trained = None
        if img_size is not None:
            trained = (img_size // stride,) * 2
            key = (img_size // (stride * sr_ratio),) * 2
            index, table = relative_position_cpb(trained, key, self.pretrain, device='cpu')
            self.register_buffer('relative_pos_index', index, persistent=False)
            self.register_buffer('relative_coords_table', table, persistent=False)
        self.blocks = nn.ModuleList([
            TransNeXtBlock(dim, num_heads=num_heads, window_size=window_size, sr_ratio=sr_ratio,
                           mlp_ratio=mlp_ratio, trained_size=trained, qkv_bias=qkv_bias,
                           drop_path=drop_paths[j] if drop_paths else 0.0, norm_layer=norm_layer)
            for j in range(depth)])
        self.norm = norm_layer(dim)
        self.extrapolate = img_size is None

    def _context(self, H: int, W: int, device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pool = (max(H // self.sr_ratio, 1), max(W // self.sr_ratio, 1))
        if self.extrapolate:
            index, table = relative_position_cpb((H, W), pool, self.pretrain, device=device)
        else:
            index, table = self.relative_pos_index, self.relative_coords_table
        n_pool = pool[0] * pool[1]
        if self.sr_ratio == 1:
            scale = torch.log(torch.as_tensor(float(n_pool), device=device))
        else:
            _, vh = window_index(H, self.window_size, 'mask', device)
            _, vw = window_index(W, self.window_size, 'mask', device)
            n_local = vh.sum(1, dtype=torch.float32)[:, None] * vw.sum(1, dtype=torch.float32)[None, :]
            scale = torch.log(n_local + n_pool)[:, :, None, None]
        return index, table, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, in_dim]`` -> ``[B, H', W', dim]`` (channels last)."""
        if self.downsample is not None:
            x = self.downsample(x.permute(0, 3, 1, 2))
        ctx = self._context(x.shape[1], x.shape[2], x.device)
        return self.norm(run_blocks(self.blocks, x, self.with_cp, *ctx))


class TransNeXt(BackboneMixin, nn.Module):
    """TransNeXt backbone (official dense-prediction definition).

    Args:
        embed_dims: channels per stage.
        depths: blocks per stage.
        num_heads: heads per stage.
        mlp_ratios: ConvGLU expansion per stage.
        sr_ratios: pooling ratio per stage (1: full attention).
        window_size: sliding-window size of the aggregated-attention stages.
        img_size: input size the position-bias tables are built for (official dense configs: the
            training crop, e.g. 512 or 800); ignored with ``is_extrapolation``.
        pretrain_size: input size of the pre-training (224 for the ImageNet-1k weights); default
            ``img_size``.
        is_extrapolation: build the bias tables for each input's own maps instead of resizing the
            ``img_size`` ones.
        in_chans: input channels.
        out_indices: stages whose (normalised) maps are returned.
        drop_path_rate: stochastic depth, rising linearly over the blocks.
        frozen_stages, norm_eval, with_cp: see ``docs/adding_a_backbone.md``.
    """

    size_divisibility = 0
    channels_last = True

    def __init__(self, *, embed_dims: Sequence[int] = (72, 144, 288, 576), depths: Sequence[int] = (2, 2, 15, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), mlp_ratios: Sequence[float] = (8, 8, 4, 4),
                 sr_ratios: Sequence[int] = (8, 4, 2, 1), window_size: int = 3, img_size: int = 224,
                 pretrain_size: Optional[int] = None, is_extrapolation: bool = False, qkv_bias: bool = True,
                 in_chans: int = 3, out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.0, frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        num_stages = len(depths)
        for name, seq in (('embed_dims', embed_dims), ('num_heads', num_heads), ('mlp_ratios', mlp_ratios),
                          ('sr_ratios', sr_ratios)):
            if len(seq) != num_stages:
                raise ValueError(f'TransNeXt: {name}={tuple(seq)} needs one entry per stage (depths={tuple(depths)})')
        self._init_contract(num_stages=num_stages, out_indices=out_indices, frozen_stages=frozen_stages,
                            norm_eval=norm_eval)
        self.dims = list(embed_dims)
        pretrain_size = pretrain_size or img_size
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.stem = OverlapPatchEmbed(in_chans, embed_dims[0], patch_size=7, stride=4)
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.stages.append(TransNeXtStage(
                embed_dims[max(i - 1, 0)], embed_dims[i], depth=depths[i], num_heads=num_heads[i],
                window_size=window_size, sr_ratio=sr_ratios[i], mlp_ratio=mlp_ratios[i], stride=4 * 2 ** i,
                img_size=None if is_extrapolation else img_size, pretrain_size=pretrain_size, downsample=i > 0,
                qkv_bias=qkv_bias, drop_paths=dpr[start:start + depths[i]], norm_layer=norm_layer,
                with_cp=with_cp))
            start += depths[i]
        self._init_feature_info(embed_dims, [4 * 2 ** i for i in range(num_stages)])
        self._init_out_norms(None)  # each stage ends with its norm (``stages.i.norm``)
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """The official init: truncated-normal linears, fan-out normal convolutions, unit LNs."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, C_i, ceil(H / s_i), ceil(W / s_i)]`` per out index."""
        return self.forward_stages(self.stem(x))


# ------------------------------------------------------------------------------------------------
# Official checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

_DENSEKIT_KEY = re.compile(r'^(stem|stages)\.')
_CLASSIFIER_KEY = re.compile(r'^head\.')
# Position tables are rebuilt from the configuration; the official code never saves them
# (``persistent=False``), some exported checkpoints do.
_BUFFER_KEY = re.compile(r'^(relative_pos_index|relative_coords_table)\d+$|\.seq_length_scale$')


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official TransNeXt checkpoint (ImageNet, mmdet or mmseg) -> densekit keys.

    ``patch_embed1`` -> ``stem``; ``patch_embed{i}`` (i > 1) -> ``stages.{i-1}.downsample``;
    ``block{i}.{j}`` -> ``stages.{i-1}.blocks.{j}``; ``norm{i}`` -> ``stages.{i-1}.norm`` (the
    per-stage norms of the classifier and the dense code alike); ``head`` is dropped.
    """
    out: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in strip_wrapper_prefix(state_dict).items():
        if _DENSEKIT_KEY.match(key):
            out[key] = value
            continue
        if _CLASSIFIER_KEY.match(key) or _BUFFER_KEY.search(key):
            continue
        m = re.match(r'^patch_embed(\d+)\.(.*)$', key)
        if m:
            i = int(m.group(1)) - 1
            out[f'stem.{m.group(2)}' if i == 0 else f'stages.{i}.downsample.{m.group(2)}'] = value
            continue
        m = re.match(r'^block(\d+)\.(\d+)\.(.*)$', key)
        if m:
            out[f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.{m.group(3)}'] = value
            continue
        m = re.match(r'^norm(\d+)\.(.*)$', key)
        if m:
            out[f'stages.{int(m.group(1)) - 1}.norm.{m.group(2)}'] = value
            continue
        unknown.append(key)
    if unknown:
        raise KeyError(f"TransNeXt converter: unrecognised keys {unknown[:8]}"
                       f"{' ...' if len(unknown) > 8 else ''}")
    return out


register_converter('transnext', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants
# ------------------------------------------------------------------------------------------------

_ARCH = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'sr_ratios', 'window_size', 'qkv_bias')


def _create_transnext(kwargs: dict, *, embed_dims, depths, num_heads, drop_path_rate: float,
                      mlp_ratios=(8, 8, 4, 4), sr_ratios=(8, 4, 2, 1)) -> TransNeXt:
    """``kwargs`` may set ``img_size``, ``pretrain_size``, ``is_extrapolation`` and the training
    arguments, not the architecture."""
    check_variant_kwargs(TransNeXt, _ARCH, kwargs)
    kwargs.setdefault('drop_path_rate', drop_path_rate)
    return TransNeXt(embed_dims=embed_dims, depths=depths, num_heads=num_heads, mlp_ratios=mlp_ratios,
                     sr_ratios=sr_ratios, window_size=3, qkv_bias=True, **kwargs)


# Architectures of classification/transnext.py; drop_path_rate defaults are the official
# dense-prediction values (micro: the classification one).

@register_backbone(name='transnext_micro')
def transnext_micro(**kwargs) -> TransNeXt:
    """TransNeXt-Micro (12.8M params with the ImageNet head)."""
    return _create_transnext(kwargs, embed_dims=(48, 96, 192, 384), depths=(2, 2, 15, 2),
                             num_heads=(2, 4, 8, 16), drop_path_rate=0.15)


@register_backbone(name='transnext_tiny')
def transnext_tiny(**kwargs) -> TransNeXt:
    """TransNeXt-Tiny (28.2M params with the ImageNet head)."""
    return _create_transnext(kwargs, embed_dims=(72, 144, 288, 576), depths=(2, 2, 15, 2),
                             num_heads=(3, 6, 12, 24), drop_path_rate=0.4)


@register_backbone(name='transnext_small')
def transnext_small(**kwargs) -> TransNeXt:
    """TransNeXt-Small (49.7M params with the ImageNet head)."""
    return _create_transnext(kwargs, embed_dims=(72, 144, 288, 576), depths=(5, 5, 22, 5),
                             num_heads=(3, 6, 12, 24), drop_path_rate=0.6)


@register_backbone(name='transnext_base')
def transnext_base(**kwargs) -> TransNeXt:
    """TransNeXt-Base (89.7M params with the ImageNet head)."""
    return _create_transnext(kwargs, embed_dims=(96, 192, 384, 768), depths=(5, 5, 23, 5),
                             num_heads=(4, 8, 16, 32), drop_path_rate=0.7)


@register_backbone(name='transnext_test')
def transnext_test(**kwargs) -> TransNeXt:
    """A tiny TransNeXt for tests (not a published model): every attention kind, 64 px tables."""
    kwargs.setdefault('img_size', 64)
    return _create_transnext(kwargs, embed_dims=(8, 16, 16, 32), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                             mlp_ratios=(2, 2, 2, 2), drop_path_rate=0.0)
