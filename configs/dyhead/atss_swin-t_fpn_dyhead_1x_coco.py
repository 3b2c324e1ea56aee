# ATSS with a Dynamic Head (Dai et al., "Dynamic Head: Unifying Object Detection Heads with
# Attentions", CVPR 2021) on a Swin-T backbone, COCO detection, 1x, AdamW (../_base_/recipes/
# det_adamw.py). The neck and head follow mmdet 3.3's `dyhead/atss_swin-l-p4-w12_fpn_dyhead_
# ms-2x_coco.py` (FPN on C3-C5 with on-output extra convs, six DyHead blocks, ATSS head with 1x1
# predictors and no stacked convs) with the 1x single-scale COCO pipeline.
# DyHead's scale-aware block feeds the offset / mask of one level to the deformable conv of the
# next-smaller one; mmcv's kernels (and densekit's portable ones, densekit/compat/mmcv_ext.py)
# read it by the output size, which is what DyHead's checkpoints were trained with.
_base_ = [
    '../_base_/datasets/coco_detection.py', '../_base_/schedules/schedule_1x.py',
    '../_base_/default_runtime_det.py', '../_base_/recipes/det_adamw.py',
]

model = dict(
    type='ATSS',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        # DyHead's levels must halve exactly: pad to the coarsest stride.
        pad_size_divisor=128),
    backbone=dict(
        type='swin_tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/swin_tiny_in1k.pth')),
    neck=[
        dict(type='FPN', in_channels=[192, 384, 768], out_channels=256, start_level=0,
             add_extra_convs='on_output', num_outs=5),
        # zero_init_offset=False follows the official implementation (as mmdet's config).
        dict(type='DyHead', in_channels=256, out_channels=256, num_blocks=6,
             zero_init_offset=False),
    ],
    bbox_head=dict(
        type='ATSSHead',
        num_classes=80,
        in_channels=256,
        pred_kernel_size=1,
        stacked_convs=0,
        feat_channels=256,
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8,
                              scales_per_octave=1, strides=[8, 16, 32, 64, 128],
                              center_offset=0.5),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0, .0, .0, .0],
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                      loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1, pos_weight=-1,
                   debug=False),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                  nms=dict(type='nms', iou_threshold=0.6), max_per_img=100))
