"""Relation DETR as an mmdet 3.3 detector: DINO plus position-relation attention and a hybrid
(one-to-many) query branch.

Relation DETR (Hou et al., ECCV 2024, arXiv 2407.11699; github.com/xiuqhou/Relation-DETR) is
DINO (mmdet's :class:`~mmdet.models.DINO`: contrastive denoising queries, mixed query selection,
look-forward-twice refinement) with

* an encoder whose output ("memory") fuses the input and every layer's output
  (``memory_fusion``: concat, Linear, ReLU, Linear, LayerNorm);
* conditional query positions in the decoder (``query_pos = ref_point_head(sine(ref)) *
  query_scale(query)`` after the first layer);
* a per-head bias on the decoder self-attention logits, from the pairwise geometry of the
  boxes the previous two layers predicted (the first layer: the initial references and the
  first layer's boxes), :class:`densekit.models.heads.relation_detr.PositionRelationEmbedding`;
* in training, a second query set (``hybrid_num_queries`` top-k encoder proposals from their own
  encoder heads) through the same decoder without the relation bias and without denoising,
  matched one-to-many to the ground truth repeated ``hybrid_assign`` times; its losses (decoder
  layers and encoder proposals) are added with the main weights under the ``hybrid.`` prefix.

Deformable attention (encoder self-attention, decoder cross-attention) is mmcv's
``MultiScaleDeformableAttention``: on CUDA its ``mmcv._ext`` call is densekit's portable op
(:mod:`densekit.compat.mmcv_ext` -> :mod:`densekit.ops.mmcv.ms_deform_attn`, which picks the
Triton or reference kernel), on CPU mmcv's own PyTorch path.

The transformer matches the official one at inference (two-stage proposals included, see
``tests/models/test_relation_detr_parity.py``). Training uses mmdet's ``CdnQueryGenerator`` for
the denoising queries and mmdet's Hungarian matching (the official noise scales and matching
costs), mmdet's L1 / GIoU losses and the official varifocal-form classification loss
(:class:`RelationVarifocalLoss`, loss weights 1 / 5 / 2 for every branch).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from mmcv.cnn import Linear, build_norm_layer
from mmcv.cnn.bricks.transformer import FFN
from mmcv.ops import MultiScaleDeformableAttention
from mmdet.models.dense_heads import DINOHead
from mmdet.models.dense_heads.deformable_detr_head import DeformableDETRHead
from mmdet.models.detectors import DINO
from mmdet.models.layers import (DeformableDetrTransformerDecoderLayer,
                                 DeformableDetrTransformerEncoder, DinoTransformerDecoder,
                                 MLP, SinePositionalEncoding, coordinate_to_encoding,
                                 inverse_sigmoid)
from mmdet.models.losses import QualityFocalLoss
from mmdet.models.losses.utils import weight_reduce_loss
from mmdet.registry import MODELS
from mmengine.model import ModuleList, bias_init_with_prob, constant_init
from mmengine.structures import InstanceData

from densekit.mm.registry import register as _register
from densekit.models.heads.relation_detr import BiasedMultiheadAttention, \
    PositionRelationEmbedding, varifocal_loss


class RelationVarifocalLoss(QualityFocalLoss):
    """The official classification loss (RT-DETR's varifocal form), in the
    ``(labels, iou)`` target convention of mmdet's DETR heads (which pass that target to
    any :class:`QualityFocalLoss`): see
    :func:`densekit.models.heads.relation_detr.varifocal_loss`."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, reduction: str = 'mean',
                 loss_weight: float = 1.0):
        super().__init__(use_sigmoid=True, beta=gamma, reduction=reduction,
                         loss_weight=loss_weight)
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, pred, target, weight=None, avg_factor=None, reduction_override=None):
        labels, scores = target
        loss = varifocal_loss(pred, labels, scores, self.alpha, self.gamma)
        if weight is not None and weight.dim() == 1:
            weight = weight[:, None]
        reduction = reduction_override or self.reduction
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)


class RelationSelfAttention(nn.Module):
    """mmcv ``MultiheadAttention``'s call convention (positions added to query and key,
    residual added to the output) around :class:`BiasedMultiheadAttention`;
    ``attn_mask`` is either the denoising mask (bool ``[Q, Q]``) or the relation bias
    (float ``[B, heads, Q, Q]``, blocked pairs ``-inf``)."""

    def __init__(self, embed_dims: int, num_heads: int, dropout: float = 0.0,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, batch_first: bool = True):
        super().__init__()
        if not batch_first:
            raise ValueError('RelationSelfAttention is batch-first only')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.attn = BiasedMultiheadAttention(embed_dims, num_heads, attn_drop or dropout)
        self.proj_drop = nn.Dropout(proj_drop or dropout)

    def forward(self, query, key=None, value=None, query_pos=None, key_pos=None,
                attn_mask=None, **kwargs):
        key = query if key is None else key
        value = key if value is None else value
        q = query if query_pos is None else query + query_pos
        k = key if key_pos is None else key + key_pos
        return query + self.proj_drop(self.attn(q, k, value, attn_mask))


class RelationDetrTransformerDecoderLayer(DeformableDetrTransformerDecoderLayer):
    """Deformable DETR decoder layer whose self-attention takes an additive bias."""

    def _init_layers(self) -> None:
        self.self_attn = RelationSelfAttention(**self.self_attn_cfg)
        self.cross_attn = MultiScaleDeformableAttention(**self.cross_attn_cfg)
        self.embed_dims = self.self_attn.embed_dims
        self.ffn = FFN(**self.ffn_cfg)
        self.norms = nn.ModuleList([build_norm_layer(self.norm_cfg, self.embed_dims)[1]
                                    for _ in range(3)])


class RelationDetrTransformerEncoder(DeformableDetrTransformerEncoder):
    """Deformable DETR encoder whose memory fuses the input and all layer outputs."""

    def _init_layers(self) -> None:
        super()._init_layers()
        e = self.embed_dims
        self.memory_fusion = nn.Sequential(
            nn.Linear((self.num_layers + 1) * e, e), nn.ReLU(inplace=True),
            nn.Linear(e, e), nn.LayerNorm(e))

    def forward(self, query: Tensor, query_pos: Tensor, key_padding_mask: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor, valid_ratios: Tensor,
                **kwargs) -> Tensor:
        reference_points = self.get_encoder_reference_points(
            spatial_shapes, valid_ratios, device=query.device)
        outs = [query]
        for layer in self.layers:
            query = layer(query=query, query_pos=query_pos,
                          key_padding_mask=key_padding_mask, spatial_shapes=spatial_shapes,
                          level_start_index=level_start_index, valid_ratios=valid_ratios,
                          reference_points=reference_points, **kwargs)
            outs.append(query)
        return self.memory_fusion(torch.cat(outs, -1))


class RelationDetrTransformerDecoder(DinoTransformerDecoder):
    """DINO decoder with conditional query positions and the position-relation bias.

    Args (in addition to mmdet's decoder's):
        relation_num_feats: sine features per relation number (official: 16).
        relation_scale: sine encoding scale of the relation numbers (official: 100).
    """

    def __init__(self, *args, relation_num_feats: int = 16, relation_scale: float = 100.0,
                 **kwargs):
        self.relation_num_feats = relation_num_feats
        self.relation_scale = relation_scale
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        self.layers = ModuleList([RelationDetrTransformerDecoderLayer(**self.layer_cfg)
                                  for _ in range(self.num_layers)])
        self.embed_dims = self.layers[0].embed_dims
        if self.post_norm_cfg is not None:
            raise ValueError('RelationDetrTransformerDecoder has no post norm (its `norm` '
                             'normalises every layer output)')
        e = self.embed_dims
        self.ref_point_head = MLP(2 * e, e, e, 2)
        self.query_scale = MLP(e, e, e, 2)
        self.norm = nn.LayerNorm(e)
        self.position_relation_embedding = PositionRelationEmbedding(
            self.relation_num_feats, self.layers[0].self_attn.num_heads,
            scale=self.relation_scale)

    def forward(self, query: Tensor, value: Tensor, key_padding_mask: Tensor,
                self_attn_mask: Optional[Tensor], reference_points: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor, valid_ratios: Tensor,
                reg_branches: nn.ModuleList, skip_relation: bool = False,
                **kwargs) -> Tuple[Tensor, Tensor]:
        """As :class:`DinoTransformerDecoder`; ``self_attn_mask`` is the denoising mask
        (bool ``[Q, Q]``, True = blocked) or None. ``skip_relation``: no relation bias (the
        hybrid branch). Returns the normalised layer outputs ``[layers, B, Q, C]`` and the
        references ``[layers + 1, B, Q, 4]`` (initial, then each layer's refined boxes)."""
        intermediate, intermediate_refs = [], [reference_points]
        ratios = torch.cat([valid_ratios, valid_ratios], -1)[:, None]
        attn_bias = self_attn_mask
        src_boxes = reference_points
        for lid, layer in enumerate(self.layers):
            ref_input = reference_points.detach()[:, :, None] * ratios
            sine = coordinate_to_encoding(ref_input[:, :, 0, :], num_feats=self.embed_dims // 2)
            query_pos = self.ref_point_head(sine)
            if lid != 0:
                query_pos = query_pos * self.query_scale(query)
            query = layer(query, query_pos=query_pos, value=value,
                          key_padding_mask=key_padding_mask, self_attn_mask=attn_bias,
                          spatial_shapes=spatial_shapes, level_start_index=level_start_index,
                          valid_ratios=valid_ratios, reference_points=ref_input, **kwargs)
            normed = self.norm(query)
            if not skip_relation and lid < self.num_layers - 1:
                # this layer's boxes (as the head computes them) against the previous ones
                with torch.no_grad():
                    boxes = (reg_branches[lid](normed) +
                             inverse_sigmoid(reference_points, eps=1e-3)).sigmoid()
                attn_bias = self.position_relation_embedding(src_boxes, boxes, self_attn_mask)
                src_boxes = boxes
            new_refs = (reg_branches[lid](query) + inverse_sigmoid(
                reference_points.detach(), eps=1e-3)).sigmoid()
            reference_points = new_refs.detach()
            intermediate.append(normed)
            intermediate_refs.append(new_refs)
        return torch.stack(intermediate), torch.stack(intermediate_refs)


class RelationDETRHead(DINOHead):
    """DINO's head plus the hybrid branch's encoder heads and one-to-many losses.

    Args (in addition to DINOHead's):
        hybrid_assign: how many times each ground-truth box is repeated for the hybrid
            (one-to-many) matching.
    """

    def __init__(self, *args, hybrid_assign: int = 6, **kwargs):
        self.hybrid_assign = hybrid_assign
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        super()._init_layers()
        self.hybrid_cls_branch = Linear(self.embed_dims, self.cls_out_channels)
        layers = []
        for _ in range(self.num_reg_fcs):
            layers += [Linear(self.embed_dims, self.embed_dims), nn.ReLU()]
        layers.append(Linear(self.embed_dims, 4))
        self.hybrid_reg_branch = nn.Sequential(*layers)

    def init_weights(self) -> None:
        super().init_weights()
        if self.loss_cls.use_sigmoid:
            nn.init.constant_(self.hybrid_cls_branch.bias, bias_init_with_prob(0.01))
        constant_init(self.hybrid_reg_branch[-1], 0, bias=0)

    def forward(self, hidden_states: Tensor, references: List[Tensor]) -> Tuple[Tensor]:
        """Class scores and boxes of every decoder layer; the box of layer ``i`` is
        ``reg_branches[i](hidden_i) + inverse_sigmoid(references[i])``, with the official
        ``inverse_sigmoid`` clamp (1e-3)."""
        cls_scores, coords = [], []
        for lid in range(hidden_states.shape[0]):
            reference = inverse_sigmoid(references[lid], eps=1e-3)
            hidden = hidden_states[lid]
            cls_scores.append(self.cls_branches[lid](hidden))
            coords.append((self.reg_branches[lid](hidden) + reference).sigmoid())
        return torch.stack(cls_scores), torch.stack(coords)

    def loss(self, hidden_states: Tensor, references: List[Tensor],
             enc_outputs_class: Tensor, enc_outputs_coord: Tensor,
             batch_data_samples, dn_meta: Dict[str, int],
             hybrid_hidden_states: Optional[Tensor] = None,
             hybrid_references: Optional[List[Tensor]] = None,
             hybrid_enc_outputs_class: Optional[Tensor] = None,
             hybrid_enc_outputs_coord: Optional[Tensor] = None) -> dict:
        losses = super().loss(hidden_states, references, enc_outputs_class,
                              enc_outputs_coord, batch_data_samples, dn_meta)
        if hybrid_hidden_states is None:
            return losses
        metas = [s.metainfo for s in batch_data_samples]
        gts = [InstanceData.cat([s.gt_instances] * self.hybrid_assign)
               if len(s.gt_instances) else s.gt_instances for s in batch_data_samples]
        cls_scores, coords = self(hybrid_hidden_states, hybrid_references)
        # DETRHead's per-layer losses (no denoising part); the encoder proposals keep their
        # classes (the official two_stage_binary_cls=False), unlike Deformable DETR's.
        hybrid = super(DeformableDETRHead, self).loss_by_feat(cls_scores, coords, gts, metas)
        enc = self.loss_by_feat_single(hybrid_enc_outputs_class, hybrid_enc_outputs_coord,
                                       batch_gt_instances=gts, batch_img_metas=metas)
        hybrid.update(zip(('enc_loss_cls', 'enc_loss_bbox', 'enc_loss_iou'), enc))
        losses.update({f'hybrid.{k}': v for k, v in hybrid.items()})
        return losses


class RelationDETR(DINO):
    """Relation DETR: DINO with relation-biased decoder self-attention and a hybrid branch.

    Args (in addition to DINO's):
        hybrid_cfg: ``dict(num_queries=1500)``: query count of the hybrid (one-to-many)
            branch, used in training only; None or ``num_queries=0`` turns it off.
    """

    def __init__(self, *args, hybrid_cfg: Optional[dict] = None, **kwargs):
        self.hybrid_num_queries = int((hybrid_cfg or {}).get('num_queries', 0))
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        self.positional_encoding = SinePositionalEncoding(**self.positional_encoding)
        self.encoder = RelationDetrTransformerEncoder(**self.encoder)
        self.decoder = RelationDetrTransformerDecoder(**self.decoder)
        self.embed_dims = self.encoder.embed_dims
        if self.positional_encoding.num_feats * 2 != self.embed_dims:
            raise ValueError(f'embed_dims {self.embed_dims} must be twice the positional '
                             f'num_feats {self.positional_encoding.num_feats}')
        self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims)
        self.level_embed = nn.Parameter(torch.zeros(self.num_feature_levels,
                                                    self.embed_dims))
        self.memory_trans_fc = nn.Linear(self.embed_dims, self.embed_dims)
        self.memory_trans_norm = nn.LayerNorm(self.embed_dims)
        if self.hybrid_num_queries:
            self.hybrid_query_embedding = nn.Embedding(self.hybrid_num_queries,
                                                       self.embed_dims)

    def init_weights(self) -> None:
        super().init_weights()
        if self.hybrid_num_queries:
            nn.init.xavier_uniform_(self.hybrid_query_embedding.weight)

    def pre_decoder(self, memory: Tensor, memory_mask: Tensor, spatial_shapes: Tensor,
                    batch_data_samples=None) -> Tuple[Dict]:
        """DINO's query selection; in training also the hybrid queries (their own encoder
        heads, top ``hybrid_num_queries`` proposals, no denoising)."""
        bs = memory.shape[0]
        head = self.bbox_head
        n_layers = self.decoder.num_layers
        output_memory, output_proposals = self.gen_encoder_output_proposals(
            memory, memory_mask, spatial_shapes)

        def select(cls_branch, reg_branch, k):
            cls = cls_branch(output_memory)
            coord_unact = reg_branch(output_memory) + output_proposals
            idx = torch.topk(cls.max(-1)[0], k=k, dim=1)[1].unsqueeze(-1)
            score = cls.gather(1, idx.expand(-1, -1, cls.shape[-1]))
            coord_unact = coord_unact.gather(1, idx.expand(-1, -1, 4))
            return score, coord_unact

        topk_score, topk_coords_unact = select(head.cls_branches[n_layers],
                                               head.reg_branches[n_layers], self.num_queries)
        topk_coords = topk_coords_unact.sigmoid()
        topk_coords_unact = topk_coords_unact.detach()
        query = self.query_embedding.weight[None].expand(bs, -1, -1)
        if self.training:
            dn_label_query, dn_bbox_query, dn_mask, dn_meta = \
                self.dn_query_generator(batch_data_samples)
            query = torch.cat([dn_label_query, query], dim=1)
            reference_points = torch.cat([dn_bbox_query, topk_coords_unact], dim=1)
        else:
            reference_points = topk_coords_unact
            dn_mask, dn_meta = None, None
        decoder_inputs_dict = dict(query=query, memory=memory,
                                   reference_points=reference_points.sigmoid(),
                                   dn_mask=dn_mask)
        head_inputs_dict = dict(enc_outputs_class=topk_score, enc_outputs_coord=topk_coords,
                                dn_meta=dn_meta) if self.training else dict()
        if self.training and self.hybrid_num_queries:
            k = min(self.hybrid_num_queries, output_memory.shape[1])
            h_score, h_coords_unact = select(head.hybrid_cls_branch, head.hybrid_reg_branch, k)
            h_coords = h_coords_unact.sigmoid()
            decoder_inputs_dict.update(
                hybrid_query=self.hybrid_query_embedding.weight[None, :k].expand(bs, -1, -1),
                hybrid_reference_points=h_coords.detach())
            head_inputs_dict.update(hybrid_enc_outputs_class=h_score,
                                    hybrid_enc_outputs_coord=h_coords)
        return decoder_inputs_dict, head_inputs_dict

    def forward_decoder(self, query: Tensor, memory: Tensor, memory_mask: Tensor,
                        reference_points: Tensor, spatial_shapes: Tensor,
                        level_start_index: Tensor, valid_ratios: Tensor,
                        dn_mask: Optional[Tensor] = None,
                        hybrid_query: Optional[Tensor] = None,
                        hybrid_reference_points: Optional[Tensor] = None,
                        **kwargs) -> Dict:
        common = dict(value=memory, key_padding_mask=memory_mask,
                      spatial_shapes=spatial_shapes, level_start_index=level_start_index,
                      valid_ratios=valid_ratios, reg_branches=self.bbox_head.reg_branches)
        inter_states, references = self.decoder(
            query=query, self_attn_mask=dn_mask, reference_points=reference_points,
            **common, **kwargs)
        if self.training:
            # every denoising parameter takes part in the graph, even with no ground truth
            inter_states[0] += self.dn_query_generator.label_embedding.weight[0, 0] * 0.0
        out = dict(hidden_states=inter_states, references=list(references))
        if hybrid_query is not None:
            h_states, h_refs = self.decoder(
                query=hybrid_query, self_attn_mask=None,
                reference_points=hybrid_reference_points, skip_relation=True, **common)
            out.update(hybrid_hidden_states=h_states, hybrid_references=list(h_refs))
        return out


def register() -> None:
    """Register the detector, its head and its loss into mmdet's ``MODELS``."""
    for cls in (RelationDETR, RelationDETRHead, RelationVarifocalLoss):
        _register(MODELS, cls)
