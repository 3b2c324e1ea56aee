# Quickstart (semantic segmentation): Semantic FPN (Kirillov et al., "Panoptic Feature Pyramid
# Networks", CVPR 2019) on a randomly initialised, half-width ResNet-18, trained on densekit's
# synthetic ADE20K-layout set (`tools/make_demo_data.py data/quickstart`). Reports mIoU; a few
# minutes on 2 CPU cores (an FPN head at stride 4 costs far less than a dilated stride-8 FCN).
_base_ = ['../_base_/default_runtime_seg.py']

data_root = 'data/quickstart/ade/'
crop_size = (128, 128)
num_classes = 6  # densekit.datasets.synthetic.ADE_CLASSES
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs a process group

model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size),
    backbone=dict(
        type='ResNetV1c', depth=18, stem_channels=32, base_channels=32, num_stages=4,
        out_indices=(0, 1, 2, 3), dilations=(1, 1, 1, 1), strides=(1, 2, 2, 2),
        norm_cfg=norm_cfg, norm_eval=False, style='pytorch'),
    neck=dict(type='FPN', in_channels=[32, 64, 128, 256], out_channels=64, num_outs=4),
    decode_head=dict(
        type='FPNHead', in_channels=[64, 64, 64, 64], in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32], channels=64, dropout_ratio=0.1,
        num_classes=num_classes, norm_cfg=norm_cfg, align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),  # reduce_zero_label comes from the dataset
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='SyntheticADEDataset', data_root=data_root,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='SyntheticADEDataset', data_root=data_root,
                 data_prefix=dict(img_path='images/validation',
                                  seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 300
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters // 2)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', power=0.9, eta_min=1e-5, by_epoch=False, begin=30, end=max_iters),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
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
