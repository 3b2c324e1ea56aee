"""Relation DETR's encoder, decoder and relation embedding against the official implementation.

The fixture ``tests/fixtures/heads/relation_detr_official.pt`` was produced by
``tools/dev/make_relation_detr_fixture.py`` from the official ``models/bricks/
relation_transformer.py`` (xiuqhou/Relation-DETR; deformable attention through its
pure-PyTorch fallback) on random weights: it stores the weight spec and seed, the inputs and the
outputs. Here the same official state dict is regenerated, converted with
``convert_official_relation_detr`` and loaded into densekit's mmdet modules (decoder, encoder,
and the head's per-layer class / box branches), which must reproduce the official outputs in
fp32 to 1e-4.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip('mmdet')

from official_fixture import regenerate_state_dict  # noqa: E402  (tools/dev)

import densekit  # noqa: E402,F401  (registers densekit's mmdet modules)
from densekit.models.heads.relation_detr import (PositionRelationEmbedding,  # noqa: E402
                                                  convert_official_relation_detr)

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'heads' / 'relation_detr_official.pt'
ATOL = 1e-4


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, weights_only=False)


@pytest.fixture(scope='module')
def modules(official):
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope

    from densekit.mm.heads import relation_detr as rd

    init_default_scope('mmdet')
    c = official['config']
    e, h, n_dec = c['embed_dim'], c['num_heads'], c['dec_layers']
    ffn = dict(embed_dims=e, feedforward_channels=c['d_ffn'], ffn_drop=0.0)
    msda = dict(embed_dims=e, num_heads=h, num_levels=c['n_levels'], num_points=c['n_points'],
                dropout=0.0)
    torch.manual_seed(0)
    encoder = rd.RelationDetrTransformerEncoder(
        num_layers=c['enc_layers'], layer_cfg=dict(self_attn_cfg=msda, ffn_cfg=ffn))
    decoder = rd.RelationDetrTransformerDecoder(
        num_layers=n_dec, return_intermediate=True, post_norm_cfg=None,
        layer_cfg=dict(self_attn_cfg=dict(embed_dims=e, num_heads=h, dropout=0.0),
                       cross_attn_cfg=msda, ffn_cfg=ffn))
    head = MODELS.build(dict(
        type='RelationDETRHead', num_classes=c['num_classes'], embed_dims=e, as_two_stage=True,
        num_pred_layer=n_dec + 1, share_pred_layer=False,
        loss_cls=dict(type='RelationVarifocalLoss')))
    sd = convert_official_relation_detr(
        regenerate_state_dict(official['spec'], official['seed']), n_dec)
    for prefix, module in (('encoder.', encoder), ('decoder.', decoder)):
        part = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        module.load_state_dict(part, strict=True)
    head_part = {k[len('bbox_head.'):]: v for k, v in sd.items() if k.startswith('bbox_head.')}
    missing, unexpected = head.load_state_dict(head_part, strict=False)
    assert not unexpected, unexpected
    assert not missing, missing
    return encoder.eval(), decoder.eval(), head.eval()


def _close(actual, expected, what):
    err = (actual - expected).abs().max().item()
    assert err <= ATOL, f'{what}: max abs error {err:.3g} > {ATOL}'


def test_relation_embedding_matches_official(official, modules):
    _, decoder, _ = modules
    with torch.no_grad():
        got = decoder.position_relation_embedding(official['rel_src'], official['rel_tgt'])
    assert got.shape == official['rel_out'].shape
    _close(got, official['rel_out'], 'relation embedding')


def test_encoder_matches_official(official, modules):
    encoder, _, _ = modules
    with torch.no_grad():
        got = encoder(query=official['enc_query'], query_pos=official['enc_query_pos'],
                      key_padding_mask=official['key_padding_mask'],
                      spatial_shapes=official['spatial_shapes'],
                      level_start_index=official['level_start_index'],
                      valid_ratios=official['valid_ratios'])
    _close(got, official['enc_out'], 'encoder memory')


def _run_decoder(official, decoder, head, run, device='cpu'):
    num_dn = 0 if run == 'train' else official['dec_attn_mask'].shape[0] - \
        int((~official['dec_attn_mask'][-1]).sum())
    t = {k: v.to(device) if torch.is_tensor(v) else v for k, v in official.items()}
    with torch.no_grad():
        hidden, refs = decoder(
            query=t['dec_query'][:, num_dn:], value=t['enc_out'],
            key_padding_mask=t['key_padding_mask'],
            self_attn_mask=t['dec_attn_mask'] if run == 'train' else None,
            reference_points=t['dec_reference_points'][:, num_dn:],
            spatial_shapes=t['spatial_shapes'], level_start_index=t['level_start_index'],
            valid_ratios=t['valid_ratios'], reg_branches=head.reg_branches,
            skip_relation=run == 'hybrid')
        return head(hidden, list(refs))


@pytest.mark.parametrize('run', ['train', 'eval', 'hybrid'])
def test_decoder_matches_official(official, modules, run):
    """Per-layer class scores and boxes: with the denoising mask (relation bias with ``-inf``
    on blocked pairs), without a mask (inference), and without the relation (hybrid)."""
    _, decoder, head = modules
    classes, coords = _run_decoder(official, decoder, head, run)
    _close(classes, official[f'dec_{run}_classes'], f'{run} class scores')
    _close(coords, official[f'dec_{run}_coords'], f'{run} boxes')


@pytest.mark.gpu
@pytest.mark.parametrize('run', ['train', 'eval', 'hybrid'])
def test_decoder_matches_official_on_cuda(official, modules, run, requires_cuda):
    """On CUDA the cross-attention goes through mmcv's ``MultiScaleDeformableAttnFunction``, i.e.
    densekit's ms_deform_attn op, and the biased self-attention through the fused
    ``scaled_dot_product_attention`` kernels; fp32 without TF32, same tolerance."""
    import copy
    _, decoder, head = modules
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dec, hd = copy.deepcopy(decoder).cuda(), copy.deepcopy(head).cuda()
    classes, coords = _run_decoder(official, dec, hd, run, 'cuda')
    _close(classes.cpu(), official[f'dec_{run}_classes'], f'{run} class scores (cuda)')
    _close(coords.cpu(), official[f'dec_{run}_coords'], f'{run} boxes (cuda)')


def test_relation_changes_the_decoder(official, modules):
    """The relation bias takes part: the hybrid (no relation) outputs differ from inference's
    beyond the first layer, and are equal in the first (no bias there)."""
    assert torch.allclose(official['dec_eval_coords'][0], official['dec_hybrid_coords'][0])
    assert (official['dec_eval_coords'][1:] - official['dec_hybrid_coords'][1:]).abs().max() > 1e-3


def test_standalone_embedding_matches_decoder_one(official, modules):
    """The core module loaded from the decoder's weights gives the same bias."""
    _, decoder, _ = modules
    emb = PositionRelationEmbedding(16, official['config']['num_heads'])
    emb.load_state_dict(decoder.position_relation_embedding.state_dict())
    with torch.no_grad():
        _close(emb(official['rel_src'], official['rel_tgt']), official['rel_out'], 'core module')


def test_classification_loss_matches_official(official):
    from densekit.models.heads.relation_detr import varifocal_loss
    logits = official['loss_logits'].flatten(0, 1)
    loss = varifocal_loss(logits, official['loss_labels'].flatten(), official['loss_iou'].flatten())
    _close(loss.sum() / official['loss_num_boxes'], official['loss_cls'], 'classification loss')


def _tiny_relation_detr(c: dict) -> dict:
    """The fixture's transformer sizes as a RelationDETR config (backbone / neck unused)."""
    e, h = c['embed_dim'], c['num_heads']
    ffn = dict(embed_dims=e, feedforward_channels=c['d_ffn'], ffn_drop=0.0)
    msda = dict(embed_dims=e, num_heads=h, num_levels=c['n_levels'], num_points=c['n_points'],
                dropout=0.0)
    return dict(
        type='RelationDETR', num_queries=c['num_queries'], num_feature_levels=c['n_levels'],
        with_box_refine=True, as_two_stage=True,
        hybrid_cfg=dict(num_queries=c['hybrid_queries']),
        data_preprocessor=dict(type='DetDataPreprocessor'),
        backbone=dict(type='ResNet', depth=18, base_channels=8, out_indices=(1, 2),
                      init_cfg=None),
        neck=dict(type='ChannelMapper', in_channels=[16, 32], kernel_size=1, out_channels=e,
                  act_cfg=None, norm_cfg=None, num_outs=c['n_levels']),
        encoder=dict(num_layers=c['enc_layers'], layer_cfg=dict(self_attn_cfg=msda, ffn_cfg=ffn)),
        decoder=dict(num_layers=c['dec_layers'], return_intermediate=True, post_norm_cfg=None,
                     layer_cfg=dict(self_attn_cfg=dict(embed_dims=e, num_heads=h, dropout=0.0),
                                    cross_attn_cfg=msda, ffn_cfg=ffn)),
        positional_encoding=dict(num_feats=e // 2, normalize=True, offset=-0.5,
                                 temperature=10000),
        bbox_head=dict(type='RelationDETRHead', num_classes=c['num_classes'], embed_dims=e,
                       loss_cls=dict(type='RelationVarifocalLoss')),
        dn_cfg=dict(label_noise_scale=0.5, box_noise_scale=1.0,
                    group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=4)),
        train_cfg=dict(assigner=dict(type='HungarianAssigner', match_costs=[
            dict(type='FocalLossCost', weight=2.0),
            dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
            dict(type='IoUCost', iou_mode='giou', weight=2.0)])),
        test_cfg=dict(max_per_img=c['num_queries']))


def test_whole_transformer_matches_official(official):
    """Sine positions, level embeddings, encoder, two-stage query selection and decoder of the
    detector at inference, on masked features of a padded batch: every official transformer key
    converted and loaded, the per-layer class scores and boxes of the selected queries equal."""
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.registry import init_default_scope

    init_default_scope('mmdet')
    c = official['config']
    torch.manual_seed(0)
    model = MODELS.build(_tiny_relation_detr(c)).eval()
    sd = convert_official_relation_detr(
        regenerate_state_dict(official['spec'], official['seed']), c['dec_layers'])
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    # not in the official transformer: backbone, neck, the denoising label embedding
    assert all(k.startswith(('backbone.', 'neck.', 'dn_query_generator.')) for k in missing), \
        [k for k in missing if not k.startswith(('backbone.', 'neck.'))]
    samples = []
    for h, w in official['image_sizes']:
        s = DetDataSample()
        s.set_metainfo(dict(img_shape=(h, w), batch_input_shape=tuple(official['input_size'])))
        samples.append(s)
    with torch.no_grad():
        head_inputs = model.forward_transformer(tuple(official['whole_feats']), samples)
        classes, coords = model.bbox_head(head_inputs['hidden_states'],
                                          head_inputs['references'])
    _close(classes, official['whole_classes'], 'whole transformer class scores')
    _close(coords, official['whole_coords'], 'whole transformer boxes')
