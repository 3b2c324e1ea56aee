# kMaX-DeepLab, COCO panoptic segmentation, as the official kmax_r50.yaml: 1281x1281 crops with
# large-scale jitter (0.2..2.0), 150k iterations at batch 64 (the official 32 GPUs x 2 here as
# 32 x 2), AdamW lr 5e-4, weight decay 0.05 (none on norms and embeddings), backbone lr x0.1,
# no gradient clipping, 5000 linear warm-up iterations then poly decay (power 0.9, the official
# TF2WarmupPolyLR). Test: longer side resized to 1281 (MIN / MAX_SIZE_TEST 1281). Evaluation: PQ.
# The official trains with AMP; densekit fp32. Losses: kMaX's own (see the model base). The
# official copy-paste and SSD colour augmentation are not reproduced.
_base_ = [
    '../models/kmax_deeplab_panoptic.py', '../datasets/coco_panoptic.py',
    '../default_runtime_det.py',
]
image_size = (1281, 1281)
# Test images are zero-padded (after normalisation) to image_size too, as the official
# (INPUT.IMAGE_SIZE): the axial attention sees the official input, and the post-processing's
# align-corners rule the official padded width.
model = dict(data_preprocessor=dict(
    type='TestPadDetDataPreprocessor',
    batch_augments=[
        dict(type='BatchFixedSizePad', size=image_size, img_pad_value=0, pad_mask=True,
             mask_pad_value=0, pad_seg=True, seg_pad_value=255)],
    test_batch_augments=[
        dict(type='BatchFixedSizePad', size=image_size, img_pad_value=0, pad_mask=False,
             pad_seg=False)]))
train_pipeline = [
    dict(type='LoadImageFromFile', to_float32=True, backend_args=None),
    dict(type='LoadPanopticAnnotations', with_bbox=True, with_mask=True, with_seg=True,
         backend_args=None),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.2, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=image_size, crop_type='absolute', recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadPanopticAnnotations', backend_args=None),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    dict(type='CocoPanopticMetric',
         ann_file='data/coco/annotations/panoptic_val2017.json',
         seg_prefix='data/coco/annotations/panoptic_val2017/',
         backend_args=None),
]
test_evaluator = val_evaluator

max_iters = 150000
interval = 5000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=5000),
    dict(type='PolyLR', power=0.9, eta_min=0.0, by_epoch=False, begin=5000, end=max_iters),
]
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='DenseKitLayerDecayOptimizerConstructor',
    optimizer=dict(type='AdamW', lr=5e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        backbone_lr_mult=0.1,
        norm_decay_mult=0.0,
        custom_keys={
            'cluster_centers': dict(decay_mult=0.0),
            'in_norms': dict(decay_mult=0.0),
            'rpe': dict(decay_mult=0.0),
        }))
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', by_epoch=False, save_last=True, max_keep_ckpts=3,
                    interval=interval))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
