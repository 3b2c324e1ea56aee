"""Freeze the parity fixture of kMaX-DeepLab's inference from the OFFICIAL PyTorch port.

Runs ``kmax_deeplab/kmax_model.py`` of https://github.com/bytedance/kmax-deeplab (imported as is
from a local clone) on crafted logits and keeps its outputs:

* ``direct``: its ``panoptic_inference``, ``semantic_inference`` and ``instance_inference`` on
  logits at the output size, with the COCO test settings (``configs/coco/.../kmax_r50.yaml``:
  pixel confidence 0.4, class thresholds thing 0.7 / stuff 0.5, overlap 0.8, reorder weights
  1 / 1) and the Cityscapes ones (0.4, 0.5 / 0.3, 0.9, 1 / 0);
* ``forward``: the eval branch of ``kMaXDeepLab.forward`` end to end (upsampling of the stride-4
  mask logits to the padded input with ``align_corners`` when its width is odd, cropping to the
  image, resizing to the original size, then the three inferences), on a padded input of odd
  width (65 x 65, align_corners) and of even width (64 x 80), with stand-ins for the backbone and
  head that return the crafted logits.

The logits are crafted so that every rule decides something (the script checks and prints it):
a query whose mask never exceeds the pixel confidence, thing queries under the thing threshold
but over the stuff one, a stuff query under both, a query rejected because a better one took too
much of its mask, two stuff queries of one class merged into one segment, and thing instances of
one class. Classes: 4 things, 3 stuff (+ void), 12 queries. The fixture stores the inputs (a few
KiB) and the outputs; ``tests/models/test_kmax_postprocess.py`` and
``tests/mm/test_kmax_deeplab_mm.py`` compare densekit's inference with them.

Nothing of the official code is copied here. Its detectron2 imports are replaced by stand-ins:
``configurable`` and the registries are inert, ``ImageList.from_tensors`` stacks the (already
padded) images, ``Instances`` / ``Boxes`` hold attributes, ``retry_if_cuda_oom`` calls through;
the criterion and matcher modules (training only) are empty.

Usage::

    python tools/dev/make_kmax_postprocess_fixture.py --official /path/to/kmax-deeplab \
        --out tests/fixtures/heads/kmax_postprocess_official.pt
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn

from official_fixture import install_stand_ins  # tools/dev, beside this script

NUM_THINGS, NUM_STUFF, NUM_QUERIES = 4, 3, 12
NUM_CLASSES = NUM_THINGS + NUM_STUFF
SETTINGS = {
    'coco': dict(pixel_confidence_threshold=0.4, class_threshold_thing=0.7,
                 class_threshold_stuff=0.5, overlap_threshold=0.8, reorder_class_weight=1.0,
                 reorder_mask_weight=1.0),
    'cityscapes': dict(pixel_confidence_threshold=0.4, class_threshold_thing=0.5,
                       class_threshold_stuff=0.3, overlap_threshold=0.9,
                       reorder_class_weight=1.0, reorder_mask_weight=0.0),
}
TOPK = 20  # the official DETECTIONS_PER_IMAGE (100) is more than the 84 (query, class) pairs
DIRECT_SIZE = (24, 32)
# (padded input, resized image (the official round(side * max(padded) / max(original))),
# original image): odd padded width (align_corners) and even
FORWARD_CASES = {'odd': ((65, 65), (48, 65), (37, 50)), 'even': ((64, 80), (48, 80), (30, 50))}

# query -> (label, class probability, mask region as fractions (top, bottom, left, right) or None)
QUERIES = [
    (0, 0.95, (0.05, 0.45, 0.05, 0.40)),   # thing, kept
    (1, 0.92, (0.12, 0.47, 0.12, 0.43)),   # thing: most of its mask taken by query 0
    (2, 0.60, (0.58, 0.85, 0.05, 0.30)),   # thing under 0.7, over 0.5 (Cityscapes keeps it)
    (4, 0.60, (0.58, 0.95, 0.36, 0.62)),   # stuff over 0.5 ...
    (4, 0.85, (0.58, 0.95, 0.68, 0.95)),   # ... and a second query of the same stuff class
    (5, 0.42, (0.05, 0.30, 0.48, 0.95)),   # stuff under 0.5, over 0.3 (Cityscapes keeps it)
    (3, 0.97, None),                       # confident thing whose mask never passes 0.4
    (0, 0.88, (0.05, 0.30, 0.70, 0.95)),   # a second instance of thing class 0
    (6, 0.20, (0.35, 0.55, 0.48, 0.68)),   # stuff under both thresholds
    (7, 0.90, None),                       # void
    (7, 0.80, None),
    (1, 0.30, (0.85, 1.00, 0.00, 0.20)),   # thing under both thresholds
]


def crafted_logits(size: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class logits ``[Q, K + 1]`` and mask logits ``[Q, H, W]`` as :data:`QUERIES` says."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    masks = 0.5 * torch.randn((NUM_QUERIES, h, w), generator=gen)
    classes = torch.empty(NUM_QUERIES, NUM_CLASSES + 1)
    for q, (label, prob, region) in enumerate(QUERIES):
        rest = torch.rand(NUM_CLASSES + 1, generator=gen) + 0.1
        rest[label] = 0.0
        # the remaining mass spread so that no other class outscores the label
        probs = rest / rest.sum() * (1.0 - prob)
        probs[label] = prob
        classes[q] = probs.log()
        if region is not None:
            t, b, l, r = region
            masks[q, math.floor(t * h):math.ceil(b * h), math.floor(l * w):math.ceil(r * w)] += 6.0
    return classes, masks


def _install_import_stand_ins() -> None:
    class _Registry:
        def register(self, obj=None):
            return obj if obj is not None else (lambda o: o)

    class _ImageList:
        def __init__(self, tensor, image_sizes):
            self.tensor, self.image_sizes = tensor, image_sizes

        @staticmethod
        def from_tensors(tensors, size_divisibility=-1):
            return _ImageList(torch.stack(tensors), [tuple(t.shape[-2:]) for t in tensors])

    class _Instances:
        def __init__(self, image_size):
            self.image_size = image_size

    class _Boxes:
        def __init__(self, tensor):
            self.tensor = tensor

    modules = {
        'detectron2': {}, 'detectron2.config': {'configurable': lambda f: f},
        'detectron2.data': {'MetadataCatalog': None},
        'detectron2.modeling': {'META_ARCH_REGISTRY': _Registry(), 'build_backbone': None,
                                'build_sem_seg_head': None},
        'detectron2.modeling.backbone': {'Backbone': nn.Module},
        'detectron2.modeling.postprocessing': {'sem_seg_postprocess': None},
        'detectron2.structures': {'Boxes': _Boxes, 'ImageList': _ImageList,
                                  'Instances': _Instances},
        'detectron2.utils': {}, 'detectron2.utils.memory': {'retry_if_cuda_oom': lambda f: f},
        'kmax_official': {}, 'kmax_official.modeling': {},
        'kmax_official.modeling.criterion': {'SetCriterion': None},
        'kmax_official.modeling.matcher': {'HungarianMatcher': None},
    }
    install_stand_ins(modules)


def load_official(official: Path):
    _install_import_stand_ins()
    name = 'kmax_official.kmax_model'
    spec = importlib.util.spec_from_file_location(name, official / 'kmax_deeplab' / 'kmax_model.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.kMaXDeepLab


class _FixedHead(nn.Module):
    """Stands in for the backbone + kMaX head: returns the given logits."""

    def __init__(self, classes, masks):
        super().__init__()
        self.classes, self.masks, self.num_classes = classes, masks, NUM_CLASSES

    def forward(self, features):
        return dict(pred_logits=self.classes, pred_masks=self.masks)


def official_model(kMaXDeepLab, setting: dict, head: nn.Module | None = None,
                   input_shape=(1, 1), panoptic=True, semantic=True, instance=True):
    metadata = types.SimpleNamespace(
        thing_dataset_id_to_contiguous_id={100 + i: i for i in range(NUM_THINGS)})
    return kMaXDeepLab(
        backbone=nn.Identity(), sem_seg_head=head or _FixedHead(None, None), criterion=None,
        num_queries=NUM_QUERIES, metadata=metadata, size_divisibility=0,
        sem_seg_postprocess_before_inference=True, pixel_mean=[127.5] * 3,
        pixel_std=[127.5] * 3, semantic_on=semantic, panoptic_on=panoptic,
        instance_on=instance, test_topk_per_image=TOPK, input_shape=list(input_shape),
        channel_last_format=False, **setting).eval()


def _instances(result) -> dict:
    return dict(masks=result.pred_masks.bool(), scores=result.scores.clone(),
                labels=result.pred_classes.clone())


def _describe(classes, masks, setting, pan, segments) -> dict:
    """What each rule decided (an independent count, to check that the crafting works)."""
    probs = classes.softmax(-1)[:, :-1]
    score, label = probs.max(-1)
    binary = masks.softmax(0) > setting['pixel_confidence_threshold']
    area = binary.flatten(1).sum(1)
    thing = label < NUM_THINGS
    thr = torch.where(thing, torch.tensor(setting['class_threshold_thing']),
                      torch.tensor(setting['class_threshold_stuff']))
    return dict(
        empty_masks=int(((area == 0) & (score > thr)).sum()),
        thing_under_thing_threshold=int((thing & (score <= thr)
                                         & (score > setting['class_threshold_stuff'])).sum()),
        under_class_threshold=int(((score <= thr) & (area > 0)).sum()),
        segments=len(segments),
        # a confident query with a mask would take all its still-free pixels: one whose mask
        # has void pixels left was rejected by the overlap rule
        overlap_rejected=int(sum(
            1 for q in range(NUM_QUERIES)
            if score[q] > thr[q] and area[q] > 0 and bool((pan[binary[q]] == 0).any()))),
        stuff_queries_per_segment=max(
            [int(((label == s['category_id']) & (score > thr) & (area > 0)).sum())
             for s in segments if not s['isthing']] or [0]),
        things=sum(s['isthing'] for s in segments))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True,
                        help='clone of bytedance/kmax-deeplab')
    parser.add_argument('--out', type=Path,
                        default=Path('tests/fixtures/heads/kmax_postprocess_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    kMaXDeepLab = load_official(args.official)

    fixture = dict(num_things_classes=NUM_THINGS, num_stuff_classes=NUM_STUFF, topk=TOPK,
                   settings=SETTINGS, direct={}, forward={})
    classes, masks = crafted_logits(DIRECT_SIZE, args.seed)
    fixture['direct_inputs'] = dict(classes=classes, masks=masks)
    with torch.no_grad():
        for name, setting in SETTINGS.items():
            model = official_model(kMaXDeepLab, setting)
            pan, segments = model.panoptic_inference(classes, masks)
            fixture['direct'][name] = dict(
                panoptic=pan.clone(), segments_info=segments,
                semantic=model.semantic_inference(classes, masks).clone(),
                instances=_instances(model.instance_inference(classes, masks)))
            decided = _describe(classes, masks, setting, pan, segments)
            print(name, 'direct:', decided)
            if name == 'coco':
                rules = ('empty_masks', 'thing_under_thing_threshold', 'under_class_threshold',
                         'overlap_rejected')
                assert all(decided[k] >= 1 for k in rules), decided
                assert decided['stuff_queries_per_segment'] >= 2 and decided['things'] >= 2, decided

        for case, (padded, resized, original) in FORWARD_CASES.items():
            h, w = (padded[0] - 1) // 4 + 1, (padded[1] - 1) // 4 + 1
            cls4, masks4 = crafted_logits((h, w), args.seed + 1)
            head = _FixedHead(cls4[None], masks4[None])
            model = official_model(kMaXDeepLab, SETTINGS['coco'], head, padded)
            image = torch.zeros((3, *resized), dtype=torch.uint8)
            out = model([dict(image=image, height=original[0], width=original[1])])[0]
            pan, segments = out['panoptic_seg']
            fixture['forward'][case] = dict(
                padded=padded, resized=resized, original=original, classes=cls4, masks=masks4,
                panoptic=pan.clone(), segments_info=segments, semantic=out['sem_seg'].clone(),
                instances=_instances(out['instances']))
            print(case, 'forward:', tuple(pan.shape), segments)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print('wrote', args.out, args.out.stat().st_size // 1024, 'KiB')


if __name__ == '__main__':
    main()
