# Quickstart: Mask R-CNN (He et al., ICCV 2017) with a randomly initialised ResNet-18 on
# densekit's synthetic COCO-format shapes (`tools/make_demo_data.py data/quickstart`).
# Small images (160x160), a slim FPN / RoI head and 400 iterations: training plus two COCO
# bbox/segm evaluations take about 7 CPU minutes (tools/quickstart.sh runs torch single-threaded).
_base_ = [
    '../_base_/models/mask-rcnn_fpn.py',
    '../_base_/default_runtime_det.py',
]

data_root = 'data/quickstart/coco/'
num_classes = 5  # densekit.datasets.synthetic.COCO_CLASSES (SyntheticShapesDataset's metainfo)
image_size = (160, 160)
width = 64  # FPN / head channels: slim, the shapes need no 256-channel heads

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    # No pretrained weights exist offline: train from scratch. ResNet-18 depth at half width
    # (32..256 channels) takes 40% less time per step than the full width on 2 CPU cores.
    backbone=dict(_delete_=True, type='ResNet', depth=18, base_channels=32, num_stages=4,
                  out_indices=(0, 1, 2, 3), frozen_stages=-1, norm_cfg=dict(type='BN'),
                  norm_eval=False, style='pytorch', init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=width, num_outs=5),
    rpn_head=dict(
        in_channels=width, feat_channels=width,
        # Anchors 16..256 px for 160 px images (the COCO default starts at 32 px).
        anchor_generator=dict(scales=[4])),
    roi_head=dict(
        # 2x2 samples per RoIAlign bin instead of the adaptive count: the RoIAlign backward
        # pass took a fifth of each training step on the CPU.
        bbox_roi_extractor=dict(roi_layer=dict(sampling_ratio=2), out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=num_classes),
        mask_roi_extractor=dict(roi_layer=dict(sampling_ratio=2), out_channels=width),
        mask_head=dict(num_convs=2, in_channels=width, conv_out_channels=width,
                       num_classes=num_classes)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=600, max_per_img=200),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=50)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# Loading a 160 px image costs far less than a worker process on 2 cores: load in the main one.
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        type='SyntheticShapesDataset', data_root=data_root,
        ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=0), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='SyntheticShapesDataset', data_root=data_root,
        ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
        test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val.json',
                     metric=['bbox', 'segm'], format_only=False)
test_evaluator = val_evaluator

max_iters = 400
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters // 2)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters, eta_min=1e-5),
]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=25)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
# Same numbers on every run on the same machine: seeded data order and augmentation, and
# torch's deterministic algorithms (tools/quickstart.sh also runs torch single-threaded).
randomness = dict(seed=0, deterministic=True)

# The first validation images of the last validation, drawn as labelled `ground truth |
# prediction` panels into <work_dir>/predictions/ (the densekit hooks of the base are kept).
custom_hooks = [
    dict(type='RNGStateHook'), dict(type='NumClassesCheckHook'), dict(type='BackboneCheckpointHook'),
    dict(type='PanelVisualizationHook', out_dir='predictions', max_images=6, draw_val=True,
         draw_test=False)]
