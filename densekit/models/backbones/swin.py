"""Swin Transformer as a dense-prediction backbone, on densekit's window-attention op.

Paper: Z. Liu, Y. Lin, Y. Cao, H. Hu, Y. Wei, Z. Zhang, S. Lin, B. Guo, "Swin Transformer:
Hierarchical Vision Transformer using Shifted Windows", ICCV 2021, https://arxiv.org/abs/2103.14030.

Numerics follow the official detection / segmentation code (Swin-Transformer-Object-Detection,
Swin-Transformer-Semantic-Segmentation; mmdet's ``SwinTransformer`` is a port of it), which takes
any input size:

* the image is zero-padded at the bottom / right to a multiple of the patch size;
* in every block the *normalised* map is zero-padded to a multiple of the window before the qkv
  projection (padded tokens carry the projection bias and are attended to), then cyclically
  shifted; every odd block is shifted by ``window // 2`` whatever the map size (unlike the
  classification code, which stops shifting once the map fits in one window);
* patch merging zero-pads odd maps to even size;
* one LayerNorm per returned map (``out_norm``).

The attention itself is :func:`densekit.ops.window_attention` (reference / Triton / FlexAttention
backends); windowing and padding helpers come from :mod:`densekit.layers.window`.

Parameter names follow timm's ``swin_transformer.py`` (patch merging at the start of stages 1-3;
the relative position bias kept as the official ``[(2w-1)^2, heads]`` table), so timm checkpoints
load unchanged; :func:`checkpoint_filter_fn` also maps the official releases.
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp

from densekit.layers import DropPath, drop_path_schedule, init_trunc_normal_, run_blocks
from densekit.layers.window import pad_to_multiple, rpb_table_to_dense, to_2tuple, unpad
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
from densekit.models.convert import register_converter
from densekit.models.registry import register_backbone
from densekit.ops.window import window_attention

__all__ = ['SwinTransformer', 'checkpoint_filter_fn']


class SwinPatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution + LayerNorm; returns ``[B, H/p, W/p, C]``.

    The input is zero-padded to a multiple of ``patch_size`` first (official dense-prediction code).
    """

    def __init__(self, in_chans: int, embed_dim: int, *, patch_size: int, patch_norm: bool = True) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        x = F.pad(x, (0, (p - x.shape[3] % p) % p, 0, (p - x.shape[2] % p) % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinPatchMerging(nn.Module):
    """2x2 patch merging: ``[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), out_dim]``.

    Odd maps are zero-padded to even size. The four neighbours are concatenated in the official
    order ``(0, 0), (1, 0), (0, 1), (1, 1)`` (row, column offsets), which fixes the meaning of the
    ``4C`` input channels of ``norm`` and ``reduction`` in the released checkpoints.
    """

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = pad_to_multiple(x, 2)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinWindowAttention(nn.Module):
    """Multi-head (shifted-)window self-attention with a relative position bias.

    Args:
        dim: channels.
        num_heads: attention heads.
        window_size: window side (square windows, as in every released Swin).
        qkv_bias: bias on the qkv projection.
    """

    def __init__(self, dim: int, *, num_heads: int, window_size: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SwinWindowAttention: dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.window_size = to_2tuple(window_size, 'window_size')
        self.scale = (dim // num_heads) ** -0.5
        wh, ww = self.window_size
        # Stored as the official table so checkpoints load as they are; the op takes the dense
        # [heads, 2wh-1, 2ww-1] view of it (differentiable, no copy of the parameter).
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, shift: int) -> torch.Tensor:
        """``x``: ``[B, Hp, Wp, C]`` with ``Hp``, ``Wp`` window multiples; returns the same shape."""
        B, H, W, C = x.shape
        q, k, v = self.qkv(x).view(B, H, W, 3, self.num_heads, C // self.num_heads).unbind(3)
        rpb = rpb_table_to_dense(self.relative_position_bias_table, self.window_size)
        out = window_attention(q, k, v, self.window_size, shift=shift, rpb=rpb, scale=self.scale)
        return self.proj(out.reshape(B, H, W, C))


class SwinBlock(nn.Module):
    """Pre-norm (S)W-MSA and MLP residual blocks on a channels-last map ``[B, H, W, C]``.

    Args:
        dim: channels.
        num_heads: attention heads.
        window_size: window side.
        shift: cyclic shift (0 for W-MSA, ``window_size // 2`` for SW-MSA).
        mlp_ratio: MLP hidden width relative to ``dim``.
        qkv_bias: bias on the qkv projection.
        drop_path: drop-path probability of both residual branches.
    """

    def __init__(self, dim: int, *, num_heads: int, window_size: int, shift: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SwinWindowAttention(dim, num_heads=num_heads, window_size=window_size, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        y, size = pad_to_multiple(self.norm1(x), self.window_size)
        y = unpad(self.attn(y, self.shift), size)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """Optional patch merging (stages 1-3), then ``depth`` blocks alternating W-MSA / SW-MSA."""

    def __init__(self, in_dim: int, dim: int, *, depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float, qkv_bias: bool, drop_paths: Sequence[float], downsample: bool,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.downsample = SwinPatchMerging(in_dim, dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinBlock(dim, num_heads=num_heads, window_size=window_size,
                      shift=0 if i % 2 == 0 else window_size // 2,
                      mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=drop_paths[i])
            for i in range(depth)])
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        return run_blocks(self.blocks, x, self.with_cp)


class SwinTransformer(BackboneMixin, nn.Module):
    """Swin Transformer backbone returning NCHW maps at strides 4, 8, 16, 32.

    Args:
        embed_dim: channels of stage 0 (doubled at every stage).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window side (7 for the 224-pretrained models, 12 for the
            384-pretrained ones).
        patch_size: stem patch size.
        in_chans: input channels.
        mlp_ratio: MLP hidden width relative to the stage width.
        qkv_bias: bias on the qkv projections.
        patch_norm: LayerNorm after the patch embedding.
        out_indices: stages (0-based) whose output is returned.
        out_norm: LayerNorm on every returned map (official dense-prediction code).
        drop_path_rate: drop-path probability, rising linearly over all blocks to this value
            (official detection configs: 0.2 for T, 0.3 for S / B).
        frozen_stages: ``-1`` freezes nothing, ``0`` the patch embedding, ``k`` the patch embedding
            and stages ``0..k-1`` (with the patch merging that starts them and their output
            norms); frozen modules stay in eval mode.
        norm_eval: keep BatchNorms in eval mode while training (Swin has none; accepted for the
            common contract).
        with_cp: recompute each block in the backward pass (activation checkpointing).
    """

    size_divisibility = 0  # pads internally to the patch size and to window multiples
    channels_last = True
    stem_attr = 'patch_embed'  # timm's parameter names
    stages_attr = 'layers'

    def __init__(self, *,
                 embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int = 7,
                 patch_size: int = 4,
                 in_chans: int = 3,
                 mlp_ratio: float = 4.0,
                 qkv_bias: bool = True,
                 patch_norm: bool = True,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: bool = True,
                 drop_path_rate: float = 0.0,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"SwinTransformer: depths={tuple(depths)} and num_heads={tuple(num_heads)} "
                             f"must have the same length")
        if not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"SwinTransformer: window_size must be a positive int, got {window_size!r}")
        num_stages = len(depths)
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        self.window_size = window_size
        dims = [embed_dim * 2 ** i for i in range(num_stages)]

        self.patch_embed = SwinPatchEmbed(in_chans, embed_dim, patch_size=patch_size, patch_norm=patch_norm)
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.layers.append(SwinStage(
                dims[max(i - 1, 0)], dims[i], depth=depths[i], num_heads=num_heads[i],
                window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                drop_paths=dpr[start:start + depths[i]], downsample=i > 0, with_cp=with_cp))
            start += depths[i]
        self._init_feature_info(dims, [patch_size * 2 ** i for i in range(num_stages)])
        self._init_out_norms(nn.LayerNorm if out_norm else None)
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """Random init of the paper (truncated normal, std 0.02); checkpoints load over it."""
        for name, p in self.named_parameters():
            if name.endswith('relative_position_bias_table'):
                nn.init.trunc_normal_(p, std=0.02)
        init_trunc_normal_(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, C_i, ceil(H / s_i), ceil(W / s_i)]`` map per out index."""
        return self.forward_stages(self.patch_embed(x))


# ------------------------------------------------------------------------------------------------
# Official / timm / OpenMMLab checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

def _unfold_to_official_order(v: torch.Tensor) -> torch.Tensor:
    """Undo the channel order of OpenMMLab's ``nn.Unfold`` patch merging along the last dim.

    OpenMMLab stores merged channel ``c * 4 + j`` (channel-major, neighbour ``j`` in unfold order)
    where the official layout has ``order[j] * C + c`` (neighbour-major, official order), with
    ``order = (0, 2, 1, 3)``: unfold walks the 2x2 neighbourhood row by row, the official
    concatenation column by column.
    """
    order = [0, 2, 1, 3]
    lead = v.shape[:-1]
    v = v.reshape(*lead, v.shape[-1] // 4, 4).transpose(-1, -2)  # [..., j, c]
    return v[..., order, :].reshape(*lead, -1)


def _mmcv_to_official(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """mmdet / mmseg ``SwinTransformer`` keys -> official keys (inverse of their ``swin_converter``)."""
    out = {}
    for k, v in sd.items():
        k = k.replace('patch_embed.projection.', 'patch_embed.proj.')
        k = re.sub(r'^stages\.', 'layers.', k)
        k = k.replace('.attn.w_msa.', '.attn.')
        k = k.replace('.ffn.layers.0.0.', '.mlp.fc1.').replace('.ffn.layers.1.', '.mlp.fc2.')
        if re.match(r'^layers\.\d+\.downsample\.(norm|reduction)\.weight$', k) or \
                re.match(r'^layers\.\d+\.downsample\.norm\.bias$', k):
            v = _unfold_to_official_order(v)
        out[k] = v
    return out


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official (classification or detection/segmentation) or timm Swin -> densekit keys.

    Accepted layouts:

    * official (microsoft/Swin-Transformer and the Swin detection / segmentation repos, the
      latter usually under a ``backbone.`` prefix with ``norm{i}`` output norms): patch merging
      at the *end* of stage ``i`` (``layers.{i}.downsample``), moved to the start of stage
      ``i + 1`` here;
    * timm: patch merging already at the start of stages 1-3 (``head.fc.*``);
    * mmdet / mmseg ``SwinTransformer`` (their model-zoo backbones and detectors: ``stages.*``,
      ``attn.w_msa``, ``ffn.layers``, ``patch_embed.projection``): besides the renames, their
      ``nn.Unfold`` patch merging orders the ``4C`` merged channels differently, which is undone;
    * densekit's own keys.

    Dropped: the classification head and final ``norm``, ``relative_position_index`` / ``attn_mask``
    buffers, non-backbone entries of detector checkpoints. Absolute position embeddings (``ape``)
    and SwinV2 checkpoints are rejected with an error.
    """
    sd = dict(state_dict)
    if any(k.startswith('backbone.') for k in sd):
        sd = {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}
    for marker, what in (('absolute_pos_embed', 'absolute position embedding (ape=True)'),
                         ('logit_scale', 'SwinV2 (cosine attention)'), ('cpb_mlp', 'SwinV2 (cosine attention)')):
        bad = [k for k in sd if marker in k]
        if bad:
            raise ValueError(f"Swin converter: unsupported checkpoint: {what} (e.g. key {bad[0]!r})")
    if any('.attn.w_msa.' in k or k.startswith('patch_embed.projection.') for k in sd):
        sd = _mmcv_to_official(sd)
    # Official checkpoints merge patches at the end of a stage (stage 0 has a downsample); timm
    # and densekit at the start (stage 0 has none).
    official = any(k.startswith('layers.0.downsample.') for k in sd)
    out = {}
    for k, v in sd.items():
        if k.startswith(('head.', 'norm.', 'head_')) or k.endswith(('relative_position_index', 'attn_mask')):
            continue
        if official:
            k = re.sub(r'^layers\.(\d+)\.downsample\.', lambda m: f'layers.{int(m.group(1)) + 1}.downsample.', k)
        k = re.sub(r'^norm(\d)\.', r'out_norms.\1.', k)
        if not k.startswith(('patch_embed.', 'layers.', 'out_norms.')):
            raise KeyError(f"Swin converter: unexpected key {k!r} (not a Swin backbone key)")
        out[k] = v
    return out


register_converter('swin', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants
# ------------------------------------------------------------------------------------------------

def _create_swin(kwargs: dict, *, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int],
                 window_size: int) -> SwinTransformer:
    check_variant_kwargs(SwinTransformer, ('embed_dim', 'depths', 'num_heads', 'window_size'), kwargs)
    return SwinTransformer(embed_dim=embed_dim, depths=depths, num_heads=num_heads,
                           window_size=window_size, **kwargs)


@register_backbone(name='swin_tiny')
def swin_tiny(**kwargs) -> SwinTransformer:
    """Swin-T, window 7 (28M)."""
    return _create_swin(kwargs, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7)


@register_backbone(name='swin_small')
def swin_small(**kwargs) -> SwinTransformer:
    """Swin-S, window 7 (50M)."""
    return _create_swin(kwargs, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), window_size=7)


@register_backbone(name='swin_base')
def swin_base(**kwargs) -> SwinTransformer:
    """Swin-B, window 7 (88M; 224 ImageNet-1k / -22k weights)."""
    return _create_swin(kwargs, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=7)


@register_backbone(name='swin_base_w12')
def swin_base_w12(**kwargs) -> SwinTransformer:
    """Swin-B, window 12 (the 384-pretrained weights)."""
    return _create_swin(kwargs, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12)


@register_backbone(name='swin_large')
def swin_large(**kwargs) -> SwinTransformer:
    """Swin-L, window 7 (197M; ImageNet-22k weights)."""
    return _create_swin(kwargs, embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=7)


@register_backbone(name='swin_large_w12')
def swin_large_w12(**kwargs) -> SwinTransformer:
    """Swin-L, window 12 (the 384-pretrained ImageNet-22k weights used by most detectors)."""
    return _create_swin(kwargs, embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48), window_size=12)


@register_backbone(name='swin_test')
def swin_test(**kwargs) -> SwinTransformer:
    """A tiny Swin for tests (not a published model); two blocks per stage so every stage shifts."""
    return _create_swin(kwargs, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7)
