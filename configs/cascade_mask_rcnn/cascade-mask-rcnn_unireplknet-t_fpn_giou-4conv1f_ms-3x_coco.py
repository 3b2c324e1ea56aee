# cascade mask rcnn: UniRepLKNet-T backbone (unireplknet family base for this recipe), as
# AILab-CVC/UniRepLKNet's detection/configs/coco/casc_mask_rcnn_unireplknet_t_in1k_fpn_3x_coco.py:
# drop path 0.3, activation checkpointing, AdamW lr 1e-4, weight decay 0.05 (none on biases and
# 1-d parameters), layer-wise decay 0.8 over 12 layers. The official constructor puts three of the
# 18 stage-2 blocks on each id (ids 3..8, then 12 for stage 3); densekit spreads them evenly over
# ids 3..11 (two blocks per id), so the deep blocks get slightly larger learning rates.
_base_ = '../_base_/recipes/cascade-mask-rcnn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='unireplknet_t',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/unireplknet_t_in1k_224_acc83.21.pth')),
    neck=dict(in_channels=[80, 160, 320, 640]))
optim_wrapper = dict(
    optimizer=dict(lr=0.0001, weight_decay=0.05),
    paramwise_cfg=dict(
        decay_rate=0.8,
        decay_type='layer_wise',
        num_layers=12,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0))
