"""PEM: Prototype-based Efficient MaskFormer (pixel decoder and transformer decoder).

Cavagnero et al., "PEM: Prototype-based Efficient MaskFormer for Image Segmentation", CVPR 2024
(arXiv:2402.19422); official code (detectron2): github.com/NiccoloCavagnero/PEM
(``pem/modeling/pixel_decoder/pem_pixel_decoder.py``,
``pem/modeling/transformer_decoder/pem_transformer_decoder.py``).

* Pixel decoder: each backbone map is projected to ``conv_dim`` (1x1 conv-norm-ReLU) and
  re-weighted by context-based self-modulation (CSM: ``x + x * w``, ``w`` from a two-layer MLP on
  the global average); from stride 32 down, a modulated deformable 3x3 convolution (DCNv2,
  densekit's portable :func:`~densekit.ops.mmcv.deform_conv.deform_conv2d`) refines each level and
  a 2x transposed convolution carries it to the next; the stride-32 level also receives a
  projection of the globally pooled last map. Output: the stride-4 mask features (1x1
  conv-norm-ReLU to ``mask_dim``) and the refined stride-32 / 16 / 8 maps for the decoder.
* Transformer decoder (Mask2Former's layout: learnable queries, one level per layer from low to
  high resolution, a prediction after the queries and after every layer): each layer is
  prototype cross-attention, then pre-norm self-attention, then a pre-norm FFN. Prototype
  cross-attention replaces the softmax over pixels by one prototype per query and head: pixel
  features (BatchNorm, depth-wise 3x3 conv, linear) and queries (LayerNorm, linear) are
  L2-normalised, each query head picks the most similar pixel among those its previous mask
  covers (mask logit >= 0; all pixels when every query of the head has an empty mask), and the
  prototype is modulated by the query (``normalize(proj(p * q)) * alpha + p``, normalised over
  the queries as the official code does), projected and added to the query.

Sub-module names are the official ones, so official checkpoints load after a prefix change
(:func:`convert_official_pem`). Where the official code needs input sides that are multiples of
32 (its transposed convolutions must land exactly on the next map), this one crops the
upsampled map to the next map's size, which is the same thing on such inputs.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from densekit.ops.mmcv.deform_conv import deform_conv2d

__all__ = ['PEMPixelDecoder', 'PEMTransformerDecoder', 'PEM', 'PrototypeCrossAttention',
           'sine_position_embedding', 'convert_official_pem']

NormLayer = Callable[[int], nn.Module]


def sine_position_embedding(x: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised sine embedding of the pixel grid of ``x`` (``[B, C, H, W]``) ->
    ``[B, 2 * num_feats, H, W]`` (y features, then x features; sin / cos interleaved)."""
    B, _, H, W = x.shape
    ones = torch.ones(B, H, W, device=x.device, dtype=torch.float32)
    y_embed, x_embed = ones.cumsum(1), ones.cumsum(2)
    eps, scale = 1e-6, 2 * math.pi
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- pixel decoder

class ConvBNReLU(nn.Module):
    """``k x k`` convolution (no bias) -> norm -> ReLU."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, *,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = norm_layer(out_chs)
        self.relu = nn.ReLU()
        nn.init.kaiming_normal_(self.conv.weight, a=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class _MLP(nn.Module):
    def __init__(self, dim: int, factor: int, norm_layer: NormLayer) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(dim, dim // factor, 1, bias=False), norm_layer(dim // factor),
                                 nn.ReLU(), nn.Conv2d(dim // factor, dim, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class ContextSelfModulation(nn.Module):
    """CSM: ``x + x * w`` with ``w = sigmoid(sigmoid(MLP(mean_hw(x))))`` (the official module
    applies the sigmoid twice: once in its ``nn.Sequential``, once in ``forward``)."""

    def __init__(self, dim: int, factor: int = 2, *, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.mlp = nn.Sequential(_MLP(dim, factor, norm_layer), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.mlp(x.mean(dim=(2, 3), keepdim=True)).sigmoid()
        return x + x * w


class ModulatedDeformConv(nn.Module):
    """3x3 modulated deformable convolution (DCNv2) weight, run by densekit's portable op."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.padding = padding
        self.weight = nn.Parameter(torch.empty(out_chs, in_chs, kernel_size, kernel_size))
        nn.init.kaiming_normal_(self.weight, mode='fan_out', nonlinearity='relu')  # c2_msra_fill

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return deform_conv2d(x, offset, self.weight, None, padding=self.padding, mask=mask)


class DeformUpLayer(nn.Module):
    """Modulated deformable 3x3 conv -> norm -> ReLU, and its 2x transposed-conv upsampling ->
    norm -> ReLU; returns both. The offset conv predicts 27 channels: 9 ``dy``-block, 9
    ``dx``-block (concatenated as they come, the official layout) and 9 mask logits."""

    def __init__(self, in_chs: int, out_chs: int, *, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.dcn_offset = nn.Conv2d(in_chs, 27, 3, padding=1)
        self.dcn = ModulatedDeformConv(in_chs, out_chs)
        self.dcn_bn = norm_layer(out_chs)
        self.up_sample = nn.ConvTranspose2d(out_chs, out_chs, 4, stride=2, padding=1, bias=False)
        self.up_bn = norm_layer(out_chs)
        self.relu = nn.ReLU()
        nn.init.zeros_(self.dcn_offset.weight)
        nn.init.zeros_(self.dcn_offset.bias)
        self._bilinear_init(self.up_sample.weight)

    @staticmethod
    @torch.no_grad()
    def _bilinear_init(w: torch.Tensor) -> None:
        f = math.ceil(w.size(2) / 2)
        c = (2 * f - 1 - f % 2) / (2. * f)
        for i in range(w.size(2)):
            for j in range(w.size(3)):
                w[0, 0, i, j] = (1 - math.fabs(i / f - c)) * (1 - math.fabs(j / f - c))
        w[1:, 0] = w[0, 0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        offset_x, offset_y, mask = torch.chunk(self.dcn_offset(x), 3, dim=1)
        x = self.dcn(x, torch.cat((offset_x, offset_y), dim=1), mask.sigmoid())
        x = self.relu(self.dcn_bn(x))
        up = self.relu(self.up_bn(self.up_sample(x)))
        return x, up


class PEMPixelDecoder(nn.Module):
    """PEM's pixel decoder on ``[c1, c2, c3, c4]`` (strides 4..32).

    Args:
        in_channels: channels of the four maps.
        conv_dim: width of the decoder levels (128 in the official configs).
        mask_dim: width of the mask features (256).
        norm_layer: norm of every conv-norm block.

    Returns (forward): ``(mask_features [B, mask_dim, H/4, W/4], [x32, x16, x8])``.
    """

    def __init__(self, in_channels: Sequence[int], conv_dim: int = 128, mask_dim: int = 256, *,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f'PEMPixelDecoder takes 4 maps, got in_channels={in_channels}')
        self.in_projections = nn.ModuleList(
            ConvBNReLU(c, conv_dim, norm_layer=norm_layer) for c in in_channels)
        self.conv_avg = ConvBNReLU(in_channels[-1], conv_dim, norm_layer=norm_layer)
        self.csm = nn.ModuleList(ContextSelfModulation(conv_dim, 2, norm_layer=norm_layer) for _ in range(4))
        self.dcn = nn.ModuleList(DeformUpLayer(conv_dim, conv_dim, norm_layer=norm_layer) for _ in range(3))
        self.out = ConvBNReLU(conv_dim, mask_dim, norm_layer=norm_layer)

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        proj = [p(f) for f, p in zip(feats, self.in_projections)]
        conv_avg = self.conv_avg(feats[3].mean(dim=(2, 3), keepdim=True))
        x, up = self.dcn[0](self.csm[0](proj[3]) + conv_avg)
        levels = [x]
        for i, j in ((1, 2), (2, 1)):
            skip = proj[j]
            x, up = self.dcn[i](self.csm[i](skip) + up[..., :skip.shape[-2], :skip.shape[-1]])
            levels.append(x)
        x4 = self.csm[3](proj[0]) + up[..., :proj[0].shape[-2], :proj[0].shape[-1]]
        return self.out(x4), levels


# ----------------------------------------------------------------------------- transformer decoder

class LocalRepresentation(nn.Module):
    """Pixel features for prototype selection: norm -> depth-wise 3x3 conv -> linear,
    ``[B, C, H, W]`` -> ``[B, H*W, C]``."""

    def __init__(self, d_model: int, *, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.to_query_3x3 = nn.Conv2d(d_model, d_model, 3, groups=d_model, padding=1)
        self.bn = norm_layer(d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        return self.out(self.to_query_3x3(self.bn(x)).view(B, C, H * W).permute(0, 2, 1))


class PrototypeCrossAttention(nn.Module):
    """PEM's prototype-based masked cross-attention (official ``PEM_CA``); queries ``[Q, B, C]``."""

    def __init__(self, d_model: int = 256, nhead: int = 8, *,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        if d_model % nhead:
            raise ValueError(f'd_model={d_model} is not divisible by nhead={nhead}')
        self.feature_proj = LocalRepresentation(d_model, norm_layer=norm_layer)
        self.query_proj = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, d_model))
        self.proj = nn.Linear(d_model, d_model)
        self.final = nn.Linear(d_model, d_model)
        self.alpha = nn.Parameter(torch.ones(1, 1, d_model))
        self.num_heads = nhead

    def prototypes(self, x: torch.Tensor, q: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Per query and head, the pixel of ``x`` (``[B, N, C]``) most similar to ``q``
        (``[B, Q, C]``) among those with ``mask`` (``[B, Q, H, W]`` logits) >= 0 -> ``[B, Q, C]``."""
        B, N, C = x.shape
        Q, h = q.shape[1], self.num_heads
        D = C // h
        x = x.view(B, N, h, D).permute(0, 2, 1, 3)
        q = q.view(B, Q, h, D).permute(0, 2, 1, 3)
        sim = torch.einsum('bhnc, bhqc -> bhnq', x, q)
        if mask is not None:
            masked = (mask.flatten(2).permute(0, 2, 1).detach() < 0.0).unsqueeze(1).expand(-1, h, -1, -1)
            masked = masked.clone()
            # a head whose queries all have empty masks sees every pixel
            masked[torch.all(masked.sum(2) == masked.shape[2], dim=2)] = False
            sim.masked_fill_(masked, float('-inf'))
        idx = torch.argmax(sim, dim=2)  # [B, h, Q]
        picked = torch.gather(x, 2, idx.unsqueeze(-1).expand(-1, -1, -1, D))  # [B, h, Q, D]
        return picked.permute(0, 2, 1, 3).reshape(B, Q, C)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None,
                pos: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        res = tgt
        memory = self.feature_proj(memory + pos)                       # [B, HW, C]
        tgt = self.query_proj((tgt + query_pos).permute(1, 0, 2))      # [B, Q, C]
        memory = F.normalize(memory, dim=-1)
        tgt = F.normalize(tgt, dim=-1)
        memory = self.prototypes(memory, tgt, memory_mask)
        out = F.normalize(self.proj(memory * tgt), dim=1) * self.alpha + memory
        return self.final(out).permute(1, 0, 2) + res


class SelfAttentionLayer(nn.Module):
    """Pre-norm multi-head self-attention of the queries (``[Q, B, C]``) with positions."""

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        tgt2 = self.norm(tgt)
        q = k = tgt2 + query_pos
        return tgt + self.self_attn(q, k, value=tgt2)[0]


class FFNLayer(nn.Module):
    """Pre-norm feed-forward block (linear -> ReLU -> linear, residual)."""

    def __init__(self, d_model: int, dim_feedforward: int = 2048) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        return tgt + self.linear2(F.relu(self.linear1(self.norm(tgt))))


class _MaskMLP(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int = 3) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class PEMTransformerDecoder(nn.Module):
    """PEM's transformer decoder (the official ``MultiScaleMaskedTransformerDecoder``).

    Args:
        in_channels: width of the pixel decoder's levels.
        num_classes: classes (a "no object" logit is added).
        hidden_dim, num_queries, nheads, dim_feedforward: transformer sizes (256, 100, 8, 2048).
        dec_layers: decoder layers (6; the official config's ``DEC_LAYERS`` minus 1).
        mask_dim: width of the mask features.
        norm_layer: norm of the pixel features in prototype selection.
    """

    def __init__(self, in_channels: int, num_classes: int, hidden_dim: int = 256,
                 num_queries: int = 100, nheads: int = 8, dim_feedforward: int = 2048,
                 dec_layers: int = 6, mask_dim: int = 256, *,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        if hidden_dim % nheads:
            raise ValueError(f'hidden_dim={hidden_dim} is not divisible by nheads={nheads}')
        self.num_layers = dec_layers
        self.num_feature_levels = 3
        self.hidden_dim = hidden_dim
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            PrototypeCrossAttention(hidden_dim, nheads, norm_layer=norm_layer) for _ in range(dec_layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList(nn.Conv2d(in_channels, hidden_dim, 1)
                                        for _ in range(self.num_feature_levels))
        for proj in self.input_proj:  # c2_xavier_fill
            nn.init.kaiming_uniform_(proj.weight, a=1)
            nn.init.zeros_(proj.bias)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = _MaskMLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward_prediction_heads(self, output, mask_features, attn_mask_target_size):
        decoder_output = self.decoder_norm(output).permute(1, 0, 2)
        outputs_class = self.class_embed(decoder_output)
        mask_embed = self.mask_embed(decoder_output)
        outputs_mask = torch.einsum('bqc,bchw->bqhw', mask_embed, mask_features)
        attn_mask = F.interpolate(outputs_mask, size=attn_mask_target_size, mode='bilinear',
                                  align_corners=False)
        return outputs_class, outputs_mask, attn_mask

    def forward(self, x: Sequence[torch.Tensor], mask_features: torch.Tensor):
        """``x``: the three levels (strides 32, 16, 8) -> (class logits, mask logits) per
        prediction, ``dec_layers + 1`` of each (``[B, Q, K + 1]``, ``[B, Q, H/4, W/4]``)."""
        if len(x) != self.num_feature_levels:
            raise ValueError(f'expected {self.num_feature_levels} levels, got {len(x)}')
        src, pos, sizes = [], [], []
        for i in range(self.num_feature_levels):
            sizes.append(x[i].shape[-2:])
            pos.append(sine_position_embedding(x[i], self.hidden_dim // 2).to(x[i].dtype))
            src.append(self.input_proj[i](x[i]) + self.level_embed.weight[i][None, :, None, None])
        bs = src[0].shape[0]
        query_embed = self.query_embed.weight.unsqueeze(1).expand(-1, bs, -1)
        output = self.query_feat.weight.unsqueeze(1).expand(-1, bs, -1)
        classes, masks = [], []
        cls, msk, attn_mask = self.forward_prediction_heads(output, mask_features, sizes[0])
        classes.append(cls)
        masks.append(msk)
        for i in range(self.num_layers):
            lvl = i % self.num_feature_levels
            output = self.transformer_cross_attention_layers[i](
                output, src[lvl], memory_mask=attn_mask, pos=pos[lvl], query_pos=query_embed)
            output = self.transformer_self_attention_layers[i](output, query_embed)
            output = self.transformer_ffn_layers[i](output)
            cls, msk, attn_mask = self.forward_prediction_heads(
                output, mask_features, sizes[(i + 1) % self.num_feature_levels])
            classes.append(cls)
            masks.append(msk)
        return classes, masks


class PEM(nn.Module):
    """PEM's head: pixel decoder + transformer decoder on ``[c1, c2, c3, c4]``.

    Returns (forward): ``(class logits, mask logits)``, one of each per prediction.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, conv_dim: int = 128,
                 mask_dim: int = 256, hidden_dim: int = 256, num_queries: int = 100,
                 nheads: int = 8, dim_feedforward: int = 2048, dec_layers: int = 6, *,
                 norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.pixel_decoder = PEMPixelDecoder(in_channels, conv_dim, mask_dim, norm_layer=norm_layer)
        self.predictor = PEMTransformerDecoder(conv_dim, num_classes, hidden_dim, num_queries, nheads,
                                               dim_feedforward, dec_layers, mask_dim,
                                               norm_layer=norm_layer)

    def forward(self, feats: Sequence[torch.Tensor]):
        mask_features, levels = self.pixel_decoder(feats)
        return self.predictor(levels, mask_features)


def convert_official_pem(state_dict: dict, prefix: str = 'sem_seg_head.',
                         out_prefix: str = 'decode_head.pem.') -> dict:
    """Official detectron2 PEM keys -> densekit's: ``sem_seg_head.{pixel_decoder,predictor}.*``
    -> ``decode_head.pem.*`` (same sub-module names); other keys (the backbone's) unchanged."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            out[out_prefix + key[len(prefix):]] = value
        else:
            out[key] = value
    return out
