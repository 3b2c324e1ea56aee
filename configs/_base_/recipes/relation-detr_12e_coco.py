# Relation DETR, COCO detection, 12 epochs, batch 16 (the official train_config.py: AdamW
# lr 1e-4, weight decay 1e-4, backbone lr x0.1, gradient clipping 0.1, lr x0.1 after epoch 10),
# DETR augmentation (the official `presets.detr`: flip, multi-scale 480-800 / 1333, random crop).
# Backbone: ResNet-50 with frozen stem and first stage, frozen BatchNorm, strides 8/16/32 and one
# extra stride-64 level from ChannelMapper, as in the official R50 config.
_base_ = [
    '../models/relation-detr.py', '../datasets/coco_detection_detr.py',
    '../schedules/detr_12e.py', '../default_runtime_det.py',
]
model = dict(
    backbone=dict(
        _delete_=True,
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(in_channels=[512, 1024, 2048]))
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[10], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='DenseKitLayerDecayOptimizerConstructor',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(backbone_lr_mult=0.1))
