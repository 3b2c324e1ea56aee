"""kMaX-DeepLab's own inference: panoptic, semantic and instance results from the class and mask
logits of the final prediction.

Yu et al., "k-means Mask Transformer", ECCV 2022 (arXiv:2207.04044); the rules are those of the
PyTorch port github.com/bytedance/kmax-deeplab (``kmax_deeplab/kmax_model.py``: the eval branch
of ``kMaXDeepLab.forward``, ``panoptic_inference``, ``semantic_inference``,
``instance_inference``), which follow deeplab2's MaX-DeepLab post-processor. Unlike MaskFormer's
inference (sigmoid masks scored by the class probability), kMaX's masks are a softmax over the
queries (every pixel belongs to one cluster centre) and the void class is dropped before the
class maximum:

* Panoptic: a query's class is the arg-max of its class probabilities without void; its binary
  mask is where its mask probability exceeds the pixel-confidence threshold (0.4). Queries are
  visited by ``class_score ** reorder_class_weight * mask_score ** reorder_mask_weight`` (the
  mask score: the mean mask probability over its binary mask), highest first; a query becomes a
  segment when its class score exceeds the thing (0.7) or stuff (0.5) class threshold and the
  pixels of its mask that no earlier segment took are more than ``overlap_threshold`` (0.8) of
  its mask; it takes only those pixels. Stuff queries of a class already segmented add their
  pixels to that segment.
* Semantic: per-class probability ``sum_q p(class | q) * p(q | pixel)`` (void dropped).
* Instance: the top ``max_per_image`` (query, class) pairs by class probability (things only
  where ``num_things_classes`` is given, as the official does with panoptic inference on),
  binary masks by the pixel-confidence threshold, score = class probability x mean mask
  probability over the binary mask.
* Resizing: the stride-4 mask logits are upsampled bilinearly to the padded input, with
  ``align_corners=True`` when the padded width is odd (the official 1281-pixel crops, whose
  stride-4 maps are ``(side - 1) / 4 + 1`` wide: the corners line up), else ``False``; then
  cropped to the image's valid region and resized to the output size with the same rule.

Tensor layouts: class logits ``[Q, K + 1]`` (last: void), mask logits ``[Q, H, W]``. The
functions are the official ones' semantics, written here in plain PyTorch;
``tests/models/test_kmax_postprocess.py`` checks them against a fixture of the official outputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ['kmax_align_corners', 'kmax_upsample_mask_logits', 'kmax_crop_and_resize',
           'kmax_panoptic_inference', 'kmax_semantic_inference', 'kmax_instance_inference']


def _check_logits(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> None:
    if class_logits.dim() != 2 or class_logits.shape[1] < 2:
        raise ValueError(f'class_logits must be [Q, K + 1] with K >= 1, got '
                         f'{tuple(class_logits.shape)}')
    if mask_logits.dim() != 3 or mask_logits.shape[0] != class_logits.shape[0]:
        raise ValueError(f'mask_logits must be [Q, H, W] with Q = {class_logits.shape[0]} '
                         f'(class_logits {tuple(class_logits.shape)}), got '
                         f'{tuple(mask_logits.shape)}')


def _check_fraction(**values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f'{name} must be in [0, 1], got {value!r}')


def kmax_align_corners(padded_width: int) -> bool:
    """The official resizing rule: ``align_corners`` when the padded input width is odd."""
    return int(padded_width) % 2 == 1


def kmax_upsample_mask_logits(mask_logits: torch.Tensor,
                              padded_shape: tuple[int, int]) -> torch.Tensor:
    """Mask logits ``[B, Q, h, w]`` resized bilinearly to the padded input ``(H, W)`` with the
    official ``align_corners`` rule (:func:`kmax_align_corners`)."""
    if mask_logits.dim() != 4:
        raise ValueError(f'mask_logits must be [B, Q, h, w], got {tuple(mask_logits.shape)}')
    h, w = (int(s) for s in padded_shape)
    return F.interpolate(mask_logits, size=(h, w), mode='bilinear',
                         align_corners=kmax_align_corners(w))


def kmax_crop_and_resize(mask_logits: torch.Tensor, valid_shape: tuple[int, int],
                         output_shape: tuple[int, int] | None,
                         align_corners: bool) -> torch.Tensor:
    """One image's mask logits ``[Q, H, W]`` at the padded size, cropped to the image's valid
    (unpadded) region ``valid_shape`` and, when ``output_shape`` is given, resized bilinearly to
    it (the original image size) with ``align_corners`` (the rule of the first upsampling)."""
    h, w = (int(s) for s in valid_shape)
    cropped = mask_logits[:, :h, :w]
    if output_shape is None:
        return cropped
    return F.interpolate(cropped[None], size=tuple(int(s) for s in output_shape),
                         mode='bilinear', align_corners=align_corners)[0]


def kmax_semantic_inference(class_logits: torch.Tensor,
                            mask_logits: torch.Tensor) -> torch.Tensor:
    """Per-class probabilities ``[K, H, W]``: class probabilities (void dropped after the
    softmax) weighted by the mask probabilities (softmax over the queries)."""
    _check_logits(class_logits, mask_logits)
    class_probs = F.softmax(class_logits, dim=-1)[..., :-1]
    mask_probs = F.softmax(mask_logits, dim=0)
    return torch.einsum('qc,qhw->chw', class_probs, mask_probs)


def _query_scores(class_logits, mask_logits, pixel_confidence_threshold):
    """Class score and label (void dropped), mask probabilities and binary masks."""
    class_scores, labels = F.softmax(class_logits, dim=-1)[..., :-1].max(-1)
    mask_probs = F.softmax(mask_logits, dim=0)
    binary = mask_probs > pixel_confidence_threshold
    return class_scores, labels, mask_probs, binary


def kmax_panoptic_inference(
        class_logits: torch.Tensor, mask_logits: torch.Tensor, *, num_things_classes: int,
        pixel_confidence_threshold: float = 0.4, class_threshold_thing: float = 0.7,
        class_threshold_stuff: float = 0.5, overlap_threshold: float = 0.8,
        reorder_class_weight: float = 1.0,
        reorder_mask_weight: float = 1.0) -> tuple[torch.Tensor, list[dict]]:
    """The official panoptic inference (module docstring); defaults: the official COCO values.

    Args:
        class_logits: ``[Q, K + 1]``, the last class void.
        mask_logits: ``[Q, H, W]`` at the output size.
        num_things_classes: labels below it are things, the others stuff.
        pixel_confidence_threshold: a pixel is in a query's mask above this mask probability.
        class_threshold_thing, class_threshold_stuff: a query becomes a segment above these
            class scores.
        overlap_threshold: the pixels a query may take (not taken by a better query) must be more
            than this fraction of its mask.
        reorder_class_weight, reorder_mask_weight: exponents of the class and mask scores in the
            order the queries are visited.

    Returns:
        ``(ids, segments_info)``: ``ids`` ``[H, W]`` int32, 0 where no segment; one dict per
        segment with ``id`` (1, 2, ... in order of creation), ``category_id`` (the label) and
        ``isthing``.
    """
    _check_logits(class_logits, mask_logits)
    _check_fraction(pixel_confidence_threshold=pixel_confidence_threshold,
                    class_threshold_thing=class_threshold_thing,
                    class_threshold_stuff=class_threshold_stuff,
                    overlap_threshold=overlap_threshold)
    num_classes = class_logits.shape[1] - 1
    if not 0 <= int(num_things_classes) <= num_classes:
        raise ValueError(f'num_things_classes must be in [0, {num_classes}] (class_logits '
                         f'{tuple(class_logits.shape)}), got {num_things_classes!r}')
    class_scores, labels, mask_probs, binary = _query_scores(class_logits, mask_logits,
                                                             pixel_confidence_threshold)
    binary_flat = binary.flatten(1).float()
    areas = binary_flat.sum(1)
    mask_scores = (mask_probs.flatten(1) * binary_flat).sum(1) / torch.clamp(areas, min=1.0)
    order = torch.argsort(class_scores ** reorder_class_weight
                          * mask_scores ** reorder_mask_weight, descending=True, stable=True)

    ids = torch.zeros(mask_logits.shape[1:], dtype=torch.int32, device=mask_logits.device)
    segments_info: list[dict] = []
    stuff_segment: dict[int, int] = {}  # label -> id of the segment its stuff queries share
    scores_list, labels_list = class_scores.tolist(), labels.tolist()
    for q in order.tolist():
        label = labels_list[q]
        is_thing = label < num_things_classes
        if not scores_list[q] > (class_threshold_thing if is_thing else class_threshold_stuff):
            continue
        free = binary[q] & (ids == 0)
        # float32 counts and product, as the official: the comparison at the boundary matches
        if not bool(free.float().sum() > areas[q] * overlap_threshold):
            continue
        if not is_thing and label in stuff_segment:
            ids[free] = stuff_segment[label]
            continue
        segment_id = len(segments_info) + 1
        if not is_thing:
            stuff_segment[label] = segment_id
        ids[free] = segment_id
        segments_info.append(dict(id=segment_id, isthing=is_thing, category_id=int(label)))
    return ids, segments_info


def kmax_instance_inference(
        class_logits: torch.Tensor, mask_logits: torch.Tensor, *, max_per_image: int = 100,
        pixel_confidence_threshold: float = 0.4,
        num_things_classes: int | None = None) -> dict[str, torch.Tensor]:
    """The official instance inference (module docstring).

    The official keeps the top-k (query, class) pairs unsorted; here they come sorted by class
    probability (the same set), and ``max_per_image`` is capped at ``Q * K`` pairs (the
    official's ``topk`` fails beyond).

    Args:
        class_logits: ``[Q, K + 1]``, the last class void.
        mask_logits: ``[Q, H, W]`` at the output size.
        max_per_image: pairs kept before the thing filter (the official 100).
        pixel_confidence_threshold: binary masks above this mask probability.
        num_things_classes: when given, pairs of labels >= it (stuff) are dropped.

    Returns:
        ``masks`` ``[N, H, W]`` bool, ``scores`` ``[N]``, ``labels`` ``[N]`` int64.
    """
    _check_logits(class_logits, mask_logits)
    _check_fraction(pixel_confidence_threshold=pixel_confidence_threshold)
    if int(max_per_image) < 1:
        raise ValueError(f'max_per_image must be >= 1, got {max_per_image!r}')
    num_queries, num_classes = class_logits.shape[0], class_logits.shape[1] - 1
    mask_probs = F.softmax(mask_logits, dim=0)
    class_probs = F.softmax(class_logits, dim=-1)[:, :-1]
    k = min(int(max_per_image), num_queries * num_classes)
    scores, pairs = class_probs.flatten().topk(k, sorted=True)
    labels = pairs % num_classes
    mask_probs = mask_probs[pairs // num_classes]
    if num_things_classes is not None:
        keep = labels < num_things_classes
        scores, labels, mask_probs = scores[keep], labels[keep], mask_probs[keep]
    binary = (mask_probs > pixel_confidence_threshold).float()
    mask_scores = ((mask_probs.flatten(1) * binary.flatten(1)).sum(1)
                   / (binary.flatten(1).sum(1) + 1e-6))
    return dict(masks=binary.bool(), scores=scores * mask_scores, labels=labels)
