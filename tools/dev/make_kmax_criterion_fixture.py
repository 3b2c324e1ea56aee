"""Freeze the parity fixture of kMaX-DeepLab's losses from the OFFICIAL PyTorch port.

Runs ``kmax_deeplab/modeling/criterion.py`` (``SetCriterion``) with
``kmax_deeplab/modeling/matcher.py`` (``HungarianMatcher``) of
https://github.com/bytedance/kmax-deeplab (imported as is from a local clone) with the official
COCO settings (``kmax_deeplab/config.py``: weights 3.0 / 0.3 / 3.0 / 1.0 / 1.0, no-object weight
1e-5, shared final matching, temperatures 1.5 / 2.0) on the random predictions and panoptic
targets of :func:`criterion_inputs` (batch 2, 8 queries, 6 classes of which 2 stuff, 13 x 17
masks with void pixels, three intermediate predictions, a half-resolution auxiliary semantic
map), then multiplies each loss by its weight as ``kmax_model.py`` does. The official Gumbel
sampler is wrapped: it runs under a fixed seed and each call's sampling logits and drawn
indices are stored, so that the test replays the same indices. Stored: every weighted loss, the
matching, the sampling calls, and the gradients of the summed loss with respect to every input.

Also runs the official auxiliary semantic head (``SemanticPredictor`` of
``kmax_transformer_decoder.py``) with random weights and BatchNorm statistics in eval mode on
random backbone maps (:func:`semantic_head_inputs`), and records the key / shape list of that
head at the R50 widths (for the checkpoint-key test). No weights or inputs are stored: both are
redrawn from seeds (``tools/dev/official_fixture.py``).

Nothing of the official code is copied here; its detectron2 imports get the stand-ins of
``make_kmax_deeplab_fixture.py``.

Usage::

    python tools/dev/make_kmax_criterion_fixture.py --official /path/to/kmax-deeplab \
        --out tests/fixtures/heads/kmax_criterion_official.pt
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

from official_fixture import regenerate_state_dict  # tools/dev, beside this script

NUM_CLASSES = 6  # classes 0..3 things, 4..5 stuff
NUM_QUERIES = 8
MASK_SIZE = (13, 17)
SEMANTIC_SIZE = (7, 9)  # every second target pixel (the official's strided subsampling)
PIXEL_CHANNELS = 8
NUM_PREDICTIONS = 4  # three intermediate, then the final
SAMPLE_K = 64  # of the 221 mask pixels
AUX_SAMPLE_K = 32  # of the 63 semantic pixels
WEIGHTS = dict(class_weight=3.0, mask_weight=0.3, dice_weight=3.0, insdis_weight=1.0,
               aux_semantic_weight=1.0)
AUX_HEAD_CHANNELS = (32, 16, 8)  # backbone maps at strides 32, 8, 4
AUX_HEAD_SIZES = ((2, 3), (7, 9), (13, 17))
R50_AUX_HEAD_CHANNELS = (2048, 512, 256)


def criterion_inputs(seed: int) -> dict:
    """Random predictions (requiring grad) and panoptic targets: per image a segment map from
    nearest random centres, a few of them void (unlabelled), classes drawn so that one image
    holds two segments of one thing class and each holds a stuff class."""
    gen = torch.Generator().manual_seed(seed)
    B, Q, K = 2, NUM_QUERIES, NUM_CLASSES
    H, W = MASK_SIZE
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing='ij')
    labels, masks = [], []
    for b, n in enumerate((5, 4)):
        centres = torch.rand(n + 1, 2, generator=gen) * torch.tensor([H, W])
        dist = ((yy[None] - centres[:, 0, None, None]) ** 2
                + (xx[None] - centres[:, 1, None, None]) ** 2)
        owner = dist.argmin(0)  # segment n is void
        owner[torch.rand(H, W, generator=gen) < 0.08] = n  # scattered void pixels
        lab = [1, 1, 2, 4, 5] if b == 0 else [0, 3, 5, 2]
        keep = [i for i in range(n) if (owner == i).any()]
        labels.append(torch.tensor([lab[i] for i in keep]))
        masks.append(torch.stack([owner == i for i in keep]))

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(shape, generator=gen)).requires_grad_()

    pixel = [torch.nn.functional.normalize(torch.randn(B, PIXEL_CHANNELS, H, W, generator=gen),
                                           dim=1).requires_grad_() for _ in range(NUM_PREDICTIONS)]
    return dict(class_logits=[rand(B, Q, K + 1, scale=2.0) for _ in range(NUM_PREDICTIONS)],
                mask_logits=[rand(B, Q, H, W, scale=3.0) for _ in range(NUM_PREDICTIONS)],
                pixel_features=pixel,
                aux_semantic=rand(B, K + 1, *SEMANTIC_SIZE, scale=2.0),
                gt_labels=labels, gt_masks=masks)


def semantic_from_masks(labels, masks, void: int = -1) -> torch.Tensor:
    sem = torch.full(masks.shape[-2:], void, dtype=torch.long)
    for lab, m in zip(labels, masks):
        sem[m] = lab
    return sem


def semantic_head_inputs(seed: int) -> list:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn((2, c) + s, generator=gen)
            for c, s in zip(AUX_HEAD_CHANNELS, AUX_HEAD_SIZES)]


def _load_official_criterion(official: Path):
    mods = {}
    for name in ('criterion', 'matcher'):
        spec = importlib.util.spec_from_file_location(
            f'kmax_official_{name}', official / 'kmax_deeplab' / 'modeling' / f'{name}.py')
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods[name] = mod
    return mods['criterion'], mods['matcher']


def main() -> None:
    from mmengine.model import revert_sync_batchnorm
    from make_kmax_deeplab_fixture import load_official, weight_spec
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True,
                        help='clone of bytedance/kmax-deeplab')
    parser.add_argument('--out', type=Path,
                        default=Path('tests/fixtures/heads/kmax_criterion_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    criterion_mod, matcher_mod = _load_official_criterion(args.official)
    calls = []
    gumbel = criterion_mod._gumbel_topk_sample

    def recording_sampler(logits, k):
        index = gumbel(logits, k)
        calls.append(dict(logits=logits.detach().clone(), index=index.clone()))
        return index
    criterion_mod._gumbel_topk_sample = recording_sampler

    weight_dict = {'loss_ce': WEIGHTS['class_weight'], 'loss_mask': WEIGHTS['mask_weight'],
                   'loss_dice': WEIGHTS['dice_weight'],
                   'loss_pixel_insdis': WEIGHTS['insdis_weight'],
                   'loss_aux_semantic': WEIGHTS['aux_semantic_weight']}
    weight_dict.update({f'{k}_{i}': v for i in range(NUM_PREDICTIONS - 1)
                        for k, v in list(weight_dict.items())})
    criterion = criterion_mod.SetCriterion(
        NUM_CLASSES, matcher=matcher_mod.HungarianMatcher(masking_void_pixel=True),
        weight_dict=weight_dict, eos_coef=1e-5,
        losses=['labels', 'masks', 'pixels', 'aux_semantic'], share_final_matching=True,
        pixel_insdis_temperature=1.5, pixel_insdis_sample_k=SAMPLE_K,
        aux_semantic_temperature=2.0, aux_semantic_sample_k=AUX_SAMPLE_K, masking_void_pixel=True)

    inputs = criterion_inputs(args.seed)
    outputs = dict(pred_logits=inputs['class_logits'][-1], pred_masks=inputs['mask_logits'][-1],
                   pixel_feature=inputs['pixel_features'][-1],
                   aux_semantic_pred=inputs['aux_semantic'],
                   aux_outputs=[dict(pred_logits=c, pred_masks=m, pixel_feature=p)
                                for c, m, p in zip(inputs['class_logits'][:-1],
                                                   inputs['mask_logits'][:-1],
                                                   inputs['pixel_features'][:-1])])
    targets = [dict(labels=lab, masks=m, semantic_masks=semantic_from_masks(lab, m))
               for lab, m in zip(inputs['gt_labels'], inputs['gt_masks'])]
    indices, matched_dice, matched_cls_prob = criterion.matcher(
        {k: v for k, v in outputs.items() if k != 'aux_outputs'}, targets)
    torch.manual_seed(args.seed + 1)
    losses = criterion(outputs, targets)
    losses = {k: v * weight_dict[k] for k, v in losses.items()}
    sum(losses.values()).backward()
    grads = {key: [t.grad.clone() for t in inputs[key]]
             for key in ('class_logits', 'mask_logits', 'pixel_features')}
    grads['aux_semantic'] = inputs['aux_semantic'].grad.clone()
    for k, v in losses.items():
        print(f'{k:>22s} {float(v):.6f}')

    # the auxiliary semantic head's forward, random weights, eval mode
    _, Predictor = load_official(args.official)
    head_module = sys.modules[Predictor.__module__]
    head = revert_sync_batchnorm(head_module.SemanticPredictor(*AUX_HEAD_CHANNELS,
                                                               num_classes=NUM_CLASSES + 1))
    spec = weight_spec(head.state_dict())
    head.load_state_dict(regenerate_state_dict(spec, args.seed + 2), strict=True)
    head.eval()
    with torch.no_grad():
        semantic = head(*semantic_head_inputs(args.seed + 3))
    with torch.device('meta'):
        r50 = head_module.SemanticPredictor(*R50_AUX_HEAD_CHANNELS, num_classes=134)
    r50_keys = [(k, tuple(v.shape), str(v.dtype).replace('torch.', ''))
                for k, v in r50.state_dict().items()]

    fixture = dict(seed=args.seed, num_classes=NUM_CLASSES, sample_k=SAMPLE_K,
                   aux_sample_k=AUX_SAMPLE_K, weights=WEIGHTS,
                   losses={k: v.detach().clone() for k, v in losses.items()},
                   indices=[(i.clone(), j.clone()) for i, j in indices],
                   matched_dice=[d.clone() for d in matched_dice],
                   matched_cls_prob=[p.clone() for p in matched_cls_prob],
                   sampling_calls=calls, grads=grads,
                   semantic_head=dict(spec=spec, seed=args.seed + 2, input_seed=args.seed + 3,
                                      channels=AUX_HEAD_CHANNELS, num_classes=NUM_CLASSES + 1,
                                      out=semantic),
                   r50_semantic_head_keys=r50_keys)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.out)
    print('sampling calls', len(calls), 'semantic head out', tuple(semantic.shape),
          'std', float(semantic.std()))
    print('wrote', args.out, args.out.stat().st_size // 1024, 'KiB')


if __name__ == '__main__':
    main()
