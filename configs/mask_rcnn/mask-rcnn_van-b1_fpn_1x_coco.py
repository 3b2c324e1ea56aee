# VAN-B1: the VAN-B0 config with the VAN-B1 backbone.
_base_ = './mask-rcnn_van-b0_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='van_b1',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/van_b1_in1k.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
