# mask rcnn: ConvNeXt-T backbone (convnext family base for this recipe).
_base_ = '../_base_/recipes/mask-rcnn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='convnext_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/convnext_tiny_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(
    optimizer=dict(lr=0.0001),
    paramwise_cfg=dict(
        decay_rate=0.95,
        decay_type='layer_wise',
        num_layers=6,
        bias_decay_mult=0.0,
        flat_decay_mult=0.0))
