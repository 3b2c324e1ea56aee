"""LITv2: the Less-attentive Vision Transformer v2 with HiLo attention.

Paper: Z. Pan, J. Cai, B. Zhuang, "Fast Vision Transformers with HiLo Attention", NeurIPS 2022,
https://arxiv.org/abs/2205.13213.

The numerics follow the official DENSE backbone, ``detection/mmdet/models/backbones/litv2.py`` of
ziplab/LITv2 (the segmentation copy is the same model):

* a 4x4 stride-4 patch embedding (the input zero-padded to a multiple of 4) and LayerNorm;
* stages 0 and 1 have no attention: their blocks are LayerNorm -> convolutional MLP (linear,
  3x3 depthwise convolution, GELU, linear) with a residual;
* stages 2 and 3 add HiLo attention before the MLP. HiLo splits the heads: ``int(heads * alpha)``
  Lo-Fi heads attend from every token to the ``s x s`` average-pooled map, the others (Hi-Fi) attend
  inside ``s x s`` windows; both outputs are concatenated. The map is zero-padded at the bottom /
  right to a multiple of ``s`` after ``norm1`` (the pooled keys average those zeros); ``s = 1``
  (stage 3) is plain multi-head attention over the whole map;
* stages 1..3 start with deformable token merging (DTM): a 2x2 stride-2 deformable convolution
  whose offsets come from a 2x2 stride-2 convolution, then BatchNorm and GELU;
* the outputs of stages 1..3 go through a LayerNorm (``norm{i}``), stage 0's is returned raw.

Hi-Fi is window attention without bias or mask, so it runs on :func:`densekit.ops.window_attention`
(backend chosen by ``densekit.ops``); Lo-Fi runs on ``F.scaled_dot_product_attention``. DTM uses
``densekit.ops.mmcv``'s deformable convolution (mmcv's sampling rules, CPU and CUDA), where the
official code needs its own CUDA extension. The official BatchNorm of DTM is a plain
``nn.BatchNorm2d`` (convert with ``nn.SyncBatchNorm.convert_sync_batchnorm`` for synchronised
statistics).

The stem map has ``ceil(H / 4)`` rows and every merging floors, so stage ``i`` has
``floor(ceil(H / 4) / 2 ** i)`` rows (``size_divisibility = 32``).
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from densekit.layers import DropPath, drop_path_schedule, init_trunc_normal_, run_blocks
from densekit.layers.window import pad_to_multiple, to_ntuple
from densekit.models.backbones.base import BackboneMixin, check_variant_kwargs
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone
from densekit.ops.mmcv.deform_conv import deform_conv2d
from densekit.ops.window import window_attention

__all__ = ['LITv2', 'HiLoAttention', 'DeformableTokenMerging', 'checkpoint_filter_fn']


class HiLoAttention(nn.Module):
    """HiLo attention on ``[B, H, W, C]`` maps.

    Args:
        dim: channels.
        num_heads: attention heads, split into ``int(num_heads * alpha)`` Lo-Fi heads and the
            rest Hi-Fi (all Lo-Fi when ``window_size == 1``).
        window_size: Hi-Fi window side and Lo-Fi pooling size ``s``.
        alpha: share of Lo-Fi heads.
        qkv_bias: bias of the q / kv / qkv projections.
    """

    def __init__(self, dim: int, *, num_heads: int, window_size: int, alpha: float,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"LITv2: dim={dim} is not a multiple of num_heads={num_heads}")
        head_dim = dim // num_heads
        self.ws = window_size
        self.l_heads = num_heads if window_size == 1 else int(num_heads * alpha)
        self.h_heads = num_heads - self.l_heads
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5
        l_dim, h_dim = self.l_heads * head_dim, self.h_heads * head_dim
        if self.l_heads:
            self.l_q = nn.Linear(dim, l_dim, bias=qkv_bias)
            self.l_kv = nn.Linear(dim, 2 * l_dim, bias=qkv_bias)
            self.l_proj = nn.Linear(l_dim, l_dim)
        if self.h_heads:
            self.h_qkv = nn.Linear(dim, 3 * h_dim, bias=qkv_bias)
            self.h_proj = nn.Linear(h_dim, h_dim)

    def _hifi(self, x: torch.Tensor) -> torch.Tensor:
        B, Hp, Wp, _ = x.shape
        qkv = self.h_qkv(x).reshape(B, Hp, Wp, 3, self.h_heads, self.head_dim)
        q, k, v = qkv.unbind(3)
        out = window_attention(q, k, v, self.ws, scale=self.scale)
        return self.h_proj(out.reshape(B, Hp, Wp, -1))

    def _lofi(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, Hp, Wp, C = x.shape
        h, d = self.l_heads, self.head_dim
        q = self.l_q(x[:, :H, :W]).reshape(B, H * W, h, d).transpose(1, 2)
        pooled = x if self.ws == 1 else F.avg_pool2d(x.permute(0, 3, 1, 2), self.ws).permute(0, 2, 3, 1)
        k, v = self.l_kv(pooled).reshape(B, -1, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.l_proj(out.transpose(1, 2).reshape(B, H, W, h * d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]`` (Hi-Fi channels first, then Lo-Fi)."""
        H, W = x.shape[1:3]
        x, _ = pad_to_multiple(x, self.ws)
        outs = []
        if self.h_heads:
            outs.append(self._hifi(x)[:, :H, :W])
        if self.l_heads:
            outs.append(self._lofi(x, H, W))
        return torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]


class ConvMlp(nn.Module):
    """Linear -> 3x3 depthwise convolution -> GELU -> linear on ``[B, H, W, C]`` maps.

    Args:
        dim: input and output channels.
        hidden_dim: hidden channels.
    """

    def __init__(self, dim: int, *, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        x = self.dwconv(self.fc1(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(self.act(x))


class LITv2Block(nn.Module):
    """[LayerNorm -> HiLo attention, residual] (stages with attention), LayerNorm -> MLP, residual.

    Args:
        dim: channels.
        num_heads: attention heads.
        window_size: HiLo window ``s``; ``0`` builds a block without attention.
        alpha: share of Lo-Fi heads.
        mlp_ratio: MLP width relative to ``dim``.
        qkv_bias: bias of the attention projections.
        drop_path: drop-path probability of the residual branches.
    """

    def __init__(self, dim: int, *, num_heads: int, window_size: int, alpha: float,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        if window_size > 0:
            self.norm1 = nn.LayerNorm(dim)
            self.attn = HiLoAttention(dim, num_heads=num_heads, window_size=window_size,
                                      alpha=alpha, qkv_bias=qkv_bias)
        else:
            self.attn = None
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = ConvMlp(dim, hidden_dim=int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, C]`` -> ``[B, H, W, C]``."""
        if self.attn is not None:
            x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class DeformableTokenMerging(nn.Module):
    """DTM: 2x2 stride-2 deformable convolution (offsets from a 2x2 stride-2 convolution),
    BatchNorm, GELU.

    Args:
        in_dim: input channels.
        dim: output channels.
    """

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, in_dim, 2, 2))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.conv_offset = nn.Conv2d(in_dim, 8, 2, stride=2)
        self.norm = nn.BatchNorm2d(dim)
        self.act = nn.GELU()
        # nn.Conv2d's default init (as the official module), zero offsets: a plain strided
        # convolution at the start of training.
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        nn.init.uniform_(self.bias, -(4 * in_dim) ** -0.5, (4 * in_dim) ** -0.5)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, in_dim]`` -> ``[B, floor(H / 2), floor(W / 2), dim]``."""
        x = x.permute(0, 3, 1, 2)
        x = deform_conv2d(x, self.conv_offset(x), self.weight, self.bias, stride=2)
        return self.act(self.norm(x)).permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """4x4 stride-4 convolution over the zero-padded input, then LayerNorm.

    Args:
        in_chans: input channels.
        dim: output channels.
        patch_size: kernel and stride.
    """

    def __init__(self, in_chans: int, dim: int, *, patch_size: int = 4) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, ceil(H / p), ceil(W / p), dim]``."""
        p = self.patch_size
        x = F.pad(x, (0, -x.shape[3] % p, 0, -x.shape[2] % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class LITv2Stage(nn.Module):
    """Optional deformable token merging, then ``depth`` blocks.

    Args:
        in_dim: input channels.
        dim: channels of the stage.
        depth: number of blocks.
        num_heads: attention heads.
        window_size: HiLo window (``0``: blocks without attention).
        alpha: share of Lo-Fi heads.
        downsample: start with DTM (every stage but the first).
        mlp_ratio: MLP width relative to ``dim``.
        qkv_bias: bias of the attention projections.
        drop_paths: drop-path probability of each block.
        with_cp: recompute each block in the backward pass.
    """

    def __init__(self, in_dim: int, dim: int, *, depth: int, num_heads: int, window_size: int,
                 alpha: float, downsample: bool, mlp_ratio: float, qkv_bias: bool,
                 drop_paths: Sequence[float], with_cp: bool = False) -> None:
        super().__init__()
        self.downsample = DeformableTokenMerging(in_dim, dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            LITv2Block(dim, num_heads=num_heads, window_size=window_size, alpha=alpha,
                       mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=drop_paths[i])
            for i in range(depth)])
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, in_dim]`` -> ``[B, H', W', dim]`` (``H' = floor(H / 2)`` with DTM)."""
        return run_blocks(self.blocks, self.downsample(x), self.with_cp)


class LITv2(BackboneMixin, nn.Module):
    """LITv2 backbone returning NCHW maps at strides 4, 8, 16, 32 (stages 1..3 layer-normalised).

    Args:
        embed_dim: channels of the first stage (doubled per stage).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        local_ws: HiLo window per stage (``0``: no attention, ``1``: full attention).
        alpha: share of Lo-Fi heads.
        mlp_ratio: MLP width relative to the stage channels.
        qkv_bias: bias of the attention projections.
        in_chans: input channels.
        out_indices: stages (0-based) whose output is returned.
        drop_path_rate: drop-path probability, rising linearly over all blocks to this value.
        frozen_stages: ``-1`` freezes nothing, ``0`` the stem, ``k`` the stem and stages
            ``0..k-1``; frozen modules stay in eval mode.
        norm_eval: keep the BatchNorms of DTM in eval mode while training.
        with_cp: recompute each block in the backward pass (activation checkpointing).
    """

    size_divisibility = 32
    channels_last = True

    def __init__(self, *,
                 embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24),
                 local_ws: Sequence[int] = (0, 0, 2, 1),
                 alpha: float = 0.9,
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
        if not len(num_heads) == num_stages:
            raise ValueError(f"LITv2: depths={tuple(depths)} and num_heads={tuple(num_heads)} must "
                             "have the same length")
        local_ws = to_ntuple(local_ws, num_stages, 'local_ws')
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"LITv2: alpha={alpha} must be in [0, 1]")
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        self.dims = tuple(embed_dim * 2 ** i for i in range(num_stages))
        self.stem = PatchEmbed(in_chans, embed_dim)
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.stages.append(LITv2Stage(
                self.dims[max(i - 1, 0)], self.dims[i], depth=depths[i], num_heads=num_heads[i],
                window_size=local_ws[i], alpha=alpha, downsample=i > 0, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, drop_paths=dpr[start:start + depths[i]], with_cp=with_cp))
            start += depths[i]
        self._init_feature_info(self.dims, [4 * 2 ** i for i in range(num_stages)])
        # The official dense backbone normalises the returned maps of stages 1.. only.
        self.out_norms = nn.ModuleDict(
            {str(i): nn.LayerNorm(self.dims[i]) for i in self.out_indices if i > 0})
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """Truncated-normal (std 0.02) linear layers, zero biases, unit LayerNorms; the MLP's
        depthwise convolutions normal with std ``sqrt(2 / 9)``; DTM keeps its own init (zero
        offsets)."""
        init_trunc_normal_(self)
        for m in self.modules():
            if isinstance(m, ConvMlp):
                nn.init.normal_(m.dwconv.weight, std=(2.0 / 9) ** 0.5)
                nn.init.zeros_(m.dwconv.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, dims[i], H_i, W_i]`` per out index."""
        return self.forward_stages(self.stem(x))


# ------------------------------------------------------------------------------------------------
# Official checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

_DENSEKIT_KEY = re.compile(r'^(stem|stages|out_norms)\.')
_CLASSIFIER_KEY = re.compile(r'^(head|norm)\.')
_PATCH_EMBED = re.compile(r'^patch_embed\.(proj|norm)\.(.*)$')
_BLOCK = re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.(.*)$')
_DTM = re.compile(r'^layers\.(\d+)\.downsample\.(.*)$')
_OUT_NORM = re.compile(r'^norm(\d+)\.(.*)$')
_DTM_KEYS = {'dconv.weight': 'weight', 'dconv.bias': 'bias'}


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official LITv2 checkpoint (the ImageNet release, the mmdet / mmseg checkpoints) -> densekit
    keys.

    ``patch_embed`` becomes the stem, ``layers.{i}.blocks`` the blocks of stage ``i`` (the MLP's
    ``dwconv.dwconv`` wrapper flattened) and ``layers.{i}.downsample`` (DTM: ``dconv.*`` ->
    ``weight`` / ``bias`` / ``conv_offset.*``, ``norm_layer`` -> ``norm``) the merging at the start
    of stage ``i + 1``; the dense ``norm{i}`` become ``out_norms.{i}``. The classifier's ``head``
    and final ``norm`` are dropped, ``module.`` / ``backbone.`` prefixes stripped; densekit keys
    pass through unchanged.
    """
    out: Dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in strip_wrapper_prefix(state_dict).items():
        if _DENSEKIT_KEY.match(key):
            out[key] = value
        elif _CLASSIFIER_KEY.match(key):
            continue
        elif m := _PATCH_EMBED.match(key):
            out[f'stem.{m.group(1)}.{m.group(2)}'] = value
        elif m := _BLOCK.match(key):
            rest = m.group(3).replace('mlp.dwconv.dwconv.', 'mlp.dwconv.')
            out[f'stages.{m.group(1)}.blocks.{m.group(2)}.{rest}'] = value
        elif m := _DTM.match(key):
            rest = m.group(2)
            rest = _DTM_KEYS.get(rest, rest.replace('dconv.conv_offset.', 'conv_offset.')
                                 .replace('norm_layer.', 'norm.'))
            out[f'stages.{int(m.group(1)) + 1}.downsample.{rest}'] = value
        elif m := _OUT_NORM.match(key):
            out[f'out_norms.{m.group(1)}.{m.group(2)}'] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"LITv2 converter: unrecognised keys {unknown[:8]}"
                       f"{' ...' if len(unknown) > 8 else ''}")
    return out


register_converter('litv2', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants
# ------------------------------------------------------------------------------------------------

_ARCH = ('embed_dim', 'depths', 'num_heads', 'local_ws', 'alpha', 'mlp_ratio', 'qkv_bias')


def _create_litv2(kwargs: dict, *, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int],
                  drop_path_rate: float) -> LITv2:
    check_variant_kwargs(LITv2, _ARCH, kwargs)
    kwargs.setdefault('drop_path_rate', drop_path_rate)
    return LITv2(embed_dim=embed_dim, depths=depths, num_heads=num_heads, local_ws=(0, 0, 2, 1),
                 alpha=0.9, **kwargs)


@register_backbone(name='litv2_s')
def litv2_s(**kwargs) -> LITv2:
    """LITv2-S (28M params with the ImageNet head)."""
    return _create_litv2(kwargs, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                         drop_path_rate=0.2)


@register_backbone(name='litv2_m')
def litv2_m(**kwargs) -> LITv2:
    """LITv2-M (49M)."""
    return _create_litv2(kwargs, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24),
                         drop_path_rate=0.2)


@register_backbone(name='litv2_b')
def litv2_b(**kwargs) -> LITv2:
    """LITv2-B (87M)."""
    return _create_litv2(kwargs, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                         drop_path_rate=0.3)


@register_backbone(name='litv2_test')
def litv2_test(**kwargs) -> LITv2:
    """A tiny LITv2 for tests (not a published model): MLP-only stages, DTM, HiLo with both Hi-Fi
    and Lo-Fi heads (2x2 windows) and with full attention."""
    return _create_litv2(kwargs, embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8),
                         drop_path_rate=0.1)
