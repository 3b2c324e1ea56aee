# TransNeXt-Base: the TransNeXt-T config with the Base backbone (official
# detection/maskrcnn/configs/mask_rcnn_transnext_base_fpn_1x_coco.py; drop path 0.7, fixed in
# the official dense class).
_base_ = './mask-rcnn_transnext-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='transnext_base',
        drop_path_rate=0.7,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/transnext_base_224_1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
