# deformable detr: NAT-T backbone (nat family base for this recipe).
_base_ = '../_base_/recipes/deformable-detr-refine-twostage_50e_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='nat_tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/nat_tiny_in1k.pth')),
    neck=dict(in_channels=[128, 256, 512]))
