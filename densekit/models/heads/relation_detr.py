"""Position relation of Relation DETR, in plain PyTorch.

Relation DETR (Hou et al., "Relation DETR: Exploring Explicit Position Relation Prior for Object
Detection", ECCV 2024, arXiv 2407.11699; official code github.com/xiuqhou/Relation-DETR) adds to
the logits of every decoder self-attention head a bias computed from the pairwise geometry of the
boxes the previous decoder layers predicted:

* :func:`box_relation_encoding`: for boxes ``i`` (source) and ``j`` (target), in
  ``(cx, cy, w, h)``, ``log(1 + |dx| / w_i)``, ``log(1 + |dy| / h_i)``, ``log(w_i / w_j)``,
  ``log(h_i / h_j)``;
* :class:`PositionRelationEmbedding`: a sine encoding of those four numbers (``num_feats`` per
  number) and a 1x1 convolution to one bias per head, through a ReLU, ``[B, heads, N_i, N_j]``;
* :class:`BiasedMultiheadAttention`: multi-head attention with that bias added to the logits.

The bias is handed to :func:`torch.nn.functional.scaled_dot_product_attention` as its
``attn_mask`` in the layout the embedding produces (contiguous ``[B, heads, Q, K]``, keys
innermost), and the denoising groups' blocking mask is written into the same tensor in place
together with the ReLU (:func:`relu_mask_fill_`): per decoder layer the one ``[B, heads, Q, Q]``
tensor is the convolution's output, and nothing else of that size is made (the official code
clones it, fills the mask into the clone, and ``nn.MultiheadAttention`` flattens it to
``[B * heads, Q, Q]``; its convolution input is channels-last, so its bias is too). PyTorch's
fused CUDA kernels may still pad the bias when ``Q`` is not a multiple of their alignment
(one padded copy inside the call); where no fused kernel applies, the math path computes what
the official code computes.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['box_relation_encoding', 'sine_encoding', 'relu_mask_fill_',
           'PositionRelationEmbedding', 'BiasedMultiheadAttention', 'varifocal_loss',
           'convert_official_relation_detr']


def box_relation_encoding(src_boxes: Tensor, tgt_boxes: Tensor, eps: float = 1e-5) -> Tensor:
    """Pairwise box geometry.

    Args:
        src_boxes: ``[B, N1, 4]`` normalised ``(cx, cy, w, h)``.
        tgt_boxes: ``[B, N2, 4]`` likewise.
        eps: added to widths / heights before dividing and taking logs.

    Returns:
        ``[B, N1, N2, 4]``: ``log(1 + |dx| / (w1 + eps))``, ``log(1 + |dy| / (h1 + eps))``,
        ``log((w1 + eps) / (w2 + eps))``, ``log((h1 + eps) / (h2 + eps))``.
    """
    xy1, wh1 = src_boxes.split(2, dim=-1)
    xy2, wh2 = tgt_boxes.split(2, dim=-1)
    wh1 = wh1.unsqueeze(-2) + eps
    delta_xy = torch.log((xy1.unsqueeze(-2) - xy2.unsqueeze(-3)).abs() / wh1 + 1.0)
    delta_wh = torch.log(wh1 / (wh2.unsqueeze(-3) + eps))
    return torch.cat([delta_xy, delta_wh], dim=-1)


def sine_encoding(x: Tensor, num_feats: int, temperature: float = 10000.0,
                  scale: float = 2 * math.pi) -> Tensor:
    """Sine / cosine encoding of every entry of the last dimension, in order.

    Each number ``v`` becomes ``num_feats`` features ``[sin(v s / t_0), cos(v s / t_0),
    sin(v s / t_1), ...]`` with ``t_k = temperature ** (2k / num_feats)`` and ``s = scale``.

    Args:
        x: ``[..., C]``.

    Returns:
        ``[..., C * num_feats]``.
    """
    dim_t = torch.arange(num_feats // 2, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (dim_t * 2 / num_feats)
    pos = x.unsqueeze(-1) * scale / dim_t
    return torch.stack((pos.sin(), pos.cos()), dim=-1).flatten(-3)


def _sine_encoding_channels_first(x: Tensor, num_feats: int, temperature: float,
                                  scale: float) -> Tensor:
    """:func:`sine_encoding` of ``x`` ``[B, C, H, W]`` along ``C``, written as a contiguous
    ``[B, C * num_feats, H, W]`` (the same feature order), so that a 1x1 convolution over it
    gives a contiguous output (from a channels-last input it would be channels-last)."""
    dim_t = torch.arange(num_feats // 2, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (dim_t * 2 / num_feats)
    pos = x.unsqueeze(2) * scale / dim_t.view(1, 1, -1, 1, 1)  # [B, C, num_feats / 2, H, W]
    return torch.stack((pos.sin(), pos.cos()), dim=3).flatten(1, 3)


class _ReluMaskFill(torch.autograd.Function):
    """ReLU then ``-inf`` where ``mask``, written into the input (which must be a fresh tensor
    nobody else reads, e.g. a convolution's output); backward passes the gradient where the
    output is positive."""

    @staticmethod
    def forward(ctx, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        x.clamp_(min=0)
        if mask is not None:
            x.masked_fill_(mask, float('-inf'))
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor):
        (y,) = ctx.saved_tensors
        return grad * (y > 0), None


def relu_mask_fill_(x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """In place: ``relu(x)``, then ``-inf`` where ``mask`` (broadcast to ``x``) is True."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _ReluMaskFill.apply(x, mask)
    x.clamp_(min=0)
    if mask is not None:
        x.masked_fill_(mask, float('-inf'))
    return x


class PositionRelationEmbedding(nn.Module):
    """Per-head attention bias from the pairwise geometry of two box sets.

    Args:
        num_feats: sine features per relation number (4 numbers).
        num_heads: attention heads (output channels).
        temperature: sine encoding temperature.
        scale: sine encoding scale.
    """

    def __init__(self, num_feats: int = 16, num_heads: int = 8, temperature: float = 10000.0,
                 scale: float = 100.0):
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature
        self.scale = scale
        self.pos_proj = nn.Conv2d(4 * num_feats, num_heads, kernel_size=1)

    def forward(self, src_boxes: Tensor, tgt_boxes: Optional[Tensor] = None,
                mask: Optional[Tensor] = None) -> Tensor:
        """Bias ``[B, heads, N1, N2]`` for queries ``src_boxes`` ``[B, N1, 4]`` attending to keys
        ``tgt_boxes`` ``[B, N2, 4]`` (both ``(cx, cy, w, h)``; default: ``src_boxes``).

        ``mask`` (bool, broadcastable to ``[B, heads, N1, N2]``, e.g. the denoising ``[N1, N2]``
        mask; True = blocked) is written into the bias as ``-inf``. No gradient flows into the
        boxes, as in the official model.
        """
        if tgt_boxes is None:
            tgt_boxes = src_boxes
        with torch.no_grad():
            rel = box_relation_encoding(src_boxes, tgt_boxes).permute(0, 3, 1, 2)
            feats = _sine_encoding_channels_first(rel, self.num_feats, self.temperature,
                                                  self.scale)
        # contiguous [B, heads, N1, N2]: keys innermost, the layout fused attention kernels
        # take a bias in without copying it
        return relu_mask_fill_(self.pos_proj(feats), mask)


class BiasedMultiheadAttention(nn.Module):
    """Multi-head attention with an additive per-head bias on the logits.

    Parameters are named as in :class:`torch.nn.MultiheadAttention` (``in_proj_weight``,
    ``in_proj_bias``, ``out_proj``), so its state dicts load unchanged.

    Args:
        embed_dims: model width.
        num_heads: attention heads.
        attn_drop: dropout on the attention probabilities (training only).
    """

    def __init__(self, embed_dims: int, num_heads: int, attn_drop: float = 0.0):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by num_heads {num_heads}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dims, embed_dims))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dims))
        self.out_proj = nn.Linear(embed_dims, embed_dims)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                attn_bias: Optional[Tensor] = None) -> Tensor:
        """Attention of ``query`` ``[B, Q, C]`` over ``key`` / ``value`` ``[B, K, C]``.

        ``attn_bias``: float, broadcastable to ``[B, heads, Q, K]``, added to the logits
        (``-inf`` blocks); or bool ``[Q, K]`` / ``[B, heads, Q, K]``, True = blocked (the
        convention of ``nn.MultiheadAttention``'s ``attn_mask``). Returns ``[B, Q, C]``.
        """
        b, nq, c = query.shape
        nk = key.shape[1]
        h = self.num_heads
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = F.linear(query, w_q, b_q).view(b, nq, h, c // h).transpose(1, 2)
        k = F.linear(key, w_k, b_k).view(b, nk, h, c // h).transpose(1, 2)
        v = F.linear(value, w_v, b_v).view(b, nk, h, c // h).transpose(1, 2)
        if attn_bias is not None and attn_bias.dtype == torch.bool:
            attn_bias = ~attn_bias  # scaled_dot_product_attention: True = takes part
        elif attn_bias is not None and attn_bias.dtype != q.dtype:
            attn_bias = attn_bias.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_bias, dropout_p=self.attn_drop if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, nq, c))


def varifocal_loss(logits: Tensor, labels: Tensor, iou: Tensor, alpha: float = 0.25,
                   gamma: float = 2.0) -> Tensor:
    """Relation DETR's classification loss (RT-DETR's varifocal form), unreduced.

    The target of the matched class is the IoU of the predicted box with its ground truth
    (no gradient); the binary cross-entropy is weighted by ``(1 - alpha) * p ** gamma`` on
    negatives (``p`` the detached sigmoid) and by the target itself on positives.

    Args:
        logits: ``[N, C]``.
        labels: ``[N]`` class ids, ``C`` = background.
        iou: ``[N]`` IoU of each matched prediction (ignored on background).

    Returns:
        ``[N, C]``.
    """
    num_classes = logits.shape[-1]
    onehot = F.one_hot(labels, num_classes + 1)[..., :num_classes].to(logits.dtype)
    target = onehot * iou.to(logits.dtype).unsqueeze(-1)
    prob = logits.detach().sigmoid()
    weight = (1 - alpha) * prob.pow(gamma) * (1 - onehot) + target
    return F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction='none')


# ----------------------------------------------------------------------------- checkpoint keys

_LAYER_RENAMES = {
    # official decoder layer -> mmdet DeformableDetrTransformerDecoderLayer (+ our self-attention)
    'decoder': [('self_attn.', 'self_attn.attn.'), ('norm2.', 'norms.0.'), ('norm1.', 'norms.1.'),
                ('norm3.', 'norms.2.'), ('linear1.', 'ffn.layers.0.0.'), ('linear2.', 'ffn.layers.1.')],
    # official encoder layer -> mmdet DeformableDetrTransformerEncoderLayer
    'encoder': [('norm1.', 'norms.0.'), ('norm2.', 'norms.1.'), ('linear1.', 'ffn.layers.0.0.'),
                ('linear2.', 'ffn.layers.1.')],
}


def _mlp_to_sequential(rest: str) -> str:
    """``layers.{k}.{param}`` (official MLP) -> ``{2k}.{param}`` (Linear / ReLU Sequential)."""
    _, k, param = rest.split('.', 2)
    return f'{2 * int(k)}.{param}'


def convert_official_relation_detr(state_dict: dict, num_decoder_layers: int) -> dict:
    """Official Relation DETR transformer keys -> densekit's mmdet ``RelationDETR`` keys.

    Converts every ``transformer.*`` key (encoder, decoder layers, query position MLPs, norm,
    relation embedding, per-layer class / box heads, level embeddings, the two-stage memory
    projection, the two-stage and hybrid encoder heads and query embeddings) and the denoising
    label embedding. Backbone and neck keys are returned unchanged under their official names,
    for the caller to map or drop.
    """
    out = {}
    n = num_decoder_layers
    for key, value in state_dict.items():
        new = key
        if key.startswith('transformer.decoder.layers.') or \
                key.startswith('transformer.encoder.layers.'):
            _, part, _, idx, rest = key.split('.', 4)
            for old, rep in _LAYER_RENAMES[part]:
                if rest.startswith(old):
                    rest = rep + rest[len(old):]
                    break
            new = f'{part}.layers.{idx}.{rest}'
        elif key.startswith('transformer.decoder.class_head.'):
            new = 'bbox_head.cls_branches.' + key[len('transformer.decoder.class_head.'):]
        elif key.startswith('transformer.decoder.bbox_head.'):
            idx, rest = key[len('transformer.decoder.bbox_head.'):].split('.', 1)
            new = f'bbox_head.reg_branches.{idx}.{_mlp_to_sequential(rest)}'
        elif key.startswith('transformer.decoder.position_relation_embedding.pos_proj.0.'):
            new = 'decoder.position_relation_embedding.pos_proj.' + key.rsplit('.', 1)[-1]
        elif key.startswith('transformer.decoder.') or key.startswith('transformer.encoder.'):
            new = key[len('transformer.'):]
        elif key.startswith('transformer.encoder_class_head.'):
            new = f'bbox_head.cls_branches.{n}.' + key.rsplit('.', 1)[-1]
        elif key.startswith('transformer.encoder_bbox_head.'):
            rest = key[len('transformer.encoder_bbox_head.'):]
            new = f'bbox_head.reg_branches.{n}.{_mlp_to_sequential(rest)}'
        elif key.startswith('transformer.hybrid_class_head.'):
            new = 'bbox_head.hybrid_cls_branch.' + key.rsplit('.', 1)[-1]
        elif key.startswith('transformer.hybrid_bbox_head.'):
            rest = key[len('transformer.hybrid_bbox_head.'):]
            new = f'bbox_head.hybrid_reg_branch.{_mlp_to_sequential(rest)}'
        elif key == 'transformer.tgt_embed.weight':
            new = 'query_embedding.weight'
        elif key == 'transformer.hybrid_tgt_embed.weight':
            new = 'hybrid_query_embedding.weight'
        elif key == 'transformer.level_embeds':
            new = 'level_embed'
        elif key.startswith('transformer.enc_output.'):
            new = 'memory_trans_fc.' + key.rsplit('.', 1)[-1]
        elif key.startswith('transformer.enc_output_norm.'):
            new = 'memory_trans_norm.' + key.rsplit('.', 1)[-1]
        elif key == 'denoising_generator.label_encoder.weight':
            new = 'dn_query_generator.label_embedding.weight'
        out[new] = value
    return out
