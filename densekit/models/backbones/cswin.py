"""CSWin Transformer: cross-shaped window self-attention with locally-enhanced positional encoding.

Dong, Bao, Chen, Zhang, Yu, Yuan, Chen, Guo, "CSWin Transformer: A General Vision Transformer
Backbone with Cross-Shaped Windows", CVPR 2022 (arXiv:2107.00652).

Each block splits its heads in two halves: one attends within vertical stripes (full height,
``split_size`` columns), the other within horizontal stripes; the last stage attends globally.
LePE adds a depthwise 3x3 convolution of the values, computed inside each stripe, to the
attention output. A stripe is just a non-square window, so the attention runs on
:func:`densekit.ops.window_attention` (no shift, no bias); LePE is a plain depthwise convolution.

The model follows the official dense-prediction backbone (microsoft/CSWin-Transformer,
``segmentation/backbone/cswin_transformer.py``): any input size, with q / k / v zero-padded
*symmetrically* to a multiple of the stripe width after the qkv projection (padded keys are not
masked: they take part in the softmax with a zero logit, as in the official code), and a
LayerNorm on every returned stage.
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Mlp

from densekit.layers import DropPath, drop_path_schedule, init_trunc_normal_, run_blocks
from densekit.layers.window import window_partition, window_reverse
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone
from densekit.ops.window import window_attention

__all__ = ['CSWin', 'CrossShapedAttention', 'checkpoint_filter_fn']


class ConvEmbed(nn.Module):
    """7x7 stride-4 convolution (padding 2) and a LayerNorm: tokens at stride 4, channels last."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class MergeBlock(nn.Module):
    """3x3 stride-2 convolution to ``out_dim`` channels and a LayerNorm (channels last)."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, kernel_size=3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


def _stripe_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lepe: nn.Conv2d,
                      axis: int, split_size: int, scale: float, backend: str | None) -> torch.Tensor:
    """Attention within stripes of one branch, plus LePE.

    Args:
        q, k, v: ``[B, H, W, heads, head_dim]``.
        lepe: depthwise 3x3 convolution over ``heads * head_dim`` channels.
        axis: 0 for vertical stripes (``H x split_size``), 1 for horizontal stripes
            (``split_size x W``), -1 for one window over the whole map (the last stage).
        split_size: stripe width.
        scale: logit scale.
        backend: :func:`densekit.ops.window_attention` backend.

    Returns:
        ``[B, H, W, heads * head_dim]``.
    """
    B, H, W, h, D = q.shape
    pad_h = pad_w = 0
    if axis == 0:
        pad_w = (split_size - W % split_size) % split_size
    elif axis == 1:
        pad_h = (split_size - H % split_size) % split_size
    top, left = pad_h // 2, pad_w // 2
    if pad_h or pad_w:
        # The official code pads the projected q / k / v symmetrically with zeros.
        pad = (0, 0, 0, 0, left, pad_w - left, top, pad_h - top)
        q, k, v = (F.pad(t, pad) for t in (q, k, v))
    Hp, Wp = H + pad_h, W + pad_w
    window = {0: (Hp, split_size), 1: (split_size, Wp), -1: (Hp, Wp)}[axis]
    if axis == 0:
        # Attention within a window ignores token order (no bias, no mask), so a vertical stripe
        # is computed as a horizontal stripe of the transposed map: every stripe is then one
        # contiguous block of memory for the op.
        qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))
        out = window_attention(qt, kt, vt, (split_size, Hp), rpb=None, scale=scale,
                               backend=backend).transpose(1, 2)
    else:
        out = window_attention(q, k, v, window, rpb=None, scale=scale, backend=backend)
    # LePE sees each stripe on its own: zero padding at the stripe borders, as the official
    # per-window convolution.
    vw = window_partition(v.reshape(B, Hp, Wp, h * D), window).permute(0, 3, 1, 2)
    pe = window_reverse(lepe(vw).permute(0, 2, 3, 1), window, Hp, Wp)
    out = out.reshape(B, Hp, Wp, h * D) + pe
    return out[:, top:top + H, left:left + W]


class CrossShapedAttention(nn.Module):
    """qkv projection, two stripe branches (or one global branch), LePE and output projection.

    Args:
        dim: channels.
        num_heads: heads; split evenly between the two branches unless ``last_stage``.
        split_size: stripe width.
        last_stage: a single branch attending over the whole map (CSWin's last stage).
        qk_scale: overrides ``head_dim ** -0.5``.
        proj_drop: dropout after the output projection.
        backend: :func:`densekit.ops.window_attention` backend.
    """

    def __init__(self, dim: int, *, num_heads: int, split_size: int = 7, last_stage: bool = False,
                 qk_scale: float | None = None, proj_drop: float = 0.0,
                 backend: str | None = None) -> None:
        super().__init__()
        branches = 1 if last_stage else 2
        if dim % num_heads or num_heads % branches or dim % branches:
            raise ValueError(f"CrossShapedAttention: dim={dim} and num_heads={num_heads} must split "
                             f"evenly into {branches} branch(es) of whole heads")
        if split_size < 1:
            raise ValueError(f"CrossShapedAttention: split_size={split_size} must be >= 1")
        self.dim = dim
        self.num_heads = num_heads
        self.split_size = split_size
        self.axes = (-1,) if last_stage else (0, 1)
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.backend = backend
        # The official code always gives qkv a bias (its qkv_bias argument is ignored).
        self.qkv = nn.Linear(dim, 3 * dim)
        branch_dim = dim // branches
        self.lepe = nn.ModuleList(
            nn.Conv2d(branch_dim, branch_dim, kernel_size=3, padding=1, groups=branch_dim)
            for _ in range(branches))
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        B, H, W, C = x.shape
        n = len(self.axes)
        heads = self.num_heads // n
        # Channel order of the official qkv output: (q|k|v) x (branch 0 | branch 1) x heads x dim.
        # One copy makes every (q|k|v, branch) slice contiguous for the attention op.
        qkv = self.qkv(x).reshape(B, H, W, 3, n, heads, C // self.num_heads)
        qkv = qkv.permute(3, 4, 0, 1, 2, 5, 6).contiguous()  # [3, n, B, H, W, heads, head_dim]
        outs = [
            _stripe_attention(qkv[0, b], qkv[1, b], qkv[2, b], self.lepe[b], axis,
                              self.split_size, self.scale, self.backend)
            for b, axis in enumerate(self.axes)]
        x = outs[0] if n == 1 else torch.cat(outs, dim=-1)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, split_size={self.split_size}, axes={self.axes}"


class CSWinBlock(nn.Module):
    """Pre-norm block: cross-shaped attention + MLP, each residual branch with drop path.

    Args:
        dim: channels.
        num_heads: attention heads.
        split_size: stripe width.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        last_stage: one global attention branch instead of two stripe branches.
        qk_scale: overrides the attention scale.
        drop: dropout after the attention projection and in the MLP.
        drop_path: drop-path probability of this block.
        attn_backend: :func:`densekit.ops.window_attention` backend.
    """

    def __init__(self, dim: int, *, num_heads: int, split_size: int, mlp_ratio: float,
                 last_stage: bool, qk_scale: float | None, drop: float, drop_path: float,
                 attn_backend: str | None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossShapedAttention(dim, num_heads=num_heads, split_size=split_size,
                                         last_stage=last_stage, qk_scale=qk_scale, proj_drop=drop,
                                         backend=attn_backend)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CSWinStage(nn.Module):
    """A merge block (every stage but the first), then ``depth`` CSWin blocks."""

    def __init__(self, in_dim: int, dim: int, *, depth: int, num_heads: int, split_size: int,
                 mlp_ratio: float, last_stage: bool, qk_scale: float | None, drop: float,
                 drop_paths: Sequence[float], attn_backend: str | None, with_cp: bool,
                 downsample: bool) -> None:
        super().__init__()
        self.downsample = MergeBlock(in_dim, dim) if downsample else None
        self.with_cp = with_cp
        self.blocks = nn.ModuleList(
            CSWinBlock(dim, num_heads=num_heads, split_size=split_size, mlp_ratio=mlp_ratio,
                       last_stage=last_stage, qk_scale=qk_scale, drop=drop, drop_path=drop_paths[j],
                       attn_backend=attn_backend)
            for j in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return run_blocks(self.blocks, x, self.with_cp)


class CSWin(BackboneMixin, nn.Module):
    """CSWin backbone returning NCHW maps at strides 4, 8, 16, 32.

    Args:
        embed_dim: channels of stage 0 (doubled at every stage, as the ImageNet models).
        depths: blocks per stage.
        num_heads: heads per stage (even in all but the last stage: two branches).
        split_size: stripe width per stage (the last stage attends globally and ignores it).
        mlp_ratio: MLP hidden width relative to the channels.
        in_chans: input channels.
        out_indices: stages to return (0-based).
        out_norm: a LayerNorm on each returned map, as the official segmentation backbone.
        qk_scale: overrides the attention scale.
        drop_rate: dropout after attention projections and in MLPs.
        drop_path_rate: drop-path probability, rising linearly over all blocks to this value.
        frozen_stages: -1 freezes nothing, 0 the stem, ``k`` the stem and stages ``0..k-1`` (with
            their output norms).
        norm_eval: keep BatchNorms in eval mode while training (CSWin has none; accepted for the
            common contract).
        with_cp: activation checkpointing of every block.
        attn_backend: :func:`densekit.ops.window_attention` backend (``None``: automatic).
    """

    size_divisibility = 0  # any input size: q / k / v are padded to the stripe width
    channels_last = True

    def __init__(self, *,
                 embed_dim: int = 64,
                 depths: Sequence[int] = (1, 2, 21, 1),
                 num_heads: Sequence[int] = (2, 4, 8, 16),
                 split_size: Sequence[int] = (1, 2, 7, 7),
                 mlp_ratio: float = 4.0,
                 in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: bool = True,
                 qk_scale: float | None = None,
                 drop_rate: float = 0.0,
                 drop_path_rate: float = 0.3,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 attn_backend: str | None = None) -> None:
        super().__init__()
        num_stages = len(depths)
        if len(num_heads) != num_stages or len(split_size) != num_stages:
            raise ValueError(f"CSWin: depths={tuple(depths)}, num_heads={tuple(num_heads)} and "
                             f"split_size={tuple(split_size)} must have the same length")
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        self.dims = [embed_dim * 2 ** i for i in range(num_stages)]

        self.stem = ConvEmbed(in_chans, embed_dim)
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.stages.append(CSWinStage(
                self.dims[max(i - 1, 0)], self.dims[i], depth=depths[i], num_heads=num_heads[i],
                split_size=split_size[i], mlp_ratio=mlp_ratio, last_stage=i == num_stages - 1,
                qk_scale=qk_scale, drop=drop_rate, drop_paths=dpr[start:start + depths[i]],
                attn_backend=attn_backend, with_cp=with_cp, downsample=i > 0))
            start += depths[i]
        self._init_feature_info(self.dims, [4 * 2 ** i for i in range(num_stages)])
        self._init_out_norms(nn.LayerNorm if out_norm else None)
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """The official random init (truncated normal, std 0.02); checkpoints load over it."""
        init_trunc_normal_(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one NCHW map per out index (stride-4 map: ``(H - 1) // 4 + 1``)."""
        return self.forward_stages(self.stem(x))


# ------------------------------------------------------------------------------------------------
# Official checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

_BLOCK_RULES = (
    (re.compile(r'^qkv\.'), 'attn.qkv.'),
    (re.compile(r'^proj\.'), 'attn.proj.'),
    (re.compile(r'^attns\.(\d+)\.get_v\.'), r'attn.lepe.\1.'),
    (re.compile(r'^(norm1|norm2|mlp\.fc1|mlp\.fc2)\.'), r'\1.'),
)
_DENSEKIT_KEY = re.compile(r'^(stem|stages|out_norms)\.')
# ImageNet heads, and the classifier's final norm: the official segmentation code leaves its
# per-output norms at their initial values when loading ImageNet weights, and so do we.
_CLASSIFIER_KEY = re.compile(r'^(head|norm)\.')


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official CSWin checkpoint (ImageNet or mmseg UPerNet) -> densekit keys.

    ``stage1_conv_embed.{0,2}`` -> ``stem.{conv,norm}``; ``merge{i}`` -> ``stages.{i}.downsample``;
    ``stage{i}.{j}`` -> ``stages.{i-1}.blocks.{j}`` (``qkv`` / ``proj`` / ``attns.b.get_v`` move into
    ``attn``); ``norm{i}`` (segmentation) -> ``out_norms.{i-1}``. Keys already in densekit's format
    pass through.
    """
    sd = strip_wrapper_prefix(state_dict)
    out: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if _DENSEKIT_KEY.match(key):
            out[key] = value
            continue
        if _CLASSIFIER_KEY.match(key):
            continue
        m = re.match(r'^stage1_conv_embed\.([02])\.(.*)$', key)
        if m:
            out[f"stem.{'conv' if m.group(1) == '0' else 'norm'}.{m.group(2)}"] = value
            continue
        m = re.match(r'^merge(\d+)\.(.*)$', key)
        if m:
            out[f'stages.{m.group(1)}.downsample.{m.group(2)}'] = value
            continue
        m = re.match(r'^norm(\d+)\.(.*)$', key)
        if m:
            out[f'out_norms.{int(m.group(1)) - 1}.{m.group(2)}'] = value
            continue
        m = re.match(r'^stage(\d+)\.(\d+)\.(.*)$', key)
        if m:
            rest = m.group(3)
            for pattern, repl in _BLOCK_RULES:
                if pattern.match(rest):
                    out[f'stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.'
                        f'{pattern.sub(repl, rest)}'] = value
                    break
            else:
                unknown.append(key)
            continue
        if key.endswith('atten_mask_matrix'):  # an always-None buffer of the official blocks
            continue
        unknown.append(key)
    if unknown:
        raise KeyError(f"CSWin converter: unrecognised keys {unknown[:8]}"
                       f"{' ...' if len(unknown) > 8 else ''}")
    return out


register_converter('cswin', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants (the official ImageNet definitions, models/cswin.py)
# ------------------------------------------------------------------------------------------------

_ARCH = ('embed_dim', 'depths', 'num_heads', 'mlp_ratio')


def _create_cswin(kwargs: dict, *, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int],
                  drop_path_rate: float, mlp_ratio: float = 4.0) -> CSWin:
    """``kwargs`` may override ``drop_path_rate`` and ``split_size``, not the architecture."""
    check_variant_kwargs(CSWin, _ARCH, kwargs)
    kwargs = {'split_size': (1, 2, 7, 7), 'drop_path_rate': drop_path_rate, **kwargs}
    return CSWin(embed_dim=embed_dim, depths=depths, num_heads=num_heads, mlp_ratio=mlp_ratio,
                 **kwargs)


# drop_path_rate defaults: the official UPerNet configs (segmentation/configs/cswin/*.py); there
# is no official Large segmentation config, so Large takes Base's value. ``split_size=(1, 2, 12,
# 12)`` matches the 384² ImageNet checkpoints.

@register_backbone(name='cswin_tiny')
def cswin_tiny(**kwargs) -> CSWin:
    """CSWin-T (23M params with the ImageNet head)."""
    return _create_cswin(kwargs, embed_dim=64, depths=(1, 2, 21, 1), num_heads=(2, 4, 8, 16),
                         drop_path_rate=0.3)


@register_backbone(name='cswin_small')
def cswin_small(**kwargs) -> CSWin:
    """CSWin-S (35M params with the ImageNet head)."""
    return _create_cswin(kwargs, embed_dim=64, depths=(2, 4, 32, 2), num_heads=(2, 4, 8, 16),
                         drop_path_rate=0.4)


@register_backbone(name='cswin_base')
def cswin_base(**kwargs) -> CSWin:
    """CSWin-B (78M params with the ImageNet head)."""
    return _create_cswin(kwargs, embed_dim=96, depths=(2, 4, 32, 2), num_heads=(4, 8, 16, 32),
                         drop_path_rate=0.6)


@register_backbone(name='cswin_large')
def cswin_large(**kwargs) -> CSWin:
    """CSWin-L (173M params with the ImageNet head)."""
    return _create_cswin(kwargs, embed_dim=144, depths=(2, 4, 32, 2), num_heads=(6, 12, 24, 24),
                         drop_path_rate=0.6)


@register_backbone(name='cswin_test')
def cswin_test(**kwargs) -> CSWin:
    """A tiny CSWin for tests (not a published model)."""
    return _create_cswin(kwargs, embed_dim=16, depths=(1, 1, 2, 1), num_heads=(2, 2, 4, 4),
                         drop_path_rate=0.0, mlp_ratio=2.0)
