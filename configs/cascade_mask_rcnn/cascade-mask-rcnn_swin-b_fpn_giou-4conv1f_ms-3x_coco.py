# Swin-B: the Swin-T config with the Swin-B backbone.
_base_ = './cascade-mask-rcnn_swin-t_fpn_giou-4conv1f_ms-3x_coco.py'

model = dict(
    backbone=dict(
        type='swin_base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/swin_base_in1k.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
