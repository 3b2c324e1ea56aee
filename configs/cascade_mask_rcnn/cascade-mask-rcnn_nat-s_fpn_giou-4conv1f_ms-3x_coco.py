# NAT-S: the NAT-T config with the NAT-S backbone.
_base_ = './cascade-mask-rcnn_nat-t_fpn_giou-4conv1f_ms-3x_coco.py'

model = dict(
    backbone=dict(
        type='nat_small',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/nat_small_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
