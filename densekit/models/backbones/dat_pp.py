"""DAT++: vision transformer with deformable attention.

Xia, Pan, Song, Li, Huang, "DAT++: Spatially Dynamic Vision Transformer with Deformable
Attention", arXiv:2309.01430 (extending "Vision Transformer with Deformable Attention", CVPR 2022,
arXiv:2201.00520).

The numerics follow the official dense-prediction backbone (LeapLabTHU/DAT-Detection,
``models/backbones/dat.py`` with ``models/utils/dat_blocks.py`` and ``models/utils/nat.py``) in
the DAT++ configuration (``configs/dat/mrcn_*``, the same as LeapLabTHU/DAT's
``configs/dat_{tiny,small,base}.yaml``): a two-conv stem (3x3 stride 2, LayerNorm, GELU, 3x3
stride 2, LayerNorm), four stages separated by 3x3 stride-2 convs + LayerNorm, and a LayerNorm on
every returned map. Every block is a depthwise 3x3 conv residual (the local perception unit),
then pre-norm attention and a pre-norm MLP whose hidden layer has a depthwise 3x3 conv residual.
The attention alternates 7x7 neighborhood attention (``N``, :func:`densekit.ops.na2d` with a
relative position bias, NATTEN <= 0.17 semantics) and deformable attention (``D``).

Deformable attention: an offset network (depthwise strided conv, LayerNorm, GELU, 1x1 conv) on
the queries of each of ``groups`` channel groups predicts one offset per point of a reference grid
``stride`` times coarser than the map; the offsets are added to the reference points without a
range limit (``offset_range_factor=-1``) and the positions clamped to the map; the normalised
features are sampled there bilinearly (``grid_sample``, ``align_corners=True``) *before* the key /
value projections, and every query attends to the sampled keys with a relative position bias
interpolated from a table at the query-to-sample displacement
(:func:`densekit.ops.deform_sampled_attention`). The table's size is fixed by the 224-pixel
pretraining map (``img_size``), whatever the input size.

Any input size: the stride-2 convs give ``ceil(H / s)`` maps; a neighborhood-attention input
smaller than the 7x7 window is zero-padded on the bottom / right after the block norm (the padded
tokens carry the qkv bias and take part in the attention, as the official code) and cropped. A
query grid with one row or column places it at 0 where the official code divides 0 by 0.
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from densekit.layers import DropPath, LayerNorm2d, drop_path_schedule, run_blocks
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone
from densekit.ops.deform_sampled import deform_sampled_attention
from densekit.ops.neighborhood import na2d

__all__ = ['DATPlusPlus', 'DeformableAttention', 'NeighborhoodAttention', 'checkpoint_filter_fn']


class NeighborhoodAttention(nn.Module):
    """2-D neighborhood attention with a relative position bias on NCHW maps (official
    ``NeighborhoodAttention2D``, dilation 1); maps smaller than the window are padded.

    Args:
        dim: channels.
        num_heads: heads.
        kernel_size: odd window size.
        attn_backend: :func:`densekit.ops.na2d` backend.
    """

    def __init__(self, dim: int, *, num_heads: int, kernel_size: int = 7, attn_backend: str | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"NeighborhoodAttention: dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.attn_backend = attn_backend
        self.qkv = nn.Linear(dim, 3 * dim)
        self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        x = x.permute(0, 2, 3, 1)
        B, H, W, C = x.shape
        pad_b, pad_r = max(0, self.kernel_size - H), max(0, self.kernel_size - W)
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = H + pad_b, W + pad_r
        q, k, v = self.qkv(x).reshape(B, Hp, Wp, 3, self.num_heads, C // self.num_heads).unbind(3)
        out = na2d(q, k, v, self.kernel_size, rpb=self.rpb, backend=self.attn_backend).reshape(B, Hp, Wp, C)
        if pad_b or pad_r:
            out = out[:, :H, :W]
        return self.proj(out).permute(0, 3, 1, 2)


class DeformableAttention(nn.Module):
    """DAT++ deformable attention on NCHW maps (official ``DAttentionBaseline`` with
    ``use_pe=True``, ``offset_range_factor=-1``).

    Args:
        dim: channels.
        num_heads: heads.
        groups: offset groups (each predicts its own sampling positions from its channels).
        stride: the reference grid is ``stride`` times coarser than the map.
        ksize: kernel of the offset network's depthwise conv.
        table_size: ``(q_h, q_w)``, the map size at the 224-pixel pretraining resolution; the
            bias table is ``[heads, 2 q_h - 1, 2 q_w - 1]``.
        attn_backend: :func:`densekit.ops.deform_sampled_attention` backend.
    """

    def __init__(self, dim: int, *, num_heads: int, groups: int, stride: int, ksize: int,
                 table_size: Sequence[int], attn_backend: str | None = None) -> None:
        super().__init__()
        if dim % num_heads or num_heads % groups:
            raise ValueError(f"DeformableAttention: dim={dim}, num_heads={num_heads} and groups={groups} must "
                             "divide one another")
        self.num_heads = num_heads
        self.groups = groups
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.attn_backend = attn_backend
        cg = dim // groups
        self.conv_offset = nn.Sequential(
            nn.Conv2d(cg, cg, ksize, stride, ksize // 2 if ksize != stride else 0, groups=cg),
            LayerNorm2d(cg),
            nn.GELU(),
            nn.Conv2d(cg, 2, 1, bias=False),
        )
        self.proj_q = nn.Conv2d(dim, dim, 1)
        self.proj_k = nn.Conv2d(dim, dim, 1)
        self.proj_v = nn.Conv2d(dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.rpe_table = nn.Parameter(torch.zeros(num_heads, 2 * table_size[0] - 1, 2 * table_size[1] - 1))

    @staticmethod
    def reference_points(Hk: int, Wk: int, dtype: torch.dtype, device) -> torch.Tensor:
        """``[Hk, Wk, 2]`` normalised ``(y, x)`` reference points, computed as the official code
        (pixel centres divided by ``size - 1``: slightly outside ``[-1, 1]``, and infinite for a
        side of 1, which the clamp of the positions brings back to the border)."""
        ys = torch.linspace(0.5, Hk - 0.5, Hk, dtype=dtype, device=device).div(Hk - 1.0).mul(2.0).sub(1.0)
        xs = torch.linspace(0.5, Wk - 0.5, Wk, dtype=dtype, device=device).div(Wk - 1.0).mul(2.0).sub(1.0)
        return torch.stack(torch.meshgrid(ys, xs, indexing='ij'), -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        B, C, H, W = x.shape
        G, h, hc = self.groups, self.num_heads, self.head_dim
        q = self.proj_q(x)
        offset = self.conv_offset(q.reshape(B * G, C // G, H, W))  # B*G, 2, Hk, Wk
        Hk, Wk = offset.shape[2:]
        ref = self.reference_points(Hk, Wk, x.dtype, x.device)
        pos = (offset.permute(0, 2, 3, 1) + ref).clamp(-1.0, 1.0)  # B*G, Hk, Wk, (y, x)
        sampled = F.grid_sample(x.reshape(B * G, C // G, H, W), pos[..., (1, 0)], mode='bilinear',
                                align_corners=True)
        sampled = sampled.reshape(B, C, 1, Hk * Wk)
        k = self.proj_k(sampled).reshape(B, h, hc, Hk * Wk).permute(0, 3, 1, 2)
        v = self.proj_v(sampled).reshape(B, h, hc, Hk * Wk).permute(0, 3, 1, 2)
        q = q.reshape(B, h, hc, H, W).permute(0, 3, 4, 1, 2)
        out = deform_sampled_attention(q, k, v, pos.reshape(B, G, Hk * Wk, 2), self.rpe_table, scale=self.scale,
                                       backend=self.attn_backend)
        return self.proj_out(out.permute(0, 3, 4, 1, 2).reshape(B, C, H, W))


class ConvMlp(nn.Module):
    """1x1 conv, a depthwise 3x3 conv residual on the hidden map, GELU, 1x1 conv (official
    ``TransformerMLPWithConv``)."""

    def __init__(self, dim: int, *, expansion: int = 4) -> None:
        super().__init__()
        hidden = dim * expansion
        self.linear1 = nn.Conv2d(dim, hidden, 1)
        self.dwc = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.linear2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear1(x)
        return self.linear2(self.act(x + self.dwc(x)))


class DATBlock(nn.Module):
    """Local perception unit (depthwise 3x3 conv residual), pre-norm attention, pre-norm MLP.

    Args:
        dim: channels.
        kind: ``'N'`` (neighborhood attention) or ``'D'`` (deformable attention).
        num_heads: heads.
        groups, stride, ksize, table_size: of the deformable attention.
        nat_ksize: window of the neighborhood attention.
        expansion: MLP hidden width relative to ``dim``.
        drop_path: drop-path probability of this block (both residual branches).
        attn_backend: attention op backend.
    """

    def __init__(self, dim: int, *, kind: str, num_heads: int, groups: int, stride: int, ksize: int,
                 table_size: Sequence[int], nat_ksize: int = 7, expansion: int = 4, drop_path: float = 0.0,
                 attn_backend: str | None = None) -> None:
        super().__init__()
        self.lpu = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.norm1 = LayerNorm2d(dim)
        if kind == 'N':
            self.attn = NeighborhoodAttention(dim, num_heads=num_heads, kernel_size=nat_ksize,
                                              attn_backend=attn_backend)
        elif kind == 'D':
            self.attn = DeformableAttention(dim, num_heads=num_heads, groups=groups, stride=stride, ksize=ksize,
                                            table_size=table_size, attn_backend=attn_backend)
        else:
            raise ValueError(f"DATBlock: kind={kind!r}; expected 'N' (neighborhood) or 'D' (deformable)")
        self.norm2 = LayerNorm2d(dim)
        self.mlp = ConvMlp(dim, expansion=expansion)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C, H, W]``."""
        x = x + self.lpu(x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class DATStage(nn.Module):
    """An optional 3x3 stride-2 conv + LayerNorm downsampler (every stage but the first), then
    blocks of the kinds ``spec`` lists."""

    def __init__(self, in_dim: int, dim: int, *, downsample: bool, spec: str, num_heads: int, groups: int,
                 stride: int, ksize: int, nat_ksize: int, table_size: Sequence[int], expansion: int,
                 drop_paths: Sequence[float], attn_backend: str | None, with_cp: bool) -> None:
        super().__init__()
        self.downsample = nn.Sequential(
            nn.Conv2d(in_dim, dim, 3, 2, 1, bias=False),
            LayerNorm2d(dim),
        ) if downsample else None
        self.with_cp = with_cp
        self.blocks = nn.ModuleList(
            DATBlock(dim, kind=kind, num_heads=num_heads, groups=groups, stride=stride, ksize=ksize,
                     table_size=table_size, nat_ksize=nat_ksize, expansion=expansion, drop_path=drop_paths[j],
                     attn_backend=attn_backend)
            for j, kind in enumerate(spec))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim, H, W]`` -> ``[B, dim, H', W']``."""
        if self.downsample is not None:
            x = self.downsample(x)
        return run_blocks(self.blocks, x, self.with_cp)


class DATPlusPlus(BackboneMixin, nn.Module):
    """DAT++ backbone returning NCHW maps at strides 4, 8, 16, 32.

    Args:
        dims: channels per stage (the stem ends at ``dims[0]``).
        stage_specs: per stage, the attention of each block (``'N'`` / ``'D'``); their lengths are
            the depths.
        num_heads: heads per stage.
        groups: deformable-attention offset groups per stage.
        strides: reference-grid stride of the deformable attention per stage.
        ksizes: kernel of the offset network's depthwise conv per stage.
        nat_ksize: neighborhood-attention window.
        img_size: pretraining resolution; fixes the bias tables' sizes (``2 * img_size / 2**(i+2)
            - 1`` per side in stage ``i``), not the input size.
        expansion: MLP hidden width relative to the channels.
        in_chans: input channels.
        out_indices: stages to return (0-based).
        out_norm: a LayerNorm on each returned map, as the official dense code.
        drop_path_rate: drop-path probability, rising linearly over all blocks to this value.
        frozen_stages: -1 freezes nothing, 0 the stem, ``k`` the stem and stages ``0..k-1``.
        norm_eval: accepted for the contract; DAT++ has no BatchNorm.
        with_cp: activation checkpointing of every block.
        attn_backend: backend of both attention ops (``None``: automatic).
    """

    size_divisibility = 0  # stride-2 convs with padding: ceil(H / s) maps for any input size
    channels_last = False

    def __init__(self, *,
                 dims: Sequence[int] = (64, 128, 256, 512),
                 stage_specs: Sequence[str] = ('ND', 'NDND', 'ND' * 9, 'DD'),
                 num_heads: Sequence[int] = (2, 4, 8, 16),
                 groups: Sequence[int] = (1, 2, 4, 8),
                 strides: Sequence[int] = (8, 4, 2, 1),
                 ksizes: Sequence[int] = (9, 7, 5, 3),
                 nat_ksize: int = 7,
                 img_size: int = 224,
                 expansion: int = 4,
                 in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: bool = True,
                 drop_path_rate: float = 0.0,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 attn_backend: str | None = None) -> None:
        super().__init__()
        num_stages = len(stage_specs)
        lengths = {len(t) for t in (dims, num_heads, groups, strides, ksizes)}
        if lengths != {num_stages}:
            raise ValueError(f"DATPlusPlus: dims={tuple(dims)}, stage_specs={tuple(stage_specs)}, "
                             f"num_heads={tuple(num_heads)}, groups={tuple(groups)}, strides={tuple(strides)} and "
                             f"ksizes={tuple(ksizes)} differ in length")
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        self.dims = list(dims)
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0] // 2, 3, 2, 1),
            LayerNorm2d(dims[0] // 2),
            nn.GELU(),
            nn.Conv2d(dims[0] // 2, dims[0], 3, 2, 1),
            LayerNorm2d(dims[0]),
        )
        dpr = drop_path_schedule(drop_path_rate, sum(len(s) for s in stage_specs))
        self.stages = nn.ModuleList()
        start = 0
        for i, spec in enumerate(stage_specs):
            fmap = img_size // 4 // 2 ** i
            self.stages.append(DATStage(
                dims[max(i - 1, 0)], dims[i], downsample=i > 0, spec=spec, num_heads=num_heads[i],
                groups=groups[i], stride=strides[i], ksize=ksizes[i], nat_ksize=nat_ksize,
                table_size=(fmap, fmap), expansion=expansion, drop_paths=dpr[start:start + len(spec)],
                attn_backend=attn_backend, with_cp=with_cp))
            start += len(spec)
        self._init_feature_info(self.dims, [4 * 2 ** i for i in range(num_stages)])
        self._init_out_norms(LayerNorm2d if out_norm else None)
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """The official random init: PyTorch's defaults (the official ``reset_parameters`` matches
        no parameter), truncated-normal bias tables (std 0.01 deformable, 0.02 neighborhood)."""
        for m in self.modules():
            if isinstance(m, DeformableAttention):
                nn.init.trunc_normal_(m.rpe_table, std=0.01)
            elif isinstance(m, NeighborhoodAttention):
                nn.init.trunc_normal_(m.rpb, std=0.02, a=-2.0, b=2.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, C_i, ceil(H / s_i), ceil(W / s_i)]`` per out index."""
        return self.forward_stages(self.stem(x))


# ------------------------------------------------------------------------------------------------
# Official checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

_DENSEKIT_KEY = re.compile(r'^(stem|stages\.\d+\.(downsample|blocks)|out_norms)\.')
# The classifier's final norm and head have no counterpart in a backbone; the official dense
# code leaves its per-output norms at their initial values when it loads an ImageNet checkpoint.
_CLASSIFIER_KEY = re.compile(r'^cls_(norm|head)\.')
# LayerNormProxy wraps an nn.LayerNorm as ``.norm``; LayerNorm2d holds the parameters directly.
_PROXY = re.compile(r'\.norm\.(weight|bias)$')
_BLOCK_RULES = (
    (re.compile(r'^local_perception_units\.(\d+)\.'), r'blocks.\1.lpu.'),
    (re.compile(r'^attns\.(\d+)\.'), r'blocks.\1.attn.'),
    (re.compile(r'^mlps\.(\d+)\.linear1\.0\.'), r'blocks.\1.mlp.linear1.'),
    (re.compile(r'^mlps\.(\d+)\.linear2\.0\.'), r'blocks.\1.mlp.linear2.'),
    (re.compile(r'^mlps\.(\d+)\.dwc\.'), r'blocks.\1.mlp.dwc.'),
)


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official DAT++ checkpoint (ImageNet from LeapLabTHU/DAT, or mmdet from DAT-Detection) ->
    densekit keys.

    ``patch_proj`` is the stem, ``down_projs.i`` the downsampler at the start of our stage
    ``i + 1``, ``stages.i.layer_norms.{2j, 2j+1}`` the two norms of block ``j``, ``norms.i`` the
    output norms; keys already in densekit's format pass through unchanged.
    """
    out: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in strip_wrapper_prefix(state_dict).items():
        if _DENSEKIT_KEY.match(key):
            out[key] = value
            continue
        if _CLASSIFIER_KEY.match(key):
            continue
        key = _PROXY.sub(r'.\1', key)
        m = re.match(r'^patch_proj\.(.*)$', key)
        if m:
            out[f'stem.{m.group(1)}'] = value
            continue
        m = re.match(r'^down_projs\.(\d+)\.(.*)$', key)
        if m:
            out[f'stages.{int(m.group(1)) + 1}.downsample.{m.group(2)}'] = value
            continue
        m = re.match(r'^norms\.(\d+)\.(.*)$', key)
        if m:
            out[f'out_norms.{m.group(1)}.{m.group(2)}'] = value
            continue
        m = re.match(r'^stages\.(\d+)\.layer_norms\.(\d+)\.(.*)$', key)
        if m:
            j, which = divmod(int(m.group(2)), 2)
            out[f'stages.{m.group(1)}.blocks.{j}.norm{which + 1}.{m.group(3)}'] = value
            continue
        m = re.match(r'^stages\.(\d+)\.(.*)$', key)
        if m:
            rest = m.group(2)
            for pattern, repl in _BLOCK_RULES:
                new = pattern.sub(repl, rest)
                if new != rest:
                    out[f'stages.{m.group(1)}.{new}'] = value
                    break
            else:
                unknown.append(key)
            continue
        unknown.append(key)
    if unknown:
        raise KeyError(f"DAT++ converter: unrecognised keys {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    return out


register_converter('dat_pp', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants
# ------------------------------------------------------------------------------------------------

_ARCH = ('dims', 'stage_specs', 'num_heads', 'groups', 'strides', 'ksizes', 'nat_ksize', 'expansion')
_SPECS = ('ND', 'NDND', 'ND' * 9, 'DD')


def _create_dat_pp(kwargs: dict, *, dims: Sequence[int], num_heads: Sequence[int], groups: Sequence[int],
                   drop_path_rate: float, stage_specs: Sequence[str] = _SPECS) -> DATPlusPlus:
    """``kwargs`` may set ``img_size`` and the training arguments, not the architecture."""
    check_variant_kwargs(DATPlusPlus, _ARCH, kwargs)
    kwargs.setdefault('drop_path_rate', drop_path_rate)
    return DATPlusPlus(dims=dims, stage_specs=stage_specs, num_heads=num_heads, groups=groups,
                       strides=(8, 4, 2, 1), ksizes=(9, 7, 5, 3), nat_ksize=7, expansion=4, **kwargs)


# The official definitions (LeapLabTHU/DAT configs/dat_{tiny,small,base}.yaml, identical to the
# DAT-Detection backbones); drop_path_rate: the ImageNet values (the detection configs set their own).

@register_backbone(name='dat_pp_tiny')
def dat_pp_tiny(**kwargs) -> DATPlusPlus:
    """DAT-T++ (24M params with the ImageNet head)."""
    return _create_dat_pp(kwargs, dims=(64, 128, 256, 512), num_heads=(2, 4, 8, 16), groups=(1, 2, 4, 8),
                          drop_path_rate=0.2)


@register_backbone(name='dat_pp_small')
def dat_pp_small(**kwargs) -> DATPlusPlus:
    """DAT-S++ (53M params with the ImageNet head)."""
    return _create_dat_pp(kwargs, dims=(96, 192, 384, 768), num_heads=(3, 6, 12, 24), groups=(1, 2, 3, 6),
                          drop_path_rate=0.4)


@register_backbone(name='dat_pp_base')
def dat_pp_base(**kwargs) -> DATPlusPlus:
    """DAT-B++ (94M params with the ImageNet head)."""
    return _create_dat_pp(kwargs, dims=(128, 256, 512, 1024), num_heads=(4, 8, 16, 32), groups=(2, 4, 8, 16),
                          drop_path_rate=0.7)


@register_backbone(name='dat_pp_test')
def dat_pp_test(**kwargs) -> DATPlusPlus:
    """Tiny, unpublished configuration for tests: both block kinds, several offset groups, every
    reference-grid stride, neighborhood attention on maps smaller than its window (the last
    stage at 97x131)."""
    return _create_dat_pp(kwargs, dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 4), groups=(1, 2, 2, 4),
                          stage_specs=('ND', 'D', 'ND', 'ND'), drop_path_rate=0.1)
