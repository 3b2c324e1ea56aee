# Relation DETR: Swin-T backbone (swin family base for this recipe).
_base_ = '../_base_/recipes/relation-detr_12e_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='swin_tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/swin_tiny_in1k.pth')),
    neck=dict(in_channels=[192, 384, 768]))
