# NAT-B: the NAT-T config with the NAT-B backbone.
_base_ = './cascade-mask-rcnn_nat-t_fpn_giou-4conv1f_ms-3x_coco.py'

model = dict(
    backbone=dict(
        type='nat_base',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/nat_base_in1k.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
