# kMaX-DeepLab (Yu et al., "k-means Mask Transformer", ECCV 2022; PyTorch port
# github.com/bytedance/kmax-deeplab, configs/coco/panoptic_segmentation/kmax_r50.yaml) for COCO
# panoptic segmentation, mmdet scope: densekit's KMaXDeepLabHead (axial / bottleneck pixel decoder
# with [1, 5, 1, 1] blocks of widths [512, 256, 128, 64]; six k-means cross-attention layers, two
# at each of strides 32, 16, 8; 128 cluster centres) in mmdet's Mask2Former detector.
# NOT the official training: Mask2Former's matching and losses (class 2.0 with no-object 0.1,
# point-sampled mask BCE 5.0 and dice 5.0) replace kMaX's PQ-style loss, mask-ID cross-entropy,
# instance discrimination and auxiliary semantic loss. Inference is kMaX's own (KMaXFusionHead,
# test_cfg below).
# Inputs as the official: mean / std 127.5 (pixels scaled to [-1, 1]), RGB.
num_things_classes = 80
num_stuff_classes = 53
num_classes = num_things_classes + num_stuff_classes

model = dict(
    type='Mask2Former',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        bgr_to_rgb=True,
        pad_size_divisor=1,
        pad_mask=True,
        mask_pad_value=0,
        pad_seg=True,
        seg_pad_value=255),
    backbone=dict(type='convnext_tiny', out_indices=(0, 1, 2, 3)),
    panoptic_head=dict(
        type='KMaXDeepLabHead',
        in_channels=[96, 192, 384, 768],
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes,
        num_queries=128,
        pixel_decoder_channels=[512, 256, 128, 64],
        pixel_decoder_layers=[1, 5, 1, 1],
        pixel_decoder_types=['axial', 'axial', 'bottleneck', 'bottleneck'],
        transformer_decoder_layers=[2, 2, 2],
        embed_dims=256,
        base_filters=128,
        num_heads=8,
        feedforward_channels=2048,
        pixel_head_channels=256,
        mask_channels=128,
        pixel_drop_path=0.0,
        transformer_drop_path=0.2,
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0,
                      reduction='mean', class_weight=[1.0] * num_classes + [0.1]),
        loss_mask=dict(type='CrossEntropyLoss', use_sigmoid=True, reduction='mean',
                       loss_weight=5.0),
        loss_dice=dict(type='DiceLoss', use_sigmoid=True, activate=True, reduction='mean',
                       naive_dice=True, eps=1.0, loss_weight=5.0)),
    panoptic_fusion_head=dict(
        type='KMaXFusionHead',
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes,
        loss_panoptic=None,
        init_cfg=None),
    train_cfg=dict(
        num_points=12544,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
        assigner=dict(
            type='HungarianAssigner',
            match_costs=[
                dict(type='ClassificationCost', weight=2.0),
                dict(type='CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                dict(type='DiceCost', weight=5.0, pred_act=True, eps=1.0),
            ]),
        sampler=dict(type='MaskPseudoSampler')),
    # kMaX's own inference, the official COCO test settings (kmax_r50.yaml TEST, config.py):
    # masks are a softmax over the queries, a pixel belongs to a query's mask above 0.4; queries
    # visited by class score x mean mask score; thing / stuff class thresholds 0.7 / 0.5; a
    # query keeps its segment when more than 0.8 of its mask is still free; stuff queries of one
    # class merge. Instances: top 100 (query, class) pairs, things only.
    test_cfg=dict(
        panoptic_on=True,
        semantic_on=False,
        instance_on=False,
        max_per_image=100,
        pixel_confidence_threshold=0.4,
        class_threshold_thing=0.7,
        class_threshold_stuff=0.5,
        overlap_threshold=0.8,
        reorder_class_weight=1.0,
        reorder_mask_weight=1.0),
    init_cfg=None)
