# cascade mask rcnn: UniRepLKNet-S backbone (unireplknet family base for this recipe), as
# AILab-CVC/UniRepLKNet's detection/configs/coco/casc_mask_rcnn_unireplknet_s_in1k_fpn_3x_coco.py:
# drop path 0.5, activation checkpointing, AdamW lr 1e-4, weight decay 0.05 (none on biases and
# 1-d parameters), layer-wise decay 0.8 over 12 layers (three stage-2 blocks per id).
_base_ = '../_base_/recipes/cascade-mask-rcnn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='unireplknet_s',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.5,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/unireplknet_s_in1k_224_acc83.91.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(
    optimizer=dict(lr=0.0001, weight_decay=0.05),
    paramwise_cfg=dict(
        decay_rate=0.8,
        decay_type='layer_wise',
        num_layers=12,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0))
