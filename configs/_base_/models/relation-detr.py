# Relation DETR (Hou et al., ECCV 2024, arXiv 2407.11699): DINO-4scale plus a position-relation
# bias in decoder self-attention, conditional query positions, a fused encoder memory and a
# hybrid (one-to-many) query branch; settings of the official
# configs/relation_detr/relation_detr_resnet50_800_1333.py (xiuqhou/Relation-DETR): 900 queries,
# 1500 hybrid queries matched to the ground truth repeated 6 times, 100 denoising queries, FFN
# 2048, dropout 0, sine positions with temperature 10000 and offset -0.5, the varifocal-form
# classification loss (alpha 0.25, gamma 2) with L1 5 / GIoU 2, matching costs 2 / 5 / 2.
_base_ = './dino-4scale.py'

model = dict(
    type='RelationDETR',
    hybrid_cfg=dict(num_queries=1500),
    encoder=dict(
        layer_cfg=dict(ffn_cfg=dict(embed_dims=256, feedforward_channels=2048, ffn_drop=0.0))),
    decoder=dict(
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=256, num_heads=8, dropout=0.0),
            ffn_cfg=dict(embed_dims=256, feedforward_channels=2048, ffn_drop=0.0)),
        relation_num_feats=16,
        relation_scale=100.0),
    positional_encoding=dict(num_feats=128, normalize=True, offset=-0.5, temperature=10000),
    bbox_head=dict(
        type='RelationDETRHead',
        embed_dims=256,
        hybrid_assign=6,
        loss_cls=dict(_delete_=True, type='RelationVarifocalLoss', alpha=0.25, gamma=2.0,
                      loss_weight=1.0)),
    test_cfg=dict(max_per_img=300))
