# DiNAT-S: the DiNAT-T config with the DiNAT-S backbone.
_base_ = './mask-rcnn_dinat-t_fpn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        type='dinat_small',
        drop_path_rate=0.35,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dinat_small_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
