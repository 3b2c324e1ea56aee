"""FLatten: focused linear attention in Swin and PVT, as dense-prediction backbones.

Paper: D. Han, X. Pan, Y. Han, S. Song, G. Huang, "FLatten Transformer: Vision Transformer using
Focused Linear Attention", ICCV 2023, https://arxiv.org/abs/2308.00442.

The numerics follow the official classification models of LeapLabTHU/FLatten-Transformer
(``models/flatten_swin.py``, ``models/flatten_pvt.py``; no dense code is published). Focused
linear attention (``FocusedLinearAttention``) maps queries and keys (keys plus a learned position
encoding) through ``ReLU + 1e-6``, divides them by ``softplus(scale)`` and applies the focusing
function ``f_p(x) = ||x|| * x ** p / ||x ** p||`` (norms over all channels, ``p = 3``); per head,
``out = phi(q) (phi(k)^T v) / (phi(q) mean(phi(k)) + 1e-6)``; a depthwise ``5 x 5`` convolution of
the values (shared by the heads) is added for rank restoration.

The official models are built for 224x224 inputs: their position encodings have the token count
of the 224 maps and FLatten-Swin fixes window sizes and shifts from the 224 map sizes. The dense
versions build the same parameters (``pretrain_img_size = 224``) and accept any input size:

* **FLatten-Swin** (``FLattenSwin``): per stage, focused linear attention (``'L'``) or Swin's
  softmax window attention with relative position bias (``'S'``), ``attn_type='LLSS'`` in the
  released models. Window sizes and shifts are those of the official model at 224 (a window at
  least as large as the 224 map shrinks to it and is not shifted, so stage 3's softmax blocks are
  unshifted, unlike Swin's dense code). An ``'L'`` window that covers the whole 224 map (the
  released ``window_size = 56``: stages 0 and 1) becomes **global** linear attention over the
  whole map, its position encoding bilinearly interpolated from the 224 grid to the map, as PVT's
  dense code does for its position embeddings. Smaller windows (``'L'`` and ``'S'``) follow Swin's
  dense code: the normalised map is zero-padded at the bottom / right to a window multiple, shifted
  windows roll it and (``'S'`` only) mask across the roll, computed per forward; the official
  linear attention takes no mask (padded and rolled tokens are attended to). The input is padded to
  a multiple of 4, odd maps are padded before patch merging, and each returned map gets a
  LayerNorm (``out_norm``, Swin's dense convention) (``size_divisibility = 0``).
* **FLatten-PVT** (``FLattenPVT``, PVT v1): every stage is an overlapping-free patch embedding
  (stride 4, then 2) plus a position embedding, then blocks of global focused linear attention
  (``la_sr_ratios = 1111`` in every released configuration: no spatial reduction) and an MLP. Both
  the stage position embeddings and the attention position encodings are bilinearly interpolated
  from the 224 grid to the map size when it differs (PVT's dense code). The patch embeddings floor
  (``size_divisibility = 32``); the maps are returned without norm (PVT v1's dense code).

At a 224x224 input both reproduce the official models' stage outputs (``tests/models/test_flatten.py``).
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp

from densekit.layers import DropPath, drop_path_schedule, init_trunc_normal_, run_blocks
from densekit.layers.window import (pad_to_multiple, to_ntuple, unpad,
                                    window_partition, window_reverse)
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
# The patch embedding, patch merging and softmax window blocks are Swin's.
from densekit.models.backbones.swin import SwinPatchEmbed, SwinPatchMerging, SwinWindowAttention
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone

__all__ = ['FLattenSwin', 'FLattenPVT', 'FocusedLinearAttention', 'checkpoint_filter_fn']


def _focus(x: torch.Tensor, scale: torch.Tensor, power: float) -> torch.Tensor:
    """ReLU kernel and focusing function on ``[..., C]``: ``||y|| * y ** p / ||y ** p||`` with
    ``y = (relu(x) + 1e-6) / scale``."""
    x = (F.relu(x) + 1e-6) / scale
    norm = x.norm(dim=-1, keepdim=True)
    x = x ** power
    return x / x.norm(dim=-1, keepdim=True) * norm


def _resize_tokens(tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """``[1, gh * gw, C]`` position tokens on ``grid`` -> ``[1, H * W, C]`` on ``size`` (bilinear,
    as PVT's dense code; the tokens themselves when the sizes agree)."""
    if tuple(size) == tuple(grid):
        return tokens
    C = tokens.shape[-1]
    t = tokens.reshape(1, grid[0], grid[1], C).permute(0, 3, 1, 2)
    t = F.interpolate(t, size=size, mode='bilinear', align_corners=False)
    return t.flatten(2).transpose(1, 2)


class FocusedLinearAttention(nn.Module):
    """Focused linear attention over all tokens of a ``[B, H, W, C]`` map.

    Args:
        dim: channels.
        num_heads: attention heads (the depthwise convolution is shared by the heads).
        grid: ``(gh, gw)`` of the learned key position encoding (the 224 map or window);
            interpolated bilinearly to other map sizes.
        focusing_factor: power ``p`` of the focusing function.
        kernel_size: side of the depthwise convolution on the values.
        qkv_bias: bias of the q / k / v projections.
        fused_qkv: one ``qkv`` projection (FLatten-Swin) or ``q`` and ``kv`` (FLatten-PVT), as the
            official checkpoints.
    """

    def __init__(self, dim: int, *, num_heads: int, grid: Sequence[int], focusing_factor: float = 3.0,
                 kernel_size: int = 5, qkv_bias: bool = True, fused_qkv: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"FLatten: dim={dim} is not a multiple of num_heads={num_heads}")
        self.num_heads = num_heads
        self.grid = (int(grid[0]), int(grid[1]))
        self.focusing_factor = focusing_factor
        head_dim = dim // num_heads
        self.fused_qkv = fused_qkv
        if fused_qkv:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        else:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size, padding=kernel_size // 2, groups=head_dim)
        self.scale = nn.Parameter(torch.zeros(1, 1, dim))
        self.positional_encoding = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        B, H, W, C = x.shape
        N, h = H * W, self.num_heads
        t = x.reshape(B, N, C)
        if self.fused_qkv:
            q, k, v = self.qkv(t).reshape(B, N, 3, C).unbind(2)
        else:
            q = self.q(t)
            k, v = self.kv(t).reshape(B, N, 2, C).unbind(2)
        k = k + _resize_tokens(self.positional_encoding, self.grid, (H, W))
        scale = F.softplus(self.scale)
        q = _focus(q, scale, self.focusing_factor).reshape(B, N, h, -1).transpose(1, 2)
        k = _focus(k, scale, self.focusing_factor).reshape(B, N, h, -1).transpose(1, 2)
        v = v.reshape(B, N, h, -1).transpose(1, 2)
        z = 1.0 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
        kv = (k.transpose(-2, -1) * N ** -0.5) @ (v * N ** -0.5)
        out = (q @ kv * z).transpose(1, 2).reshape(B, N, C)
        # rank restoration: depthwise convolution of each head's value map
        rank = self.dwc(v.reshape(B * h, H, W, -1).permute(0, 3, 1, 2)).reshape(B, C, N).transpose(1, 2)
        return self.proj(out + rank).reshape(B, H, W, C)


class FLattenSwinBlock(nn.Module):
    """LayerNorm -> attention (global / windowed focused linear, or softmax window), residual;
    LayerNorm -> MLP, residual, on ``[B, H, W, C]`` maps.

    Args:
        dim: channels.
        num_heads: attention heads.
        attn_type: ``'L'`` (focused linear) or ``'S'`` (softmax window attention).
        window_size: window side; ``0`` with ``'L'``: global attention over the whole map.
        grid: position-encoding grid of a global ``'L'`` block (the 224 map of its stage).
        shift: cyclic shift of the windows (``0`` for none).
        mlp_ratio: MLP width relative to ``dim``.
        qkv_bias: bias of the qkv projections.
        focusing_factor: focusing power of ``'L'``.
        kernel_size: depthwise kernel of ``'L'``.
        drop_path: drop-path probability of both residual branches.
    """

    def __init__(self, dim: int, *, num_heads: int, attn_type: str, window_size: int,
                 grid: Sequence[int], shift: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 focusing_factor: float = 3.0, kernel_size: int = 5, drop_path: float = 0.0) -> None:
        super().__init__()
        self.attn_type = attn_type
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        if attn_type == 'L':
            self.attn = FocusedLinearAttention(
                dim, num_heads=num_heads, grid=grid if window_size == 0 else (window_size, window_size),
                focusing_factor=focusing_factor, kernel_size=kernel_size, qkv_bias=qkv_bias)
        else:
            self.attn = SwinWindowAttention(dim, num_heads=num_heads, window_size=window_size, qkv_bias=qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _windowed_linear(self, y: torch.Tensor) -> torch.Tensor:
        ws, s = self.window_size, self.shift
        Hp, Wp = y.shape[1:3]
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, ws)), ws, Hp, Wp)
        return torch.roll(y, shifts=(s, s), dims=(1, 2)) if s else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        y = self.norm1(x)
        if self.window_size == 0:
            y = self.attn(y)
        else:
            y, size = pad_to_multiple(y, self.window_size)
            y = self._windowed_linear(y) if self.attn_type == 'L' else self.attn(y, self.shift)
            y = unpad(y, size)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class FLattenSwinStage(nn.Module):
    """Optional patch merging, then ``depth`` blocks.

    Args:
        in_dim: input channels.
        dim: channels of the stage.
        depth: number of blocks.
        num_heads: attention heads.
        attn_type: ``'L'`` or ``'S'``.
        window_size: window side of the official model at 224 for this stage's blocks.
        ref_size: side of this stage's map at 224.
        downsample: start with patch merging.
        mlp_ratio: MLP width relative to ``dim``.
        qkv_bias: bias of the qkv projections.
        focusing_factor: focusing power of ``'L'``.
        kernel_size: depthwise kernel of ``'L'``.
        drop_paths: drop-path probability of each block.
        with_cp: recompute each block in the backward pass.
    """

    def __init__(self, in_dim: int, dim: int, *, depth: int, num_heads: int, attn_type: str,
                 window_size: int, ref_size: int, downsample: bool, mlp_ratio: float, qkv_bias: bool,
                 focusing_factor: float, kernel_size: int, drop_paths: Sequence[float],
                 with_cp: bool = False) -> None:
        super().__init__()
        self.downsample = SwinPatchMerging(in_dim, dim) if downsample else nn.Identity()
        # The official classification rule at 224: a window covering the map shrinks to it and is
        # not shifted; such a linear-attention window becomes global attention here.
        fits = ref_size <= window_size
        window = ref_size if fits else window_size
        blocks = []
        for i in range(depth):
            blocks.append(FLattenSwinBlock(
                dim, num_heads=num_heads, attn_type=attn_type,
                window_size=0 if (fits and attn_type == 'L') else window,
                grid=(ref_size, ref_size), shift=0 if (fits or i % 2 == 0) else window // 2,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, focusing_factor=focusing_factor,
                kernel_size=kernel_size, drop_path=drop_paths[i]))
        self.blocks = nn.Sequential(*blocks)
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, in_dim]`` -> ``[B, H', W', dim]``."""
        return run_blocks(self.blocks, self.downsample(x), self.with_cp)


class FLattenSwin(BackboneMixin, nn.Module):
    """FLatten-Swin backbone returning NCHW maps at strides 4, 8, 16, 32.

    Args:
        embed_dim: channels of stage 0 (doubled per stage).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: window of the ``'L'`` stages at 224 (56 in the released models: the whole
            map of stages 0 and 1); ``'S'`` stages use 7 (12 when ``window_size > 56``).
        attn_type: one of ``'L'`` / ``'S'`` per stage.
        focusing_factor: focusing power ``p``.
        kernel_size: depthwise kernel of the rank restoration.
        pretrain_img_size: input side the official model is built for (position-encoding grids,
            window sizes and shifts).
        mlp_ratio: MLP width relative to the stage channels.
        qkv_bias: bias of the qkv projections.
        in_chans: input channels.
        out_indices: stages (0-based) whose output is returned.
        out_norm: LayerNorm on every returned map (Swin's dense convention).
        drop_path_rate: drop-path probability, rising linearly over all blocks to this value.
        frozen_stages: ``-1`` freezes nothing, ``0`` the patch embedding, ``k`` the patch
            embedding and stages ``0..k-1``; frozen modules stay in eval mode.
        norm_eval: accepted for the common contract (no BatchNorm).
        with_cp: recompute each block in the backward pass (activation checkpointing).
    """

    size_divisibility = 0
    channels_last = True
    stem_attr = 'patch_embed'
    stages_attr = 'layers'

    def __init__(self, *,
                 embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24),
                 window_size: int = 56,
                 attn_type: str = 'LLSS',
                 focusing_factor: float = 3.0,
                 kernel_size: int = 5,
                 pretrain_img_size: int = 224,
                 mlp_ratio: float = 4.0,
                 qkv_bias: bool = True,
                 in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: bool = True,
                 drop_path_rate: float = 0.2,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        num_stages = len(depths)
        num_heads = to_ntuple(num_heads, num_stages, 'num_heads')
        if not isinstance(attn_type, str) or len(attn_type) != num_stages or set(attn_type) - {'L', 'S'}:
            raise ValueError(f"FLattenSwin: attn_type={attn_type!r} must be one of 'L' / 'S' per stage "
                             f"({num_stages} stages)")
        if not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"FLattenSwin: window_size must be a positive int, got {window_size!r}")
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        dims = [embed_dim * 2 ** i for i in range(num_stages)]
        softmax_window = 7 if window_size <= 56 else 12
        self.patch_embed = SwinPatchEmbed(in_chans, embed_dim, patch_size=4)
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.layers.append(FLattenSwinStage(
                dims[max(i - 1, 0)], dims[i], depth=depths[i], num_heads=num_heads[i],
                attn_type=attn_type[i], window_size=window_size if attn_type[i] == 'L' else softmax_window,
                ref_size=pretrain_img_size // 4 // 2 ** i, downsample=i > 0, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, focusing_factor=focusing_factor, kernel_size=kernel_size,
                drop_paths=dpr[start:start + depths[i]], with_cp=with_cp))
            start += depths[i]
        self._init_feature_info(dims, [4 * 2 ** i for i in range(num_stages)])
        self._init_out_norms(nn.LayerNorm if out_norm else None)
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """Truncated-normal (std 0.02) linear layers and relative-position tables, zero biases,
        unit LayerNorms; zero position encodings and focusing scales (the official init)."""
        init_trunc_normal_(self)
        for name, p in self.named_parameters():
            if name.endswith('relative_position_bias_table'):
                nn.init.trunc_normal_(p, std=0.02)
            elif name.endswith(('positional_encoding', 'attn.scale')):
                nn.init.zeros_(p)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, C_i, ceil(H / s_i), ceil(W / s_i)]`` per out index."""
        return self.forward_stages(self.patch_embed(x))


class PVTEmbed(nn.Module):
    """PVT's patch embedding plus its position embedding: stride-``patch`` convolution (flooring),
    LayerNorm, ``+ pos_embed`` (interpolated bilinearly from ``grid`` to other map sizes).

    Args:
        in_dim: input channels.
        dim: output channels.
        patch_size: kernel and stride.
        grid: ``(gh, gw)`` of the position embedding (the stage's map at 224).
        channels_last_input: the input is ``[B, H, W, C]`` (stages 1..) instead of the image.
    """

    def __init__(self, in_dim: int, dim: int, *, patch_size: int, grid: Sequence[int],
                 channels_last_input: bool) -> None:
        super().__init__()
        self.grid = (int(grid[0]), int(grid[1]))
        self.channels_last_input = channels_last_input
        self.proj = nn.Conv2d(in_dim, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` (image) or ``[B, H, W, C]`` -> ``[B, floor(H / p), floor(W / p), dim]``."""
        if self.channels_last_input:
            x = x.permute(0, 3, 1, 2)
        x = self.norm(self.proj(x).permute(0, 2, 3, 1))
        B, H, W, C = x.shape
        return x + _resize_tokens(self.pos_embed, self.grid, (H, W)).reshape(1, H, W, C)


class FLattenPVTBlock(nn.Module):
    """LayerNorm (eps 1e-6) -> global focused linear attention, residual; LayerNorm -> MLP, residual.

    Args:
        dim: channels.
        num_heads: attention heads.
        grid: position-encoding grid of the attention (the stage's map at 224).
        mlp_ratio: MLP width relative to ``dim``.
        qkv_bias: bias of the q / kv projections.
        focusing_factor: focusing power.
        kernel_size: depthwise kernel of the rank restoration.
        drop_path: drop-path probability of both residual branches.
    """

    def __init__(self, dim: int, *, num_heads: int, grid: Sequence[int], mlp_ratio: float,
                 qkv_bias: bool = True, focusing_factor: float = 3.0, kernel_size: int = 5,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = FocusedLinearAttention(dim, num_heads=num_heads, grid=grid, focusing_factor=focusing_factor,
                                           kernel_size=kernel_size, qkv_bias=qkv_bias, fused_qkv=False)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class FLattenPVTStage(nn.Module):
    """Optional patch embedding (stride 2), then ``depth`` blocks.

    Args:
        in_dim: input channels.
        dim: channels of the stage.
        depth: number of blocks.
        num_heads: attention heads.
        ref_size: side of the stage's map at 224.
        downsample: start with a patch embedding (stages 1..; stage 0's is the stem).
        mlp_ratio: MLP width relative to ``dim``.
        qkv_bias: bias of the q / kv projections.
        focusing_factor: focusing power.
        kernel_size: depthwise kernel of the rank restoration.
        drop_paths: drop-path probability of each block.
        with_cp: recompute each block in the backward pass.
    """

    def __init__(self, in_dim: int, dim: int, *, depth: int, num_heads: int, ref_size: int,
                 downsample: bool, mlp_ratio: float, qkv_bias: bool, focusing_factor: float,
                 kernel_size: int, drop_paths: Sequence[float], with_cp: bool = False) -> None:
        super().__init__()
        grid = (ref_size, ref_size)
        self.downsample = (PVTEmbed(in_dim, dim, patch_size=2, grid=grid, channels_last_input=True)
                           if downsample else nn.Identity())
        self.blocks = nn.Sequential(*[
            FLattenPVTBlock(dim, num_heads=num_heads, grid=grid, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                            focusing_factor=focusing_factor, kernel_size=kernel_size,
                            drop_path=drop_paths[i])
            for i in range(depth)])
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, in_dim]`` -> ``[B, H', W', dim]`` (``H' = floor(H / 2)`` with downsampling)."""
        return run_blocks(self.blocks, self.downsample(x), self.with_cp)


class FLattenPVT(BackboneMixin, nn.Module):
    """FLatten-PVT (PVT v1 with focused linear attention) returning NCHW maps at strides 4..32.

    Args:
        embed_dims: channels per stage.
        depths: blocks per stage.
        num_heads: attention heads per stage.
        mlp_ratios: MLP width per stage relative to its channels.
        focusing_factor: focusing power ``p``.
        kernel_size: depthwise kernel of the rank restoration.
        pretrain_img_size: input side the official model is built for (position grids).
        qkv_bias: bias of the q / kv projections.
        in_chans: input channels.
        out_indices: stages (0-based) whose output is returned.
        drop_path_rate: drop-path probability, rising linearly over all blocks to this value.
        frozen_stages: ``-1`` freezes nothing, ``0`` the stem (stage 0's patch and position
            embedding), ``k`` the stem and stages ``0..k-1``; frozen modules stay in eval mode.
        norm_eval: accepted for the common contract (no BatchNorm).
        with_cp: recompute each block in the backward pass (activation checkpointing).
    """

    size_divisibility = 32
    channels_last = True

    def __init__(self, *,
                 embed_dims: Sequence[int] = (64, 128, 320, 512),
                 depths: Sequence[int] = (2, 2, 2, 2),
                 num_heads: Sequence[int] = (1, 2, 5, 8),
                 mlp_ratios: Sequence[int] = (8, 8, 4, 4),
                 focusing_factor: float = 3.0,
                 kernel_size: int = 5,
                 pretrain_img_size: int = 224,
                 qkv_bias: bool = True,
                 in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.1,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        num_stages = len(depths)
        embed_dims = to_ntuple(embed_dims, num_stages, 'embed_dims')
        num_heads = to_ntuple(num_heads, num_stages, 'num_heads')
        mlp_ratios = to_ntuple(mlp_ratios, num_stages, 'mlp_ratios')
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        ref = [pretrain_img_size // 4 // 2 ** i for i in range(num_stages)]
        self.stem = PVTEmbed(in_chans, embed_dims[0], patch_size=4, grid=(ref[0], ref[0]),
                             channels_last_input=False)
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.stages.append(FLattenPVTStage(
                embed_dims[max(i - 1, 0)], embed_dims[i], depth=depths[i], num_heads=num_heads[i],
                ref_size=ref[i], downsample=i > 0, mlp_ratio=mlp_ratios[i], qkv_bias=qkv_bias,
                focusing_factor=focusing_factor, kernel_size=kernel_size,
                drop_paths=dpr[start:start + depths[i]], with_cp=with_cp))
            start += depths[i]
        self._init_feature_info(list(embed_dims), [4 * 2 ** i for i in range(num_stages)])
        self._init_out_norms(None)
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """Truncated-normal (std 0.02) linear layers and stage position embeddings, zero biases,
        unit LayerNorms; zero attention position encodings and focusing scales (the official init)."""
        init_trunc_normal_(self)
        for name, p in self.named_parameters():
            if name.endswith('pos_embed'):
                nn.init.trunc_normal_(p, std=0.02)
            elif name.endswith(('positional_encoding', 'attn.scale')):
                nn.init.zeros_(p)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, C_i, H_i, W_i]`` per out index (``H_0 = floor(H / 4)``,
        then halved with flooring)."""
        return self.forward_stages(self.stem(x))


# ------------------------------------------------------------------------------------------------
# Official checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

_OWN_KEY = re.compile(r'^(patch_embed|layers|stem|stages|out_norms)\.')
_CLASSIFIER_KEY = re.compile(r'^(head|norm)\.')
_BUFFER_KEY = re.compile(r'(relative_position_index|attn_mask)$')
_SWIN_MERGE = re.compile(r'^layers\.(\d+)\.downsample\.(.+)$')
_OUT_NORM = re.compile(r'^norm(\d+)\.(weight|bias)$')
_PVT_EMBED = re.compile(r'^patch_embed(\d+)\.(.+)$')
_PVT_POS = re.compile(r'^pos_embed(\d+)$')
_PVT_BLOCK = re.compile(r'^block(\d+)\.(.+)$')


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official FLatten-Swin / FLatten-PVT checkpoints (ImageNet releases, ``model`` / ``module.``
    wrappers, detector ``backbone.`` prefixes) -> densekit keys.

    FLatten-Swin keys are the official ones except patch merging, which moves from the end of
    stage ``i`` to the start of stage ``i + 1``; the buffers ``relative_position_index`` and
    ``attn_mask`` are rebuilt per forward and dropped. FLatten-PVT's ``patch_embed{i}`` /
    ``pos_embed{i}`` become the stem (``i = 1``) or ``stages.{i-1}.downsample``, ``block{i}.{j}``
    ``stages.{i-1}.blocks.{j}``. The classifier (``head``, final ``norm``) is dropped; per-output
    ``norm{i}`` keys of a detector become ``out_norms.{i}``. Unknown keys are an error.
    """
    sd = strip_wrapper_prefix(state_dict)
    # the official Swin layout merges at the end of stages 0..2, densekit's at the start of 1..3
    official_swin = any(k.startswith('layers.0.downsample.') for k in sd)
    out, unknown = {}, []
    for key, value in sd.items():
        if _BUFFER_KEY.search(key) or _CLASSIFIER_KEY.match(key):
            continue
        if official_swin and (m := _SWIN_MERGE.match(key)):
            out[f'layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}'] = value
        elif m := _OUT_NORM.match(key):
            out[f'out_norms.{m.group(1)}.{m.group(2)}'] = value
        elif m := _PVT_EMBED.match(key):
            i = int(m.group(1))
            out[f'stem.{m.group(2)}' if i == 1 else f'stages.{i - 1}.downsample.{m.group(2)}'] = value
        elif m := _PVT_POS.match(key):
            i = int(m.group(1))
            out['stem.pos_embed' if i == 1 else f'stages.{i - 1}.downsample.pos_embed'] = value
        elif m := _PVT_BLOCK.match(key):
            out[f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}'] = value
        elif _OWN_KEY.match(key):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"FLatten converter: unrecognised keys {unknown[:8]}"
                       f"{' ...' if len(unknown) > 8 else ''}")
    return out


register_converter('flatten', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builders and variants
# ------------------------------------------------------------------------------------------------

_SWIN_ARCH = ('embed_dim', 'depths', 'num_heads', 'window_size', 'attn_type', 'focusing_factor',
              'kernel_size', 'pretrain_img_size', 'mlp_ratio', 'qkv_bias')
_PVT_ARCH = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'focusing_factor', 'kernel_size',
             'pretrain_img_size', 'qkv_bias')


def _create_flatten_swin(kwargs: dict, *, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int],
                         drop_path_rate: float, window_size: int = 56, attn_type: str = 'LLSS') -> FLattenSwin:
    check_variant_kwargs(FLattenSwin, _SWIN_ARCH, kwargs)
    kwargs.setdefault('drop_path_rate', drop_path_rate)
    return FLattenSwin(embed_dim=embed_dim, depths=depths, num_heads=num_heads, window_size=window_size,
                       attn_type=attn_type, **kwargs)


def _create_flatten_pvt(kwargs: dict, *, embed_dims: Sequence[int], depths: Sequence[int],
                        num_heads: Sequence[int], drop_path_rate: float) -> FLattenPVT:
    check_variant_kwargs(FLattenPVT, _PVT_ARCH, kwargs)
    kwargs.setdefault('drop_path_rate', drop_path_rate)
    return FLattenPVT(embed_dims=embed_dims, depths=depths, num_heads=num_heads, mlp_ratios=(8, 8, 4, 4),
                      **kwargs)


@register_backbone(name='flatten_swin_t')
def flatten_swin_t(**kwargs) -> FLattenSwin:
    """FLatten-Swin-T (cfgs/flatten_swin_t.yaml: window 56, attention 'LLSS')."""
    return _create_flatten_swin(kwargs, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                                drop_path_rate=0.2)


@register_backbone(name='flatten_swin_s')
def flatten_swin_s(**kwargs) -> FLattenSwin:
    """FLatten-Swin-S (cfgs/flatten_swin_s.yaml)."""
    return _create_flatten_swin(kwargs, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24),
                                drop_path_rate=0.3)


@register_backbone(name='flatten_swin_b')
def flatten_swin_b(**kwargs) -> FLattenSwin:
    """FLatten-Swin-B (cfgs/flatten_swin_b.yaml)."""
    return _create_flatten_swin(kwargs, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                                drop_path_rate=0.5)


@register_backbone(name='flatten_pvt_t')
def flatten_pvt_t(**kwargs) -> FLattenPVT:
    """FLatten-PVT-T (``flatten_pvt_tiny``)."""
    return _create_flatten_pvt(kwargs, embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2),
                               num_heads=(1, 2, 5, 8), drop_path_rate=0.1)


@register_backbone(name='flatten_pvt_s')
def flatten_pvt_s(**kwargs) -> FLattenPVT:
    """FLatten-PVT-S (``flatten_pvt_small``)."""
    return _create_flatten_pvt(kwargs, embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3),
                               num_heads=(1, 2, 5, 8), drop_path_rate=0.1)


@register_backbone(name='flatten_pvt_m')
def flatten_pvt_m(**kwargs) -> FLattenPVT:
    """FLatten-PVT-M (``flatten_pvt_medium``)."""
    return _create_flatten_pvt(kwargs, embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3),
                               num_heads=(1, 2, 5, 8), drop_path_rate=0.3)


@register_backbone(name='flatten_pvt_b')
def flatten_pvt_b(**kwargs) -> FLattenPVT:
    """FLatten-PVT-B (``flatten_pvt_large``, cfgs/flatten_pvt_b.yaml)."""
    return _create_flatten_pvt(kwargs, embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3),
                               num_heads=(1, 2, 5, 8), drop_path_rate=0.3)


@register_backbone(name='flatten_pvt_test')
def flatten_pvt_test(**kwargs) -> FLattenPVT:
    """A tiny FLatten-PVT for tests (not a published model)."""
    return _create_flatten_pvt(kwargs, embed_dims=(16, 32, 48, 64), depths=(1, 2, 1, 1),
                               num_heads=(1, 2, 3, 4), drop_path_rate=0.1)


@register_backbone(name='flatten_swin_test')
def flatten_swin_test(**kwargs) -> FLattenSwin:
    """A tiny FLatten-Swin for tests (not a published model): window 28 and attention 'LLSL', so
    that stage 0 runs windowed (shifted) linear attention, stages 1 and 3 global linear attention
    and stage 2 unshifted and shifted softmax windows (one softmax stage only: the Triton
    interpreter of the contract test's backend check is slow)."""
    return _create_flatten_swin(kwargs, embed_dim=16, depths=(2, 2, 2, 1), num_heads=(1, 2, 4, 8),
                                drop_path_rate=0.1, window_size=28, attn_type='LLSL')
