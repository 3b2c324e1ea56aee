# cascade mask rcnn: DiNAT-T backbone (dinat family base for this recipe).
_base_ = '../_base_/recipes/cascade-mask-rcnn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='dinat_tiny',
        out_indices=(0, 1, 2, 3),
        dilations='coco',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dinat_tiny_in1k.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
