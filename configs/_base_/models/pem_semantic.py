# PEM (Cavagnero et al., "PEM: Prototype-based Efficient MaskFormer for Image Segmentation", CVPR
# 2024; github.com/NiccoloCavagnero/PEM, configs/ade20k/semantic-segmentation/pem_R50_bs32_160k.yaml)
# for semantic segmentation, mmseg scope: densekit's PEMHead (pixel decoder width 128, mask
# features 256, 100 queries, 8 heads, 6 decoder layers) with Mask2Former's matching, losses
# (class 2.0 with no-object 0.1, mask BCE 5.0, dice 5.0 on 12544 points) and semantic inference.
# Inputs are padded to multiples of 32 at test time (the official SIZE_DIVISIBILITY).
num_classes = 150
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(512, 512),
        test_cfg=dict(size_divisor=32)),
    backbone=dict(type='convnext_tiny', out_indices=(0, 1, 2, 3)),
    decode_head=dict(
        type='PEMHead',
        in_channels=[96, 192, 384, 768],
        num_classes=num_classes,
        feat_channels=128,
        out_channels=256,
        embed_dims=256,
        num_queries=100,
        num_heads=8,
        feedforward_channels=2048,
        num_layers=6,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_cls=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0,
                      reduction='mean', class_weight=[1.0] * num_classes + [0.1]),
        loss_mask=dict(type='mmdet.CrossEntropyLoss', use_sigmoid=True, reduction='mean',
                       loss_weight=5.0),
        loss_dice=dict(type='mmdet.DiceLoss', use_sigmoid=True, activate=True, reduction='mean',
                       naive_dice=True, eps=1.0, loss_weight=5.0),
        train_cfg=dict(
            num_points=12544,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            assigner=dict(
                type='mmdet.HungarianAssigner',
                match_costs=[
                    dict(type='mmdet.ClassificationCost', weight=2.0),
                    dict(type='mmdet.CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                    dict(type='mmdet.DiceCost', weight=5.0, pred_act=True, eps=1.0),
                ]),
            sampler=dict(type='mmdet.MaskPseudoSampler'))),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
