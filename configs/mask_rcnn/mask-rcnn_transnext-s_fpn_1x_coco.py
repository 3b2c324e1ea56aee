# TransNeXt-Small: the TransNeXt-T config with the Small backbone (official
# detection/maskrcnn/configs/mask_rcnn_transnext_small_fpn_1x_coco.py; drop path 0.6, fixed in
# the official dense class).
_base_ = './mask-rcnn_transnext-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='transnext_small',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/transnext_small_224_1k.pth')),
    neck=dict(in_channels=[72, 144, 288, 576]))
