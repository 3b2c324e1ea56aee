"""FasterViT: convolutional stages, then window attention with per-window carrier tokens (HAT).

Hatamizadeh, Heinrich, Yin, Tao, Alvarez, Kautz, Molchanov, "FasterViT: Fast Vision Transformers
with Hierarchical Attention", ICLR 2024 (arXiv:2306.06189).

The numerics follow the official dense-prediction backbone (NVlabs/FasterViT,
``downstream/object_detection/dino/models/dino/fastervit.py``), quirks included:

* every stage, the convolutional ones too, zero-pads its input on the right / bottom to a multiple
  of its window size (7) and crops the result back;
* the hierarchical-attention stages (``hat``) decide at build time, from ``resolution`` (224 in
  every official configuration, whatever the input), whether they use carrier tokens and how many
  (``sr_ratio = (resolution / stride) // window``). The carrier tokens are a depthwise-conv +
  average-pool summary of the padded map (``ct_size x ct_size`` per window, pooling kernel and
  stride from the official integer formulas), read from the NCHW memory as ``[B, L, C]`` tokens
  without a transpose. Each block attends over all carrier tokens (a ``(ct_size * sr_ratio)**2``
  log-CPB bias on the last ones, none on the others, cropped when there are fewer), then every window
  attends over ``[its carrier tokens | its window]`` under one softmax
  (:func:`densekit.ops.window_extra.window_extra_attention`). Carrier tokens move between the
  window layout and the ``hg x wg`` grid with the official index arithmetic, which is not a
  round trip when ``hg != wg`` (non-square maps): reproduced as is;
* the position embeddings are MLPs of normalised coordinates, rebuilt every forward (the official
  ``relative_bias`` / ``relative_coords_table`` / ``relative_position_index`` buffers are not
  checkpoint state here).

Each returned map goes through its own ``BatchNorm2d`` (``out_norms``), as the official ``norm{i}``.
"""
from __future__ import annotations

import math
import re
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp

from densekit.layers import DropPath, LayerNorm2d, drop_path_schedule, run_blocks
from densekit.layers.window import relative_position_index, window_partition, window_reverse
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone
from densekit.ops.window_extra import window_extra_attention

__all__ = ['FasterViT', 'HATBlock', 'checkpoint_filter_fn']


def _cpb_mlp(out_dim: int) -> nn.Sequential:
    """The official continuous position-bias MLP: 2 -> 512 -> ``out_dim`` (keys ``0`` and ``2``)."""
    return nn.Sequential(nn.Linear(2, 512, bias=True), nn.ReLU(inplace=True), nn.Linear(512, out_dim, bias=False))


class TokenPosEmbed(nn.Module):
    """Additive position embedding of ``L`` tokens on an ``h x w`` grid: an MLP of the grid
    coordinates, each shifted and divided by ``L // 2`` (the official ``PosEmbMLPSwinv1D``, rank 2)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.cpb_mlp = _cpb_mlp(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``x [B, L, C]`` (``L = h * w``) -> ``x + embedding``."""
        half = x.shape[1] // 2
        ys = torch.arange(h, device=x.device, dtype=x.dtype)
        xs = torch.arange(w, device=x.device, dtype=x.dtype)
        coords = torch.stack(torch.meshgrid(ys, xs, indexing='ij')).flatten(1).t()
        return x + self.cpb_mlp((coords - half) / half)[None]


class WindowBias(nn.Module):
    """Swin-v2 log-spaced continuous position bias of a ``window x window`` token grid
    (``16 * sigmoid(MLP(coords))``, the official ``PosEmbMLPSwinv2D``), ``[heads, n, n]`` for
    ``n = window**2``."""

    def __init__(self, window: int, num_heads: int) -> None:
        super().__init__()
        self.window, self.num_heads = window, num_heads
        self.cpb_mlp = _cpb_mlp(num_heads)
        r = torch.arange(-(window - 1), window, dtype=torch.float32)
        table = torch.stack(torch.meshgrid(r, r, indexing='ij'), dim=-1) / (window - 1) * 8
        table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
        self.register_buffer('relative_coords_table', table, persistent=False)  # [2w-1, 2w-1, 2]
        self.register_buffer('relative_position_index', relative_position_index(window), persistent=False)

    def forward(self) -> torch.Tensor:
        n = self.window ** 2
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        return 16 * torch.sigmoid(table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1))


class WindowAttention(nn.Module):
    """Multi-head attention inside windows of ``T`` tokens with the position bias of a
    ``window x window`` grid (``n`` tokens) on the last ``n``: the first ``P = T - n`` tokens (the
    carrier tokens) get none. When ``T < n`` the bias is cropped to its last ``T`` rows and columns
    (the official ``F.pad`` by ``T - n`` either way).

    Args:
        dim: channels.
        num_heads: heads.
        window: side of the token grid the position bias is built for.
        qkv_bias: biases of the qkv projection.
        qk_scale: logit scale (default ``head_dim ** -0.5``).
    """

    def __init__(self, dim: int, *, num_heads: int, window: int, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.pos_emb_funct = WindowBias(window, num_heads)

    def forward(self, x: torch.Tensor, num_windows: int) -> torch.Tensor:
        """``x [B * nW, T, C]`` (window-major batches) -> same shape."""
        BW, T, C = x.shape
        q, k, v = self.qkv(x).view(BW // num_windows, num_windows, T, 3, self.num_heads, -1).unbind(3)
        bias = self.pos_emb_funct()
        extra = T - bias.shape[-1]
        if extra < 0:
            bias, extra = bias[:, -T:, -T:], 0
        out = window_extra_attention(q, k, v, num_extra=extra, bias=bias, scale=self.scale)
        return self.proj(out.reshape(BW, T, C))


def _carriers_to_grid(ct: torch.Tensor, hg: int, wg: int, s: int) -> torch.Tensor:
    """``[B, L, C]`` carrier tokens (read as ``hg/s x wg/s`` windows of ``s x s``) -> ``[B, L, C]``
    in row-major ``hg x wg`` order (the official ``ct_dewindow``)."""
    B, L, C = ct.shape
    grid = ct.view(B, hg // s, wg // s, s, s, C).permute(0, 5, 1, 3, 2, 4)
    return grid.reshape(B, C, L).transpose(1, 2)


def _carriers_to_windows(ct: torch.Tensor, hg: int, wg: int, s: int) -> torch.Tensor:
    """``[B, L, C]`` row-major grid tokens -> ``[B, nW, s*s, C]`` per window. The official
    ``ct_window`` views the memory as ``wg/s x hg/s`` windows: for ``hg != wg`` this is not the
    inverse of :func:`_carriers_to_grid`; it is reproduced as is."""
    B, L, C = ct.shape
    win = ct.view(B, wg // s, s, hg // s, s, C).permute(0, 1, 3, 2, 4, 5)
    return win.reshape(B, -1, s * s, C)


class HATBlock(nn.Module):
    """Hierarchical-attention block on ``[B * nW, P + N, C]`` tokens: each window's ``P`` carrier
    tokens, then its ``N = window**2`` tokens.

    With carrier tokens (``sr_ratio > 1``): position-embed the window tokens; gather the carrier
    tokens of all windows into their ``hg x wg`` grid, add their position embedding, run a global
    attention + MLP block over them, put them back to their windows; then window attention over
    ``[carriers | window]`` + MLP. With ``do_propagation`` the last block of a stage adds the
    nearest-upsampled carrier tokens to their window.

    Args:
        dim: channels.
        num_heads: heads.
        window_size: window side.
        sr_ratio: windows per side of the build-time map (carrier tokens when > 1).
        ct_size: carrier tokens per window side.
        mlp_ratio: MLP expansion.
        qkv_bias, qk_scale: of the attention.
        drop_path: stochastic depth.
        layer_scale: initial value of the layer scales (``None``: none).
        last: the stage's last block (``do_propagation`` applies there).
        do_propagation: add the carrier tokens back to the map after the last block.
    """

    def __init__(self, dim: int, *, num_heads: int, window_size: int, sr_ratio: int, ct_size: int,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 drop_path: float = 0.0, layer_scale: Optional[float] = None, last: bool = False,
                 do_propagation: bool = False) -> None:
        super().__init__()
        self.window_size, self.ct_size, self.sr_ratio = window_size, ct_size, sr_ratio
        self.num_extra = ct_size ** 2 if sr_ratio > 1 else 0
        self.last, self.do_propagation = last, do_propagation
        hidden = int(dim * mlp_ratio)
        self.pos_embed = TokenPosEmbed(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads=num_heads, window=window_size, qkv_bias=qkv_bias,
                                    qk_scale=qk_scale)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden_features=hidden)
        use_ls = layer_scale is not None
        self.gamma3 = nn.Parameter(layer_scale * torch.ones(dim)) if use_ls else None
        self.gamma4 = nn.Parameter(layer_scale * torch.ones(dim)) if use_ls else None
        if sr_ratio > 1:
            total = self.num_extra * sr_ratio * sr_ratio
            self.hat_norm1 = nn.LayerNorm(dim)
            self.hat_norm2 = nn.LayerNorm(dim)
            self.hat_attn = WindowAttention(dim, num_heads=num_heads, window=int(total ** 0.5), qkv_bias=qkv_bias,
                                            qk_scale=qk_scale)
            self.hat_mlp = Mlp(dim, hidden_features=hidden)
            self.hat_drop_path = DropPath(drop_path)
            self.hat_pos_embed = TokenPosEmbed(dim)
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim)) if use_ls else None
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim)) if use_ls else None

    @staticmethod
    def _scaled(gamma: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return x if gamma is None else gamma * x

    def forward(self, x: torch.Tensor, num_windows: int, hg: int, wg: int) -> torch.Tensor:
        """``x [B * nW, P + N, C]`` -> same shape; ``hg x wg`` is the carrier-token grid."""
        P, ws = self.num_extra, self.window_size
        ct, x = x[:, :P], self.pos_embed(x[:, P:], ws, ws)
        if P:
            BW, _, C = x.shape
            ct = _carriers_to_grid(ct.reshape(BW // num_windows, num_windows * P, C), hg, wg, self.ct_size)
            ct = self.hat_pos_embed(ct, hg, wg)
            ct = ct + self.hat_drop_path(self._scaled(self.gamma1, self.hat_attn(self.hat_norm1(ct), 1)))
            ct = ct + self.hat_drop_path(self._scaled(self.gamma2, self.hat_mlp(self.hat_norm2(ct))))
            ct = _carriers_to_windows(ct, hg, wg, self.ct_size).reshape(BW, P, C)
            x = torch.cat([ct, x], dim=1)
        x = x + self.drop_path(self._scaled(self.gamma3, self.attn(self.norm1(x), num_windows)))
        x = x + self.drop_path(self._scaled(self.gamma4, self.mlp(self.norm2(x))))
        if P and self.last and self.do_propagation:
            ct, win = x[:, :P], x[:, P:]
            BW, _, C = win.shape
            grid = ct.transpose(1, 2).reshape(BW, C, self.ct_size, self.ct_size)
            up = F.interpolate(grid.float(), size=ws, mode='nearest').flatten(2).transpose(1, 2).to(win.dtype)
            x = torch.cat([ct, win + self._scaled(self.gamma1, up)], dim=1)
        return x


class ConvBlock(nn.Module):
    """Residual ``conv3x3 - BN - GELU - conv3x3 - BN`` (optional layer scale) on NCHW maps."""

    def __init__(self, dim: int, *, drop_path: float = 0.0, layer_scale: Optional[float] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(dim, eps=1e-5)
        self.act1 = nn.GELU()
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)
        self.norm2 = nn.BatchNorm2d(dim, eps=1e-5)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim)) if layer_scale is not None else None
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)


class CarrierTokenInit(nn.Module):
    """Carrier tokens of a padded map: depthwise 3x3 conv, average pooling to ``ct_size`` tokens
    per window side (kernel and stride from the official integer formulas, so they grow with the
    map), zero-padded to a multiple of ``ct_size``, read from NCHW memory as ``[B, hg * wg, C]``."""

    def __init__(self, dim: int, *, window_size: int, ct_size: int) -> None:
        super().__init__()
        self.window_size, self.ct_size = window_size, ct_size
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def _pool(self, length: int) -> Tuple[int, int]:
        out = int(self.ct_size * length / self.window_size)
        stride = int(length / out)
        return length - (out - 1) * stride, stride

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        """``x [B, C, Hp, Wp]`` -> ``(tokens [B, hg * wg, C], hg, wg)``."""
        (kh, sh), (kw, sw) = self._pool(x.shape[2]), self._pool(x.shape[3])
        x = F.avg_pool2d(self.pos_embed(x), kernel_size=(kh, kw), stride=(sh, sw))
        B, C, H, W = x.shape
        s = self.ct_size
        pad_r, pad_b = (s - W % s) % s, (s - H % s) % s
        if pad_r or pad_b:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        hg, wg = x.shape[2:]
        return x.reshape(B, hg * wg, C), hg, wg


class Downsample(nn.Module):
    """LayerNorm2d (eps 1e-6) and a 3x3 stride-2 convolution doubling the channels."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(in_dim, eps=1e-6)
        self.reduction = nn.Sequential(nn.Conv2d(in_dim, dim, 3, 2, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.norm(x))


class PatchEmbed(nn.Module):
    """Two 3x3 stride-2 conv - BN (eps 1e-4) - ReLU layers: stride 4."""

    def __init__(self, in_chans: int, dim: int, *, in_dim: int) -> None:
        super().__init__()
        self.conv_down = nn.Sequential(
            nn.Conv2d(in_chans, in_dim, 3, 2, 1, bias=False), nn.BatchNorm2d(in_dim, eps=1e-4), nn.ReLU(),
            nn.Conv2d(in_dim, dim, 3, 2, 1, bias=False), nn.BatchNorm2d(dim, eps=1e-4), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_down(x)


class FasterViTStage(nn.Module):
    """Optional downsampling, then conv blocks or HAT blocks on the map zero-padded (right /
    bottom) to a multiple of ``window_size``; the result is cropped back. NCHW in and out.

    Args:
        in_dim: input channels.
        dim: stage channels.
        depth: blocks.
        conv: convolutional blocks (else HAT blocks).
        window_size: padding multiple and attention window.
        input_resolution: the map side at the build resolution (``resolution / stride``); decides
            whether the HAT blocks use carrier tokens (``sr_ratio = input_resolution // window_size``).
        hat: hierarchical attention (carrier tokens) when ``sr_ratio > 1``.
        downsample: start with :class:`Downsample`.
        drop_paths: per-block stochastic depth.
    """

    def __init__(self, in_dim: int, dim: int, *, depth: int, conv: bool, num_heads: int, window_size: int,
                 ct_size: int, input_resolution: int, hat: bool, downsample: bool, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, qk_scale: Optional[float] = None, layer_scale: Optional[float] = None,
                 layer_scale_conv: Optional[float] = None, drop_paths: Sequence[float] = (),
                 do_propagation: bool = False, with_cp: bool = False) -> None:
        super().__init__()
        self.downsample = Downsample(in_dim, dim) if downsample else None
        self.conv, self.window_size, self.with_cp = conv, window_size, with_cp
        dp = list(drop_paths) or [0.0] * depth
        if conv:
            self.blocks = nn.ModuleList([ConvBlock(dim, drop_path=dp[j], layer_scale=layer_scale_conv)
                                         for j in range(depth)])
        else:
            sr_ratio = input_resolution // window_size if hat else 1
            self.blocks = nn.ModuleList([
                HATBlock(dim, num_heads=num_heads, window_size=window_size, sr_ratio=sr_ratio, ct_size=ct_size,
                         mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop_path=dp[j],
                         layer_scale=layer_scale, last=j == depth - 1, do_propagation=do_propagation)
                for j in range(depth)])
        carriers = depth > 0 and not conv and hat and input_resolution // window_size > 1
        self.global_tokenizer = (CarrierTokenInit(dim, window_size=window_size, ct_size=ct_size)
                                 if carriers else None)
        self.num_extra = ct_size ** 2 if carriers else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim, H, W]`` -> ``[B, dim, H', W']``."""
        if self.downsample is not None:
            x = self.downsample(x)
        B, C, H, W = x.shape
        ws = self.window_size
        pad_r, pad_b = (ws - W % ws) % ws, (ws - H % ws) % ws
        if pad_r or pad_b:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        Hp, Wp = x.shape[2:]
        if self.conv:
            x = run_blocks(self.blocks, x, self.with_cp)
        else:
            num_windows = (Hp // ws) * (Wp // ws)
            hg = wg = 0
            tokens = window_partition(x.permute(0, 2, 3, 1), ws).reshape(B * num_windows, ws * ws, C)
            if self.global_tokenizer is not None:
                ct, hg, wg = self.global_tokenizer(x)
                tokens = torch.cat([ct.reshape(B * num_windows, self.num_extra, C), tokens], dim=1)
            tokens = run_blocks(self.blocks, tokens, self.with_cp, num_windows, hg, wg)
            windows = tokens[:, self.num_extra:].reshape(B * num_windows, ws, ws, C)
            x = window_reverse(windows, ws, Hp, Wp).permute(0, 3, 1, 2)
        if pad_r or pad_b:
            x = x[:, :, :H, :W]
        return x.contiguous()


class FasterViT(BackboneMixin, nn.Module):
    """FasterViT backbone (official dense-prediction definition): stages 0 and 1 convolutional,
    stages 2 and 3 attention (carrier tokens where ``hat``), one BatchNorm2d per returned map.

    Args:
        dim: channels of stage 0 (doubling per stage).
        in_dim: channels of the stem's first convolution.
        depths: blocks per stage.
        num_heads: heads per stage.
        window_size: window (and padding multiple) per stage.
        ct_size: carrier tokens per window side.
        mlp_ratio: MLP expansion.
        resolution: build resolution that decides the carrier-token configuration (official: 224
            for every dense configuration, whatever the input size).
        hat: hierarchical attention per stage.
        layer_scale: layer-scale init of the attention blocks (``None``: none).
        layer_scale_conv: layer-scale init of the conv blocks (``None``: none).
        qkv_bias, qk_scale: of every attention.
        do_propagation: add the carrier tokens back to the map after each stage's last block.
        in_chans: input channels.
        out_indices: stages whose (BatchNorm-ed) maps are returned.
        drop_path_rate: stochastic depth, rising linearly over the blocks.
        frozen_stages, norm_eval, with_cp: see ``docs/adding_a_backbone.md``.
    """

    size_divisibility = 0
    channels_last = False

    def __init__(self, *, dim: int = 64, in_dim: int = 64, depths: Sequence[int] = (2, 3, 6, 5),
                 num_heads: Sequence[int] = (2, 4, 8, 16), window_size: Sequence[int] = (7, 7, 7, 7),
                 ct_size: int = 2, mlp_ratio: float = 4.0, resolution: int = 224,
                 hat: Sequence[bool] = (False, False, True, False), layer_scale: Optional[float] = None,
                 layer_scale_conv: Optional[float] = None, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 do_propagation: bool = False, in_chans: int = 3, out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.1, frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        num_stages = len(depths)
        for name, seq in (('num_heads', num_heads), ('window_size', window_size), ('hat', hat)):
            if len(seq) != num_stages:
                raise ValueError(f'FasterViT: {name}={tuple(seq)} needs one entry per stage (depths={tuple(depths)})')
        self._init_contract(num_stages=num_stages, out_indices=out_indices, frozen_stages=frozen_stages,
                            norm_eval=norm_eval)
        dims = [int(dim * 2 ** i) for i in range(num_stages)]
        self.stem = PatchEmbed(in_chans, dim, in_dim=in_dim)
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.stages.append(FasterViTStage(
                dims[max(i - 1, 0)], dims[i], depth=depths[i], conv=i < 2, num_heads=num_heads[i],
                window_size=window_size[i], ct_size=ct_size, input_resolution=int(2 ** (-2 - i) * resolution),
                hat=bool(hat[i]), downsample=i > 0, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                layer_scale=layer_scale, layer_scale_conv=layer_scale_conv,
                drop_paths=dpr[start:start + depths[i]], do_propagation=do_propagation, with_cp=with_cp))
            start += depths[i]
        self._init_feature_info(dims, [4 * 2 ** i for i in range(num_stages)])
        self._init_out_norms(nn.BatchNorm2d)
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """The official classification init: truncated-normal linears (std 0.02), zero biases, unit
        LayerNorms and BatchNorms; convolutions keep PyTorch's default."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, C_i, ceil(H / s_i), ceil(W / s_i)]`` per out index."""
        return self.forward_stages(self.stem(x))


# ------------------------------------------------------------------------------------------------
# Official checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

_DENSEKIT_KEY = re.compile(r'^(stem|stages|out_norms)\.')
# The classifier's head and final norm; position tables rebuilt from the configuration.
_CLASSIFIER_KEY = re.compile(r'^(head|norm)\.')
_BUFFER_KEY = re.compile(r'\.(relative_bias|relative_coords_table|relative_position_index)$')
_TOKENIZER_ALIAS = re.compile(r'^(levels\.\d+\.global_tokenizer)\.to_global_feature\.pos\.(.*)$')


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official FasterViT checkpoint (ImageNet classifier or DINO detector: ``backbone.0.``) ->
    densekit keys.

    ``patch_embed`` -> ``stem``; ``levels.{i}.blocks`` / ``global_tokenizer`` -> ``stages.{i}``;
    ``levels.{i}.downsample`` (the end of level ``i``) -> ``stages.{i+1}.downsample`` (its start);
    ``norm{i}`` -> ``out_norms.{i}``; the classifier's ``head`` / ``norm`` and the position-table
    buffers are dropped. The carrier-token initializer's depthwise conv is saved twice
    (``pos_embed`` and ``to_global_feature.pos``, one module); the official loader ends with the
    latter, so it wins when both are present.
    """
    sd = strip_wrapper_prefix(state_dict)
    if sd and all(k.startswith('0.') for k in sd):  # DINO's Joiner: backbone.0.* is the backbone
        sd = {k[2:]: v for k, v in sd.items()}
    out: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if _DENSEKIT_KEY.match(key):
            out[key] = value
            continue
        if _CLASSIFIER_KEY.match(key) or _BUFFER_KEY.search(key):
            continue
        m = _TOKENIZER_ALIAS.match(key)
        if m:
            key = f'{m.group(1)}.pos_embed.{m.group(2)}'
        elif re.match(r'^levels\.\d+\.global_tokenizer\.pos_embed\.', key):
            alias = key.replace('.pos_embed.', '.to_global_feature.pos.', 1)
            if alias in sd:
                continue
        m = re.match(r'^patch_embed\.(conv_down\..*)$', key)
        if m:
            out[f'stem.{m.group(1)}'] = value
            continue
        m = re.match(r'^levels\.(\d+)\.downsample\.(.*)$', key)
        if m:
            out[f'stages.{int(m.group(1)) + 1}.downsample.{m.group(2)}'] = value
            continue
        m = re.match(r'^levels\.(\d+)\.((blocks|global_tokenizer)\..*)$', key)
        if m:
            out[f'stages.{m.group(1)}.{m.group(2)}'] = value
            continue
        m = re.match(r'^norm(\d+)\.(.*)$', key)
        if m:
            out[f'out_norms.{m.group(1)}.{m.group(2)}'] = value
            continue
        unknown.append(key)
    if unknown:
        raise KeyError(f"FasterViT converter: unrecognised keys {unknown[:8]}"
                       f"{' ...' if len(unknown) > 8 else ''}")
    return out


register_converter('fastervit', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants
# ------------------------------------------------------------------------------------------------

_ARCH = ('dim', 'in_dim', 'depths', 'num_heads', 'window_size', 'ct_size', 'mlp_ratio', 'hat', 'layer_scale',
         'layer_scale_conv', 'qkv_bias', 'qk_scale')


def _create_fastervit(kwargs: dict, *, dim, in_dim, depths, num_heads, window_size=(7, 7, 7, 7),
                      hat=(False, False, True, False), layer_scale=None, drop_path_rate: float = 0.1,
                      mlp_ratio: float = 4.0) -> FasterViT:
    """``kwargs`` may set ``resolution``, ``do_propagation`` and the training arguments, not the
    architecture."""
    check_variant_kwargs(FasterViT, _ARCH, kwargs)
    kwargs.setdefault('drop_path_rate', drop_path_rate)
    return FasterViT(dim=dim, in_dim=in_dim, depths=depths, num_heads=num_heads, window_size=window_size,
                     ct_size=2, mlp_ratio=mlp_ratio, hat=hat, layer_scale=layer_scale, **kwargs)


# Architectures of build_fastervit in the official dense code (dino/models/dino/fastervit.py).

@register_backbone(name='fastervit_0')
def fastervit_0(**kwargs) -> FasterViT:
    """FasterViT-0 (official ``faster_vit_0_224``)."""
    return _create_fastervit(kwargs, dim=64, in_dim=64, depths=(2, 3, 6, 5), num_heads=(2, 4, 8, 16))


@register_backbone(name='fastervit_1')
def fastervit_1(**kwargs) -> FasterViT:
    """FasterViT-1 (official ``faster_vit_1_224``)."""
    return _create_fastervit(kwargs, dim=80, in_dim=32, depths=(1, 3, 8, 5), num_heads=(2, 4, 8, 16))


@register_backbone(name='fastervit_2')
def fastervit_2(**kwargs) -> FasterViT:
    """FasterViT-2 (official ``faster_vit_2_224``)."""
    return _create_fastervit(kwargs, dim=96, in_dim=64, depths=(3, 3, 8, 5), num_heads=(2, 4, 8, 16))


@register_backbone(name='fastervit_3')
def fastervit_3(**kwargs) -> FasterViT:
    """FasterViT-3 (official ``faster_vit_3_224``)."""
    return _create_fastervit(kwargs, dim=128, in_dim=64, depths=(3, 3, 12, 5), num_heads=(2, 4, 8, 16),
                             layer_scale=1e-5)


@register_backbone(name='fastervit_4')
def fastervit_4(**kwargs) -> FasterViT:
    """FasterViT-4 (official ``faster_vit_4_224``)."""
    return _create_fastervit(kwargs, dim=196, in_dim=64, depths=(3, 3, 12, 5), num_heads=(4, 8, 16, 32),
                             layer_scale=1e-5)


def _fastervit_4_21k(kwargs: dict, window_size) -> FasterViT:
    return _create_fastervit(kwargs, dim=196, in_dim=64, depths=(3, 3, 12, 5), num_heads=(4, 8, 16, 32),
                             window_size=window_size, hat=(False, False, False, False), layer_scale=1e-5)


@register_backbone(name='fastervit_4_21k_224')
def fastervit_4_21k_224(**kwargs) -> FasterViT:
    """FasterViT-4, ImageNet-21k weights at 224 (official ``faster_vit_4_21k_224``: windows
    7/7/14/7, no carrier tokens)."""
    return _fastervit_4_21k(kwargs, (7, 7, 14, 7))


@register_backbone(name='fastervit_4_21k_384')
def fastervit_4_21k_384(**kwargs) -> FasterViT:
    """FasterViT-4, ImageNet-21k weights at 384 (official ``faster_vit_4_21k_384``: windows 7/7/24/12)."""
    return _fastervit_4_21k(kwargs, (7, 7, 24, 12))


@register_backbone(name='fastervit_4_21k_512')
def fastervit_4_21k_512(**kwargs) -> FasterViT:
    """FasterViT-4, ImageNet-21k weights at 512 (official ``faster_vit_4_21k_512``: windows 7/7/32/16)."""
    return _fastervit_4_21k(kwargs, (7, 7, 32, 16))


@register_backbone(name='fastervit_test')
def fastervit_test(**kwargs) -> FasterViT:
    """A tiny FasterViT for tests (not a published model): both conv stages, carrier tokens in
    stage 2 (the 224 configuration), plain window attention in stage 3, layer scales."""
    return _create_fastervit(kwargs, dim=8, in_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                             layer_scale=0.5, drop_path_rate=0.0, mlp_ratio=2.0)
