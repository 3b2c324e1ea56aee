# dino: CSWin-T backbone (cswin family base for this recipe).
_base_ = '../_base_/recipes/dino-4scale_12e_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='cswin_tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cswin_tiny_in1k.pth')),
    neck=dict(in_channels=[128, 256, 512]))
