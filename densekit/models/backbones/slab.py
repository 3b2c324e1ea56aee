"""SLAB-Swin: simplified linear attention and progressive re-parameterised BatchNorm in Swin.

Paper: J. Guo, X. Chen, Y. Tang, Y. Wang, "SLAB: Efficient Transformers with Simplified Linear
Attention and Progressive Re-parameterized Batch Normalization", ICML 2024,
https://arxiv.org/abs/2405.11582.

The numerics follow the official DENSE backbone, ``SwinTransformer_SLAB`` of
``detection/mmdet_custom/swin_transformer_slab.py`` in https://github.com/xinghaochen/SLAB (its
mmdet 2.x Mask R-CNN configs), which takes any input size:

* every norm inside the network (patch embedding, both block norms, patch merging) is PRepBN
  (``LinearNorm``): while training ``lamda * LayerNorm(x) + (1 - lamda) * RepBN(x)`` with
  ``lamda = r0 * iter / total_step`` and ``iter`` counting down by one per training forward
  (300000 steps, ``r0 = 1``); in eval mode ``RepBN(x) = BatchNorm(x) + alpha * x`` only. The
  official backbone keeps every BatchNorm in eval mode: ``norm_eval=True`` (set in densekit's
  SLAB configs; the constructor default is ``False`` like every family's);
* attention per stage is ``'L'`` (simplified linear attention, SLA: ``ReLU`` kernel on queries and
  keys (keys plus a learned per-window position encoding), ``out = q (k^T v) / (q sum(k) + 1e-6)``
  per head in float32, plus a depthwise ``5 x 5`` convolution of the values shared by the heads)
  or ``'S'`` (Swin's softmax window attention), ``'LLSS'`` in the released models, with windows
  56, 28, 7, 7;
* as in Swin's dense code, the normalised map is zero-padded to a window multiple in every block
  (padded tokens are attended to), odd blocks are shifted by ``window // 2`` whatever the map size
  (the shifted-window mask applies to softmax attention only; SLA takes none), the input is padded
  to a multiple of 4 and odd maps before patch merging;
* one plain LayerNorm per returned map (``norm{i}`` -> ``out_norms``).

The progressive schedule is stepped once per training forward of the model (not inside the
blocks), so activation checkpointing recomputes with the same ``lamda``. :meth:`SLABSwin.reparameterize`
folds every PRepBN into one per-channel affine map (BatchNorm statistics, weight and ``alpha``) for
inference.
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
from densekit.models.backbones.swin import SwinWindowAttention  # the softmax window blocks are Swin's
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone

__all__ = ['SLABSwin', 'RepBN', 'LinearNorm', 'SimplifiedLinearAttention', 'checkpoint_filter_fn']


class RepBN(nn.Module):
    """``BatchNorm(x) + alpha * x`` over the last (channel) axis of ``[..., C]``.

    Args:
        dim: channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., C]`` -> ``[..., C]`` (statistics over every other axis while training)."""
        shape = x.shape
        return (self.bn(x.reshape(-1, shape[-1])) + self.alpha * x.reshape(-1, shape[-1])).reshape(shape)

    def fused_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, shift)`` with ``RepBN(x) == x * scale + shift`` in eval mode."""
        bn = self.bn
        inv = torch.rsqrt(bn.running_var + bn.eps)
        w = bn.weight if bn.affine else torch.ones_like(inv)
        b = bn.bias if bn.affine else torch.zeros_like(inv)
        return w * inv + self.alpha, b - bn.running_mean * w * inv


class LinearNorm(nn.Module):
    """PRepBN: ``lamda * LayerNorm(x) + (1 - lamda) * RepBN(x)`` while training, ``RepBN(x)`` in
    eval mode, on ``[..., C]``.

    Args:
        dim: channels.
        step: length of the LayerNorm -> RepBN schedule (training forwards).
        r0: ``lamda`` at the start of the schedule.
    """

    def __init__(self, dim: int, *, step: int = 300000, r0: float = 1.0) -> None:
        super().__init__()
        self.register_buffer('iter', torch.tensor(step))
        self.register_buffer('total_step', torch.tensor(step))
        self.r0 = r0
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = RepBN(dim)
        self._lamda = None  # set by :meth:`step` for the current training forward

    def step(self) -> None:
        """Fix ``lamda`` for the next training forward (recomputations included) and count down."""
        self._lamda = self.r0 * self.iter / self.total_step
        if self.iter > 0:
            self.iter.sub_(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., C]`` -> ``[..., C]``."""
        if not self.training:
            return self.norm2(x)
        lamda = self._lamda if self._lamda is not None else self.r0 * self.iter / self.total_step
        return lamda * self.norm1(x) + (1 - lamda) * self.norm2(x)


class FusedNorm(nn.Module):
    """A re-parameterised PRepBN: ``x * weight + bias`` on ``[..., C]`` (inference only).

    Args:
        dim: channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., C]`` -> ``[..., C]``."""
        return x * self.weight + self.bias


class SimplifiedLinearAttention(nn.Module):
    """SLA over all tokens of ``[B', w, w, C]`` windows.

    Args:
        dim: channels.
        num_heads: attention heads (the depthwise convolution is shared by the heads).
        window_size: window side (position-encoding size).
        kernel_size: side of the depthwise convolution on the values.
        qkv_bias: bias of the qkv projection.
    """

    def __init__(self, dim: int, *, num_heads: int, window_size: int, kernel_size: int = 5,
                 qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SLAB: dim={dim} is not a multiple of num_heads={num_heads}")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size, padding=kernel_size // 2, groups=head_dim)
        self.positional_encoding = nn.Parameter(torch.zeros(1, window_size * window_size, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B', w, w, C]`` -> ``[B', w, w, C]``."""
        B, H, W, C = x.shape
        N, h = H * W, self.num_heads
        q, k, v = self.qkv(x.reshape(B, N, C)).reshape(B, N, 3, C).unbind(2)
        k = k + self.positional_encoding
        q, k, v = (t.reshape(B, N, h, -1).transpose(1, 2).float() for t in (q, F.relu(k), v))
        q = F.relu(q)
        z = 1.0 / (q @ k.sum(dim=2, keepdim=True).transpose(-2, -1) + 1e-6)
        out = (q @ (k.transpose(-2, -1) @ v)) * z
        rank = self.dwc(v.reshape(B * h, H, W, -1).permute(0, 3, 1, 2))  # per-head value maps
        out = out + rank.reshape(B, h, -1, N).transpose(-2, -1)
        out = out.to(x.dtype).transpose(1, 2).reshape(B, N, C)
        return self.proj(out).reshape(B, H, W, C)


class SLABBlock(nn.Module):
    """PRepBN -> (shifted-)window SLA or softmax attention, residual; PRepBN -> MLP, residual.

    Args:
        dim: channels.
        num_heads: attention heads.
        attn_type: ``'L'`` (SLA) or ``'S'`` (softmax window attention).
        window_size: window side.
        shift: cyclic shift of the windows.
        mlp_ratio: MLP width relative to ``dim``.
        qkv_bias: bias of the qkv projections.
        kernel_size: depthwise kernel of SLA.
        drop_path: drop-path probability of both residual branches.
    """

    def __init__(self, dim: int, *, num_heads: int, attn_type: str, window_size: int, shift: int,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, kernel_size: int = 5,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.attn_type = attn_type
        self.window_size = window_size
        self.shift = shift
        self.norm1 = LinearNorm(dim)
        if attn_type == 'L':
            self.attn = SimplifiedLinearAttention(dim, num_heads=num_heads, window_size=window_size,
                                                  kernel_size=kernel_size, qkv_bias=qkv_bias)
        else:
            self.attn = SwinWindowAttention(dim, num_heads=num_heads, window_size=window_size, qkv_bias=qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = LinearNorm(dim)
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
        y, size = pad_to_multiple(self.norm1(x), self.window_size)
        y = self._windowed_linear(y) if self.attn_type == 'L' else self.attn(y, self.shift)
        x = x + self.drop_path(unpad(y, size))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """4x4 stride-4 convolution over the zero-padded input, PRepBN.

    Args:
        in_chans: input channels.
        dim: output channels.
    """

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, 4, stride=4)
        self.norm = LinearNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, ceil(H / 4), ceil(W / 4), dim]``."""
        x = F.pad(x, (0, -x.shape[3] % 4, 0, -x.shape[2] % 4))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """Swin's 2x2 patch merging with PRepBN (odd maps zero-padded).

    Args:
        dim: input channels.
        out_dim: output channels.
    """

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = LinearNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, dim]`` -> ``[B, ceil(H / 2), ceil(W / 2), out_dim]``."""
        x, _ = pad_to_multiple(x, 2)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SLABStage(nn.Module):
    """Optional patch merging, then ``depth`` blocks alternating unshifted / shifted windows.

    Args:
        in_dim: input channels.
        dim: channels of the stage.
        depth: number of blocks.
        num_heads: attention heads.
        attn_type: ``'L'`` or ``'S'``.
        window_size: window side.
        downsample: start with patch merging.
        mlp_ratio: MLP width relative to ``dim``.
        qkv_bias: bias of the qkv projections.
        kernel_size: depthwise kernel of SLA.
        drop_paths: drop-path probability of each block.
        with_cp: recompute each block in the backward pass.
    """

    def __init__(self, in_dim: int, dim: int, *, depth: int, num_heads: int, attn_type: str,
                 window_size: int, downsample: bool, mlp_ratio: float, qkv_bias: bool, kernel_size: int,
                 drop_paths: Sequence[float], with_cp: bool = False) -> None:
        super().__init__()
        self.downsample = PatchMerging(in_dim, dim) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            SLABBlock(dim, num_heads=num_heads, attn_type=attn_type, window_size=window_size,
                      shift=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                      kernel_size=kernel_size, drop_path=drop_paths[i])
            for i in range(depth)])
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, in_dim]`` -> ``[B, H', W', dim]``."""
        return run_blocks(self.blocks, self.downsample(x), self.with_cp)


class SLABSwin(BackboneMixin, nn.Module):
    """SLAB-Swin backbone returning NCHW maps at strides 4, 8, 16, 32.

    Args:
        embed_dim: channels of stage 0 (doubled per stage).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_sizes: window side per stage (official: 56, 28, 7, 7).
        attn_type: one of ``'L'`` / ``'S'`` per stage.
        kernel_size: depthwise kernel of SLA.
        mlp_ratio: MLP width relative to the stage channels.
        qkv_bias: bias of the qkv projections.
        in_chans: input channels.
        out_indices: stages (0-based) whose output is returned.
        out_norm: LayerNorm on every returned map (official ``norm{i}``).
        drop_path_rate: drop-path probability, rising linearly over all blocks to this value.
        frozen_stages: ``-1`` freezes nothing, ``0`` the patch embedding, ``k`` the patch
            embedding and stages ``0..k-1``; frozen modules stay in eval mode.
        norm_eval: keep the BatchNorms of PRepBN in eval mode while training (the official dense
            backbone always does; its configs here set it).
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
                 window_sizes: Sequence[int] = (56, 28, 7, 7),
                 attn_type: str = 'LLSS',
                 kernel_size: int = 5,
                 mlp_ratio: float = 4.0,
                 qkv_bias: bool = True,
                 in_chans: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: bool = True,
                 drop_path_rate: float = 0.1,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        num_stages = len(depths)
        num_heads = to_ntuple(num_heads, num_stages, 'num_heads')
        window_sizes = to_ntuple(window_sizes, num_stages, 'window_sizes')
        if not isinstance(attn_type, str) or len(attn_type) != num_stages or set(attn_type) - {'L', 'S'}:
            raise ValueError(f"SLABSwin: attn_type={attn_type!r} must be one of 'L' / 'S' per stage "
                             f"({num_stages} stages)")
        self._init_contract(num_stages=num_stages, out_indices=out_indices,
                            frozen_stages=frozen_stages, norm_eval=norm_eval)
        dims = [embed_dim * 2 ** i for i in range(num_stages)]
        self.patch_embed = PatchEmbed(in_chans, embed_dim)
        dpr = drop_path_schedule(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        start = 0
        for i in range(num_stages):
            self.layers.append(SLABStage(
                dims[max(i - 1, 0)], dims[i], depth=depths[i], num_heads=num_heads[i], attn_type=attn_type[i],
                window_size=window_sizes[i], downsample=i > 0, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                kernel_size=kernel_size, drop_paths=dpr[start:start + depths[i]], with_cp=with_cp))
            start += depths[i]
        self._init_feature_info(dims, [4 * 2 ** i for i in range(num_stages)])
        self._init_out_norms(nn.LayerNorm if out_norm else None)
        self.init_weights()
        self._freeze_stages()

    def init_weights(self) -> None:
        """Truncated-normal (std 0.02) linear layers and relative-position tables, zero biases,
        unit LayerNorms; zero SLA position encodings, unit RepBN ``alpha`` (the official init)."""
        init_trunc_normal_(self)
        for name, p in self.named_parameters():
            if name.endswith('relative_position_bias_table'):
                nn.init.trunc_normal_(p, std=0.02)

    def reparameterize(self) -> None:
        """Fold every PRepBN into its eval-mode per-channel affine map (inference only: the
        LayerNorm branch and the BatchNorm statistics are gone)."""
        for parent in list(self.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, LinearNorm):
                    scale, shift = child.norm2.fused_affine()
                    fused = FusedNorm(scale.numel()).to(scale.device)
                    with torch.no_grad():
                        fused.weight.copy_(scale)
                        fused.bias.copy_(shift)
                    setattr(parent, name, fused)
        self._freeze_stages()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, in_chans, H, W]`` -> one ``[B, C_i, ceil(H / s_i), ceil(W / s_i)]`` per out index."""
        if self.training:
            for m in self.modules():
                if isinstance(m, LinearNorm) and m.training:
                    m.step()
        return self.forward_stages(self.patch_embed(x))


# ------------------------------------------------------------------------------------------------
# Official checkpoints -> densekit keys
# ------------------------------------------------------------------------------------------------

_OWN_KEY = re.compile(r'^(patch_embed|layers|out_norms)\.')
_CLASSIFIER_KEY = re.compile(r'^(head|norm|avgpool)\.')
_BUFFER_KEY = re.compile(r'(relative_position_index|attn_mask)$')
_MERGE = re.compile(r'^layers\.(\d+)\.downsample\.(.+)$')
_OUT_NORM = re.compile(r'^norm(\d+)\.(weight|bias)$')


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Official SLAB-Swin checkpoints (the dense ``SwinTransformer_SLAB``, detector ``backbone.``
    prefixes, the ImageNet release) -> densekit keys: patch merging moves from the end of stage
    ``i`` to the start of stage ``i + 1``, ``norm{i}`` -> ``out_norms.{i}``, the rebuilt buffer
    ``relative_position_index`` and the classifier are dropped. Unknown keys are an error."""
    sd = strip_wrapper_prefix(state_dict)
    official = any(k.startswith('layers.0.downsample.') for k in sd)
    out, unknown = {}, []
    for key, value in sd.items():
        if _BUFFER_KEY.search(key) or _CLASSIFIER_KEY.match(key):
            continue
        if official and (m := _MERGE.match(key)):
            out[f'layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}'] = value
        elif m := _OUT_NORM.match(key):
            out[f'out_norms.{m.group(1)}.{m.group(2)}'] = value
        elif _OWN_KEY.match(key):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"SLAB converter: unrecognised keys {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    return out


register_converter('slab', checkpoint_filter_fn)


# ------------------------------------------------------------------------------------------------
# Builder and variants
# ------------------------------------------------------------------------------------------------

_ARCH = ('embed_dim', 'depths', 'num_heads', 'window_sizes', 'attn_type', 'kernel_size', 'mlp_ratio',
         'qkv_bias')


def _create_slab(kwargs: dict, *, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int],
                 drop_path_rate: float, attn_type: str = 'LLSS') -> SLABSwin:
    check_variant_kwargs(SLABSwin, _ARCH, kwargs)
    kwargs.setdefault('drop_path_rate', drop_path_rate)
    return SLABSwin(embed_dim=embed_dim, depths=depths, num_heads=num_heads, window_sizes=(56, 28, 7, 7),
                    attn_type=attn_type, **kwargs)


@register_backbone(name='slab_swin_t')
def slab_swin_t(**kwargs) -> SLABSwin:
    """SLAB-Swin-T (mask_rcnn_slab_swin_tiny_..._1x_coco.py: drop path 0.1)."""
    return _create_slab(kwargs, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.1)


@register_backbone(name='slab_swin_s')
def slab_swin_s(**kwargs) -> SLABSwin:
    """SLAB-Swin-S (mask_rcnn_slab_swin_small_..._1x_coco.py: drop path 0.2)."""
    return _create_slab(kwargs, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2)


@register_backbone(name='slab_test')
def slab_test(**kwargs) -> SLABSwin:
    """A tiny SLAB-Swin for tests (not a published model): attention 'LLSL', so that stages 0, 1
    and 3 run shifted SLA windows (56, 28, 7) and stage 2 shifted softmax windows (one softmax
    stage only: the Triton interpreter of the contract test's backend check is slow)."""
    return _create_slab(kwargs, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), drop_path_rate=0.1,
                        attn_type='LLSL')
