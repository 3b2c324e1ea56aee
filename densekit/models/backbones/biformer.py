"""BiFormer: vision transformer with bi-level routing attention.

Zhu, Wang, Ke, Zhang, Lau, "BiFormer: Vision Transformer with Bi-Level Routing Attention",
CVPR 2023 (arXiv:2303.08810).

The numerics follow the official dense-prediction backbone (rayleizhu/BiFormer,
``object_detection/models_mm/biformer_mm.py``: the ``BiFormer`` class of ``models/biformer.py``
with ``ops/bra_legacy.py``'s ``BiLevelRoutingAttention``, ``auto_pad=True``): a two-conv BN stem
(stride 4), four stages of blocks (3x3 depthwise conv position embedding, pre-norm attention and
MLP) separated by strided conv + BN downsamplers, and a LayerNorm on every returned map. Stages
0-2 use bi-level routing attention; stage 3 global attention with a 5x5 depthwise conv on its
input added before the output projection.

Bi-level routing attention: the (normalised) map is split into ``n_win x n_win`` regions; region
queries and keys are the means of q and k over each region; each region routes to the ``topk``
regions of highest ``q_r . k_r`` (no gradient through the routing); every query of a region then
attends to all tokens of its routed regions (:func:`densekit.ops.routed_attention`), and a 5x5
depthwise conv of v (local context enhancement) is added. Any input size: a map whose sides are
not multiples of ``n_win`` is zero-padded on the bottom / right *after* the block norm, so padded
tokens carry the qkv projection bias and take part in the region means, the routing, the
attention (unmasked) and the conv, exactly as the official ``auto_pad``; the output is cropped.
"""
from __future__ import annotations

import re
from functools import partial
from typing import Dict, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp

from densekit.layers import DropPath, LayerNorm2d, drop_path_schedule, init_trunc_normal_, run_blocks
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone
from densekit.ops.routed import routed_attention

__all__ = ['BiFormer', 'BiLevelRoutingAttention', 'GlobalAttentionLePE', 'checkpoint_filter_fn']


class BiLevelRoutingAttention(nn.Module):
    """Bi-level routing attention on ``[B, H, W, C]`` maps (official ``bra_legacy``, ``qkvo``).

    Args:
        dim: channels (also the q / k width, as in every released BiFormer).
        num_heads: heads.
        n_win: regions per side.
        topk: routed regions per region.
        side_dwconv: kernel of the depthwise local-context conv on v.
        attn_backend: :func:`densekit.ops.routed_attention` backend.
    """

    def __init__(self, dim: int, *, num_heads: int, n_win: int, topk: int, side_dwconv: int = 5,
                 attn_backend: str | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"BiLevelRoutingAttention: dim={dim} is not divisible by num_heads={num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.n_win = n_win
        self.topk = topk
        self.scale = dim ** -0.5  # the official scale uses the whole q / k width, not the head's
        self.attn_backend = attn_backend
        self.qkv = nn.Linear(dim, 3 * dim)
        self.wo = nn.Linear(dim, dim)
        self.lepe = nn.Conv2d(dim, dim, kernel_size=side_dwconv, padding=side_dwconv // 2, groups=dim)

    def route(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Region routing: ``[B, Hp, Wp, C]`` q, k -> ``[B, n_win**2, topk]`` region indices."""
        B, Hp, Wp, C = q.shape
        n = self.n_win
        with torch.no_grad():
            q_r = q.detach().reshape(B, n, Hp // n, n, Wp // n, C).mean((2, 4)).reshape(B, n * n, C)
            k_r = k.detach().reshape(B, n, Hp // n, n, Wp // n, C).mean((2, 4)).reshape(B, n * n, C)
            logits = (q_r * self.scale) @ k_r.transpose(-1, -2)
            return torch.topk(logits, k=self.topk, dim=-1).indices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        B, H, W, C = x.shape
        n = self.n_win
        pad_b, pad_r = (n - H % n) % n, (n - W % n) % n
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        q, k, v = self.qkv(x).split(C, dim=-1)
        index = self.route(q, k)
        lepe = self.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        heads = lambda t: t.reshape(B, Hp, Wp, self.num_heads, C // self.num_heads)  # noqa: E731
        out = routed_attention(heads(q), heads(k), heads(v), index, n, scale=self.scale,
                               backend=self.attn_backend)
        out = self.wo(out.reshape(B, Hp, Wp, C) + lepe)
        if pad_b or pad_r:
            out = out[:, :H, :W].contiguous()
        return out


class GlobalAttentionLePE(nn.Module):
    """Global multi-head attention plus a depthwise conv of its input (official ``AttentionLePE``,
    the last stage: no qkv bias, eight heads)."""

    def __init__(self, dim: int, *, num_heads: int = 8, side_dwconv: int = 5) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"GlobalAttentionLePE: dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.lepe = nn.Conv2d(dim, dim, kernel_size=side_dwconv, padding=side_dwconv // 2, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        B, H, W, C = x.shape
        q, k, v = self.qkv(x).reshape(B, H * W, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, H, W, C)
        return self.proj(out + self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class BiFormerBlock(nn.Module):
    """Depthwise-conv position embedding, then pre-norm attention and MLP (LayerNorm eps 1e-6).

    Args:
        dim: channels.
        num_heads: heads of the routing attention (the global attention has eight).
        n_win: regions per side.
        topk: routed regions; ``-2`` is the last stage's global attention.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        side_dwconv: kernel of the attention's depthwise conv.
        drop_path: drop-path probability of this block.
        attn_backend: :func:`densekit.ops.routed_attention` backend.
    """

    def __init__(self, dim: int, *, num_heads: int, n_win: int, topk: int, mlp_ratio: float = 3.0,
                 side_dwconv: int = 5, drop_path: float = 0.0, attn_backend: str | None = None) -> None:
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if topk > 0:
            self.attn = BiLevelRoutingAttention(dim, num_heads=num_heads, n_win=n_win, topk=topk,
                                                side_dwconv=side_dwconv, attn_backend=attn_backend)
        elif topk == -2:
            self.attn = GlobalAttentionLePE(dim, side_dwconv=side_dwconv)
        else:
            raise ValueError(f"BiFormerBlock: topk={topk}; expected > 0 (routing) or -2 (global attention)")
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        x = (x + self.pos_embed(x)).permute(0, 2, 3, 1)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)


class BiFormerStage(nn.Module):
    """An optional 3x3 stride-2 conv + BN downsampler (every stage but the first), then blocks."""

    def __init__(self, in_dim: int, dim: int, *, downsample: bool, depth: int, num_heads: int, n_win: int,
                 topk: int, mlp_ratio: float, side_dwconv: int, drop_paths: Sequence[float],
                 attn_backend: str | None, with_cp: bool) -> None:
        super().__init__()
        self.downsample = nn.Sequential(
            nn.Conv2d(in_dim, dim, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(dim),
        ) if downsample else None
        self.with_cp = with_cp
        self.blocks = nn.ModuleList(
            BiFormerBlock(dim, num_heads=num_heads, n_win=n_win, topk=topk, mlp_ratio=mlp_ratio,
                          side_dwconv=side_dwconv, drop_path=drop_paths[j], attn_backend=attn_backend)
            for j in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim, H, W]`` -> ``[B, dim, H', W']``."""
        if self.downsample is not None:
            x = self.downsample(x)
        return run_blocks(self.blocks, x, self.with_cp)


class BiFormer(BackboneMixin, nn.Module):
    """BiFormer backbone returning NCHW maps at strides 4, 8, 16, 32.

    Args:
        embed_dims: channels per stage.
        depths: blocks per stage.
        topks: routed regions per stage (``-2``: global attention, the official last stage).
        n_win: regions per side of the routing partition, the same in every stage. It changes
            the outputs, not the parameters: the official ImageNet models use 7 (224 px), the
            detection configs 16, the segmentation configs 8.
        head_dim: channels per head of the routing attention.
        mlp_ratio: MLP hidden width relative to the channels.
        side_dwconv: kernel of the attention's depthwise conv (local context enhancement).
        in_chans: input channels.
        out_indices: stages to return (0-based).
        out_norm: a LayerNorm (eps 1e-6) on each returned map, as the official dense code.
        drop_path_rate: drop-path probability, rising linearly over all blocks to this value.
        frozen_stages: -1 freezes nothing, 0 the stem, ``k`` the stem and stages ``0..k-1``.
        norm_eval: keep the stem's and downsamplers' BatchNorms in eval mode while training.
        with_cp: activation checkpointing of every block.
        attn_backend: :func:`densekit.ops.routed_attention` backend (``None``: automatic).
    """

    size_divisibility = 0  # any input size: maps are padded to region multiples in each block
    channels_last = False

    def __init__(self, *,
                 embed_dims: Sequence[int] = (64, 128, 256, 512),
                 depths: Sequence[int] = (2, 2, 8, 2),
                 topks: Sequence[int] = (1, 4, 16, -2),
                 n_win: int = 7,
                 head_dim: int = 32,
                 mlp_ratio: float = 3.0,
                 side_dwconv: int = 5,
                 in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: bool = True,
                 drop_path_rate: float = 0.0,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 attn_backend: str | None = None) -> None:
        super().__init__()
        num_stages = len(depths)
        if len(embed_dims) != num_stages or len(topks) != num_stages:
            raise ValueError(f"BiFormer: depths={tuple(depths)}, embed_dims={tuple(embed_dims)} and "
                             f"topks={tuple(topks)} differ in length")
        if n_win < 1:
            raise ValueError(f"BiFormer: n_win={n_win} must be >= 1")
        if any(t > n_win ** 2 for t in topks):
            raise ValueError(f"BiFormer: topks={tuple(topks)} route to more than the n_win**2={n_win ** 2} regions")
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        self.dims = list(embed_dims)
        self.n_win = n_win
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, embed_dims[0] // 2, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(embed_dims[0] // 2),
            nn.GELU(),
            nn.Conv2d(embed_dims[0] // 2, embed_dims[0], kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(embed_dims[0]),
        )
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.stages.append(BiFormerStage(
                embed_dims[max(i - 1, 0)], embed_dims[i], downsample=i > 0, depth=depths[i],
                num_heads=embed_dims[i] // head_dim, n_win=n_win, topk=topks[i], mlp_ratio=mlp_ratio,
                side_dwconv=side_dwconv, drop_paths=dpr[start:start + depths[i]],
                attn_backend=attn_backend, with_cp=with_cp))
            start += depths[i]
        self._init_feature_info(self.dims, [4 * 2 ** i for i in range(num_stages)])
        self._init_out_norms(partial(LayerNorm2d, eps=1e-6) if out_norm else None)
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """The official random init (truncated normal std 0.02 for Linear layers, PyTorch's default
        for the convolutions); checkpoints load over it."""
        init_trunc_normal_(self, conv=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, C_i, ceil(H / s_i), ceil(W / s_i)]`` per out index."""
        return self.forward_stages(self.stem(x))


# ------------------------------------------------------------------------------------------------
# Official checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

_DENSEKIT_KEY = re.compile(r'^(stem|stages|out_norms)\.')
# The classifier's head and its final BatchNorm have no counterpart in a backbone; the official
# dense code deletes both and leaves its per-output norms at their initial values.
_CLASSIFIER_KEY = re.compile(r'^(head|norm|pre_logits)\.')
_BLOCK_RULES = (
    (re.compile(r'^attn\.qkv\.qkv\.'), 'attn.qkv.'),  # the routing attention's QKVLinear wrapper
    (re.compile(r'^mlp\.0\.'), 'mlp.fc1.'),
    (re.compile(r'^mlp\.3\.'), 'mlp.fc2.'),  # mlp.1 is an Identity, mlp.2 the GELU
)


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official BiFormer checkpoint (ImageNet, mmdet or mmseg) -> densekit keys.

    ``downsample_layers.0`` is the stem, ``downsample_layers.i`` (i > 0) the downsampler at the
    start of our stage ``i``, ``stages.i.j`` block ``j`` of stage ``i``, ``extra_norms.i`` the
    output norms; keys already in densekit's format pass through unchanged.
    """
    out: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in strip_wrapper_prefix(state_dict).items():
        if _DENSEKIT_KEY.match(key) and not re.match(r'^stages\.\d+\.\d+\.', key):
            out[key] = value
            continue
        if _CLASSIFIER_KEY.match(key):
            continue
        m = re.match(r'^downsample_layers\.(\d+)\.(.*)$', key)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            out[f'stem.{rest}' if i == 0 else f'stages.{i}.downsample.{rest}'] = value
            continue
        m = re.match(r'^stages\.(\d+)\.(\d+)\.(.*)$', key)
        if m:
            rest = m.group(3)
            for pattern, repl in _BLOCK_RULES:
                rest = pattern.sub(repl, rest)
            out[f'stages.{m.group(1)}.blocks.{m.group(2)}.{rest}'] = value
            continue
        m = re.match(r'^extra_norms\.(\d+)\.(.*)$', key)
        if m:
            out[f'out_norms.{m.group(1)}.{m.group(2)}'] = value
            continue
        unknown.append(key)
    if unknown:
        raise KeyError(f"BiFormer converter: unrecognised keys {unknown[:8]}"
                       f"{' ...' if len(unknown) > 8 else ''}")
    return out


register_converter('biformer', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants
# ------------------------------------------------------------------------------------------------

_ARCH = ('embed_dims', 'depths', 'topks', 'head_dim', 'mlp_ratio', 'side_dwconv')


def _create_biformer(kwargs: dict, *, embed_dims: Sequence[int], depths: Sequence[int],
                     drop_path_rate: float, topks: Sequence[int] = (1, 4, 16, -2)) -> BiFormer:
    """``kwargs`` may set ``n_win`` and the training arguments, not the architecture."""
    check_variant_kwargs(BiFormer, _ARCH, kwargs)
    kwargs.setdefault('drop_path_rate', drop_path_rate)
    return BiFormer(embed_dims=embed_dims, depths=depths, topks=topks, head_dim=32, mlp_ratio=3.0,
                    side_dwconv=5, **kwargs)


# The official ImageNet definitions (models/biformer.py); ``n_win`` defaults to their 7, the dense
# configs set 16 (COCO) or 8 (ADE20K). drop_path_rate: the official dense configs' values (the
# Tiny model has none; its classification value).

@register_backbone(name='biformer_tiny')
def biformer_tiny(**kwargs) -> BiFormer:
    """BiFormer-T (13.1M params with the ImageNet head)."""
    return _create_biformer(kwargs, embed_dims=(64, 128, 256, 512), depths=(2, 2, 8, 2), drop_path_rate=0.1)


@register_backbone(name='biformer_small')
def biformer_small(**kwargs) -> BiFormer:
    """BiFormer-S (25.5M params with the ImageNet head)."""
    return _create_biformer(kwargs, embed_dims=(64, 128, 256, 512), depths=(4, 4, 18, 4), drop_path_rate=0.2)


@register_backbone(name='biformer_base')
def biformer_base(**kwargs) -> BiFormer:
    """BiFormer-B (56.8M params with the ImageNet head)."""
    return _create_biformer(kwargs, embed_dims=(96, 192, 384, 768), depths=(4, 4, 18, 4), drop_path_rate=0.3)


@register_backbone(name='biformer_test')
def biformer_test(**kwargs) -> BiFormer:
    """Tiny, unpublished configuration for tests: top-1 and top-k routing, maps smaller than and
    not divisible by ``n_win`` (padding), equal widths across a downsampler, the global last stage."""
    kwargs.setdefault('n_win', 4)
    return _create_biformer(kwargs, embed_dims=(32, 64, 64, 64), depths=(1, 1, 2, 1), topks=(1, 3, 6, -2),
                            drop_path_rate=0.1)
