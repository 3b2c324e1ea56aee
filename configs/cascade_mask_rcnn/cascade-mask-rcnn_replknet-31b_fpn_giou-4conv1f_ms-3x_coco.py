# cascade mask rcnn: RepLKNet-31B backbone (replknet family base for this recipe), as
# DingXiaoH/RepLKNet-pytorch's detection/configs/RepLKNet-31B_1Kpretrain_cascade_mask_rcnn_3x_coco.py:
# drop path 0.6, activation checkpointing, AdamW lr 4e-4, weight decay 0.05 (none on norms).
_base_ = '../_base_/recipes/cascade-mask-rcnn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='replknet_31b',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.6,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RepLKNet-31B_ImageNet-1K_224.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
optim_wrapper = dict(optimizer=dict(lr=0.0004, weight_decay=0.05))
