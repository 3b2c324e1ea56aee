# Swin-S: the Swin-T config with the Swin-S backbone.
_base_ = './cascade-mask-rcnn_swin-t_fpn_giou-4conv1f_ms-3x_coco.py'

model = dict(
    backbone=dict(
        type='swin_small',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/swin_small_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
