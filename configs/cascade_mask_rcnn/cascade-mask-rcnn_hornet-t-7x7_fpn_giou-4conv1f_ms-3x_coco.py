# cascade mask rcnn: HorNet-T (7x7) backbone (hornet family base for this recipe), as
# raoyongming/HorNet's object_detection/configs/hornet/cascade_mask_rcnn_hornet_tiny_7x7_3x_coco_in1k.py:
# drop path 0.4, AdamW lr 2e-4, layer-wise decay 0.7 over 12 layers (two stage-2 blocks per id),
# no weight decay on biases and 1-d parameters.
_base_ = '../_base_/recipes/cascade-mask-rcnn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='hornet_tiny_7x7',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/hornet_tiny_7x7_in1k.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
optim_wrapper = dict(
    optimizer=dict(lr=0.0002, weight_decay=0.05),
    paramwise_cfg=dict(
        decay_rate=0.7,
        decay_type='layer_wise',
        num_layers=12,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0))
