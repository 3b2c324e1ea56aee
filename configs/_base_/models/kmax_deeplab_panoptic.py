# kMaX-DeepLab (Yu et al., "k-means Mask Transformer", ECCV 2022; PyTorch port
# github.com/bytedance/kmax-deeplab, configs/coco/panoptic_segmentation/kmax_r50.yaml) for COCO
# panoptic segmentation, mmdet scope: densekit's KMaXDeepLabHead (axial / bottleneck pixel decoder
# with [1, 5, 1, 1] blocks of widths [512, 256, 128, 64]; six k-means cross-attention layers, two
# at each of strides 32, 16, 8; 128 cluster centres) in mmdet's Mask2Former detector.
# Training as the official (kmax_deeplab/config.py, kmax_r50.yaml): PQ-style matching shared from
# the final prediction; PQ-style class loss 3.0, mask-ID cross-entropy 0.3, PQ-style dice 3.0 and
# pixel-wise instance discrimination 1.0 on every decoder prediction, the auxiliary semantic head's
# loss 1.0 on the final one; no-object weight 1e-5; 4096 sampled pixels (temperatures 1.5 / 2.0).
# Inference is kMaX's own (KMaXFusionHead, test_cfg below).
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
        aux_semantic_head=True,
        aux_semantic_channels=256,
        aux_semantic_low_level_channels=[64, 32],
        criterion=dict(
            class_weight=3.0,
            mask_weight=0.3,
            dice_weight=3.0,
            insdis_weight=1.0,
            aux_semantic_weight=1.0,
            no_object_weight=1e-5,
            share_final_matching=True,
            deep_supervision=True,
            pixel_insdis_temperature=1.5,
            pixel_insdis_sample_k=4096,
            aux_semantic_temperature=2.0,
            aux_semantic_sample_k=4096,
            masking_void_pixel=True)),
    panoptic_fusion_head=dict(
        type='KMaXFusionHead',
        num_things_classes=num_things_classes,
        num_stuff_classes=num_stuff_classes,
        loss_panoptic=None,
        init_cfg=None),
    train_cfg=None,  # kMaX matches inside its criterion
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
