# NAT-Mini: the NAT-T config with the NAT-Mini backbone.
_base_ = './cascade-mask-rcnn_nat-t_fpn_giou-4conv1f_ms-3x_coco.py'

model = dict(
    backbone=dict(
        type='nat_mini',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/nat_mini_in1k.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
