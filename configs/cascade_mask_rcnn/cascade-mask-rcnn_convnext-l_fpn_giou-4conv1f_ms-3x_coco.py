# ConvNeXt-L: the ConvNeXt-T config with the ConvNeXt-L backbone.
_base_ = './cascade-mask-rcnn_convnext-t_fpn_giou-4conv1f_ms-3x_coco.py'

model = dict(
    backbone=dict(
        type='convnext_large',
        drop_path_rate=0.7,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/convnext_large_in22k.pth')),
    neck=dict(in_channels=[192, 384, 768, 1536]))
optim_wrapper = dict(
    optimizer=dict(lr=0.0001),
    paramwise_cfg=dict(
        decay_rate=0.7,
        decay_type='layer_wise',
        num_layers=12))
