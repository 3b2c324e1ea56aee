# VWFormer (Yan et al., "Multi-Scale Representations by Varying Window Attention for Semantic
# Segmentation", ICLR 2024; github.com/yan-hao-tian/VW, mmsegmentation-custom/configs/_base_/models/
# vw_convnext.py and vw_swin.py), mmseg scope: densekit's VWFormerHead on the four backbone maps,
# 512 channels, one attention head, short cuts, no auxiliary head, whole-image test. Set
# `decode_head.in_channels` in the family config.
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
        size=(512, 512)),
    backbone=dict(type='convnext_tiny', out_indices=(0, 1, 2, 3)),
    decode_head=dict(
        type='VWFormerHead',
        in_channels=[96, 192, 384, 768],
        in_index=[0, 1, 2, 3],
        channels=512,
        num_heads=1,
        shortcut=True,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
