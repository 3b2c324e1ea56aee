"""kMaX-DeepLab's inference (densekit.models.heads.kmax_postprocess) against the official port.

The fixture ``tests/fixtures/heads/kmax_postprocess_official.pt`` was produced by
``tools/dev/make_kmax_postprocess_fixture.py`` from github.com/bytedance/kmax-deeplab's
``kmax_model.py`` (``panoptic_inference``, ``semantic_inference``, ``instance_inference`` and the
eval branch of ``forward``) on logits crafted so that each threshold rejects something (the script
checks that). Panoptic ids, segments and binary masks must be equal; float scores within 1e-6.
No official code runs here.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from densekit.models.heads.kmax_postprocess import (kmax_align_corners, kmax_crop_and_resize,
                                                    kmax_instance_inference,
                                                    kmax_panoptic_inference,
                                                    kmax_semantic_inference,
                                                    kmax_upsample_mask_logits)

FIXTURE = (Path(__file__).resolve().parents[1] / 'fixtures' / 'heads'
           / 'kmax_postprocess_official.pt')
TOL = 1e-6


@pytest.fixture(scope='module')
def fixture():
    return torch.load(FIXTURE, weights_only=False)


def _by_label_and_score(instances: dict) -> dict:
    """The official keeps its top-k unsorted: compare the two sets in one order."""
    key = instances['labels'].double() * 10 - instances['scores'].double()
    order = torch.argsort(key, stable=True)
    return {k: v[order] for k, v in instances.items()}


def assert_same_inference(official: dict, classes, masks, num_things: int, topk: int,
                          setting: dict) -> None:
    ids, segments = kmax_panoptic_inference(classes, masks, num_things_classes=num_things,
                                            **setting)
    assert segments == official['segments_info']
    assert torch.equal(ids, official['panoptic'])
    torch.testing.assert_close(kmax_semantic_inference(classes, masks), official['semantic'],
                               atol=TOL, rtol=0)
    ours = kmax_instance_inference(classes, masks, max_per_image=topk,
                                   num_things_classes=num_things,
                                   pixel_confidence_threshold=setting['pixel_confidence_threshold'])
    ours, theirs = _by_label_and_score(ours), _by_label_and_score(official['instances'])
    assert torch.equal(ours['labels'], theirs['labels'])
    assert torch.equal(ours['masks'], theirs['masks'])
    torch.testing.assert_close(ours['scores'], theirs['scores'], atol=TOL, rtol=0)


@pytest.mark.parametrize('setting', ['coco', 'cityscapes'])
def test_official_inference_parity(fixture, setting):
    inputs = fixture['direct_inputs']
    assert_same_inference(fixture['direct'][setting], inputs['classes'], inputs['masks'],
                          fixture['num_things_classes'], fixture['topk'],
                          fixture['settings'][setting])


@pytest.mark.parametrize('case', ['odd', 'even'])
def test_official_resizing_and_inference_parity(fixture, case):
    """Stride-4 logits -> padded input (align_corners when the padded width is odd) -> crop to
    the resized image -> original size -> inference, as the official eval forward."""
    f = fixture['forward'][case]
    assert kmax_align_corners(f['padded'][1]) == (case == 'odd')
    masks = kmax_upsample_mask_logits(f['masks'][None], f['padded'])[0]
    masks = kmax_crop_and_resize(masks, f['resized'], f['original'],
                                 kmax_align_corners(f['padded'][1]))
    assert_same_inference(f, f['classes'], masks, fixture['num_things_classes'], fixture['topk'],
                          fixture['settings']['coco'])


def test_panoptic_rules_on_a_hand_made_case():
    """Three queries on a 1 x 4 strip, in the order the reorder score visits them: a thing (0)
    on pixels 0-1, a second thing (0) over pixels 1-2 that keeps only half of its mask, a stuff
    query of class 1 on pixel 3 at class score 0.6 (over the stuff threshold, under the thing
    one)."""
    big, small = 8.0, -8.0
    masks = torch.full((3, 1, 4), small)
    masks[0, 0, :2] = big
    masks[1, 0, 1:3] = big  # pixel 1: queries 0 and 1 share it, 0.5 each > 0.4
    masks[2, 0, 3] = big
    probs = torch.tensor([[0.95, 0.03, 0.02], [0.90, 0.05, 0.05], [0.2, 0.6, 0.2]])
    ids, segments = kmax_panoptic_inference(probs.log(), masks, num_things_classes=1)
    assert segments == [dict(id=1, isthing=True, category_id=0),
                        dict(id=2, isthing=False, category_id=1)]
    assert ids.tolist() == [[1, 1, 0, 2]]  # query 1 rejected: 1 of its 2 pixels is free
    ids, segments = kmax_panoptic_inference(probs.log(), masks, num_things_classes=1,
                                            overlap_threshold=0.4)
    assert ids.tolist() == [[1, 1, 2, 3]] and segments[1] == dict(id=2, isthing=True,
                                                                  category_id=0)


def test_bad_arguments_name_the_argument():
    classes, masks = torch.zeros(3, 4), torch.zeros(3, 5, 6)
    with pytest.raises(ValueError, match='overlap_threshold'):
        kmax_panoptic_inference(classes, masks, num_things_classes=1, overlap_threshold=1.5)
    with pytest.raises(ValueError, match='num_things_classes'):
        kmax_panoptic_inference(classes, masks, num_things_classes=4)
    with pytest.raises(ValueError, match='mask_logits'):
        kmax_semantic_inference(classes, masks[:2])
    with pytest.raises(ValueError, match='max_per_image'):
        kmax_instance_inference(classes, masks, max_per_image=0)
