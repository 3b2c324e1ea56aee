# ConvNeXt-S: the ConvNeXt-T config with the ConvNeXt-S backbone.
_base_ = './cascade-mask-rcnn_convnext-t_fpn_giou-4conv1f_ms-3x_coco.py'

model = dict(
    backbone=dict(
        type='convnext_small',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/convnext_small_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(
    optimizer=dict(lr=0.0002),
    paramwise_cfg=dict(
        decay_rate=0.7,
        decay_type='layer_wise',
        num_layers=12))
