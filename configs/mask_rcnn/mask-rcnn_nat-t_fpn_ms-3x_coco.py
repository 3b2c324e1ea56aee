# mask rcnn: NAT-T backbone (nat family base for this recipe).
_base_ = '../_base_/recipes/mask-rcnn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='nat_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/nat_tiny_in1k.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
