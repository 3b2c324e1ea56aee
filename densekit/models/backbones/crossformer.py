"""CrossFormer: cross-scale embeddings and long / short distance attention.

Paper: W. Wang, L. Yao, L. Chen, B. Lin, D. Cai, X. He, W. Liu, "CrossFormer: A Versatile Vision
Transformer Hinging on Cross-scale Attention", ICLR 2022, https://arxiv.org/abs/2108.00154.

The numerics follow the official DENSE backbone, ``models/crossformer_backbone_det.py`` (identical to
``crossformer_backbone_seg.py``) of cheerss/CrossFormer, with ``use_acl=False`` (CrossFormer, not
CrossFormer++):

* cross-scale embedding layers (CEL): the stem is four convolutions of kernel 4, 8, 16, 32 and
  stride 4 whose outputs (``C/2, C/4, C/8, C/8`` channels) are concatenated, then a LayerNorm; the
  downsampling at the start of stages 1..3 is a LayerNorm and two convolutions (kernel 2 and 4,
  stride 2, ``C`` channels each for an input of ``C``);
* blocks alternate short-distance attention (SDA: ``G x G`` groups of adjacent tokens, even
  blocks) and long-distance attention (LDA: ``G x G`` tokens sampled every ``interval`` rows and
  columns, odd blocks); the map is zero-padded at the bottom / right to a multiple of ``G`` (SDA)
  or ``G * interval`` (LDA) after ``norm1``, and padded keys get a ``-1e6`` logit;
* a map whose shorter side is at most ``G`` is attended as one group (SDA over the padded
  ``max(H, W)`` square), whatever the block type;
* the dynamic position bias (DPB) is an MLP (Linear, then three LayerNorm -> ReLU -> Linear)
  from the ``(dy, dx)`` offset to one logit bias per head;
* the backbone returns the raw stage outputs (no output norms).

The attention runs on ``F.scaled_dot_product_attention`` with the DPB and the padding mask as its
additive mask: the window op ``densekit.ops.window`` has no key mask, which the official padding
needs.

The official convolutions do not pad to the stride, so a stride-``s`` map has ``floor(H / s)`` rows
(``size_divisibility = 32``; the official code also asserts that every map it downsamples has even
sides, i.e. ``H mod 32 < 4``, which densekit does not require).
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp

from densekit.layers import DropPath, drop_path_schedule, init_trunc_normal_, run_blocks
from densekit.layers.window import relative_position_index, to_ntuple
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone

__all__ = ['CrossFormer', 'CrossScaleEmbed', 'DynamicPosBias', 'checkpoint_filter_fn']

# Logit of a padded key (the official constant; finite, so a group of padding only stays finite).
_PAD_LOGIT = -1e6


def _cel_dims(dim: int, n: int) -> list[int]:
    """Channels of the ``n`` convolutions of a cross-scale embedding with ``dim`` outputs:
    ``dim / 2, dim / 4, ...`` for all but the last, which takes as many as the one before."""
    return [dim // 2 ** (i + 1) if i < n - 1 else dim // 2 ** i for i in range(n)]


class CrossScaleEmbed(nn.Module):
    """Cross-scale embedding: convolutions of several kernels, one stride, concatenated channels.

    Args:
        in_chans: input channels.
        dim: output channels (split over the kernels by :func:`_cel_dims`).
        kernel_sizes: kernel of each convolution, smallest first; each pads by
            ``(kernel - stride) / 2`` so that all outputs have ``floor(H / stride)`` rows.
        stride: common stride.
        norm_first: LayerNorm over the input channels first (the stage downsampling) instead of over
            the output (the stem).
    """

    def __init__(self, in_chans: int, dim: int, *, kernel_sizes: Sequence[int], stride: int,
                 norm_first: bool) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.norm = nn.LayerNorm(in_chans if norm_first else dim)
        self.projs = nn.ModuleList(
            nn.Conv2d(in_chans, d, k, stride=stride, padding=(k - stride) // 2)
            for k, d in zip(kernel_sizes, _cel_dims(dim, len(kernel_sizes))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, in_chans]`` (norm first) or ``[B, in_chans, H, W]`` (stem) ->
        ``[B, floor(H / stride), floor(W / stride), dim]``."""
        if self.norm_first:
            x = self.norm(x).permute(0, 3, 1, 2)
        x = torch.cat([proj(x) for proj in self.projs], dim=1).permute(0, 2, 3, 1)
        return x if self.norm_first else self.norm(x)


class DynamicPosBias(nn.Module):
    """DPB: an MLP from a relative offset ``(dy, dx)`` to one logit bias per head.

    Args:
        pos_dim: hidden width (the official code uses ``dim // 16``).
        num_heads: attention heads.
    """

    def __init__(self, pos_dim: int, *, num_heads: int) -> None:
        super().__init__()
        self.pos_proj = nn.Linear(2, pos_dim)
        self.pos1 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, pos_dim))
        self.pos2 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, pos_dim))
        self.pos3 = nn.Sequential(nn.LayerNorm(pos_dim), nn.ReLU(), nn.Linear(pos_dim, num_heads))

    def forward(self, group: int, device: torch.device) -> torch.Tensor:
        """Bias of a ``group x group`` group: ``[heads, group ** 2, group ** 2]`` (query, key)."""
        r = torch.arange(1 - group, group, device=device, dtype=torch.float32)
        offsets = torch.stack(torch.meshgrid(r, r, indexing='ij'), dim=-1).reshape(-1, 2)
        pos = self.pos3(self.pos2(self.pos1(self.pos_proj(offsets.to(self.pos_proj.weight.dtype)))))
        idx = relative_position_index(group, device=device)  # query-minus-key offsets
        return pos[idx].permute(2, 0, 1)


class GroupAttention(nn.Module):
    """Multi-head self-attention inside groups of tokens, with the dynamic position bias.

    Args:
        dim: channels.
        num_heads: attention heads.
        qkv_bias: bias of the qkv projection.
    """

    def __init__(self, dim: int, *, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"CrossFormer: dim={dim} is not a multiple of num_heads={num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.pos = DynamicPosBias(dim // 16, num_heads=num_heads)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, group: int, key_mask: torch.Tensor | None) -> torch.Tensor:
        """``x``: ``[B, nG, G*G, C]`` groups; ``key_mask``: ``[nG, G*G]`` additive logits of the
        keys (``0`` or the padding logit) or ``None`` -> ``[B, nG, G*G, C]``."""
        B, nG, N, C = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(B, nG, N, 3, h, C // h).permute(3, 0, 1, 4, 2, 5)
        q, k, v = (t.reshape(B, nG * h, N, C // h) for t in qkv.unbind(0))
        bias = self.pos(group, x.device).to(x.dtype).unsqueeze(0)  # [1, heads, N, N]
        if key_mask is not None:
            bias = bias + key_mask.to(x.dtype)[:, None, None, :]  # [nG, heads, N, N]
        bias = bias.expand(nG, h, N, N).reshape(1, nG * h, N, N)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return self.proj(x.reshape(B, nG, h, N, C // h).transpose(2, 3).reshape(B, nG, N, C))


class CrossFormerBlock(nn.Module):
    """LayerNorm -> SDA or LDA, LayerNorm -> MLP, both residual.

    Args:
        dim: channels.
        num_heads: attention heads.
        group_size: tokens per group side ``G``.
        interval: sampling interval ``I`` of LDA.
        long_distance: LDA (``True``) or SDA.
        mlp_ratio: MLP width relative to ``dim``.
        qkv_bias: bias of the qkv projection.
        drop_path: drop-path probability of both residual branches.
    """

    def __init__(self, dim: int, *, num_heads: int, group_size: int, interval: int,
                 long_distance: bool, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.group_size = group_size
        self.interval = interval
        self.long_distance = long_distance
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GroupAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        G, I, lda = self.group_size, self.interval, self.long_distance
        if min(H, W) <= G:  # one group covering the (padded) map
            G, lda = max(H, W), False
        I = I if lda else 1  # SDA: groups of adjacent tokens
        div = G * I
        pad_b, pad_r = -H % div, -W % div
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        # [B, Rh, G, I, Rw, G, I, C]: row = (rh * G + g) * I + i; a group fixes (rh, rw, i, j).
        Rh, Rw = Hp // (G * I), Wp // (G * I)
        perm = (0, 1, 4, 3, 6, 2, 5, 7)
        x = x.reshape(B, Rh, G, I, Rw, G, I, C).permute(perm).reshape(B, -1, G * G, C)
        key_mask = None
        if pad_b or pad_r:
            pad = torch.zeros(Hp, Wp, device=x.device)
            pad[H:] = _PAD_LOGIT
            pad[:, W:] = _PAD_LOGIT
            key_mask = pad.reshape(Rh, G, I, Rw, G, I).permute(0, 3, 2, 5, 1, 4).reshape(-1, G * G)
        x = self.attn(x, G, key_mask)
        x = x.reshape(B, Rh, Rw, I, I, G, G, C).permute(0, 1, 5, 3, 2, 6, 4, 7).reshape(B, Hp, Wp, C)
        return x[:, :H, :W]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        x = x + self.drop_path(self._attention(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CrossFormerStage(nn.Module):
    """Optional cross-scale downsampling, then blocks alternating SDA (even) and LDA (odd).

    Args:
        in_dim: input channels.
        dim: channels of the stage.
        depth: number of blocks.
        num_heads: attention heads.
        group_size: group side ``G``.
        interval: LDA sampling interval.
        merge_kernels: kernels of the downsampling convolutions (``None``: no downsampling).
        mlp_ratio: MLP width relative to ``dim``.
        qkv_bias: bias of the qkv projections.
        drop_paths: drop-path probability of each block.
        with_cp: recompute each block in the backward pass.
    """

    def __init__(self, in_dim: int, dim: int, *, depth: int, num_heads: int, group_size: int,
                 interval: int, merge_kernels: Sequence[int] | None, mlp_ratio: float,
                 qkv_bias: bool, drop_paths: Sequence[float], with_cp: bool = False) -> None:
        super().__init__()
        self.downsample = (nn.Identity() if merge_kernels is None else CrossScaleEmbed(
            in_dim, dim, kernel_sizes=merge_kernels, stride=2, norm_first=True))
        self.blocks = nn.Sequential(*[
            CrossFormerBlock(dim, num_heads=num_heads, group_size=group_size, interval=interval,
                             long_distance=i % 2 == 1, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                             drop_path=drop_paths[i]) for i in range(depth)])
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, in_dim]`` -> ``[B, H', W', dim]`` (``H' = floor(H / 2)`` with downsampling)."""
        return run_blocks(self.blocks, self.downsample(x), self.with_cp)


class CrossFormer(BackboneMixin, nn.Module):
    """CrossFormer backbone returning NCHW maps at strides 4, 8, 16, 32.

    Args:
        embed_dim: channels of the first stage (doubled per stage).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        group_size: group side ``G`` per stage (int or one per stage).
        crs_interval: LDA sampling interval per stage.
        patch_kernels: kernels of the stem's cross-scale embedding (stride 4).
        merge_kernels: kernels of each stage downsampling (stride 2).
        mlp_ratio: MLP width relative to the stage channels.
        qkv_bias: bias of the qkv projections.
        in_chans: input channels.
        out_indices: stages (0-based) whose output is returned.
        drop_path_rate: drop-path probability, rising linearly over all blocks to this value.
        frozen_stages: ``-1`` freezes nothing, ``0`` the stem, ``k`` the stem and stages
            ``0..k-1``; frozen modules stay in eval mode.
        norm_eval: accepted for the contract (CrossFormer has no BatchNorm).
        with_cp: recompute each block in the backward pass (activation checkpointing).
    """

    size_divisibility = 32
    channels_last = True

    def __init__(self, *,
                 embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24),
                 group_size: int | Sequence[int] = 7,
                 crs_interval: Sequence[int] = (8, 4, 2, 1),
                 patch_kernels: Sequence[int] = (4, 8, 16, 32),
                 merge_kernels: Sequence[int] = (2, 4),
                 mlp_ratio: float = 4.0,
                 qkv_bias: bool = True,
                 in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.2,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        num_stages = len(depths)
        if not len(num_heads) == len(crs_interval) == num_stages:
            raise ValueError(f"CrossFormer: depths={tuple(depths)}, num_heads={tuple(num_heads)} and "
                             f"crs_interval={tuple(crs_interval)} must have the same length")
        groups = to_ntuple(group_size, num_stages, 'group_size')
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        self.dims = tuple(embed_dim * 2 ** i for i in range(num_stages))
        self.stem = CrossScaleEmbed(in_chans, embed_dim, kernel_sizes=patch_kernels, stride=4,
                                    norm_first=False)
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.stages.append(CrossFormerStage(
                self.dims[max(i - 1, 0)], self.dims[i], depth=depths[i], num_heads=num_heads[i],
                group_size=groups[i], interval=crs_interval[i],
                merge_kernels=merge_kernels if i > 0 else None, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, drop_paths=dpr[start:start + depths[i]], with_cp=with_cp))
            start += depths[i]
        self._init_feature_info(self.dims, [4 * 2 ** i for i in range(num_stages)])
        self._init_out_norms(None)  # the official dense backbone returns the raw stage outputs
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """Truncated-normal (std 0.02) linear layers, zero biases, unit LayerNorms; the
        convolutions keep PyTorch's default init, as in the official code."""
        init_trunc_normal_(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, dims[i], floor(H / s_i), floor(W / s_i)]`` per out index."""
        return self.forward_stages(self.stem(x))


# ------------------------------------------------------------------------------------------------
# Official checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

_DENSEKIT_KEY = re.compile(r'^(stem|stages)\.')
_CLASSIFIER_KEY = re.compile(r'^(head|norm)\.')
_PATCH_EMBED = re.compile(r'^patch_embed\.(.*)$')
_BLOCK = re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.(.*)$')
_DOWNSAMPLE = re.compile(r'^layers\.(\d+)\.downsample\.(norm|reductions)\.(.*)$')
# CrossFormer++'s activation cooling layers (ex_conv / ex_ln) and CPE have no densekit counterpart.
_BLOCK_KEY = re.compile(r'^(norm1|norm2|attn\.(qkv|proj|pos\.(pos_proj|pos[123]\.[02]))|mlp\.fc[12])\.'
                        r'(weight|bias)$')


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official CrossFormer checkpoint (the ImageNet release or the detection / segmentation
    ``backbone-crossformer-*.pth`` and detector checkpoints) -> densekit keys.

    ``patch_embed`` becomes the stem (``projs`` / ``norm`` unchanged), ``layers.{i}.blocks`` the
    blocks of stage ``i`` and ``layers.{i}.downsample`` (``reductions`` -> ``projs``) the
    downsampling at the start of stage ``i + 1``. The classifier's ``head`` and final ``norm`` are
    dropped, ``module.`` / ``backbone.`` prefixes stripped; densekit keys pass through unchanged.
    """
    out: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in strip_wrapper_prefix(state_dict).items():
        if _DENSEKIT_KEY.match(key):
            out[key] = value
        elif _CLASSIFIER_KEY.match(key):
            continue
        elif m := _PATCH_EMBED.match(key):
            out[f'stem.{m.group(1)}'] = value
        elif (m := _BLOCK.match(key)) and _BLOCK_KEY.match(m.group(3)):
            out[f'stages.{m.group(1)}.blocks.{m.group(2)}.{m.group(3)}'] = value
        elif m := _DOWNSAMPLE.match(key):
            part = 'projs' if m.group(2) == 'reductions' else 'norm'
            out[f'stages.{int(m.group(1)) + 1}.downsample.{part}.{m.group(3)}'] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"CrossFormer converter: unrecognised keys {unknown[:8]}"
                       f"{' ...' if len(unknown) > 8 else ''}")
    return out


register_converter('crossformer', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants
# ------------------------------------------------------------------------------------------------

_ARCH = ('embed_dim', 'depths', 'num_heads', 'group_size', 'crs_interval', 'patch_kernels',
         'merge_kernels', 'mlp_ratio', 'qkv_bias')


def _create_crossformer(kwargs: dict, *, embed_dim: int, depths: Sequence[int],
                        num_heads: Sequence[int], drop_path_rate: float,
                        group_size: int | Sequence[int] = 7,
                        crs_interval: Sequence[int] = (8, 4, 2, 1),
                        mlp_ratio: float = 4.0) -> CrossFormer:
    check_variant_kwargs(CrossFormer, _ARCH, kwargs)
    kwargs.setdefault('drop_path_rate', drop_path_rate)
    return CrossFormer(embed_dim=embed_dim, depths=depths, num_heads=num_heads,
                       group_size=group_size, crs_interval=crs_interval, mlp_ratio=mlp_ratio,
                       **kwargs)


@register_backbone(name='crossformer_t')
def crossformer_t(**kwargs) -> CrossFormer:
    """CrossFormer-T (27.8M params with the ImageNet head); the official dense code has no T
    configuration, this is the classification architecture with the dense group settings."""
    return _create_crossformer(kwargs, embed_dim=64, depths=(1, 1, 8, 6), num_heads=(2, 4, 8, 16),
                               drop_path_rate=0.1)


@register_backbone(name='crossformer_s')
def crossformer_s(**kwargs) -> CrossFormer:
    """CrossFormer-S (30.7M with the ImageNet head; the official ``CrossFormer_S``)."""
    return _create_crossformer(kwargs, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                               drop_path_rate=0.2)


@register_backbone(name='crossformer_b')
def crossformer_b(**kwargs) -> CrossFormer:
    """CrossFormer-B (52.0M with the ImageNet head; the official ``CrossFormer_B``)."""
    return _create_crossformer(kwargs, embed_dim=96, depths=(2, 2, 18, 2),
                               num_heads=(3, 6, 12, 24), drop_path_rate=0.3)


@register_backbone(name='crossformer_l')
def crossformer_l(**kwargs) -> CrossFormer:
    """CrossFormer-L (92.0M with the ImageNet head; the official segmentation ``CrossFormer_L``)."""
    return _create_crossformer(kwargs, embed_dim=128, depths=(2, 2, 18, 2),
                               num_heads=(4, 8, 16, 32), drop_path_rate=0.5)


@register_backbone(name='crossformer_test')
def crossformer_test(**kwargs) -> CrossFormer:
    """A tiny CrossFormer for tests (not a published model): SDA and LDA blocks, padding, maps
    smaller than a group, with groups of 4x4 (intervals 4, 2, 2, 1) to keep the padded maps small;
    40 channels give every DPB at least two hidden features; MLPs of twice the width."""
    return _create_crossformer(kwargs, embed_dim=40, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4),
                               group_size=4, crs_interval=(4, 2, 2, 1), mlp_ratio=2.0,
                               drop_path_rate=0.1)
