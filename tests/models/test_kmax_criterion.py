"""kMaX-DeepLab's losses (densekit.models.heads.kmax_criterion) and auxiliary semantic head
against the official PyTorch port.

The fixture ``tests/fixtures/heads/kmax_criterion_official.pt`` was produced by
``tools/dev/make_kmax_criterion_fixture.py`` from github.com/bytedance/kmax-deeplab's
``SetCriterion`` + ``HungarianMatcher`` (official COCO weights, shared final matching) on the
random predictions and targets that ``criterion_inputs`` redraws here, and from its
``SemanticPredictor`` (random weights, eval mode). The official pixel sampling was recorded;
here the same indices are replayed. No official code runs here.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from densekit.models.heads.kmax_criterion import (KMaXCriterion, gumbel_topk,
                                                  kmax_hungarian_match, semantic_from_panoptic)
from densekit.models.heads.kmax_deeplab import (KMaX, KMaXSemanticPredictor,
                                                convert_official_kmax_deeplab)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'tools' / 'dev'))
from official_fixture import regenerate_state_dict  # noqa: E402  (tools/dev)
from make_kmax_criterion_fixture import (criterion_inputs,  # noqa: E402  (imports no official code)
                                         semantic_head_inputs)

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'heads' / 'kmax_criterion_official.pt'
TOL = 1e-5  # fp32, relative to each term's scale


@pytest.fixture(scope='module')
def fixture():
    return torch.load(FIXTURE, weights_only=False)


class _Replay:
    """Gives back the official sampler's indices call by call, after checking that the
    sampling logits (segment areas, void masking, temperature) are the official ones."""

    def __init__(self, calls):
        self.calls = list(calls)

    def __call__(self, logits, k):
        call = self.calls.pop(0)
        assert call['index'].shape[-1] == k
        torch.testing.assert_close(logits, call['logits'], atol=1e-4, rtol=1e-6)
        return call['index']


def _criterion(fixture, **kwargs) -> KMaXCriterion:
    return KMaXCriterion(fixture['num_classes'], **fixture['weights'], no_object_weight=1e-5,
                         pixel_insdis_sample_k=fixture['sample_k'],
                         aux_semantic_sample_k=fixture['aux_sample_k'], **kwargs)


def _semantic(inputs) -> torch.Tensor:
    return torch.stack([semantic_from_panoptic(lab, m) for lab, m in
                        zip(inputs['gt_labels'], inputs['gt_masks'])])


def test_official_criterion_parity(fixture):
    """Every weighted loss term, the matching and the gradients of the summed loss with respect
    to every prediction equal the official ones (fp32)."""
    inputs = criterion_inputs(fixture['seed'])
    replay = _Replay(fixture['sampling_calls'])
    criterion = _criterion(fixture, pixel_sampler=replay)
    for b, (rows, cols, dice, prob) in enumerate(criterion.match(
            inputs['class_logits'][-1], inputs['mask_logits'][-1], inputs['gt_labels'],
            inputs['gt_masks'])):
        ref_rows, ref_cols = fixture['indices'][b]
        assert rows.tolist() == ref_rows.tolist() and cols.tolist() == ref_cols.tolist()
        torch.testing.assert_close(dice, fixture['matched_dice'][b], atol=1e-6, rtol=0)
        torch.testing.assert_close(prob, fixture['matched_cls_prob'][b], atol=1e-6, rtol=0)
    losses = criterion(inputs, inputs['gt_labels'], inputs['gt_masks'], _semantic(inputs))
    assert not replay.calls, 'fewer sampling calls than the official'
    assert sorted(losses) == sorted(fixture['losses'])
    for key, ref in fixture['losses'].items():
        torch.testing.assert_close(losses[key].detach(), ref, atol=TOL * float(ref.abs()), rtol=0,
                                   msg=key)
    sum(losses.values()).backward()
    for key in ('class_logits', 'mask_logits', 'pixel_features'):
        for i, (t, ref) in enumerate(zip(inputs[key], fixture['grads'][key])):
            torch.testing.assert_close(t.grad, ref, atol=TOL * float(ref.abs().max()), rtol=0,
                                       msg=f'{key}[{i}]')
    ref = fixture['grads']['aux_semantic']
    torch.testing.assert_close(inputs['aux_semantic'].grad, ref,
                               atol=TOL * float(ref.abs().max()), rtol=0)


def test_official_semantic_head_parity(fixture):
    """The official auxiliary semantic head's weights convert onto KMaXSemanticPredictor (all
    keys, strict) and give its output (eval mode)."""
    head = fixture['semantic_head']
    official = regenerate_state_dict(head['spec'], head['seed'])
    prefix = 'sem_seg_head.predictor._auxiliary_semantic_predictor.'
    state = convert_official_kmax_deeplab({prefix + k: v for k, v in official.items()}, prefix='')
    sub = 'transformer_decoder.auxiliary_semantic_predictor.'
    assert all(k.startswith(sub) for k in state) and len(state) == len(official)
    model = KMaXSemanticPredictor(head['channels'], head['num_classes'])
    model.load_state_dict({k[len(sub):]: v for k, v in state.items()}, strict=True)
    model.eval()
    with torch.no_grad():
        out = model(*semantic_head_inputs(head['input_seed']))
    ref = head['out']
    torch.testing.assert_close(out, ref, atol=1e-5 * float(ref.abs().max()), rtol=0)
    assert not convert_official_kmax_deeplab({prefix + k: v for k, v in official.items()},
                                             aux_semantic_head=False)


def test_per_prediction_matching_equals_each_prediction_alone(fixture):
    """``share_final_matching=False``: each intermediate prediction's losses are those of that
    prediction scored alone (its own matching and targets)."""
    inputs = criterion_inputs(fixture['seed'])
    semantic = _semantic(inputs)

    def top(logits, k):  # deterministic sampling: the k largest logits
        return logits.topk(k, dim=-1).indices

    losses = _criterion(fixture, share_final_matching=False, pixel_sampler=top)(
        inputs, inputs['gt_labels'], inputs['gt_masks'], semantic)
    shared = _criterion(fixture, pixel_sampler=top)(inputs, inputs['gt_labels'],
                                                    inputs['gt_masks'], semantic)
    weights = fixture['weights'] | {'aux_semantic_weight': 0.0}
    alone = KMaXCriterion(fixture['num_classes'], **weights, deep_supervision=False,
                          pixel_insdis_sample_k=fixture['sample_k'], pixel_sampler=top)
    for i in range(len(inputs['class_logits']) - 1):
        single = {k: [v[i]] for k, v in inputs.items() if k not in ('gt_labels', 'gt_masks',
                                                                     'aux_semantic')}
        ref = alone(single, inputs['gt_labels'], inputs['gt_masks'])
        for key, value in ref.items():
            torch.testing.assert_close(losses[f'{key}_{i}'], value, atol=1e-6, rtol=0)
    assert any(not torch.allclose(losses[k], shared[k]) for k in losses if k.endswith('_0'))


def test_gumbel_topk_is_seeded_and_skips_masked_pixels():
    logits = torch.zeros(2, 50)
    logits[:, :10] = -99999.0
    a = gumbel_topk(logits, 20, torch.Generator().manual_seed(3))
    b = gumbel_topk(logits, 20, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert (a >= 10).all() and all(len(set(row.tolist())) == 20 for row in a)
    everything = gumbel_topk(logits, 4096)  # more than there are: each pixel once
    assert sorted(everything[0].tolist()) == list(range(50))


def test_matching_prefers_the_right_class_and_mask():
    """Query 2 predicts segment 0's mask and class, query 0 segment 1's: the PQ-style cost
    pairs them; the other queries stay unmatched."""
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2] = True
    masks[1, 2:] = True
    mask_logits = torch.zeros(3, 4, 4)
    mask_logits[2, :2] = 5.0
    mask_logits[0, 2:] = 5.0
    class_logits = torch.zeros(3, 4)
    class_logits[2, 1] = 4.0
    class_logits[0, 2] = 4.0
    rows, cols, dice, prob = kmax_hungarian_match(class_logits, mask_logits,
                                                  torch.tensor([1, 2]), masks)
    assert rows.tolist() == [0, 2] and cols.tolist() == [1, 0]
    assert (dice > 0.9).all() and (prob > 0.8).all()


def _tiny_kmax(num_classes=5, aux=True):
    return KMaX([8, 16, 24, 32], num_classes, num_queries=6, pixel_decoder_channels=(16, 16, 8, 8),
                pixel_decoder_layers=(1, 1, 1, 1), transformer_decoder_layers=(1, 1, 1),
                embed_dims=32, base_filters=16, num_heads=4, feedforward_channels=32,
                pixel_head_channels=16, mask_channels=8, aux_semantic_head=aux,
                aux_semantic_channels=16, aux_semantic_low_level_channels=(8, 8))


def _tiny_batch(size=(40, 48)):
    gen = torch.Generator().manual_seed(0)
    h, w = size
    feats = [torch.randn(2, c, h // s, w // s, generator=gen)
             for c, s in zip((8, 16, 24, 32), (4, 8, 16, 32))]
    hm, wm = h // 4, w // 4
    masks = torch.zeros(3, hm, wm, dtype=torch.bool)
    masks[0, : hm // 2] = True
    masks[1, hm // 2:, : wm // 2] = True
    masks[2, hm // 2:, wm // 2 + 2:] = True  # a void strip between segments 1 and 2
    labels = [torch.tensor([0, 3, 1]), torch.tensor([4, 2])]
    gt_masks = [masks, masks[[0, 1]]]
    semantic = torch.stack([semantic_from_panoptic(lab, m) for lab, m in zip(labels, gt_masks)])
    return feats, labels, gt_masks, semantic


def test_forward_train_feeds_the_criterion_and_every_loss_has_a_gradient():
    torch.manual_seed(0)
    model = _tiny_kmax()
    feats, labels, masks, semantic = _tiny_batch()
    out = model.forward_train(feats)
    assert len(out['pixel_features']) == 4
    assert all(p.shape == (2, 8) + masks[0].shape[-2:] for p in out['pixel_features'])
    assert out['aux_semantic'].shape == (2, 6) + masks[0].shape[-2:]
    criterion = KMaXCriterion(5, pixel_insdis_sample_k=64, aux_semantic_sample_k=64,
                              generator=torch.Generator().manual_seed(0))
    losses = criterion(out, labels, masks, semantic)
    assert len(losses) == 5 + 3 * 4
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    aux_head = model.transformer_decoder.auxiliary_semantic_predictor
    assert aux_head.final_conv.conv.weight.grad.abs().sum() > 0
    # the instance-discrimination loss reaches the final predictor's pixel head
    last = model.transformer_decoder.predictor.pixel_space_head_last_convbn
    assert last.conv.weight.grad.abs().sum() > 0
    classes, _ = model(feats)  # inference path: no auxiliary head, same predictions
    assert len(classes) == 4


def test_bad_inputs_name_the_problem():
    model = _tiny_kmax()
    feats, labels, masks, semantic = _tiny_batch()
    with torch.no_grad():
        out = model.forward_train(feats)
    with pytest.raises(ValueError, match='num_classes=7'):
        KMaXCriterion(7)(out, labels, masks, semantic)
    with pytest.raises(ValueError, match='needs gt_semantic'):
        KMaXCriterion(5)(out, labels, masks, None)
    with pytest.raises(ValueError, match='aux_semantic_head=True'):
        KMaXCriterion(5)({k: v for k, v in out.items() if k != 'aux_semantic'}, labels, masks,
                         semantic)
    with pytest.raises(ValueError, match=r'gt_masks\[1\] has shape'):
        KMaXCriterion(5)(out, labels, [masks[0], masks[1][:, :-1]], semantic)
    with pytest.raises(ValueError, match=r'gt_labels\[0\] must lie in \[0, 5\)'):
        KMaXCriterion(5)(out, [torch.tensor([0, 5, 1]), labels[1]], masks, semantic)
    # without the sampled losses, class and mask logits suffice
    plain = KMaXCriterion(5, insdis_weight=0.0, aux_semantic_weight=0.0)
    losses = plain({k: out[k] for k in ('class_logits', 'mask_logits')}, labels, masks)
    assert sorted(losses) == sorted(f'loss_{n}{s}' for n in ('ce', 'mask', 'dice')
                                    for s in ('', '_0', '_1', '_2'))
    with pytest.raises(ValueError, match='mask_weight must be >= 0'):
        KMaXCriterion(5, mask_weight=-1.0)
    with pytest.raises(ValueError, match='pixel_insdis_sample_k must be > 0'):
        KMaXCriterion(5, pixel_insdis_sample_k=0)


@pytest.mark.slow
def test_losses_decrease_when_overfitting_one_batch():
    """A tiny KMaX trained on one batch with kMaX's losses: the class loss halves, the mask-ID
    loss and the total fall. (The dice term is weighted by the matched class probability and
    grows as the classes are learnt; instance discrimination has a floor near
    ``log(segment pixels sampled)``.)"""
    torch.manual_seed(0)
    model = _tiny_kmax()
    feats, labels, masks, semantic = _tiny_batch()
    criterion = KMaXCriterion(5, pixel_insdis_sample_k=128, aux_semantic_sample_k=128,
                              generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        losses = criterion(model.forward_train(feats), labels, masks, semantic)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: float(v) for k, v in losses.items()} | {'total': float(loss)})
    first, last = history[0], history[-1]
    assert last['loss_ce'] < 0.5 * first['loss_ce'], (first, last)
    assert last['loss_mask'] < 0.85 * first['loss_mask'], (first, last)
    assert last['total'] < 0.85 * first['total'], (first, last)
