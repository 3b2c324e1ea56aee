# dino: HaloNet-26t backbone (halonet family base for this recipe).
_base_ = '../_base_/recipes/dino-4scale_12e_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='halonet26t',
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/halonet26t_in1k.pth')),
    neck=dict(in_channels=[512, 1024, 2048]))
