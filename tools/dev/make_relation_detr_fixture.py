"""Freeze the output-parity fixture of Relation DETR's transformer from the OFFICIAL model code.

Runs the official transformer (``RelationTransformer`` with its encoder, decoder and
``PositionRelationEmbedding``, from ``models/bricks/relation_transformer.py`` of
https://github.com/xiuqhou/Relation-DETR, used as is from a local checkout) on random weights
and random inputs, at a small size (width 32, 4 heads, 2 feature levels, 2 sampling points,
2 encoder and 3 decoder layers so that the relation bias of two layers is exercised, 5 classes),
and saves the inputs and outputs:

* the whole ``RelationTransformer`` at inference (sine positions of the official
  ``PositionEmbeddingSine``, level embeddings, encoder, two-stage query selection, decoder) on
  masked two-level features of a padded batch;
* the relation embedding alone (``PositionRelationEmbedding(src, tgt)``);
* the encoder (memory fusion included), given the reference points mmdet's encoder computes;
* the decoder (per-layer class scores and boxes) three ways: training with a denoising mask,
  without a mask (inference), and with ``skip_relation=True`` (the hybrid branch);
* the classification loss (``models/bricks/losses.py``'s ``vari_sigmoid_focal_loss``, scaled
  by the query count as ``HybridSetCriterion`` does) on random logits, labels and IoUs.

The weights are not stored: a spec ``(key, shape, dtype, mean, std)`` per official key and a
seed are, and :func:`official_fixture.regenerate_state_dict` redraws them; the test
(``tests/models/test_relation_detr_parity.py``) converts them with
``densekit.models.heads.relation_detr.convert_official_relation_detr`` and compares densekit's
mmdet modules. Without CUDA the official deformable attention runs its pure-PyTorch fallback.

Nothing of the official code is copied here: it is imported from ``--official``. Its training
utilities' imports (``accelerate``, ``fvcore``, ``iopath``, ``termcolor``, ``terminaltables``,
``tabulate``), unused by the modules run here, are replaced by inert stand-ins when missing.

Usage::

    python tools/dev/make_relation_detr_fixture.py --official /path/to/Relation-DETR \
        --out tests/fixtures/heads/relation_detr_official.pt
"""
from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import math
import sys
import types
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_fixture import regenerate_state_dict  # noqa: E402

CONFIG = dict(embed_dim=32, num_heads=4, d_ffn=64, n_levels=2, n_points=2, enc_layers=2,
              dec_layers=3, num_classes=5, num_queries=7, hybrid_queries=6)
INPUT_SIZE = (48, 64)  # the padded batch; image 1 is 40 x 56 of it
IMAGE_SIZES = ((48, 64), (40, 56))
SPATIAL_SHAPES = ((6, 8), (3, 4))
BATCH = 2
NUM_DN = 4  # two denoising groups of two queries
NUM_MATCHING = 7


class _Inert:
    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __getattr__(self, name):
        return _Inert()


class _InertModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return _Inert


def _install_import_stand_ins() -> None:
    for name in ('accelerate', 'accelerate.logging', 'fvcore', 'fvcore.common',
                 'fvcore.common.file_io', 'iopath', 'iopath.common', 'iopath.common.file_io',
                 'termcolor', 'terminaltables', 'tabulate', 'omegaconf'):
        top = name.split('.')[0]
        if not isinstance(sys.modules.get(top), _InertModule):
            try:
                if importlib.util.find_spec(top) is not None:
                    continue
            except (ImportError, ValueError):
                pass
        mod = _InertModule(name)
        mod.__path__ = []
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules[name] = mod
    if isinstance(sys.modules.get('tabulate'), _InertModule):
        sys.modules['tabulate'].tabulate = lambda *args, **kwargs: ''


def load_official(official: Path):
    _install_import_stand_ins()
    sys.path.insert(0, str(official))
    from models.bricks import relation_transformer
    return relation_transformer


def weight_spec(state_dict) -> list:
    """``(key, shape, dtype, mean, std)``: matrices ``N(0, fan_in ** -1)`` (the official init
    zeroes several, which would hide a wrong mapping), 1-d tensors around their initial mean."""
    spec = []
    for key, t in state_dict.items():
        if not t.is_floating_point():
            mean, std = 0.0, 0.0
        elif t.ndim >= 2:
            mean, std = 0.0, 1.0 / math.sqrt(t[0].numel())
        else:
            mean, std = float(t.float().mean()), 0.1
        spec.append((key, tuple(t.shape), str(t.dtype).replace('torch.', ''), mean, std))
    return spec


def dn_attn_mask(num_dn: int, group: int, num_matching: int) -> torch.Tensor:
    """DINO's denoising mask (True = blocked): matching queries do not see denoising ones,
    denoising groups do not see each other."""
    n = num_dn + num_matching
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[num_dn:, :num_dn] = True
    for g in range(num_dn // group):
        s, e = g * group, (g + 1) * group
        mask[s:e, :s] = True
        mask[s:e, e:num_dn] = True
    return mask


def random_boxes(gen, *shape):
    xy = 0.15 + 0.7 * torch.rand(*shape, 2, generator=gen)
    wh = 0.05 + 0.4 * torch.rand(*shape, 2, generator=gen)
    return torch.cat([xy, wh], -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--official', type=Path, required=True,
                        help='checkout of xiuqhou/Relation-DETR')
    parser.add_argument('--out', type=Path,
                        default=Path('tests/fixtures/heads/relation_detr_official.pt'))
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()

    rt = load_official(args.official)
    c = CONFIG
    layer_kw = dict(embed_dim=c['embed_dim'], d_ffn=c['d_ffn'], dropout=0.0,
                    n_heads=c['num_heads'], activation=nn.ReLU(inplace=True),
                    n_levels=c['n_levels'], n_points=c['n_points'])
    transformer = rt.RelationTransformer(
        encoder=rt.RelationTransformerEncoder(
            rt.RelationTransformerEncoderLayer(**layer_kw), num_layers=c['enc_layers']),
        decoder=rt.RelationTransformerDecoder(
            rt.RelationTransformerDecoderLayer(**layer_kw), num_layers=c['dec_layers'],
            num_classes=c['num_classes']),
        num_classes=c['num_classes'], num_feature_levels=c['n_levels'],
        two_stage_num_proposals=c['num_queries'], hybrid_num_proposals=c['hybrid_queries'])
    from models.bricks.position_encoding import PositionEmbeddingSine
    position_embedding = PositionEmbeddingSine(e_half := c['embed_dim'] // 2, temperature=10000,
                                               normalize=True, offset=-0.5)
    assert e_half * 2 == c['embed_dim']
    model = nn.Module()
    model.transformer = transformer
    spec = weight_spec(model.state_dict())
    model.load_state_dict(regenerate_state_dict(spec, args.seed), strict=True)
    model.eval()

    gen = torch.Generator().manual_seed(args.seed + 1)
    e = c['embed_dim']
    shapes = torch.tensor(SPATIAL_SHAPES, dtype=torch.long)
    level_start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    num_value = int(shapes.prod(1).sum())
    # image 1 is padded: the last column and row of every level
    masks = []
    for h, w in SPATIAL_SHAPES:
        m = torch.zeros(BATCH, h, w, dtype=torch.bool)
        m[1, :, -1] = True
        m[1, -1, :] = True
        masks.append(m)
    key_padding_mask = torch.cat([m.flatten(1) for m in masks], 1)
    valid_ratios = torch.stack([torch.stack([(~m[:, 0]).sum(-1) / m.shape[2],
                                             (~m[:, :, 0]).sum(-1) / m.shape[1]], -1)
                                for m in masks], 1).float()  # [B, L, (w, h)]

    from mmdet.models.layers import DeformableDetrTransformerEncoder
    enc_ref = DeformableDetrTransformerEncoder.get_encoder_reference_points(
        shapes, valid_ratios, device='cpu')

    out = dict(config=c, spec=spec, seed=args.seed, spatial_shapes=shapes,
               level_start_index=level_start, key_padding_mask=key_padding_mask,
               valid_ratios=valid_ratios)
    with torch.no_grad():
        feat = torch.randn(BATCH, num_value, e, generator=gen)
        pos = torch.randn(BATCH, num_value, e, generator=gen)
        memory = transformer.encoder(query=feat, spatial_shapes=shapes,
                                     level_start_index=level_start, reference_points=enc_ref,
                                     query_pos=pos, query_key_padding_mask=key_padding_mask)
        out.update(enc_query=feat, enc_query_pos=pos, enc_reference_points=enc_ref,
                   enc_out=memory)

        src, tgt = random_boxes(gen, BATCH, 5), random_boxes(gen, BATCH, 6)
        out.update(rel_src=src, rel_tgt=tgt,
                   rel_out=transformer.decoder.position_relation_embedding(src, tgt))

        num_q = NUM_DN + NUM_MATCHING
        query = torch.randn(BATCH, num_q, e, generator=gen)
        ref = random_boxes(gen, BATCH, num_q)
        attn_mask = dn_attn_mask(NUM_DN, 2, NUM_MATCHING)
        out.update(dec_query=query, dec_reference_points=ref, dec_attn_mask=attn_mask)
        common = dict(value=memory, spatial_shapes=shapes, level_start_index=level_start,
                      valid_ratios=valid_ratios, key_padding_mask=key_padding_mask)
        runs = {
            'train': dict(query=query, reference_points=ref, attn_mask=attn_mask),
            'eval': dict(query=query[:, NUM_DN:], reference_points=ref[:, NUM_DN:]),
            'hybrid': dict(query=query[:, NUM_DN:], reference_points=ref[:, NUM_DN:],
                           skip_relation=True),
        }
        for name, kw in runs.items():
            classes, coords = transformer.decoder(**kw, **common)
            out[f'dec_{name}_classes'] = classes
            out[f'dec_{name}_coords'] = coords

        # the classification loss of every branch (HybridSetCriterion.loss_labels: the
        # official vari_sigmoid_focal_loss times the query count)
        from models.bricks.losses import vari_sigmoid_focal_loss
        logits = 2 * torch.randn(BATCH, NUM_MATCHING, c['num_classes'], generator=gen)
        labels = torch.randint(0, c['num_classes'] + 1, (BATCH, NUM_MATCHING), generator=gen)
        iou = torch.rand(BATCH, NUM_MATCHING, generator=gen) * (labels < c['num_classes'])
        onehot = nn.functional.one_hot(labels, c['num_classes'] + 1)[..., :-1]
        num_boxes = float((labels < c['num_classes']).sum())
        out.update(loss_logits=logits, loss_labels=labels, loss_iou=iou, loss_num_boxes=num_boxes,
                   loss_cls=vari_sigmoid_focal_loss(logits, onehot, iou, num_boxes=num_boxes,
                                                    alpha=0.25, gamma=2.0) * NUM_MATCHING)

        # the whole transformer at inference (positions, level embeddings, encoder, two-stage
        # query selection, decoder) on masked multi-level features
        img_mask = torch.ones(BATCH, *INPUT_SIZE)
        for i, (h, w) in enumerate(IMAGE_SIZES):
            img_mask[i, :h, :w] = 0
        feats = [torch.randn(BATCH, e, h, w, generator=gen) for h, w in SPATIAL_SHAPES]
        lvl_masks = [nn.functional.interpolate(img_mask[None], size=f.shape[-2:])[0].to(torch.bool)
                     for f in feats]
        lvl_pos = [position_embedding(m) for m in lvl_masks]
        outs = transformer(feats, lvl_masks, lvl_pos)
        out.update(whole_feats=feats, whole_classes=outs[0], whole_coords=outs[1],
                   image_sizes=IMAGE_SIZES, input_size=INPUT_SIZE)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, args.out)
    print(f'saved {args.out} ({args.out.stat().st_size / 1024:.1f} KiB)')


if __name__ == '__main__':
    main()
