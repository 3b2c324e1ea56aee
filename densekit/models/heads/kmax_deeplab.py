"""kMaX-DeepLab: k-means Mask Transformer (pixel decoder, transformer decoder, predictors).

Yu et al., "k-means Mask Transformer", ECCV 2022 (arXiv:2207.04044); TensorFlow original in
google-research/deeplab2, PyTorch port (detectron2): github.com/bytedance/kmax-deeplab
(``kmax_deeplab/modeling/pixel_decoder/kmax_pixel_decoder.py``,
``kmax_deeplab/modeling/transformer_decoder/kmax_transformer_decoder.py``).

* Pixel decoder: the backbone maps, from stride 32 to stride 4, are layer-normalised (channels
  first) and refined by one group of blocks each: axial-attention blocks (height then width
  attention, with learned relative position embeddings of query, key and value and batch norm
  on the similarities and on the retrieved values) at strides 32 and 16, bottleneck blocks at 8
  and 4. A group's output (4 x its base width) is fused into the next map: projected, resized
  bilinearly and added to the projected skip map. The groups' outputs at strides 32 / 16 / 8
  feed the transformer decoder, the stride-4 output the final mask prediction.
* Transformer decoder: 128 learned cluster centres (queries) pass through two layers at each of
  strides 32, 16, 8. Each layer first predicts classes and masks from the current centres
  (:class:`KMaXPredictor`), then runs k-means cross-attention: every pixel is assigned to the
  centre with the largest mask logit (a hard argmax over the queries instead of the softmax over
  the pixels of ordinary cross-attention; no gradient flows through the assignment) and each
  centre is updated by the sum of its pixels' values (:func:`kmeans_cross_attention`). Self
  attention among the centres and an FFN follow. A last prediction from the final centres on
  the stride-4 features closes the decoder; the intermediate masks are resized to its size.
* Predictions: class logits with a prior towards the last ("void" / no-object) class; mask
  logits are dot products of L2-normalised pixel embeddings with query kernels, batch-normalised.

Sub-module names follow the official port's with the leading underscore dropped (and its
``_predcitor`` spelled ``predictor``), so official checkpoints load through
:func:`convert_official_kmax_deeplab`. The official axial attention fixes its input length at
construction (``INPUT.IMAGE_SIZE``); here the relative-position table (span 255, as the
official) is indexed for the length of the actual input, the same thing at the official length,
so any input size runs. The official auxiliary semantic head (:class:`KMaXSemanticPredictor`:
ASPP on the stride-32 backbone map, fused with the stride-8 and stride-4 maps) is built with
``aux_semantic_head=True`` and runs in :meth:`KMaX.forward_train` only, for kMaX's losses
(:mod:`densekit.models.heads.kmax_criterion`).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from densekit.ops.kmeans import kmeans_attention

__all__ = ['KMaX', 'KMaXPixelDecoder', 'KMaXTransformerDecoder', 'KMaXTransformerLayer',
           'KMaXPredictor', 'KMaXSemanticPredictor', 'SemanticASPP', 'AxialAttention',
           'kmeans_cross_attention', 'convert_official_kmax_deeplab']

NormLayer = Callable[[int], nn.Module]
MAX_SPAN = 255  # relative-position table of the axial attention: offsets -254..254


def batch_norm(channels: int) -> nn.Module:
    """The official norm: (Sync)BatchNorm with TensorFlow's eps and momentum."""
    return _AnyDimBatchNorm(channels, eps=1e-3, momentum=0.01)


class _AnyDimBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over dim 1 of any input of two or more dims (conv1d sequences, conv2d maps, the
    ``[B, 1, Q, H, W]`` mask logits): one class where the official uses SyncBatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f'BatchNorm expects at least a 2-D input, got shape {tuple(input.shape)}')


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """fp16 / bf16 -> fp32 (the official runs softmax, k-means update and the input LayerNorm
    outside autocast); fp32 / fp64 stay."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _activation(name: str | None) -> nn.Module:
    if name is None:
        return nn.Identity()
    if name == 'gelu':
        return nn.GELU()
    raise ValueError(f"act must be None or 'gelu', got {name!r}")


def _he_normal_(w: torch.Tensor, fan_in: int) -> None:
    nn.init.trunc_normal_(w, std=math.sqrt(2.0 / fan_in), a=-2 * math.sqrt(2.0 / fan_in),
                          b=2 * math.sqrt(2.0 / fan_in))


def _trunc_normal_(w: torch.Tensor, std: float) -> None:
    nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)  # TensorFlow's: cut at 2 std


class ConvBN(nn.Module):
    """Convolution (2-D, or 1-D over a ``[B, C, L]`` sequence) -> optional norm -> optional GELU.

    Weights start as the official TensorFlow ones: He-normal (truncated) unless ``init`` says
    otherwise, the norm's scale at ``norm_init`` (0 for the last norm of a residual branch)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, *, padding: int = 0,
                 dilation: int = 1, groups: int = 1, bias: bool = False,
                 norm: NormLayer | None = batch_norm,
                 act: str | None = None, conv_1d: bool = False, init: str = 'he_normal',
                 norm_init: float = 1.0) -> None:
        super().__init__()
        conv = nn.Conv1d if conv_1d else nn.Conv2d
        self.conv = conv(in_chs, out_chs, kernel_size, padding=padding, dilation=dilation,
                         groups=groups, bias=bias)
        self.norm = norm(out_chs) if norm is not None else nn.Identity()
        self.act = _activation(act)
        if init == 'he_normal':
            _he_normal_(self.conv.weight, in_chs)
        elif init == 'xavier_uniform':
            nn.init.xavier_uniform_(self.conv.weight)
        if bias:
            nn.init.zeros_(self.conv.bias)
        if norm is not None:
            nn.init.constant_(self.norm.weight, norm_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``[B, C, H, W]`` map (ConvNeXt's channels-first form)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _at_least_fp32(x)
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


# ----------------------------------------------------------------------------- pixel decoder

class RelativePositionEmbedding(nn.Module):
    """Learned embedding per relative offset (-254..254); ``forward(L)`` -> ``[L, L, depth]``
    with entry ``[q, k]`` the embedding of offset ``k - q``."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.embeddings = nn.Embedding(2 * MAX_SPAN - 1, depth)
        _trunc_normal_(self.embeddings.weight, 1.0)

    def forward(self, length: int) -> torch.Tensor:
        if length > MAX_SPAN:
            raise ValueError(f'axial attention covers at most {MAX_SPAN} positions per axis, got '
                             f'a feature-map side of {length} (use a smaller input)')
        pos = torch.arange(length, device=self.embeddings.weight.device)
        return self.embeddings.weight[pos[None, :] - pos[:, None] + MAX_SPAN - 1]


class AxialAttention(nn.Module):
    """Multi-head attention along one axis of ``[N, C, L]`` sequences: content and relative
    position similarities (query-side and key-side embeddings) are batch-normalised and summed
    before the softmax; retrieved content and retrieved value embeddings are batch-normalised
    and summed."""

    def __init__(self, in_chs: int, key_depth: int, value_depth: int, num_heads: int = 8) -> None:
        super().__init__()
        if key_depth % num_heads or value_depth % num_heads:
            raise ValueError(f'key_depth={key_depth} and value_depth={value_depth} must be '
                             f'multiples of num_heads={num_heads}')
        self.num_heads, self.key_depth, self.value_depth = num_heads, key_depth, value_depth
        self.qkv_transform = ConvBN(in_chs, 2 * key_depth + value_depth, norm=None, conv_1d=True)
        _trunc_normal_(self.qkv_transform.conv.weight, in_chs ** -0.5)
        self.query_rpe = RelativePositionEmbedding(key_depth // num_heads)
        self.key_rpe = RelativePositionEmbedding(key_depth // num_heads)
        self.value_rpe = RelativePositionEmbedding(value_depth // num_heads)
        self.batch_norm_qkv = batch_norm(2 * key_depth + value_depth)
        self.batch_norm_similarity = batch_norm(3 * num_heads)
        self.batch_norm_retrieved_output = batch_norm(2 * value_depth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, _, L = x.shape
        h = self.num_heads
        qkv = self.batch_norm_qkv(self.qkv_transform(x))
        q, k, v = torch.split(qkv, [self.key_depth, self.key_depth, self.value_depth], dim=1)
        q, k, v = q.reshape(N, h, -1, L), k.reshape(N, h, -1, L), v.reshape(N, h, -1, L)
        sim = torch.cat([torch.einsum('bhdl,bhdm->bhlm', q, k),
                         torch.einsum('bhdl,lmd->bhlm', q, self.query_rpe(L)),
                         torch.einsum('bhdm,lmd->bhlm', k, self.key_rpe(L))], dim=1)
        sim = self.batch_norm_similarity(sim).reshape(N, 3, h, L, L).sum(1)
        weights = _at_least_fp32(sim).softmax(-1)
        out = torch.cat([torch.einsum('bhlm,bhdm->bhdl', weights, v),
                         torch.einsum('bhlm,lmd->bhdl', weights, self.value_rpe(L))], dim=1)
        out = self.batch_norm_retrieved_output(out.reshape(N, 2 * self.value_depth, L))
        return out.reshape(N, 2, self.value_depth, L).sum(1)


class AxialAttention2D(nn.Module):
    """Height-axis attention, then width-axis attention, on a ``[N, C, H, W]`` map."""

    def __init__(self, in_chs: int, filters: int, num_heads: int = 8) -> None:
        super().__init__()
        self.value_depth = 2 * filters
        self.height_axis = AxialAttention(in_chs, filters, 2 * filters, num_heads)
        self.width_axis = AxialAttention(2 * filters, filters, 2 * filters, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        c = self.value_depth
        x = self.height_axis(x.permute(0, 3, 1, 2).reshape(N * W, C, H))
        x = x.reshape(N, W, c, H).permute(0, 3, 2, 1).reshape(N * H, c, W)
        x = self.width_axis(x)
        return x.reshape(N, H, c, W).permute(0, 2, 1, 3)


class DecoderBlock(nn.Module):
    """Pre-activation (GELU) residual block: 1x1 conv -> axial attention (``'axial'``) or 3x3
    conv (``'bottleneck'``) -> 1x1 conv with a zero-initialised norm; drop path on the branch."""

    def __init__(self, in_chs: int, filters: Sequence[int], block_type: str, num_heads: int = 8,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.block_type = block_type
        self.conv1_bn_act = ConvBN(in_chs, filters[0], act='gelu')
        if block_type == 'axial':
            self.attention = AxialAttention2D(filters[0], filters[1], num_heads)
            mid = 2 * filters[1]
        elif block_type == 'bottleneck':
            self.conv2_bn_act = ConvBN(filters[0], filters[1], 3, padding=1, act='gelu')
            mid = filters[1]
        else:
            raise ValueError(f"block_type must be 'axial' or 'bottleneck', got {block_type!r}")
        self.conv3_bn = ConvBN(mid, filters[2], norm_init=0.0)
        self.shortcut = ConvBN(in_chs, filters[2]) if in_chs != filters[2] else None
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(x)
        shortcut = x if self.shortcut is None else self.shortcut(x)
        x = self.conv1_bn_act(x)
        x = F.gelu(self.attention(x)) if self.block_type == 'axial' else self.conv2_bn_act(x)
        x = self.conv3_bn(x)
        return _drop_path(x, self.drop_path, self.training) + shortcut


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if p == 0.0 or not training:
        return x
    keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - p)
    return x * keep / (1 - p)


class BlockGroup(nn.Module):
    """``num_blocks`` decoder blocks; widths ``[2b, b, 4b]`` (axial) or ``[b, b, 4b]``."""

    def __init__(self, in_chs: int, base: int, num_blocks: int, block_type: str,
                 num_heads: int = 8, drop_path: float = 0.0) -> None:
        super().__init__()
        filters = [2 * base, base, 4 * base] if block_type == 'axial' else [base, base, 4 * base]
        self.blocks = nn.ModuleList()
        for _ in range(num_blocks):
            self.blocks.append(DecoderBlock(in_chs, filters, block_type, num_heads, drop_path))
            in_chs = filters[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def _align_corners(x: torch.Tensor) -> bool:
    # TensorFlow's resize of odd-sided maps (1281-pixel crops: 41, 81, 161, 321) keeps the
    # corner pixels aligned; the official port mirrors it with align_corners on odd widths.
    return x.shape[-1] % 2 == 1


class ResizedFuse(nn.Module):
    """Adds the (projected, resized) lower-resolution map to the (projected) skip map."""

    def __init__(self, low_chs: int, high_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv_bn_low = ConvBN(low_chs, out_chs) if low_chs != out_chs else None
        self.conv_bn_high = ConvBN(high_chs, out_chs) if high_chs != out_chs else None

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        align = _align_corners(low)
        if self.conv_bn_low is not None:
            low = self.conv_bn_low(F.gelu(low))
        low = F.interpolate(low, size=high.shape[2:], mode='bilinear', align_corners=align)
        if self.conv_bn_high is not None:
            high = self.conv_bn_high(F.gelu(high))
        return low + high


class KMaXPixelDecoder(nn.Module):
    """kMaX pixel decoder over backbone maps given from high to low resolution (strides 4..32).

    Args:
        in_channels: channels of the backbone maps, stride 4 first (as mmdet orders them).
        dec_channels: base width of each stage's blocks, stride 32 first (``DEC_CHANNELS``).
        dec_layers: blocks per stage, stride 32 first (``DEC_LAYERS``).
        layer_types: ``'axial'`` or ``'bottleneck'`` per stage, stride 32 first.
        num_heads: axial-attention heads.
        drop_path: drop-path probability of every block.
    """

    def __init__(self, in_channels: Sequence[int], dec_channels: Sequence[int] = (512, 256, 128, 64),
                 dec_layers: Sequence[int] = (1, 5, 1, 1),
                 layer_types: Sequence[str] = ('axial', 'axial', 'bottleneck', 'bottleneck'),
                 num_heads: int = 8, drop_path: float = 0.0) -> None:
        super().__init__()
        n = len(in_channels)
        if n < 2 or not n == len(dec_channels) == len(dec_layers) == len(layer_types):
            raise ValueError(f'in_channels={list(in_channels)}, dec_channels={list(dec_channels)}, '
                             f'dec_layers={list(dec_layers)} and layer_types={list(layer_types)} '
                             'need one entry per stage (at least two)')
        chans = list(in_channels)[::-1]  # stride 32 first
        self.in_norms = nn.ModuleList(LayerNorm2d(c) for c in chans)
        self.stages = nn.ModuleList()
        self.resized_fuses = nn.ModuleList()
        for i in range(n):
            self.stages.append(BlockGroup(chans[0] if i == 0 else dec_channels[i], dec_channels[i],
                                          dec_layers[i], layer_types[i], num_heads, drop_path))
            if i > 0:
                self.resized_fuses.append(ResizedFuse(4 * dec_channels[i - 1], chans[i],
                                                      dec_channels[i]))
        self.out_channels = [4 * c for c in dec_channels]

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Backbone maps (stride 4 first) -> (stride-4 pixel features, [stride 32, 16, 8 maps])."""
        feats = list(feats)[::-1]
        outs = []
        x = self.in_norms[0](feats[0])
        for i, stage in enumerate(self.stages):
            x = stage(x)
            outs.append(x)
            if i + 1 < len(self.stages):
                x = self.resized_fuses[i](x, self.in_norms[i + 1](feats[i + 1]))
        return outs[-1], outs[:3]


# ----------------------------------------------------------------------------- transformer decoder

def kmeans_cross_attention(mask_logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """k-means cross-attention: each pixel goes to its arg-max cluster, each cluster sums its
    pixels' values.

    Args:
        mask_logits: ``[B, Q, HW]`` cluster (query) logits per pixel; the assignment is a hard
            arg-max over ``Q`` and carries no gradient.
        value: ``[B, C, HW]`` pixel values.

    Returns:
        ``[B, C, Q]`` cluster updates (fp32 accumulation, as the official ``autocast(False)``).

    Runs :func:`densekit.ops.kmeans_attention` (reference: the official one-hot matmul; an opt-in
    fused Triton kernel, ``DENSEKIT_ATTN_BACKEND=triton``).
    The PolyMaX-style depth head (:mod:`densekit.models.depth.polymax`) uses a straight-through
    variant of this assignment; kMaX's official one is detached, as here.
    """
    return kmeans_attention(mask_logits, _at_least_fp32(value))


def _void_prior(num_classes: int, void_prior_prob: float = 0.9) -> float:
    """Initial logit of the last (void) class so that softmax puts ``void_prior_prob`` on it."""
    return math.log((num_classes - 1) * void_prior_prob / (1 - void_prior_prob))


class KMaXPredictor(nn.Module):
    """Class and mask logits from query embeddings and pixel features.

    Pixel features: depth-wise 5x5 conv, 1x1 conv to ``pixel_head_channels``, 1x1 conv to
    ``mask_channels``, L2-normalised. Queries ``[B, C, Q]``: a 1x1 class head (with the void
    prior) and a 1x1 mask-kernel head; mask logits are kernel . pixel, then a one-channel
    BatchNorm (scale initialised to 0.1).
    """

    def __init__(self, in_channel_pixel: int, in_channel_query: int, num_classes: int,
                 pixel_head_channels: int = 256, mask_channels: int = 128) -> None:
        super().__init__()
        self.pixel_space_head_conv0bnact = ConvBN(in_channel_pixel, in_channel_pixel, 5, padding=2,
                                                  groups=in_channel_pixel, act='gelu',
                                                  init='xavier_uniform')
        self.pixel_space_head_conv1bnact = ConvBN(in_channel_pixel, pixel_head_channels, act='gelu')
        self.pixel_space_head_last_convbn = ConvBN(pixel_head_channels, mask_channels, bias=True)
        _trunc_normal_(self.pixel_space_head_last_convbn.conv.weight, 0.01)
        self.transformer_mask_head = ConvBN(in_channel_query, mask_channels, conv_1d=True)
        self.transformer_class_head = ConvBN(in_channel_query, num_classes, bias=True, norm=None,
                                             conv_1d=True)
        _trunc_normal_(self.transformer_class_head.conv.weight, 0.01)
        self.pixel_space_mask_batch_norm = batch_norm(1)
        nn.init.constant_(self.pixel_space_mask_batch_norm.weight, 0.1)
        self.void_prior = _void_prior(num_classes)

    def forward(self, mask_embeddings: torch.Tensor, class_embeddings: torch.Tensor,
                pixel_feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> class logits ``[B, Q, K+1]``, mask logits ``[B, Q, H, W]``, pixel embeddings."""
        pixel = self.pixel_space_head_conv0bnact(pixel_feature)
        pixel = self.pixel_space_head_last_convbn(self.pixel_space_head_conv1bnact(pixel))
        pixel = F.normalize(pixel, p=2, dim=1)
        class_logits = self.transformer_class_head(class_embeddings).transpose(1, 2)
        prior = torch.zeros(class_logits.shape[-1], dtype=class_logits.dtype,
                            device=class_logits.device)
        prior[-1] = self.void_prior
        class_logits = class_logits + prior
        kernel = self.transformer_mask_head(mask_embeddings)
        mask_logits = torch.einsum('bchw,bcn->bnhw', pixel, kernel)
        mask_logits = self.pixel_space_mask_batch_norm(mask_logits.unsqueeze(1)).squeeze(1)
        return class_logits, mask_logits, pixel


class KMaXTransformerLayer(nn.Module):
    """One kMaX decoder layer: prediction, k-means cross-attention, self-attention, FFN.

    Args:
        num_classes: classes including void.
        in_channel_pixel: channels of the pixel-decoder map of this layer's stride.
        in_channel_query: cluster-centre width (256).
        base_filters: attention width; bottleneck ``2x``, keys ``1x``, values ``2x`` of it.
        num_heads: self-attention heads.
        feedforward_channels: FFN hidden width (2048).
        pixel_head_channels, mask_channels: the predictor's widths (256, 128).
        drop_path: drop-path probability of the three residual updates.
    """

    def __init__(self, num_classes: int, in_channel_pixel: int, in_channel_query: int = 256,
                 base_filters: int = 128, num_heads: int = 8, feedforward_channels: int = 2048,
                 pixel_head_channels: int = 256, mask_channels: int = 128,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        bottleneck, key_depth, value_depth = 2 * base_filters, base_filters, 2 * base_filters
        if key_depth % num_heads or value_depth % num_heads:
            raise ValueError(f'base_filters={base_filters} must be a multiple of '
                             f'num_heads={num_heads}')
        self.num_heads, self.key_depth, self.value_depth = num_heads, key_depth, value_depth
        self.drop_path = drop_path
        std = bottleneck ** -0.5
        self.query_conv1_bn_act = ConvBN(in_channel_query, bottleneck, act='gelu', conv_1d=True)
        self.pixel_conv1_bn_act = ConvBN(in_channel_pixel, bottleneck, act='gelu')
        self.query_qkv_conv_bn = ConvBN(bottleneck, 2 * key_depth + value_depth, conv_1d=True)
        _trunc_normal_(self.query_qkv_conv_bn.conv.weight, std)
        self.pixel_v_conv_bn = ConvBN(bottleneck, value_depth)
        _trunc_normal_(self.pixel_v_conv_bn.conv.weight, std)
        self.query_self_attention = _SelfAttention(value_depth, num_heads)
        self.query_conv3_bn = ConvBN(value_depth, in_channel_query, conv_1d=True, norm_init=0.0)
        self.query_ffn_conv1_bn_act = ConvBN(in_channel_query, feedforward_channels, act='gelu',
                                             conv_1d=True)
        self.query_ffn_conv2_bn = ConvBN(feedforward_channels, in_channel_query, conv_1d=True,
                                         norm_init=0.0)
        self.predictor = KMaXPredictor(bottleneck, bottleneck, num_classes, pixel_head_channels,
                                       mask_channels)
        self.kmeans_query_batch_norm_retrieved_value = batch_norm(value_depth)
        self.kmeans_query_conv3_bn = ConvBN(value_depth, in_channel_query, conv_1d=True,
                                            norm_init=0.0)

    def forward(self, pixel_feature: torch.Tensor, query: torch.Tensor):
        """``pixel_feature [B, C, H, W]``, ``query [B, D, Q]`` -> (new query, class logits,
        mask logits, pixel embeddings) of the prediction made before the update."""
        N, _, H, W = pixel_feature.shape
        Q = query.shape[-1]
        pixel_space = self.pixel_conv1_bn_act(F.gelu(pixel_feature))
        query_space = self.query_conv1_bn_act(query)
        pixel_value = self.pixel_v_conv_bn(pixel_space).reshape(N, self.value_depth, H * W)
        class_logits, mask_logits, pixel = self.predictor(query_space, query_space, pixel_space)

        update = kmeans_cross_attention(mask_logits.flatten(2), pixel_value)
        update = self.kmeans_query_conv3_bn(self.kmeans_query_batch_norm_retrieved_value(update))
        query = query + _drop_path(update, self.drop_path, self.training)

        qkv = self.query_qkv_conv_bn(query_space)
        q, k, v = torch.split(qkv, [self.key_depth, self.key_depth, self.value_depth], dim=1)
        h = self.num_heads
        attn = self.query_self_attention(q.reshape(N, h, -1, Q), k.reshape(N, h, -1, Q),
                                         v.reshape(N, h, -1, Q))
        query = query + _drop_path(self.query_conv3_bn(attn), self.drop_path, self.training)
        query = F.gelu(query)
        ffn = self.query_ffn_conv2_bn(self.query_ffn_conv1_bn_act(query))
        query = F.gelu(query + _drop_path(ffn, self.drop_path, self.training))
        return query, class_logits, mask_logits, pixel


class _SelfAttention(nn.Module):
    """Softmax attention among the queries with batch norm on the logits and on the output,
    then GELU (the official ``AttentionOperation``)."""

    def __init__(self, value_depth: int, num_heads: int) -> None:
        super().__init__()
        self.batch_norm_similarity = batch_norm(num_heads)
        self.batch_norm_retrieved_value = batch_norm(value_depth)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        N, h, c, L = v.shape
        sim = self.batch_norm_similarity(torch.einsum('bhdl,bhdm->bhlm', q, k))
        out = torch.einsum('bhlm,bhdm->bhdl', _at_least_fp32(sim).softmax(-1), v).reshape(N, h * c, L)
        return F.gelu(self.batch_norm_retrieved_value(out))


# ------------------------------------------------------------------------ auxiliary semantic head

class SemanticASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLab): a 1x1 conv, three dilated 3x3 convs and a pooled
    image-level branch, concatenated and projected; dropout 0.1 on the output (the official
    ``ASPP`` of the auxiliary semantic head)."""

    def __init__(self, in_chs: int, out_chs: int = 256,
                 atrous_rates: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        r1, r2, r3 = atrous_rates
        self.aspp_conv0 = ConvBN(in_chs, out_chs, act='gelu')
        self.aspp_conv1 = ConvBN(in_chs, out_chs, 3, padding=r1, dilation=r1, act='gelu')
        self.aspp_conv2 = ConvBN(in_chs, out_chs, 3, padding=r2, dilation=r2, act='gelu')
        self.aspp_conv3 = ConvBN(in_chs, out_chs, 3, padding=r3, dilation=r3, act='gelu')
        self.aspp_pool = ConvBN(in_chs, out_chs, act='gelu')
        self.proj_conv_bn_act = ConvBN(5 * out_chs, out_chs, act='gelu')
        self.proj_drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.aspp_pool(x.mean((2, 3), keepdim=True))
        pooled = F.interpolate(pooled, size=x.shape[-2:], mode='bilinear',
                               align_corners=_align_corners(x))
        x = torch.cat([self.aspp_conv0(x), self.aspp_conv1(x), self.aspp_conv2(x),
                       self.aspp_conv3(x), pooled], dim=1)
        return self.proj_drop(self.proj_conv_bn_act(x))


class KMaXSemanticPredictor(nn.Module):
    """The auxiliary semantic head kMaX-DeepLab trains with (a Panoptic-DeepLab single decoder
    and head): ASPP on the stride-32 backbone map, fused with projections of the stride-8 and
    stride-4 backbone maps (each fusion a depth-wise 5x5 and a 1x1 conv), a depth-wise 5x5 and a
    1x1 conv, then per-class logits at stride 4. It reads the raw backbone maps, not the pixel
    decoder's, and only serves the auxiliary semantic loss.

    Args:
        in_channels: channels of the backbone maps at strides 32, 8 and 4.
        num_classes: output classes (the official: the dataset's classes and void).
        channels: ASPP and decoder width (256).
        low_level_channels: projections of the stride-8 and stride-4 maps (64, 32).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 256,
                 low_level_channels: Sequence[int] = (64, 32)) -> None:
        super().__init__()
        if len(in_channels) != 3 or len(low_level_channels) != 2:
            raise ValueError(f'in_channels={list(in_channels)} needs the stride-32, 8 and 4 '
                             f'backbone channels and low_level_channels={list(low_level_channels)}'
                             ' one width for stride 8 and one for stride 4')
        c8, c4 = low_level_channels
        self.aspp = SemanticASPP(in_channels[0], channels)
        self.low_level_projection_os8 = ConvBN(in_channels[1], c8, act='gelu')
        self.low_level_fusion_os8_conv0_bn_act = ConvBN(channels + c8, channels + c8, 5, padding=2,
                                                        groups=channels + c8, act='gelu',
                                                        init='xavier_uniform')
        self.low_level_fusion_os8_conv1_bn_act = ConvBN(channels + c8, channels, act='gelu')
        self.low_level_projection_os4 = ConvBN(in_channels[2], c4, act='gelu')
        self.low_level_fusion_os4_conv0_bn_act = ConvBN(channels + c4, channels + c4, 5, padding=2,
                                                        groups=channels + c4, act='gelu',
                                                        init='xavier_uniform')
        self.low_level_fusion_os4_conv1_bn_act = ConvBN(channels + c4, channels, act='gelu')
        self.conv_block_0 = ConvBN(channels, channels, 5, padding=2, groups=channels, act='gelu',
                                   init='xavier_uniform')
        self.conv_block_1 = ConvBN(channels, channels, act='gelu')
        self.final_conv = ConvBN(channels, num_classes, bias=True, norm=None)
        _trunc_normal_(self.final_conv.conv.weight, 0.01)

    def forward(self, x: torch.Tensor, low_features_os8: torch.Tensor,
                low_features_os4: torch.Tensor) -> torch.Tensor:
        """Backbone maps at strides 32, 8, 4 -> class logits ``[B, K, H4, W4]``."""
        x = self.aspp(x)
        align = _align_corners(x)  # the official decides once, from the stride-32 map
        for low, project, conv0, conv1 in (
                (low_features_os8, self.low_level_projection_os8,
                 self.low_level_fusion_os8_conv0_bn_act, self.low_level_fusion_os8_conv1_bn_act),
                (low_features_os4, self.low_level_projection_os4,
                 self.low_level_fusion_os4_conv0_bn_act, self.low_level_fusion_os4_conv1_bn_act)):
            low = project(low)
            x = F.interpolate(x, size=low.shape[-2:], mode='bilinear', align_corners=align)
            x = conv1(conv0(torch.cat([x, low], dim=1)))
        return self.final_conv(self.conv_block_1(self.conv_block_0(x)))


class KMaXTransformerDecoder(nn.Module):
    """Cluster centres refined by ``dec_layers[i]`` kMaX layers at strides 32, 16, 8.

    Args:
        in_channels: channels of the stride-32, 16, 8 pixel-decoder maps and of the stride-4
            features of the final prediction.
        num_classes: classes without void (the predictions add one).
        num_queries: cluster centres (128).
        dec_layers: layers per stride (``(2, 2, 2)``).
        embed_dims: cluster-centre width (256).
        base_filters, num_heads, feedforward_channels, pixel_head_channels, mask_channels,
        drop_path: as :class:`KMaXTransformerLayer`.
        aux_semantic_in_channels: backbone channels at strides 32, 8, 4 to build the auxiliary
            semantic head (:class:`KMaXSemanticPredictor`, ``num_classes + 1`` outputs as the
            official); ``None`` builds none.
        aux_semantic_channels, aux_semantic_low_level_channels: its widths (256, (64, 32)).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, num_queries: int = 128,
                 dec_layers: Sequence[int] = (2, 2, 2), embed_dims: int = 256,
                 base_filters: int = 128, num_heads: int = 8, feedforward_channels: int = 2048,
                 pixel_head_channels: int = 256, mask_channels: int = 128,
                 drop_path: float = 0.0, aux_semantic_in_channels: Sequence[int] | None = None,
                 aux_semantic_channels: int = 256,
                 aux_semantic_low_level_channels: Sequence[int] = (64, 32)) -> None:
        super().__init__()
        if len(in_channels) != len(dec_layers) + 1:
            raise ValueError(f'in_channels={list(in_channels)} needs one entry per decoder stride '
                             f'(dec_layers={list(dec_layers)}) and one for the final prediction')
        self.dec_layers = list(dec_layers)
        self.kmax_transformer_layers = nn.ModuleList(
            KMaXTransformerLayer(num_classes + 1, in_channels[i], embed_dims, base_filters,
                                 num_heads, feedforward_channels, pixel_head_channels,
                                 mask_channels, drop_path)
            for i, n in enumerate(dec_layers) for _ in range(n))
        self.cluster_centers = nn.Embedding(embed_dims, num_queries)  # [C, Q], the official layout
        _trunc_normal_(self.cluster_centers.weight, 1.0)
        self.class_embedding_projection = ConvBN(embed_dims, embed_dims, act='gelu', conv_1d=True)
        self.mask_embedding_projection = ConvBN(embed_dims, embed_dims, act='gelu', conv_1d=True)
        self.predictor = KMaXPredictor(in_channels[-1], embed_dims, num_classes + 1,
                                       pixel_head_channels, mask_channels)
        self.auxiliary_semantic_predictor = None
        if aux_semantic_in_channels is not None:
            self.auxiliary_semantic_predictor = KMaXSemanticPredictor(
                aux_semantic_in_channels, num_classes + 1, aux_semantic_channels,
                aux_semantic_low_level_channels)

    def forward(self, multi_scale: Sequence[torch.Tensor], pixel_feature: torch.Tensor,
                semantic_features: Sequence[torch.Tensor] | None = None,
                with_pixel_features: bool = False) -> dict:
        """-> dict of ``class_logits`` and ``mask_logits``: lists with one entry per prediction
        (one per layer, then the final); intermediate masks are resized to the final (stride 4)
        size. ``with_pixel_features`` adds ``pixel_features`` (the predictions' L2-normalised
        pixel embeddings, intermediate ones resized bilinearly to stride 4 as the official, so
        no longer unit-norm); ``semantic_features`` (backbone maps at strides 32, 8, 4) add the
        auxiliary head's ``aux_semantic`` logits."""
        query = self.cluster_centers.weight.unsqueeze(0).expand(pixel_feature.shape[0], -1, -1)
        classes, masks, pixels = [], [], []
        layers = iter(self.kmax_transformer_layers)
        for feat, n in zip(multi_scale, self.dec_layers):
            for _ in range(n):
                query, cls, mask, pixel = next(layers)(feat, query)
                classes.append(cls)
                masks.append(mask)
                pixels.append(pixel)
        cls, mask, pixel = self.predictor(self.mask_embedding_projection(query),
                                          self.class_embedding_projection(query), pixel_feature)
        size = mask.shape[-2:]
        align = size[0] % 2 == 1  # the official resize of the intermediate masks

        def resize(maps):
            return [F.interpolate(m, size=size, mode='bilinear', align_corners=align) for m in maps]

        out = dict(class_logits=classes + [cls], mask_logits=resize(masks) + [mask])
        if with_pixel_features:
            out['pixel_features'] = resize(pixels) + [pixel]
        if semantic_features is not None:
            if self.auxiliary_semantic_predictor is None:
                raise ValueError('semantic_features given, but the decoder was built without the '
                                 'auxiliary semantic head (aux_semantic_in_channels=None)')
            out['aux_semantic'] = self.auxiliary_semantic_predictor(*semantic_features)
        return out


class KMaX(nn.Module):
    """kMaX-DeepLab head: :class:`KMaXPixelDecoder` + :class:`KMaXTransformerDecoder`.

    Args:
        in_channels: backbone channels, stride 4 first.
        num_classes: classes without void.
        num_queries: cluster centres (128).
        pixel_decoder_channels, pixel_decoder_layers, pixel_decoder_types: the pixel decoder's
            base widths, blocks and block types per stage, stride 32 first.
        transformer_decoder_layers: kMaX layers at strides 32, 16, 8.
        embed_dims, base_filters, num_heads, feedforward_channels, pixel_head_channels,
        mask_channels: as :class:`KMaXTransformerDecoder`.
        pixel_drop_path, transformer_drop_path: drop-path probabilities (official COCO R50: 0, 0.2).
        aux_semantic_head: build the auxiliary semantic head (training only; the official builds
            it when its loss weight is positive) on the backbone maps at strides 32, 8, 4.
        aux_semantic_channels, aux_semantic_low_level_channels: its widths (256, (64, 32)).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, num_queries: int = 128,
                 pixel_decoder_channels: Sequence[int] = (512, 256, 128, 64),
                 pixel_decoder_layers: Sequence[int] = (1, 5, 1, 1),
                 pixel_decoder_types: Sequence[str] = ('axial', 'axial', 'bottleneck', 'bottleneck'),
                 transformer_decoder_layers: Sequence[int] = (2, 2, 2), embed_dims: int = 256,
                 base_filters: int = 128, num_heads: int = 8, feedforward_channels: int = 2048,
                 pixel_head_channels: int = 256, mask_channels: int = 128,
                 pixel_drop_path: float = 0.0, transformer_drop_path: float = 0.0,
                 aux_semantic_head: bool = False, aux_semantic_channels: int = 256,
                 aux_semantic_low_level_channels: Sequence[int] = (64, 32)) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f'num_classes must be positive, got {num_classes}')
        self.num_classes = num_classes
        self.pixel_decoder = KMaXPixelDecoder(in_channels, pixel_decoder_channels,
                                              pixel_decoder_layers, pixel_decoder_types,
                                              num_heads, pixel_drop_path)
        aux_in = None
        if aux_semantic_head:
            if len(in_channels) != 4:
                raise ValueError('the auxiliary semantic head reads the backbone maps at strides '
                                 f'32, 8, 4: in_channels={list(in_channels)} must list four maps')
            aux_in = [in_channels[3], in_channels[1], in_channels[0]]
        self.transformer_decoder = KMaXTransformerDecoder(
            self.pixel_decoder.out_channels, num_classes, num_queries, transformer_decoder_layers,
            embed_dims, base_filters, num_heads, feedforward_channels, pixel_head_channels,
            mask_channels, transformer_drop_path, aux_in, aux_semantic_channels,
            aux_semantic_low_level_channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Backbone maps (stride 4 first) -> class logits ``[B, Q, K+1]`` and stride-4 mask
        logits ``[B, Q, H/4, W/4]`` of every prediction, the final one last."""
        pixel_feature, multi_scale = self.pixel_decoder(feats)
        out = self.transformer_decoder(multi_scale, pixel_feature)
        return out['class_logits'], out['mask_logits']

    def forward_train(self, feats: Sequence[torch.Tensor]) -> dict:
        """What kMaX's losses read (:class:`densekit.models.heads.kmax_criterion.KMaXCriterion`):
        ``class_logits``, ``mask_logits``, ``pixel_features`` of every prediction (final last)
        and, with the auxiliary head, its stride-4 ``aux_semantic`` logits ``[B, K+1, H4, W4]``."""
        feats = list(feats)
        pixel_feature, multi_scale = self.pixel_decoder(feats)
        semantic = None
        if self.transformer_decoder.auxiliary_semantic_predictor is not None:
            semantic = [feats[3], feats[1], feats[0]]
        return self.transformer_decoder(multi_scale, pixel_feature, semantic,
                                        with_pixel_features=True)


# ----------------------------------------------------------------------------- checkpoints

def convert_official_kmax_deeplab(state_dict: dict, prefix: str = 'panoptic_head.kmax.',
                                  aux_semantic_head: bool = True) -> dict:
    """Official kMaX-DeepLab (bytedance/kmax-deeplab) head keys -> densekit's.

    ``sem_seg_head.pixel_decoder.*`` -> ``{prefix}pixel_decoder.*`` and
    ``sem_seg_head.predictor.*`` -> ``{prefix}transformer_decoder.*``, leading underscores of
    key components dropped, ``_predcitor`` -> ``predictor``, the relative-position tables'
    ``_embeddings`` kept under ``embeddings``. The auxiliary semantic head
    (``predictor._auxiliary_semantic_predictor``) lands on
    ``transformer_decoder.auxiliary_semantic_predictor`` (a :class:`KMaX` built with
    ``aux_semantic_head=True``); ``aux_semantic_head=False`` leaves its keys out, for a model
    built without it (inference). Keys outside ``sem_seg_head`` (the backbone) are left out.
    """
    out = {}
    for key, value in state_dict.items():
        if not key.startswith('sem_seg_head.'):
            continue
        if not aux_semantic_head and '_auxiliary_semantic_predictor' in key:
            continue
        key = key[len('sem_seg_head.'):]
        if key.startswith('predictor.'):
            key = 'transformer_decoder.' + key[len('predictor.'):]
        elif not key.startswith('pixel_decoder.'):
            continue
        parts = [p.lstrip('_') for p in key.split('.')]
        parts = ['predictor' if p == 'predcitor' else p for p in parts]
        out[prefix + '.'.join(parts)] = value
    return out
