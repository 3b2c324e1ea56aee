# DiNAT-S: the DiNAT-T config with the DiNAT-S backbone.
_base_ = './cascade-mask-rcnn_dinat-t_fpn_giou-4conv1f_ms-3x_coco.py'

model = dict(
    backbone=dict(
        type='dinat_small',
        drop_path_rate=0.5,
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/dinat_small_in1k.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
