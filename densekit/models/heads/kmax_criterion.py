"""kMaX-DeepLab's training losses: PQ-style Hungarian matching and the five weighted losses.

Yu et al., "k-means Mask Transformer", ECCV 2022 (arXiv:2207.04044), whose losses are MaX-DeepLab's
(Wang et al., "MaX-DeepLab: End-to-End Panoptic Segmentation with Mask Transformers", CVPR 2021,
arXiv:2012.00759); PyTorch port github.com/bytedance/kmax-deeplab
(``kmax_deeplab/modeling/criterion.py``, ``matcher.py``, ``kmax_model.py``).

* Matching (:func:`kmax_hungarian_match`): per image, the cost of query ``i`` for ground-truth
  segment ``j`` is ``-dice_ij * p_ij``: the mask similarity (a dice between the query's mask
  probability, softmax over the queries with void pixels zeroed, and the segment) times the
  query's class probability of the segment's class (softmax without the void column).
* Targets (:meth:`KMaXCriterion.build_targets`): matched queries get their segment's mask and
  class, the others the void class and an empty mask. Two PQ-style weights come from the
  matching: the class loss of a matched query is weighted by its matched dice, of an unmatched
  query by its mask's overlap with the void pixels (how much it covers unlabelled pixels); the
  dice loss of a matched query by its matched class probability, of an unmatched one by 0; both
  clamped below at ``no_object_weight`` (1e-5). By default (``share_final_matching``) the final
  prediction's matching and targets serve every prediction.
* Losses, on every prediction (deep supervision) unless said:
  ``loss_ce``: class cross-entropy, 0.75 on real classes and 0.25 on void, times the PQ weight,
  averaged over the non-zero terms of each image, then over the batch;
  ``loss_mask``: mask-ID cross-entropy: each non-void pixel is classified among the queries
  (softmax over the queries) against its matched query, averaged over the non-zero terms;
  ``loss_dice``: dice of each query's mask probability (softmax over queries, void pixels
  zeroed) with its target, ``1 - (2 I + 1) / (P + T + 1)``, times the PQ weight, summed over the
  queries, times ``0.75 / num_queries`` and averaged over the batch;
  ``loss_pixel_insdis``: pixel-wise instance discrimination: ``sample_k`` pixels drawn without
  replacement (Gumbel top-k) with probability ``∝ (HW / area of the pixel's segment) ** 1.5``
  among the non-void pixels; each sampled pixel's cosine similarities (temperature 0.3) to the
  others are trained by cross-entropy to point at the pixels of its own segment;
  ``loss_aux_semantic`` (final prediction only): per-pixel class cross-entropy of the auxiliary
  semantic head on ``sample_k`` pixels drawn the same way (temperature 2.0), void ignored.
  Each is multiplied by its weight (official COCO: 3.0, 0.3, 3.0, 1.0, 1.0); the intermediate
  predictions' losses carry the suffix ``_{i}``.

Pixel sampling: the official draws its Gumbel noise from the global RNG; here a
``torch.Generator`` (``generator=``) or a whole sampler (``pixel_sampler=``, e.g. fixed
indices) can be given, so that runs and the parity fixture are reproducible. When ``sample_k``
is not below the number of pixels (small crops), every pixel is taken once (the official would
fail there).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['KMaXCriterion', 'kmax_hungarian_match', 'gumbel_topk', 'semantic_from_panoptic']

_MASKED_LOGIT = -99999.0  # sampling logit of void pixels (the official's masking constant)
_VOID_CLASS_ALPHA = 0.25  # class-loss weight of void targets; real classes get 0.75
_DICE_SCALE = 0.75  # the official dice loss is summed over queries, scaled by 0.75 / num_queries
_PIXEL_INSDIS_TEMPERATURE = 0.3  # similarity temperature of instance discrimination

PixelSampler = Callable[[torch.Tensor, int], torch.Tensor]


def gumbel_topk(logits: torch.Tensor, k: int, generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """``k`` indices per row of ``logits [B, L]`` drawn without replacement from
    ``softmax(logits)`` (Gumbel-top-k); all ``L`` (in random order) when ``k >= L``."""
    k = min(k, logits.shape[-1])
    u = torch.rand(logits.shape, dtype=logits.dtype, device=logits.device, generator=generator)
    # rand is in [0, 1): the official takes log(0) = -inf for a zero draw, i.e. never sampled
    gumbel = -torch.log(-torch.log(u))
    return torch.topk(logits + gumbel, k, dim=-1).indices


def _mean_of_nonzero(loss: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` -> mean over the batch of each row's mean over its non-zero entries (the
    official normalisation; a row without any is 0)."""
    count = (loss != 0).to(loss).sum(-1).clamp(min=1.0)
    return torch.nan_to_num(loss.sum(-1) / count, nan=0.0, posinf=0.0, neginf=0.0).mean()


@torch.no_grad()
def kmax_hungarian_match(class_logits: torch.Tensor, mask_logits: torch.Tensor,
                         gt_labels: torch.Tensor, gt_masks: torch.Tensor,
                         masking_void_pixel: bool = True):
    """PQ-style matching of one image's queries and ground-truth segments.

    Args:
        class_logits: ``[Q, K+1]`` (void last).
        mask_logits: ``[Q, H, W]``.
        gt_labels: ``[M]`` classes in ``[0, K)``.
        gt_masks: ``[M, H, W]`` binary masks.
        masking_void_pixel: zero the mask probabilities of pixels no segment covers.

    Returns:
        ``(query_index, gt_index, matched_dice, matched_class_prob)``, ``min(Q, M)`` each,
        query indices ascending.
    """
    class_prob = class_logits.float().softmax(-1)[:, :-1]
    class_sim = class_prob[:, gt_labels]  # [Q, M]
    prob = mask_logits.float().softmax(0).flatten(1)  # [Q, HW]
    target = gt_masks.flatten(1).to(prob)  # [M, HW]
    if masking_void_pixel:
        prob = prob * (target.sum(0, keepdim=True) > 0).to(prob)
    intersection = prob @ target.t()
    denominator = (prob.sum(-1)[:, None] + target.sum(-1)[None, :]) / 2.0
    mask_sim = intersection / (denominator + 1e-5)
    from scipy.optimize import linear_sum_assignment  # scipy comes with mmdet; not a core need
    cost = (-mask_sim * class_sim).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    rows = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=class_logits.device)
    cols = torch.as_tensor(np.asarray(cols, dtype=np.int64), device=class_logits.device)
    return rows, cols, mask_sim[rows, cols], class_sim[rows, cols]


def semantic_from_panoptic(labels: torch.Tensor, masks: torch.Tensor,
                           ignore_index: int = 255) -> torch.Tensor:
    """Semantic map ``[H, W]`` of non-overlapping segments ``masks [M, H, W]`` with classes
    ``labels [M]``; pixels of no segment get ``ignore_index`` (as the official data mapper,
    which leaves crowd regions and unlabelled pixels void)."""
    sem = torch.full(masks.shape[-2:], ignore_index, dtype=torch.long, device=masks.device)
    for label, mask in zip(labels, masks.bool()):
        sem[mask] = label
    return sem


class KMaXCriterion(nn.Module):
    """kMaX-DeepLab's matching and weighted losses (module docstring).

    Args:
        num_classes: classes without void; class logits carry ``num_classes + 1`` columns.
        class_weight, mask_weight, dice_weight, insdis_weight, aux_semantic_weight: loss weights
            (official COCO: 3.0, 0.3, 3.0, 1.0, 1.0); a zero ``insdis_weight`` /
            ``aux_semantic_weight`` skips that loss.
        no_object_weight: lower clamp of the PQ-style weights (1e-5).
        share_final_matching: match once, on the final prediction, and use its targets for
            every prediction (the official default); else match each prediction.
        deep_supervision: losses on every prediction, not only the final one.
        pixel_insdis_temperature, pixel_insdis_sample_k: sampling of the instance
            discrimination loss (1.5, 4096).
        aux_semantic_temperature, aux_semantic_sample_k: sampling of the auxiliary semantic
            loss (2.0, 4096; ``sample_k=0`` takes every pixel).
        masking_void_pixel: leave void pixels out of the matching and the dice loss (the
            mask-ID loss always leaves them out).
        semantic_ignore_index: void value of the ``gt_semantic`` maps given to :meth:`forward`.
        generator: RNG of the Gumbel noise, on the predictions' device (default: the global
            one).
        pixel_sampler: ``(logits [B, L], k) -> indices [B, k']`` replacing the Gumbel-top-k
            sampling (deterministic tests).
    """

    def __init__(self, num_classes: int, class_weight: float = 3.0, mask_weight: float = 0.3,
                 dice_weight: float = 3.0, insdis_weight: float = 1.0,
                 aux_semantic_weight: float = 1.0, no_object_weight: float = 1e-5,
                 share_final_matching: bool = True, deep_supervision: bool = True,
                 pixel_insdis_temperature: float = 1.5, pixel_insdis_sample_k: int = 4096,
                 aux_semantic_temperature: float = 2.0, aux_semantic_sample_k: int = 4096,
                 masking_void_pixel: bool = True, semantic_ignore_index: int = 255,
                 generator: torch.Generator | None = None,
                 pixel_sampler: PixelSampler | None = None) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f'num_classes must be positive, got {num_classes}')
        weights = dict(class_weight=class_weight, mask_weight=mask_weight,
                       dice_weight=dice_weight, insdis_weight=insdis_weight,
                       aux_semantic_weight=aux_semantic_weight)
        for name, w in weights.items():
            if w < 0:
                raise ValueError(f'{name} must be >= 0, got {w}')
        for name, k in (('pixel_insdis_sample_k', pixel_insdis_sample_k),
                        ('aux_semantic_sample_k', aux_semantic_sample_k)):
            if k < 0 or (k == 0 and name == 'pixel_insdis_sample_k'):
                raise ValueError(f'{name} must be {"> 0" if "insdis" in name else ">= 0"}, '
                                 f'got {k}')
        self.num_classes = num_classes
        self.weight_dict = {'loss_ce': class_weight, 'loss_mask': mask_weight,
                            'loss_dice': dice_weight, 'loss_pixel_insdis': insdis_weight,
                            'loss_aux_semantic': aux_semantic_weight}
        self.no_object_weight = no_object_weight
        self.share_final_matching = share_final_matching
        self.deep_supervision = deep_supervision
        self.pixel_insdis_temperature = pixel_insdis_temperature
        self.pixel_insdis_sample_k = pixel_insdis_sample_k
        self.aux_semantic_temperature = aux_semantic_temperature
        self.aux_semantic_sample_k = aux_semantic_sample_k
        self.masking_void_pixel = masking_void_pixel
        self.semantic_ignore_index = semantic_ignore_index
        self.generator = generator
        self.pixel_sampler = pixel_sampler

    @property
    def uses_aux_semantic(self) -> bool:
        return self.weight_dict['loss_aux_semantic'] > 0

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, weights={self.weight_dict}, '
                f'share_final_matching={self.share_final_matching}')

    # ------------------------------------------------------------------------- targets

    def match(self, class_logits: torch.Tensor, mask_logits: torch.Tensor,
              gt_labels: Sequence[torch.Tensor], gt_masks: Sequence[torch.Tensor]) -> list:
        """Per image ``(query_index, gt_index, matched_dice, matched_class_prob)``."""
        return [kmax_hungarian_match(c, m, lab, gm, self.masking_void_pixel)
                for c, m, lab, gm in zip(class_logits, mask_logits, gt_labels, gt_masks)]

    @torch.no_grad()
    def build_targets(self, class_logits: torch.Tensor, mask_logits: torch.Tensor,
                      gt_labels: Sequence[torch.Tensor], gt_masks: Sequence[torch.Tensor],
                      matches: list) -> dict:
        """Per-query targets and PQ-style weights of one prediction from its matching:
        ``masks [B, Q, H, W]``, ``labels [B, Q]`` (void = ``num_classes``),
        ``class_weight [B, Q]``, ``dice_weight [B, Q]``, ``void [B, H, W]`` (no segment) and
        ``inverse_area [B, H, W]`` (``HW`` over the area of the pixel's segment)."""
        B, Q, H, W = mask_logits.shape
        dev = mask_logits.device
        masks = torch.zeros(B, Q, H, W, device=dev)
        labels = torch.full((B, Q), self.num_classes, dtype=torch.long, device=dev)
        dice_weight = torch.zeros(B, Q, device=dev)
        matched_dice = torch.zeros(B, Q, device=dev)
        matched = torch.zeros(B, Q, dtype=torch.bool, device=dev)
        for b, (rows, cols, dice, cls_prob) in enumerate(matches):
            masks[b, rows] = gt_masks[b][cols].to(masks)
            labels[b, rows] = gt_labels[b][cols]
            dice_weight[b, rows] = cls_prob.clamp(min=self.no_object_weight)
            matched_dice[b, rows] = dice.to(matched_dice)
            matched[b, rows] = True
        # overlapping (instance) masks would share their pixels; panoptic ones are unchanged
        masks = masks / masks.sum(1, keepdim=True).clamp(min=1.0)
        void = masks.sum(1) < 1
        area = masks.sum((2, 3))
        pixel_area = torch.einsum('bqhw,bq->bhw', masks, area)
        inverse_area = (H * W) / pixel_area.clamp(min=1.0)
        # unmatched queries: class weight = the share of the query's mask on void pixels
        prob = mask_logits.detach().float().softmax(1).flatten(2)
        void_overlap = (prob @ void.flatten(1).to(prob).unsqueeze(-1)).squeeze(-1)
        void_overlap = void_overlap / (prob.sum(-1) + 1e-5)
        class_weight = torch.where(matched, matched_dice, void_overlap)
        class_weight = class_weight.clamp(min=self.no_object_weight)
        return dict(masks=masks, labels=labels, class_weight=class_weight,
                    dice_weight=dice_weight, void=void, inverse_area=inverse_area)

    # ------------------------------------------------------------------------- losses

    def _sample(self, inverse_area: torch.Tensor, void: torch.Tensor, temperature: float,
                k: int) -> torch.Tensor:
        logits = torch.log(inverse_area.flatten(1)) * temperature
        logits = logits + void.flatten(1).to(logits) * _MASKED_LOGIT
        if self.pixel_sampler is not None:
            return self.pixel_sampler(logits, k)
        return gumbel_topk(logits, k, self.generator)

    def loss_class(self, class_logits: torch.Tensor, targets: dict) -> torch.Tensor:
        ce = F.cross_entropy(class_logits.transpose(1, 2), targets['labels'], reduction='none')
        is_void = targets['labels'] == self.num_classes
        alpha = torch.where(is_void, _VOID_CLASS_ALPHA, 1 - _VOID_CLASS_ALPHA).to(ce)
        return _mean_of_nonzero(ce * alpha * targets['class_weight'])

    def loss_mask_id(self, mask_logits: torch.Tensor, targets: dict) -> torch.Tensor:
        ce = F.cross_entropy(mask_logits.flatten(2), targets['masks'].flatten(2),
                             reduction='none')  # [B, HW]; void pixels have no target query
        return _mean_of_nonzero(ce.masked_fill(targets['void'].flatten(1), 0.0))

    def loss_dice(self, mask_logits: torch.Tensor, targets: dict) -> torch.Tensor:
        prob = mask_logits.flatten(2).softmax(1)
        if self.masking_void_pixel:
            prob = prob.masked_fill(targets['void'].flatten(1).unsqueeze(1), 0.0)
        target = targets['masks'].flatten(2)
        dice = (2 * (prob * target).sum(-1) + 1.0) / (prob.sum(-1) + target.sum(-1) + 1.0)
        loss = (1.0 - dice) * targets['dice_weight']
        return (loss.sum(1) * _DICE_SCALE / prob.shape[1]).mean()

    def loss_pixel_insdis(self, pixel_features: torch.Tensor, targets: dict) -> torch.Tensor:
        index = self._sample(targets['inverse_area'], targets['void'],
                             self.pixel_insdis_temperature, self.pixel_insdis_sample_k)
        gt = targets['masks'].flatten(2)
        gt = gt.gather(2, index.unsqueeze(1).expand(-1, gt.shape[1], -1))  # [B, Q, k]
        gt_sim = torch.einsum('bqk,bqj->bkj', gt, gt)
        gt_sim = gt_sim / gt_sim.sum(1, keepdim=True).clamp(min=1.0)
        feat = pixel_features.flatten(2)
        feat = feat.gather(2, index.unsqueeze(1).expand(-1, feat.shape[1], -1))  # [B, C, k]
        sim = torch.einsum('bck,bcj->bkj', feat, feat) / _PIXEL_INSDIS_TEMPERATURE
        return _mean_of_nonzero(F.cross_entropy(sim, gt_sim, reduction='none'))

    def loss_aux_semantic(self, semantic_logits: torch.Tensor, gt_semantic: torch.Tensor,
                          targets: dict) -> torch.Tensor:
        void, inverse_area = targets['void'], targets['inverse_area']
        if semantic_logits.shape[-2:] != gt_semantic.shape[-2:]:
            # a coarser prediction: take every s-th target pixel (the official's subsampling)
            (h, w), (H, W) = semantic_logits.shape[-2:], gt_semantic.shape[-2:]
            s = (W - 1) // max(w - 1, 1)
            if s < 1 or (H - 1) // max(h - 1, 1) != s or -(-H // s) != h or -(-W // s) != w:
                raise ValueError(f'aux_semantic logits of size {(h, w)} are no strided subsample '
                                 f'of the {(H, W)} targets')
            gt_semantic, void = gt_semantic[:, ::s, ::s], void[:, ::s, ::s]
            inverse_area = inverse_area[:, ::s, ::s]
        logits = semantic_logits.flatten(2)
        gt = gt_semantic.flatten(1)
        if self.aux_semantic_sample_k > 0:
            index = self._sample(inverse_area, void, self.aux_semantic_temperature,
                                 self.aux_semantic_sample_k)
            gt = gt.gather(1, index)
            logits = logits.gather(2, index.unsqueeze(1).expand(-1, logits.shape[1], -1))
        ce = F.cross_entropy(logits, gt, ignore_index=self.num_classes, reduction='none')
        return _mean_of_nonzero(ce * (gt != self.num_classes).to(ce))

    # ------------------------------------------------------------------------- forward

    def _check(self, outputs: dict, gt_labels, gt_masks, gt_semantic) -> None:
        for key in ('class_logits', 'mask_logits'):
            if key not in outputs or not len(outputs[key]):
                raise ValueError(f'outputs need a non-empty list {key!r}, got keys '
                                 f'{sorted(outputs)}')
        cls, masks = outputs['class_logits'][-1], outputs['mask_logits'][-1]
        if cls.shape[-1] != self.num_classes + 1:
            raise ValueError(f'class logits have {cls.shape[-1]} columns; the criterion was built '
                             f'for num_classes={self.num_classes} (+1 void)')
        B = cls.shape[0]
        if len(gt_labels) != B or len(gt_masks) != B:
            raise ValueError(f'{B} predictions but {len(gt_labels)} gt_labels and '
                             f'{len(gt_masks)} gt_masks')
        for b, (lab, m) in enumerate(zip(gt_labels, gt_masks)):
            if m.ndim != 3 or m.shape[0] != lab.numel() or m.shape[-2:] != masks.shape[-2:]:
                raise ValueError(f'gt_masks[{b}] has shape {tuple(m.shape)}: expected '
                                 f'[{lab.numel()} (gt_labels[{b}]), {masks.shape[-2]}, '
                                 f'{masks.shape[-1]}] (the mask logits\' size)')
            if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= self.num_classes):
                raise ValueError(f'gt_labels[{b}] must lie in [0, {self.num_classes}), got '
                                 f'{lab.tolist()}')
        if self.weight_dict['loss_pixel_insdis'] > 0 and 'pixel_features' not in outputs:
            raise ValueError('insdis_weight > 0 needs outputs["pixel_features"] (the predictor\'s '
                             'pixel embeddings, KMaX.forward_train)')
        if self.uses_aux_semantic:
            if outputs.get('aux_semantic') is None:
                raise ValueError('aux_semantic_weight > 0 needs outputs["aux_semantic"]: build the '
                                 'model with aux_semantic_head=True, or set the weight to 0')
            if gt_semantic is None:
                raise ValueError('aux_semantic_weight > 0 needs gt_semantic maps')
            sem = outputs['aux_semantic']
            if sem.shape[1] != self.num_classes + 1:
                raise ValueError(f'aux_semantic logits have {sem.shape[1]} channels; expected '
                                 f'num_classes + 1 = {self.num_classes + 1}')

    def forward(self, outputs: dict, gt_labels: Sequence[torch.Tensor],
                gt_masks: Sequence[torch.Tensor], gt_semantic: torch.Tensor | None = None
                ) -> dict:
        """Weighted losses of all predictions.

        Args:
            outputs: ``class_logits`` (list of ``[B, Q, K+1]``), ``mask_logits`` (list of
                ``[B, Q, H, W]``), ``pixel_features`` (list of ``[B, C, H, W]``), final
                prediction last, and ``aux_semantic`` (``[B, K+1, h, w]``) as
                :meth:`densekit.models.heads.kmax_deeplab.KMaX.forward_train` returns them.
            gt_labels: per image ``[M]`` classes.
            gt_masks: per image ``[M, H, W]`` non-overlapping binary segment masks at the mask
                logits' size.
            gt_semantic: ``[B, H, W]`` classes, ``semantic_ignore_index`` where void (needed
                with the auxiliary semantic loss).

        Returns:
            ``{'loss_ce': ..., 'loss_mask': ..., 'loss_dice': ..., 'loss_pixel_insdis': ...,
            'loss_aux_semantic': ...}`` for the final prediction and the same with suffix
            ``_{i}`` for intermediate prediction ``i``, each multiplied by its weight.
        """
        self._check(outputs, gt_labels, gt_masks, gt_semantic)
        classes = [c.float() for c in outputs['class_logits']]
        masks = [m.float() for m in outputs['mask_logits']]
        pixels = [None if p is None else p.float()
                  for p in outputs.get('pixel_features', [None] * len(classes))]
        gt_masks = [m.float() for m in gt_masks]
        targets = self.build_targets(classes[-1], masks[-1], gt_labels, gt_masks,
                                     self.match(classes[-1], masks[-1], gt_labels, gt_masks))
        w = self.weight_dict
        losses = self._prediction_losses(classes[-1], masks[-1], pixels[-1], targets, '')
        if self.uses_aux_semantic:
            sem = gt_semantic.long().clone()
            sem[sem == self.semantic_ignore_index] = self.num_classes
            losses['loss_aux_semantic'] = w['loss_aux_semantic'] * self.loss_aux_semantic(
                outputs['aux_semantic'].float(), sem, targets)
        if self.deep_supervision:
            for i in range(len(classes) - 1):
                if not self.share_final_matching:
                    targets = self.build_targets(
                        classes[i], masks[i], gt_labels, gt_masks,
                        self.match(classes[i], masks[i], gt_labels, gt_masks))
                losses.update(self._prediction_losses(classes[i], masks[i], pixels[i], targets,
                                                      f'_{i}'))
        return losses

    def _prediction_losses(self, class_logits, mask_logits, pixel_features, targets,
                           suffix: str) -> dict:
        w = self.weight_dict
        out = {f'loss_ce{suffix}': w['loss_ce'] * self.loss_class(class_logits, targets),
               f'loss_mask{suffix}': w['loss_mask'] * self.loss_mask_id(mask_logits, targets),
               f'loss_dice{suffix}': w['loss_dice'] * self.loss_dice(mask_logits, targets)}
        if w['loss_pixel_insdis'] > 0:
            out[f'loss_pixel_insdis{suffix}'] = w['loss_pixel_insdis'] * self.loss_pixel_insdis(
                pixel_features, targets)
        return out
